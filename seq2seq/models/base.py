"""The one interface every model family implements and every search uses.

A model encodes a padded source batch once into a *memory*, creates an initial decoder *state*,
and then advances one target token at a time::

    memory = model.encode(src, src_len)             # dict of (B, ...) tensors
    state = model.init_state(memory)                # dict of (B, ...) tensors
    log_probs, state, attn = model.decode_step(memory, state, prev_tokens)   # (B, V), ..., (B, S)

Every tensor in ``memory`` and ``state`` has the batch (or beam) on dimension 0, so a search can
reorder, repeat or shrink hypotheses without knowing the model: the memory with :func:`select`,
the state with :meth:`Seq2SeqModel.reorder_state` (``select`` unless a model defers the copy to
its next step, as the Transformer does; a state so reordered goes only to ``decode_step`` and
``reorder_state``).
``forward`` is the teacher-forced pass used in training; it must agree with step-wise decoding.
"""

from __future__ import annotations

import torch
from torch import nn

State = dict[str, torch.Tensor]


def select(tree: State, index: torch.Tensor) -> State:
    """Pick rows ``index`` (on dim 0) of every tensor: reorder beams, repeat, or drop sentences."""
    return {k: v.index_select(0, index) for k, v in tree.items()}


def log_softmax_(logits: torch.Tensor) -> torch.Tensor:
    """``log_softmax(logits, dim=-1)``, written over ``logits`` when they need no gradient
    (decoding): the same values without a second (rows, V) tensor to fill, which for beam
    search's 5 x 64 rows over 8,000 words is 10 MB a step. Under autocast, logits of a lower
    precision go through torch's function, whose autocast rule picks the result's dtype
    (CUDA computes log_softmax in fp32; an ``out=`` call would skip that rule)."""
    if torch.is_grad_enabled() and logits.requires_grad:
        return torch.log_softmax(logits, dim=-1)
    if logits.dtype != torch.float32 and torch.is_autocast_enabled(logits.device.type):
        return torch.log_softmax(logits, dim=-1)
    return torch.log_softmax(logits, dim=-1, out=logits)


class Seq2SeqModel(nn.Module):
    """Abstract encoder-decoder."""

    #: The longest sequence (in tokens, source or target) the model can read or write, e.g. the
    #: size of the Transformer's position table; None: no limit.
    max_positions: int | None = None

    #: Whether :meth:`decode_step` accepts a memory with one row per sentence while the state
    #: and ``prev`` have ``K`` rows per sentence (beam search's hypotheses, grouped by
    #: sentence): the search then keeps one copy of each sentence's memory instead of ``K``.
    #: Models without it get the memory repeated to the state's rows.
    shares_memory: bool = False

    def encode(self, src: torch.Tensor, src_len: torch.Tensor) -> State:
        """src (B, S) ids, src_len (B,) -> memory; ``memory['mask']`` is (B, S), True = token."""
        raise NotImplementedError

    def init_state(self, memory: State) -> State:
        raise NotImplementedError

    def decode_step(
        self, memory: State, state: State, prev: torch.Tensor, need_attention: bool = True
    ) -> tuple[torch.Tensor, State, torch.Tensor | None]:
        """prev (B,) previous target ids -> log-probabilities (B, V), new state, attention (B, S)
        (None for a model without attention; a model may return None when ``need_attention``
        is False and computing the weights would cost extra, as the Transformer's fused
        attention does). With :attr:`shares_memory`, ``memory`` may have B / K rows, row ``i``
        serving state rows ``i * K`` to ``i * K + K - 1``."""
        raise NotImplementedError

    def reorder_state(self, state: State, rows: torch.Tensor) -> State:
        """The decoder state of rows ``rows`` of ``state`` (reorder beams, repeat, or drop
        sentences): :func:`select`. A model may pick some rows lazily, at its next
        :meth:`decode_step`, where the copy can be fused with other work."""
        return select(state, rows)

    def features(self, src: torch.Tensor, src_len: torch.Tensor, tgt_in: torch.Tensor
                 ) -> torch.Tensor:
        """Teacher forcing: tgt_in (B, T) -> the vectors fed to the output layer (B, T, H)."""
        raise NotImplementedError

    #: The output layer, (..., H) -> logits (..., V); training fuses it with the loss
    #: (:func:`seq2seq.loss.linear_cross_entropy_sum`), so it is one linear layer.
    generator: nn.Linear

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """Output layer: (..., H) -> logits (..., V)."""
        return self.generator(features)

    def forward(self, src: torch.Tensor, src_len: torch.Tensor, tgt_in: torch.Tensor
                ) -> torch.Tensor:
        """Teacher forcing: tgt_in (B, T) -> logits (B, T, V). Training projects only the
        non-pad positions of :meth:`features`, which saves the output layer's cost on padding."""
        return self.project(self.features(src, src_len, tgt_in))

    def init_parameters(self, scheme: str = "xavier", init_range: float = 0.1,
                        forget_bias: float = 0.0, embedding_init: str = "scheme") -> None:
        """The initial weights. ``xavier`` (every family's default): token embeddings
        ``N(0, d^-1/2)`` with a zero pad row, other matrices Xavier-uniform, biases zero.
        ``uniform``: every parameter from ``U(-init_range, init_range)`` (pad row zero).
        ``gaussian``: matrices and embeddings from ``N(0, init_range^2)``, the recurrent matrices
        of GRUs and LSTMs orthogonal gate by gate, biases zero, then the parameters a module
        lists in ``gaussian_std`` (Bahdanau's attention) their own. ``forget_bias``: the LSTM
        forget gates' bias. ``embedding_init: normal`` gives the token embeddings
        ``N(0, d^-1/2)`` whatever the scheme (as ``xavier`` does). Layer norms, and modules that
        set ``keeps_own_init`` (the cosine score's sharpening), keep their own initial values;
        a model built on the meta device is left alone (its weights are loaded next)."""
        if any(p.is_meta for p in self.parameters()):
            return
        owner: dict[int, nn.Module] = {}
        names = {id(p): n for n, p in self.named_parameters()}
        for module in self.modules():
            for p in module.parameters(recurse=False):
                owner.setdefault(id(p), module)
        for p in self.parameters():
            module = owner[id(p)]
            if isinstance(module, nn.LayerNorm) or getattr(module, "keeps_own_init", False):
                continue
            if scheme == "xavier" or (embedding_init == "normal"
                                      and isinstance(module, nn.Embedding)):
                _xavier(p, module)
            else:
                _paper_init(p, module, names[id(p)], scheme, init_range)
        if scheme == "gaussian":
            _module_gaussian_std(self)
        if forget_bias:
            _forget_bias(self, forget_bias)

    @torch.no_grad()
    def attention_maps(self, src: torch.Tensor, src_len: torch.Tensor, tgt_in: torch.Tensor
                       ) -> dict[str, torch.Tensor]:
        """The attention over the source while reading ``tgt_in`` (B, T) (bos + output),
        by name: {"attention": (B, 1, T, S)} here, one entry per layer with one map per head
        for the Transformer. Empty for a model without attention."""
        memory = self.encode(src, src_len)
        state = self.init_state(memory)
        rows = []
        for t in range(tgt_in.size(1)):
            _, state, weights = self.decode_step(memory, state, tgt_in[:, t])
            if weights is None:
                return {}
            rows.append(weights.float())
        return {"attention": torch.stack(rows, dim=1).unsqueeze(1)}

    def set_hard_attention(self, hard: bool) -> None:
        """Hard (argmax) attention at inference; a model without attention ignores it."""

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


def _xavier(p: nn.Parameter, module: nn.Module) -> None:
    if isinstance(module, nn.Embedding) and module.padding_idx is not None:
        nn.init.normal_(p, 0.0, p.size(1) ** -0.5)
        with torch.no_grad():
            p[module.padding_idx].zero_()
    elif p.dim() > 1:
        nn.init.xavier_uniform_(p)
    else:
        nn.init.zeros_(p)


@torch.no_grad()
def _paper_init(p: nn.Parameter, module: nn.Module, name: str, scheme: str, r: float) -> None:
    """``uniform`` or ``gaussian`` (see :meth:`Seq2SeqModel.init_parameters`)."""
    if scheme == "uniform":
        nn.init.uniform_(p, -r, r)
    elif p.dim() < 2:
        nn.init.zeros_(p)
    elif isinstance(module, nn.RNNBase) and name.rsplit(".", 1)[-1].startswith("weight_hh"):
        for block in p.split(p.size(1)):  # one (H, H) matrix per gate
            nn.init.orthogonal_(block)
    else:
        nn.init.normal_(p, 0.0, r)
    if isinstance(module, nn.Embedding) and module.padding_idx is not None:
        p[module.padding_idx].zero_()


@torch.no_grad()
def _module_gaussian_std(model: nn.Module) -> None:
    """Modules whose paper gives some parameters their own Gaussian (``gaussian_std``, by
    parameter name; 0 means zeros) get them after the model-wide scheme."""
    for module in model.modules():
        for name, std in getattr(module, "gaussian_std", {}).items():
            p = module.get_parameter(name)
            if std:
                nn.init.normal_(p, 0.0, std)
            else:
                nn.init.zeros_(p)


@torch.no_grad()
def _forget_bias(model: nn.Module, value: float) -> None:
    """LSTM gates are ordered input, forget, cell, output: the forget slice of ``bias_ih``
    gets ``value`` and that of ``bias_hh`` zero, so the gate starts at sigmoid(value)."""
    for module in model.modules():
        if isinstance(module, nn.LSTM):
            for name, p in module.named_parameters():
                if name.startswith("bias_"):
                    H = p.numel() // 4
                    p[H : 2 * H] = value if name.startswith("bias_ih") else 0.0
