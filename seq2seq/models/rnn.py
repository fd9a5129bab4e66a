"""The recurrent encoder-decoder, with and without attention.

Encoder: embeddings -> (bi)GRU/LSTM over the packed source -> annotations ``h_j`` (B, S, De),
``De = 2 * encoder_hidden`` when bidirectional; the final states of each layer, with both
directions concatenated, summarise the sentence. With ``reverse_source`` the encoder reads each
sentence backwards (Sutskever et al. 2014); its annotations are put back in source order so that
attention weights always refer to source positions.

The decoder's initial state ``s_0`` (``model.decoder_start``), per layer, from the matching
encoder layer when the layer counts agree, else from the top one: ``bridge`` ``tanh(W_s h_final)``
with both directions of ``h_final`` (the default); ``final`` the encoder's final state itself
(Sutskever et al. 2014; Luong et al. 2015), the LSTM's cell state too; ``backward``
``tanh(W_s h<-_1)``, the backward direction alone (Bahdanau et al. 2015, A.2.2); ``summary``
``tanh(V' c)`` from Cho's fixed context ``c`` (Cho et al. 2014, the decoder's ``h'_0``).

Decoders (``model.decoder``); ``E y`` is the embedded previous target word:

* ``sutskever``: ``h_t = f(h_{t-1}, E y_{t-1})``; predict from ``h_t`` (Sutskever et al. 2014).
* ``cho``: a fixed context ``c = tanh(V h_final)``; ``s_i = f(s_{i-1}, [E y_{i-1}; c])``;
  predict from ``t_i = tanh(W_o [s_i; c; E y_{i-1}])`` (Cho et al. 2014, eqs. 5-8; the paper uses
  maxout units for ``t_i``).
* ``bahdanau``: ``c_i`` attends from the *previous* state ``s_{i-1}``;
  ``s_i = f(s_{i-1}, [E y_{i-1}; c_i])``; ``t_i = tanh(W_o [s_i; c_i; E y_{i-1}])``, i.e.
  ``p(y_i) = g(y_{i-1}, s_i, c_i)`` of eq. 4 (appendix A.2.2 writes the output layer with
  ``s_{i-1}``; seq2seq follows eq. 4, and uses tanh in place of maxout).
* ``luong``: ``h_t = f(h_{t-1}, [E y_{t-1}; h~_{t-1}])`` (input feeding, optional), ``c_t``
  attends from the *current* state, ``h~_t = tanh(W_c [c_t; h_t])`` (Luong et al. 2015, eq. 5).
  Without input feeding the recurrence runs over the whole target at once in training.

The output layer is ``softmax(W_out t)``; ``W_out`` is tied to the target embedding on request.

:class:`RNNSeq2Seq` holds what the decoders share (embeddings, :class:`Encoder`, bridge, output
layer, the step-wise loop); each decoder is a subclass bound to its choice in
:data:`seq2seq.choices.DECODERS` that builds its own modules and defines one target step.
:func:`build_rnn`, bound to the ``rnn`` architecture, picks the subclass.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seq2seq import choices
from seq2seq.attention import MultiHeadAttention, build_attention
from seq2seq.choices import ARCHITECTURES, DECODERS
from seq2seq.dropout import Dropout
from seq2seq.models.base import Seq2SeqModel, State, log_softmax_
from seq2seq.special import PAD

if TYPE_CHECKING:
    from seq2seq.config import ModelConfig

CELLS = {"gru": nn.GRU, "lstm": nn.LSTM}


def reverse_padded(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse the first ``lengths[b]`` positions of each row of x (B, S, ...); padding stays."""
    S = x.size(1)
    pos = torch.arange(S, device=x.device).unsqueeze(0)  # (1, S)
    L = lengths.to(x.device).unsqueeze(1)  # (B, 1)
    idx = torch.where(pos < L, L - 1 - pos, pos)  # (B, S)
    idx = idx.view(*idx.shape, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(1, idx)


class Encoder(nn.Module):
    """Embeddings -> (bi)GRU/LSTM over the packed source, ``cfg.encoder_hidden`` per direction."""

    def __init__(self, cfg: ModelConfig, embedding: nn.Embedding):
        super().__init__()
        self.embedding = embedding
        self.bidirectional = cfg.bidirectional
        self.reverse = cfg.reverse_source
        self.layers = cfg.encoder_layers
        self.rnn = CELLS[cfg.cell](
            cfg.embed_size, cfg.encoder_hidden, num_layers=cfg.encoder_layers, batch_first=True,
            bidirectional=cfg.bidirectional,
            dropout=cfg.dropout if cfg.encoder_layers > 1 else 0.0,
        )
        self.dropout = Dropout(cfg.dropout)

    def forward(self, src, src_len):
        """src (B, S) -> annotations (B, S, De), final states [h (, c)], each (layers, B, De);
        ``De = cfg.encoder_output_size``."""
        x = self.dropout(self.embedding(src))  # (B, S, E)
        if self.reverse:
            x = reverse_padded(x, src_len)
        packed = pack_padded_sequence(x, src_len.cpu(), batch_first=True, enforce_sorted=False)
        out, final = self.rnn(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=src.size(1))
        if self.reverse:
            out = reverse_padded(out, src_len)
        finals = final if isinstance(final, tuple) else (final,)
        merged = []
        for f in finals:  # (layers * dirs, B, H)
            if self.bidirectional:
                f = f.view(self.layers, 2, f.size(1), f.size(2))
                f = torch.cat([f[:, 0], f[:, 1]], dim=-1)  # (layers, B, 2H): fwd last, bwd first
            merged.append(f)
        return out, merged


def decoder_rnn(cfg: ModelConfig, input_size: int) -> nn.Module:
    """The decoder's recurrence ``f``: ``decoder_layers`` GRU/LSTM layers of ``hidden_size``."""
    return CELLS[cfg.cell](
        input_size, cfg.hidden_size, num_layers=cfg.decoder_layers, batch_first=True,
        dropout=cfg.dropout if cfg.decoder_layers > 1 else 0.0,
    )


class RNNSeq2Seq(Seq2SeqModel):
    """What every RNN decoder shares: the embeddings, the :class:`Encoder`, the decoder's
    start state (the bridge), the output layer, and decoding one step at a time.

    A subclass creates its own modules in :meth:`_build_decoder` (the recurrence ``self.rnn``,
    then any attention and output layer) and defines one target step in :meth:`_step`. The
    modules are created in the order ``tgt_embedding`` (shared with the source on request),
    ``encoder``, ``bridge``, the decoder's, ``dropout``, ``generator``: parameter names and
    initialisation follow from it."""

    attentional: ClassVar[bool] = False  # whether decode_step returns attention weights

    def __init__(self, cfg: ModelConfig, src_vocab_size: int, tgt_vocab_size: int):
        super().__init__()
        self.cfg = cfg
        self.is_lstm = cfg.cell == "lstm"
        H, E, De = cfg.hidden_size, cfg.embed_size, cfg.encoder_output_size

        src_emb = nn.Embedding(src_vocab_size, E, padding_idx=PAD)
        self.tgt_embedding = src_emb if cfg.share_embeddings else nn.Embedding(
            tgt_vocab_size, E, padding_idx=PAD
        )
        self.encoder = Encoder(cfg, src_emb)
        self.dec_layers = cfg.decoder_layers
        self.layerwise_bridge = cfg.encoder_layers == cfg.decoder_layers
        self.start = cfg.decoder_start

        # s_0 = tanh(W_s x) (and the same for the LSTM cell state), x by decoder_start:
        # h_final (De), its backward half h<-_1 (De / 2), Cho's context c (De); none for final.
        bridge_in = cfg.encoder_hidden if self.start == "backward" else De
        self.bridge = nn.ModuleList(
            nn.Linear(bridge_in, H) for _ in range(0 if self.start == "final" else
                                                   2 if self.is_lstm else 1))
        self._build_decoder(cfg, E, H, De)
        self.dropout = Dropout(cfg.dropout)
        self.generator = nn.Linear(H, tgt_vocab_size)
        if cfg.tie_output:
            self.generator.weight = self.tgt_embedding.weight
        self.init_parameters(cfg.init, cfg.init_range, cfg.forget_bias, cfg.embedding_init)

    def _build_decoder(self, cfg: ModelConfig, E: int, H: int, De: int) -> None:
        """Create the decoder's modules: ``self.rnn`` first, then attention and output layer.
        E: embedding size, H: decoder hidden size, De: encoder output size."""
        raise NotImplementedError

    # ---- encoder -----------------------------------------------------------------------------

    def encode(self, src, src_len) -> State:
        values, finals = self.encoder(src, src_len)
        memory: State = {"mask": src != PAD}  # (B, S)
        memory.update(self._encode_extras(values, finals))
        for name, s0 in zip(("h0", "c0"), self._start_states(finals, memory)):
            memory[name] = s0.contiguous()  # (B, layers, H)
        return memory

    def _start_states(self, finals: list[torch.Tensor], memory: State) -> list[torch.Tensor]:
        """``s_0`` by ``decoder_start``: finals [h (, c)], each (enc_layers, B, De) -> one
        (B, dec_layers, H) per state."""
        if self.start == "summary":  # tanh(V' c), c (B, 1, De): the same for every layer
            return [torch.tanh(bridge(memory["context"])).expand(-1, self.dec_layers, -1)
                    for bridge in self.bridge]
        states = []
        for i, final in enumerate(finals):
            x = final if self.layerwise_bridge else final[-1:]  # (L, B, De), L layers used
            if self.start == "backward":
                x = x[..., self.cfg.encoder_hidden:]  # h<-_1, (L, B, De / 2)
            if self.start != "final":
                x = torch.tanh(self.bridge[i](x))  # (L, B, H)
            x = x.transpose(0, 1)  # (B, L, H)
            states.append(x if self.layerwise_bridge else x.expand(-1, self.dec_layers, -1))
        return states

    def _encode_extras(self, values: torch.Tensor, finals: list[torch.Tensor]) -> State:
        """What the decoder keeps of the annotations (B, S, De) and final states besides
        ``s_0``: nothing by default."""
        return {}

    def init_state(self, memory: State) -> State:
        state = {"h": memory["h0"]}  # (B, layers, H)
        if self.is_lstm:
            state["c"] = memory["c0"]
        state.update(self._initial_extras(memory))
        B = memory["h0"].size(0)
        state["step"] = torch.zeros(B, 1, dtype=torch.long, device=memory["h0"].device)
        return state

    def _initial_extras(self, memory: State) -> State:
        """Decoder-specific parts of the initial state: nothing by default."""
        return {}

    # ---- decoder -----------------------------------------------------------------------------

    def _rnn(self, x, state):
        """x (B, T, I) -> outputs (B, T, H), new recurrent state (B, layers, H)."""
        h = state["h"].transpose(0, 1).contiguous()  # (layers, B, H)
        if self.is_lstm:
            out, (h, c) = self.rnn(x, (h, state["c"].transpose(0, 1).contiguous()))
            return out, {"h": h.transpose(0, 1), "c": c.transpose(0, 1)}
        out, h = self.rnn(x, h)
        return out, {"h": h.transpose(0, 1)}

    def _feed_context(self, emb, context, state):
        """The Cho and Bahdanau recurrence and deep output: ``s_i = f(s_{i-1}, [E y_{i-1}; c_i])``,
        ``t_i = tanh(W_o [s_i; c_i; E y_{i-1}])``. emb (B, 1, E), context (B, 1, De)
        -> t_i (B, 1, H), new state."""
        out, new = self._rnn(torch.cat([emb, context], dim=-1), state)
        return torch.tanh(self.output_layer(torch.cat([out, context, emb], dim=-1))), new

    def _step(self, memory: State, state: State, emb: torch.Tensor
              ) -> tuple[torch.Tensor, State, torch.Tensor | None]:
        """One target step at position ``state['step']`` (B, 1). emb (B, 1, E) -> output
        vector (B, 1, H), new state (without ``step``), weights (B, 1, S) or None."""
        raise NotImplementedError

    def _advance(self, memory, state, emb):
        """:meth:`_step`, then move on to the next target position."""
        t, new, weights = self._step(memory, state, emb)
        new["step"] = state["step"] + 1
        return t, new, weights

    def decode_step(self, memory, state, prev, need_attention=True):
        emb = self.tgt_embedding(prev).unsqueeze(1)  # (B, 1, E)
        t, state, weights = self._advance(memory, state, emb)
        log_probs = log_softmax_(self.project(t[:, 0]))  # (B, V)
        return log_probs, state, (weights[:, 0] if weights is not None else None)

    def features(self, src, src_len, tgt_in):
        memory = self.encode(src, src_len)
        state = self.init_state(memory)
        emb = self.dropout(self.tgt_embedding(tgt_in))  # (B, T, E)
        return self.dropout(self._teacher_forced(memory, state, emb))  # (B, T, H)

    def _teacher_forced(self, memory, state, emb):
        """emb (B, T, E) -> the output vectors of every step (B, T, H), one step at a time."""
        steps = []
        for i in range(emb.size(1)):
            t, state, _ = self._advance(memory, state, emb[:, i : i + 1])
            steps.append(t)
        return torch.cat(steps, dim=1)  # (B, T, H)


class AttentionalRNN(RNNSeq2Seq):
    """The parts of the decoders with an attention model (``self.attention``)."""

    attentional = True

    def _build_attention(self, cfg: ModelConfig, H: int, De: int) -> None:
        self.attention = build_attention(H, De, cfg.attention)
        self.multi_head = isinstance(self.attention, MultiHeadAttention)

    def set_hard_attention(self, hard: bool) -> None:
        """Attend only to the argmax position at inference (soft attention in training)."""
        self.attention.hard = hard

    def _encode_extras(self, values, finals):
        """The annotations h_j as values (B, S, De) and their projected keys."""
        if self.multi_head:  # the projected keys hold the per-head values: (B, 2h, S, d_k)
            return {"keys": self.attention.project_keys(values)}
        return {"values": values, "keys": self.attention.project_keys(values)}

    def _attend(self, memory, query, positions):
        """query (B, T, H), positions (B, T) target steps -> context (B, T, De), weights
        (B, T, S). Multi-head attention is global (the config checks it): no positions."""
        if self.multi_head:
            return self.attention(query, memory["keys"], mask=memory["mask"])
        return self.attention(query, memory["keys"], memory["values"], memory["mask"], positions)


@DECODERS.implements(choices.Sutskever)
class SutskeverRNN(RNNSeq2Seq):
    """``h_t = f(h_{t-1}, E y_{t-1})``; predict from ``h_t`` (Sutskever et al. 2014)."""

    def _build_decoder(self, cfg, E, H, De):
        self.rnn = decoder_rnn(cfg, E)

    def _step(self, memory, state, emb):
        t, new = self._rnn(emb, state)
        return t, new, None

    def _teacher_forced(self, memory, state, emb):
        # No dependence between steps except through the RNN: run it over the whole target.
        out, _ = self._rnn(emb, state)  # (B, T, H)
        return out


@DECODERS.implements(choices.Cho)
class ChoRNN(RNNSeq2Seq):
    """A fixed context ``c = tanh(V h_final)``; ``s_i = f(s_{i-1}, [E y_{i-1}; c])``; predict
    from ``t_i = tanh(W_o [s_i; c; E y_{i-1}])`` (Cho et al. 2014, eqs. 5-8, tanh for maxout)."""

    def _build_decoder(self, cfg, E, H, De):
        self.summary = nn.Linear(De, De)  # c = tanh(V h_final)
        self.rnn = decoder_rnn(cfg, E + De)
        self.output_layer = nn.Linear(H + De + E, H)  # deep output t_i

    def _encode_extras(self, values, finals):
        # c from the top layer's final state: (B, 1, De)
        return {"context": torch.tanh(self.summary(finals[0][-1])).unsqueeze(1)}

    def _step(self, memory, state, emb):
        t, new = self._feed_context(emb, memory["context"], state)
        return t, new, None


@DECODERS.implements(choices.Bahdanau)
class BahdanauRNN(AttentionalRNN):
    """``c_i`` attends from the *previous* state ``s_{i-1}``;
    ``s_i = f(s_{i-1}, [E y_{i-1}; c_i])``; ``t_i = tanh(W_o [s_i; c_i; E y_{i-1}])``, i.e.
    ``p(y_i) = g(y_{i-1}, s_i, c_i)`` of eq. 4 (Bahdanau et al. 2014)."""

    def _build_decoder(self, cfg, E, H, De):
        self.rnn = decoder_rnn(cfg, E + De)
        self._build_attention(cfg, H, De)
        self.output_layer = nn.Linear(H + De + E, H)  # deep output t_i

    def _step(self, memory, state, emb):
        query = state["h"][:, -1:]  # s_{i-1}, top layer: (B, 1, H)
        context, weights = self._attend(memory, query, state["step"])  # (B, 1, De)
        t, new = self._feed_context(emb, context, state)
        return t, new, weights


@DECODERS.implements(choices.Luong)
class LuongRNN(AttentionalRNN):
    """``h_t = f(h_{t-1}, [E y_{t-1}; h~_{t-1}])`` (input feeding, optional), ``c_t`` attends
    from the *current* state, ``h~_t = tanh(W_c [c_t; h_t])`` (Luong et al. 2015, eq. 5)."""

    def _build_decoder(self, cfg, E, H, De):
        self.input_feeding = cfg.attention.input_feeding
        self.rnn = decoder_rnn(cfg, E + (H if self.input_feeding else 0))
        self._build_attention(cfg, H, De)
        self.output_layer = nn.Linear(De + H, H, bias=False)  # W_c

    def _initial_extras(self, memory):
        if not self.input_feeding:
            return {}
        h0 = memory["h0"]
        return {"feed": h0.new_zeros(h0.size(0), self.cfg.hidden_size)}  # h~_0 = 0

    def _attentional_vector(self, memory, out, positions):
        """h_t (B, T, H) -> h~_t (B, T, H), weights (B, T, S)."""
        context, weights = self._attend(memory, out, positions)  # attend with h_t
        return torch.tanh(self.output_layer(torch.cat([context, out], dim=-1))), weights

    def _step(self, memory, state, emb):
        x = torch.cat([emb, state["feed"].unsqueeze(1)], dim=-1) if self.input_feeding else emb
        out, new = self._rnn(x, state)
        t, weights = self._attentional_vector(memory, out, state["step"])  # h~_t
        if self.input_feeding:
            new["feed"] = self.dropout(t[:, 0])
        return t, new, weights

    def _teacher_forced(self, memory, state, emb):
        if self.input_feeding:
            return super()._teacher_forced(memory, state, emb)
        # Without input feeding the steps depend on each other only through the RNN: run it
        # over the whole target, then attend from every h_t at once.
        out, _ = self._rnn(emb, state)  # (B, T, H)
        B, T = emb.shape[:2]
        positions = torch.arange(T, device=emb.device).expand(B, T)
        return self._attentional_vector(memory, out, positions)[0]


@ARCHITECTURES.implements(choices.RNNArchitecture)
def build_rnn(cfg: ModelConfig, src_vocab_size: int, tgt_vocab_size: int) -> RNNSeq2Seq:
    """The recurrent model with the decoder that ``cfg.decoder`` names."""
    return DECODERS.implementation(cfg.decoder)(cfg, src_vocab_size, tgt_vocab_size)
