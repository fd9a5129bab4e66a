"""The recurrent encoder-decoder, with and without attention.

Encoder: embeddings -> (bi)GRU/LSTM over the packed source -> annotations ``h_j`` (B, S, De),
``De = 2 * encoder_hidden`` when bidirectional; the final states of each layer, with both
directions concatenated, summarise the sentence. With ``reverse_source`` the encoder reads each
sentence backwards (Sutskever et al. 2014); its annotations are put back in source order so that
attention weights always refer to source positions.

The decoder's initial state is ``s_0 = tanh(W_s h_final)`` per layer (Bahdanau et al. 2014,
A.2.2), from the matching encoder layer when the layer counts agree, else from the top one.

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
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seq2seq.attention import build_attention
from seq2seq.config import ModelConfig
from seq2seq.models.base import Seq2SeqModel, State
from seq2seq.vocab import PAD

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
    def __init__(self, cfg: ModelConfig, embedding: nn.Embedding):
        super().__init__()
        self.embedding = embedding
        self.bidirectional = cfg.bidirectional
        self.reverse = cfg.reverse_source
        self.layers = cfg.encoder_layers
        self.hidden = cfg.encoder_hidden_size or (
            cfg.hidden_size // 2 if cfg.bidirectional else cfg.hidden_size
        )
        self.rnn = CELLS[cfg.cell](
            cfg.embed_size, self.hidden, num_layers=cfg.encoder_layers, batch_first=True,
            bidirectional=cfg.bidirectional,
            dropout=cfg.dropout if cfg.encoder_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(cfg.dropout)
        self.output_size = self.hidden * (2 if cfg.bidirectional else 1)

    def forward(self, src, src_len):
        """src (B, S) -> annotations (B, S, De), final states [h (, c)], each (layers, B, De)."""
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


class RNNSeq2Seq(Seq2SeqModel):
    def __init__(self, cfg: ModelConfig, src_vocab_size: int, tgt_vocab_size: int):
        super().__init__()
        self.cfg = cfg
        self.kind = cfg.decoder
        self.attentional = cfg.decoder in ("bahdanau", "luong")
        self.input_feeding = cfg.attention.input_feeding and cfg.decoder == "luong"
        self.is_lstm = cfg.cell == "lstm"
        H, E = cfg.hidden_size, cfg.embed_size

        src_emb = nn.Embedding(src_vocab_size, E, padding_idx=PAD)
        self.tgt_embedding = src_emb if cfg.share_embeddings else nn.Embedding(
            tgt_vocab_size, E, padding_idx=PAD
        )
        self.encoder = Encoder(cfg, src_emb)
        De = self.encoder.output_size
        self.dec_layers = cfg.decoder_layers
        self.layerwise_bridge = cfg.encoder_layers == cfg.decoder_layers

        # s_0 = tanh(W_s h_final) (and the same for the LSTM cell state).
        self.bridge = nn.ModuleList(nn.Linear(De, H) for _ in range(2 if self.is_lstm else 1))
        if self.kind == "cho":
            self.summary = nn.Linear(De, De)  # c = tanh(V h_final)

        context_in = De if self.kind in ("bahdanau", "cho") else 0
        rnn_in = E + context_in + (H if self.input_feeding else 0)
        self.rnn = CELLS[cfg.cell](
            rnn_in, H, num_layers=cfg.decoder_layers, batch_first=True,
            dropout=cfg.dropout if cfg.decoder_layers > 1 else 0.0,
        )
        if self.attentional:
            self.attention = build_attention(H, De, cfg.attention)
        if self.kind in ("bahdanau", "cho"):
            self.output_layer = nn.Linear(H + De + E, H)  # deep output t_i
        elif self.kind == "luong":
            self.output_layer = nn.Linear(De + H, H, bias=False)  # W_c
        self.dropout = nn.Dropout(cfg.dropout)
        self.generator = nn.Linear(H, tgt_vocab_size)
        if cfg.tie_output:
            self.generator.weight = self.tgt_embedding.weight
        self.init_parameters()

    def set_hard_attention(self, hard: bool) -> None:
        """Attend only to the argmax position at inference (soft attention in training)."""
        if self.attentional:
            self.attention.hard = hard

    # ---- encoder -----------------------------------------------------------------------------

    def encode(self, src, src_len) -> State:
        values, finals = self.encoder(src, src_len)
        memory: State = {"mask": src != PAD}  # (B, S)
        if self.attentional:
            memory["values"] = values  # (B, S, De)
            memory["keys"] = self.attention.project_keys(values)
        if self.kind == "cho":
            memory["context"] = torch.tanh(self.summary(finals[0][-1])).unsqueeze(1)  # (B, 1, De)
        for name, final, bridge in zip(("h0", "c0"), finals, self.bridge):
            if self.layerwise_bridge:
                s0 = torch.tanh(bridge(final)).transpose(0, 1)  # (B, layers, H)
            else:
                s0 = torch.tanh(bridge(final[-1])).unsqueeze(1).expand(-1, self.dec_layers, -1)
            memory[name] = s0.contiguous()
        return memory

    def init_state(self, memory: State) -> State:
        state = {"h": memory["h0"]}  # (B, layers, H)
        if self.is_lstm:
            state["c"] = memory["c0"]
        B = memory["h0"].size(0)
        if self.input_feeding:
            state["feed"] = memory["h0"].new_zeros(B, self.cfg.hidden_size)
        state["step"] = torch.zeros(B, 1, dtype=torch.long, device=memory["h0"].device)
        return state

    # ---- decoder -----------------------------------------------------------------------------

    def _rnn(self, x, state):
        """x (B, T, I) -> outputs (B, T, H), new recurrent state (B, layers, H)."""
        h = state["h"].transpose(0, 1).contiguous()  # (layers, B, H)
        if self.is_lstm:
            out, (h, c) = self.rnn(x, (h, state["c"].transpose(0, 1).contiguous()))
            return out, {"h": h.transpose(0, 1), "c": c.transpose(0, 1)}
        out, h = self.rnn(x, h)
        return out, {"h": h.transpose(0, 1)}

    def _attend(self, memory, query, positions):
        return self.attention(query, memory["keys"], memory["values"], memory["mask"], positions)

    def _step(self, memory, state, emb):
        """One target step. emb (B, 1, E) -> output vector (B, 1, H), state, weights (B, 1, S)."""
        step = state["step"]  # (B, 1) target position t
        weights = None
        if self.kind in ("bahdanau", "cho"):
            if self.kind == "bahdanau":
                query = state["h"][:, -1:]  # s_{i-1}, top layer: (B, 1, H)
                context, weights = self._attend(memory, query, step)  # (B, 1, De)
            else:
                context = memory["context"]
            out, new = self._rnn(torch.cat([emb, context], dim=-1), state)
            t = torch.tanh(self.output_layer(torch.cat([out, context, emb], dim=-1)))
        elif self.kind == "sutskever":
            t, new = self._rnn(emb, state)
        else:  # luong
            x = torch.cat([emb, state["feed"].unsqueeze(1)], dim=-1) if self.input_feeding else emb
            out, new = self._rnn(x, state)
            context, weights = self._attend(memory, out, step)  # attend with h_t
            t = torch.tanh(self.output_layer(torch.cat([context, out], dim=-1)))  # h~_t
            if self.input_feeding:
                new["feed"] = self.dropout(t[:, 0])
        new["step"] = step + 1
        return t, new, weights

    def decode_step(self, memory, state, prev, need_attention=True):
        emb = self.tgt_embedding(prev).unsqueeze(1)  # (B, 1, E)
        t, state, weights = self._step(memory, state, emb)
        log_probs = F.log_softmax(self.project(t[:, 0]), dim=-1)  # (B, V)
        return log_probs, state, (weights[:, 0] if weights is not None else None)

    def project(self, features):
        return self.generator(features)

    def features(self, src, src_len, tgt_in):
        memory = self.encode(src, src_len)
        state = self.init_state(memory)
        emb = self.dropout(self.tgt_embedding(tgt_in))  # (B, T, E)
        T = tgt_in.size(1)
        if self.kind == "sutskever" or (self.kind == "luong" and not self.input_feeding):
            # No dependence between steps except through the RNN: run it over the whole target.
            out, _ = self._rnn(emb, state)  # (B, T, H)
            if self.kind == "sutskever":
                outputs = out
            else:
                positions = torch.arange(T, device=src.device).expand(src.size(0), T)
                context, _ = self._attend(memory, out, positions)
                outputs = torch.tanh(self.output_layer(torch.cat([context, out], dim=-1)))
        else:
            steps = []
            for i in range(T):
                t, state, _ = self._step(memory, state, emb[:, i : i + 1])
                steps.append(t)
            outputs = torch.cat(steps, dim=1)  # (B, T, H)
        return self.dropout(outputs)  # (B, T, H)
