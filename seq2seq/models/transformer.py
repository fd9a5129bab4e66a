"""The Transformer (Vaswani et al. 2017): encoder and decoder stacks without recurrence.

    x = Embed(src) * sqrt(d_model) + PE                       (section 3.4, 3.5)
    encoder layer:  x = x + Drop(SelfAttn(x)),  x = x + Drop(FFN(x))
    decoder layer:  y = y + Drop(CausalSelfAttn(y)),  y = y + Drop(CrossAttn(y, memory)),
                    y = y + Drop(FFN(y))
    FFN(x) = max(0, x W_1 + b_1) W_2 + b_2                    (eq. 2)
    PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d))

Layer norm comes after each residual addition (``post``, as in the paper) or before each
sub-layer with a final norm on each stack (``pre``). The attention module is
:class:`seq2seq.attention.MultiHeadAttention`, the same one the RNN decoder can use; it runs on
``scaled_dot_product_attention`` in training.

Incremental decoding: the decoder state caches, per layer, the keys and values of the target
prefix, two tensors of ``(N, h, t, d_k)``, so a step costs one position. A beam reorder is
deferred (:meth:`Transformer.reorder_state`): the state keeps the caches as they were and the
rows picked (``cache_rows``, B of the N), and the next step copies those rows straight into its
longer caches. The cross-attention keys and values of the source are computed once in
:meth:`encode` (made contiguous when no gradients are wanted). In beam search the K hypotheses
of a sentence share its memory row (:attr:`~seq2seq.models.base.Seq2SeqModel.shares_memory`).
At CPU inference a step takes each layer's :meth:`DecoderLayer.step`, whose attention is
:meth:`seq2seq.attention.MultiHeadAttention.one_query` (batched products, the source mask added
from ``memory["src_bias"]``); with attention weights wanted, the general path, whose steps run
batched products too (:func:`seq2seq.attention._few_queries`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from seq2seq import choices
from seq2seq.attention import MultiHeadAttention, additive_mask
from seq2seq.choices import ARCHITECTURES
from seq2seq.dropout import Dropout, noise
from seq2seq.models.base import Seq2SeqModel, State, log_softmax_
from seq2seq.special import PAD

if TYPE_CHECKING:
    from seq2seq.config import ModelConfig


def append_positions(cache: torch.Tensor, new: torch.Tensor,
                     rows: torch.Tensor | None = None) -> torch.Tensor:
    """Keys or values of the positions so far, ``cache`` (N, h, t, d_k), followed by those of
    the new positions, ``new`` (B, h, L, d_k): (B, h, t + L, d_k), contiguous. ``rows`` (B,)
    picks the cache's rows first (a reorder that :meth:`Transformer.reorder_state` deferred):
    the picked rows are written straight into the result, one copy of the cache instead of two
    (an ``index_select`` and a ``cat``: 125 against 189 us for beam search's 320 rows of 10
    positions on one CPU thread)."""
    if rows is None:
        return torch.cat([cache, new], dim=2)
    if cache.dtype != new.dtype or (torch.is_grad_enabled() and cache.requires_grad):
        return torch.cat([cache.index_select(0, rows), new], dim=2)
    B, h, L, d_k = new.shape
    t = cache.size(2)
    out = new.new_empty(B, h, t + L, d_k)
    torch.index_select(cache, 0, rows, out=out[:, :, :t])
    out[:, :, t:] = new
    return out


def sinusoidal_positions(n: int, d: int) -> torch.Tensor:
    """(n, d) table of section 3.5."""
    pos = torch.arange(n, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(10000.0) / d))
    pe = torch.zeros(n, d)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div[: d // 2])
    return pe


class Embedder(nn.Module):
    """Token embedding * sqrt(d_model) + position encoding, then dropout."""

    def __init__(self, embedding: nn.Embedding, cfg: ModelConfig):
        super().__init__()
        self.embedding = embedding
        d = cfg.embed_size
        self.scale = math.sqrt(d) if cfg.scale_embeddings else 1.0
        self.n_positions = cfg.max_length
        # the sinusoidal table is a function of (n_positions, d), not a parameter: it is made on
        # first use on the input's device, so a model built without memory (on the meta device,
        # as inference loading does) needs nothing but its state dict
        self.learned = nn.Embedding(cfg.max_length, d) if cfg.positions == "learned" else None
        self._table: torch.Tensor | None = None
        self.dropout = Dropout(cfg.dropout)

    def positions(self, pos: torch.Tensor) -> torch.Tensor:
        """Position vectors of ``pos`` (any shape) -> (..., d)."""
        if self.learned is not None:
            return self.learned(pos)
        weight = self.embedding.weight
        if (self._table is None or self._table.device != pos.device
                or self._table.dtype != weight.dtype):  # made anew after .to(device/dtype)
            d = self.embedding.embedding_dim
            self._table = sinusoidal_positions(self.n_positions, d).to(pos.device, weight.dtype)
        return self._table[pos]

    def forward(self, tokens: torch.Tensor, start: torch.Tensor | int = 0) -> torch.Tensor:
        """tokens (B, L) at positions start, start+1, ... -> (B, L, d)."""
        L = tokens.size(1)
        pos = torch.arange(L, device=tokens.device) + start  # (L,) or (B, L)
        pos = pos.clamp(max=self.n_positions - 1)
        x = self.embedding(tokens) * self.scale + self.positions(pos)
        return self.dropout(x) if self.training else x


class _ReluDropout(torch.autograd.Function):
    """``dropout(relu(x), p)`` keeping only its output for the backward pass.

    With y = relu(x) * m * s (m the Bernoulli mask, s = 1 / (1 - p)), y > 0 exactly where x > 0
    and m = 1, so dy/dx = [y > 0] * s: neither the relu's output nor the mask needs to be saved,
    and y is saved anyway as the next layer's input. The mask is drawn as :mod:`seq2seq.dropout`
    draws it (with ``torch`` masks, the random stream and the values of the unfused pair)."""

    @staticmethod
    def forward(ctx, x, p):
        m, ctx.scale = noise(x, p)  # m * scale, drawn as seq2seq.dropout draws masks
        y = F.relu(x) * m
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return grad * (y > 0) * ctx.scale, None


class FeedForward(nn.Module):
    def __init__(self, d: int, ff: int, dropout: float):
        super().__init__()
        self.w1, self.w2 = nn.Linear(d, ff), nn.Linear(ff, d)
        self.dropout = Dropout(dropout)

    def forward(self, x):
        p = self.dropout.p
        if self.training and 0 < p < 1:
            return self.w2(_ReluDropout.apply(self.w1(x), p))  # h (B, L, ff)
        if not self.training and getattr(self.w1, "fuses_relu", False):
            return self.w2(self.w1(x, relu=True))  # a packed or int8 layer fuses the relu
        return self.w2(self.dropout(F.relu(self.w1(x))))


class Sublayer(nn.Module):
    """Residual connection with layer norm after (post-LN) or before (pre-LN) the sub-layer."""

    def __init__(self, d: int, dropout: float, pre_norm: bool):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.dropout = Dropout(dropout)
        self.pre_norm = pre_norm

    def forward(self, x, fn):
        out = fn(self.norm(x)) if self.pre_norm else fn(x)
        if self.training:  # in eval mode not even a call: a decoder step has nine of these
            out = self.dropout(out)
        return x + out if self.pre_norm else self.norm(x + out)


class EncoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d, pre = cfg.embed_size, cfg.norm == "pre"
        self.self_attn = MultiHeadAttention(d, d, d, cfg.attention.heads,
                                            dropout=cfg.attention_dropout)
        self.ff = FeedForward(d, cfg.ff_size, cfg.relu_dropout)
        self.sub1, self.sub2 = Sublayer(d, cfg.dropout, pre), Sublayer(d, cfg.dropout, pre)

    def forward(self, x, mask, rows=None):
        """x (B, S, d), or with ``rows`` (inference) only the real positions: (N, d), whose
        flat indices into B * S ``rows`` (N,) holds (:meth:`MultiHeadAttention.over_rows`)."""
        def attn(h):
            if rows is not None:
                return self.self_attn.over_rows(h, rows, mask)
            return self.self_attn(h, self.self_attn.project_keys(h), mask=mask,
                                  need_weights=False)[0]

        x = self.sub1(x, attn)
        return self.sub2(x, self.ff)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d, pre, h = cfg.embed_size, cfg.norm == "pre", cfg.attention.heads
        self.self_attn = MultiHeadAttention(d, d, d, h, dropout=cfg.attention_dropout)
        self.cross_attn = MultiHeadAttention(d, d, d, h, dropout=cfg.attention_dropout)
        self.ff = FeedForward(d, cfg.ff_size, cfg.relu_dropout)
        self.subs = nn.ModuleList(Sublayer(d, cfg.dropout, pre) for _ in range(3))

    def forward(self, y, cross_kv, src_mask, cache: tuple[torch.Tensor, torch.Tensor] | None = None,
                need_weights: bool = False, average_heads: bool = True,
                cache_rows: torch.Tensor | None = None):
        """y (B, L, d) new target positions; cross_kv the memory's keys and values, a pair of
        (B / K, h, S, d_k) (K hypotheses a memory row in beam search, else 1); cache the
        earlier positions' keys and values, a pair of (B, h, t, d_k) (None in training), or
        of (N, h, t, d_k) whose rows ``cache_rows`` (B,) are this batch's.
        Returns y, the updated cache, cross-attention weights (B, L, S), or (B, h, L, S) with
        ``average_heads=False``."""
        new_cache = None
        step = cache is not None  # incremental decoding: a few queries, the fast path may serve

        def self_attn(h):
            nonlocal new_cache
            kv = self.self_attn.project_keys(h)  # (B, 2h, L, d_k)
            if step:  # the earlier positions' keys and values, then these
                k, v = self.self_attn.split_keys(kv)
                # (B, h, t + L, d_k) each, contiguous
                kv = new_cache = (append_positions(cache[0], k, cache_rows),
                                  append_positions(cache[1], v, cache_rows))
            return self.self_attn(h, kv, causal=True, need_weights=False, step=step)[0]

        weights = None

        def cross_attn(h):
            nonlocal weights
            B, L, d = h.shape
            rows = cross_kv[0].size(0)
            if B % rows:
                raise ValueError(f"{B} target rows do not share {rows} memory rows evenly")
            K = B // rows  # hypotheses per sentence sharing its memory (beam search)
            if K > 1:  # K hypotheses of L positions: K * L queries against one memory row
                h = h.view(rows, K * L, d)
            out, weights = self.cross_attn(h, cross_kv, mask=src_mask, need_weights=need_weights,
                                           average_heads=average_heads, step=step)
            if K > 1:
                out = out.view(B, L, -1)
                if weights is not None and average_heads:  # (rows, K * L, S)
                    weights = weights.reshape(B, L, -1)
                elif weights is not None:  # (rows, h, K * L, S) -> (B, h, L, S)
                    n_heads, S = weights.size(1), weights.size(-1)
                    weights = (weights.view(rows, n_heads, K, L, S).transpose(1, 2)
                               .reshape(B, n_heads, L, S))
            return out

        y = self.subs[0](y, self_attn)
        y = self.subs[1](y, cross_attn)
        y = self.subs[2](y, self.ff)
        return y, new_cache, weights

    def step(self, y: torch.Tensor, cross_kv: tuple[torch.Tensor, torch.Tensor],
             src_bias: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor],
             cache_rows: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """:meth:`forward` for one new position a row at inference (no gradients, no weights
        wanted), through :meth:`MultiHeadAttention.one_query`: y (B, d), the memory's keys
        and values (B / K, h, S, d_k), src_bias its additive mask (B / K, h, 1, S), the
        cache as in :meth:`forward` -> y (B, d), the cache with this position appended."""
        new_cache = cache

        def self_attn(h):
            nonlocal new_cache
            attn = self.self_attn
            k, v = attn.split_keys(attn.project_keys(h.unsqueeze(1)))  # (B, h, 1, d_k) each
            new_cache = (append_positions(cache[0], k, cache_rows),
                         append_positions(cache[1], v, cache_rows))
            return attn.one_query(h, *new_cache)  # sees every position so far: no mask

        y = self.subs[0](y, self_attn)
        y = self.subs[1](y, lambda h: self.cross_attn.one_query(h, *cross_kv, src_bias))
        y = self.subs[2](y, self.ff)
        return y, new_cache


@ARCHITECTURES.implements(choices.TransformerArchitecture)
class Transformer(Seq2SeqModel):
    """Embeddings, the encoder and decoder stacks, and the output layer (``d = embed_size``)."""

    shares_memory = True  # beam search: the K hypotheses of a sentence query one memory row

    def __init__(self, cfg: ModelConfig, src_vocab_size: int, tgt_vocab_size: int):
        super().__init__()
        self.cfg = cfg
        self.max_positions = cfg.max_length  # the position table's size caps both sides
        d = cfg.embed_size
        src_emb = nn.Embedding(src_vocab_size, d, padding_idx=PAD)
        self.tgt_embedding = src_emb if cfg.share_embeddings else nn.Embedding(
            tgt_vocab_size, d, padding_idx=PAD
        )
        self.src_embed = Embedder(src_emb, cfg)
        self.tgt_embed = Embedder(self.tgt_embedding, cfg)
        self.encoder_layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.encoder_layers))
        self.decoder_layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.decoder_layers))
        pre = cfg.norm == "pre"
        self.enc_norm = nn.LayerNorm(d) if pre else nn.Identity()
        self.dec_norm = nn.LayerNorm(d) if pre else nn.Identity()
        self.generator = nn.Linear(d, tgt_vocab_size)
        if cfg.tie_output:
            self.generator.weight = self.tgt_embedding.weight
        self.init_parameters(cfg.init, cfg.init_range, embedding_init=cfg.embedding_init)

    def encode(self, src, src_len) -> State:
        """The source -> memory: the mask and every decoder layer's cross-attention keys and
        values. At inference on a CPU the position-wise layers (projections, feed-forward,
        norms) run over the real source positions only, as CTranslate2 does: in length-sorted
        batches of 64 test sentences the padding is a fifth of the rows. Attention alone runs
        padded, and the memory's padded keys and values are zeros (masked, as before). Not on a
        GPU, where it is unmeasured and the figures of docs/performance.md were taken padded.
        There the memory also holds ``src_bias``, the mask that :meth:`decode_step`'s one-query
        attention adds to its scores."""
        mask = src != PAD  # (B, S)
        x = self.src_embed(src)
        inference = (not torch.is_grad_enabled() and not self.training
                     and x.device.type == "cpu")
        rows = None  # (N,) flat indices of the real positions, when the padding is skipped
        if inference and not bool(mask.all()):
            rows = mask.reshape(-1).nonzero().squeeze(1)
            x = x.reshape(-1, x.size(-1)).index_select(0, rows)  # (N, d)
        for layer in self.encoder_layers:
            x = layer(x, mask, rows)
        x = self.enc_norm(x)  # (B, S, d), or (N, d) with rows
        memory: State = {"mask": mask}
        for i, layer in enumerate(self.decoder_layers):
            attn = layer.cross_attn
            kv = attn.project_keys(x) if rows is None else attn.project_key_rows(x, rows, mask)
            k, v = attn.split_keys(kv)
            if not torch.is_grad_enabled():  # decoding: each contiguous, for batched products
                k, v = k.contiguous(), v.contiguous()
            memory[f"cross_k{i}"], memory[f"cross_v{i}"] = k, v  # (B, h, S, d_k) each
        if inference:  # the mask as the one-query steps add it: (B, h, 1, S), 0 or -inf
            memory["src_bias"] = additive_mask(mask, self.decoder_layers[0].cross_attn.heads,
                                               memory["cross_k0"].dtype)
        return memory

    def _cross(self, memory: State, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return memory[f"cross_k{i}"], memory[f"cross_v{i}"]

    def init_state(self, memory: State) -> State:
        B = memory["mask"].size(0)
        state: State = {"step": torch.zeros(B, 1, dtype=torch.long, device=memory["mask"].device)}
        for i, layer in enumerate(self.decoder_layers):
            h, d_k = layer.self_attn.heads, layer.self_attn.d_k
            for part in "kv":  # the keys and values of the positions so far: (B, h, t, d_k)
                state[f"self_{part}{i}"] = memory["mask"].new_zeros(
                    (B, h, 0, d_k), dtype=memory[f"cross_k{i}"].dtype)
        return state

    def _decode(self, memory, y, caches, need_weights, cache_rows=None):
        new_caches, weights = [], None
        for i, layer in enumerate(self.decoder_layers):
            last = i == len(self.decoder_layers) - 1
            y, cache, w = layer(y, self._cross(memory, i), memory["mask"],
                                None if caches is None else caches[i], need_weights and last,
                                cache_rows=cache_rows)
            new_caches.append(cache)
            weights = w if last else weights
        return self.dec_norm(y), new_caches, weights

    def decode_step(self, memory, state, prev, need_attention=True):
        """One target position. Without attention weights wanted, on a memory that
        :meth:`encode` made for CPU inference (it holds ``src_bias``), and without hard
        attention, each layer takes :meth:`DecoderLayer.step`; otherwise the general
        :meth:`DecoderLayer.forward` with one position."""
        step = state["step"]
        y = self.tgt_embed(prev.unsqueeze(1), step)  # (B, 1, d) at position t
        caches = [(state[f"self_k{i}"], state[f"self_v{i}"])
                  for i in range(len(self.decoder_layers))]
        rows, bias = state.get("cache_rows"), memory.get("src_bias")
        if (bias is not None and not need_attention and not self.training
                and not torch.is_grad_enabled() and not self.decoder_layers[0].cross_attn.hard):
            y, weights = y[:, 0], None  # (B, d)
            for i, layer in enumerate(self.decoder_layers):
                y, caches[i] = layer.step(y, self._cross(memory, i), bias, caches[i], rows)
            y = self.dec_norm(y)
        else:
            y, caches, weights = self._decode(memory, y, caches, need_weights=need_attention,
                                              cache_rows=rows)
            y, weights = y[:, 0], None if weights is None else weights[:, 0]
        new: State = {"step": step + 1}
        for i, (k, v) in enumerate(caches):
            new[f"self_k{i}"], new[f"self_v{i}"] = k, v
        log_probs = log_softmax_(self.project(y))  # (B, V)
        return log_probs, new, weights

    def reorder_state(self, state: State, rows: torch.Tensor) -> State:
        """Picks the rows of the step counter now and those of the key/value caches at the next
        :meth:`decode_step`, where the copy is fused with appending the new position
        (:func:`append_positions`). ``cache_rows`` (B,) says which cache row each state row
        reads; a second reorder before the next step composes with the first."""
        pending = state.get("cache_rows")
        new: State = {"step": state["step"].index_select(0, rows),
                      "cache_rows": rows if pending is None else pending.index_select(0, rows)}
        for name, value in state.items():
            if name.startswith("self_"):
                new[name] = value  # (N, h, t, d_k): the rows before the reorder
        return new

    def features(self, src, src_len, tgt_in):
        memory = self.encode(src, src_len)
        y, _, _ = self._decode(memory, self.tgt_embed(tgt_in), None, need_weights=False)
        return y  # (B, T, d)

    @torch.no_grad()
    def attention_maps(self, src, src_len, tgt_in):
        """Every decoder layer's cross-attention, per head: {"layer i": (B, h, T, S)}."""
        memory = self.encode(src, src_len)
        y = self.tgt_embed(tgt_in)
        maps = {}
        for i, layer in enumerate(self.decoder_layers):
            y, _, w = layer(y, self._cross(memory, i), memory["mask"], None, need_weights=True,
                            average_heads=False)
            maps[f"layer {i + 1}"] = w
        return maps

    def set_hard_attention(self, hard: bool) -> None:
        for layer in self.decoder_layers:
            layer.cross_attn.hard = hard
