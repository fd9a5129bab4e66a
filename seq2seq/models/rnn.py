"""The recurrent encoder-decoder with attention (Bahdanau et al. 2014; Luong et al. 2015).

Encoder: embeddings -> (bi)GRU/LSTM over the packed source -> annotations ``h_j`` (B, S, De),
``De = 2 * encoder_hidden`` when bidirectional. The decoder's initial state is
``s_0 = tanh(W_s [h_fwd_last; h_bwd_first])`` for every layer (Bahdanau et al. 2014, A.2.2).

Decoder styles (``model.attention.style``):

* ``bahdanau``: attend with the *previous* state ``s_{i-1}``, feed the context into the recurrent
  update ``s_i = f(s_{i-1}, [E y_{i-1}; c_i])`` and predict from the deep output
  ``t_i = tanh(W_o [s_i; c_i; E y_{i-1}])`` (the paper uses a maxout unit here).
* ``luong``: ``h_t = f(h_{t-1}, [E y_{t-1}; h~_{t-1}])`` (input feeding, optional), attend with
  the *current* state, ``h~_t = tanh(W_c [c_t; h_t])`` (Luong et al. 2015, eq. 5). Without input
  feeding the recurrence runs over the whole target at once in training.

The output layer is ``softmax(W_out t_i)``; ``W_out`` is tied to the target embedding on request.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seq2seq.attention import Attention, build_score
from seq2seq.config import ModelConfig
from seq2seq.models.base import Seq2SeqModel, State
from seq2seq.vocab import PAD

CELLS = {"gru": nn.GRU, "lstm": nn.LSTM}


class Encoder(nn.Module):
    def __init__(self, cfg: ModelConfig, embedding: nn.Embedding):
        super().__init__()
        self.embedding = embedding
        self.bidirectional = cfg.bidirectional
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
        """src (B, S) -> annotations (B, S, De), final states per layer (layers, B, De) [h, c]."""
        x = self.dropout(self.embedding(src))  # (B, S, E)
        packed = pack_padded_sequence(x, src_len.cpu(), batch_first=True, enforce_sorted=False)
        out, final = self.rnn(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=src.size(1))
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
        att = cfg.attention
        self.style = att.style
        self.input_feeding = att.input_feeding and att.style == "luong"
        self.is_lstm = cfg.cell == "lstm"
        H, E = cfg.hidden_size, cfg.embed_size

        src_emb = nn.Embedding(src_vocab_size, E, padding_idx=PAD)
        self.tgt_embedding = src_emb if cfg.share_embeddings else nn.Embedding(
            tgt_vocab_size, E, padding_idx=PAD
        )
        self.encoder = Encoder(cfg, src_emb)
        De = self.encoder.output_size
        self.dec_layers = cfg.decoder_layers

        # s_0 = tanh(W_s h_enc) for each decoder layer (and cell for LSTM).
        n_bridge = 2 if self.is_lstm else 1
        self.bridge = nn.ModuleList(nn.Linear(De, H) for _ in range(n_bridge))

        rnn_in = E + (De if self.style == "bahdanau" else 0) + (H if self.input_feeding else 0)
        self.rnn = CELLS[cfg.cell](
            rnn_in, H, num_layers=cfg.decoder_layers, batch_first=True,
            dropout=cfg.dropout if cfg.decoder_layers > 1 else 0.0,
        )
        self.attention = Attention(build_score(att.score, H, De, att.hidden_size or H))
        out_in = H + De + (E if self.style == "bahdanau" else 0)
        self.output_layer = nn.Linear(out_in, H, bias=self.style == "bahdanau")
        self.dropout = nn.Dropout(cfg.dropout)
        self.generator = nn.Linear(H, tgt_vocab_size)
        if cfg.tie_output:
            self.generator.weight = self.tgt_embedding.weight
        self._init_parameters()

    def _init_parameters(self):
        for name, p in self.named_parameters():
            if "embedding" in name:
                nn.init.normal_(p, 0.0, p.size(1) ** -0.5)
                with torch.no_grad():
                    p[PAD].zero_()
            elif p.dim() > 1:
                nn.init.xavier_uniform_(p)
            else:
                nn.init.zeros_(p)

    # ---- encoder -----------------------------------------------------------------------------

    def encode(self, src, src_len) -> State:
        values, finals = self.encoder(src, src_len)
        mask = src != PAD  # (B, S)
        memory = {"values": values, "keys": self.attention.project_keys(values), "mask": mask}
        # Initial decoder state from the encoder's last layer, the same for each decoder layer.
        for name, final, bridge in zip(("h0", "c0"), finals, self.bridge):
            s0 = torch.tanh(bridge(final[-1]))  # (B, H)
            memory[name] = s0.unsqueeze(1).expand(-1, self.dec_layers, -1).contiguous()
        return memory

    def init_state(self, memory: State) -> State:
        state = {"h": memory["h0"]}  # (B, layers, H)
        if self.is_lstm:
            state["c"] = memory["c0"]
        if self.input_feeding:
            B = memory["h0"].size(0)
            state["feed"] = memory["h0"].new_zeros(B, self.cfg.hidden_size)
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

    def _step(self, memory, state, emb):
        """One target step. emb (B, 1, E) -> output vector (B, 1, H), state, weights (B, 1, S)."""
        keys, values, mask = memory["keys"], memory["values"], memory["mask"]
        if self.style == "bahdanau":
            query = state["h"][:, -1:]  # s_{i-1}, top layer: (B, 1, H)
            context, weights = self.attention(query, keys, values, mask)  # (B, 1, De)
            out, new = self._rnn(torch.cat([emb, context], dim=-1), state)
            t = torch.tanh(self.output_layer(torch.cat([out, context, emb], dim=-1)))
            return t, new, weights
        x = torch.cat([emb, state["feed"].unsqueeze(1)], dim=-1) if self.input_feeding else emb
        out, new = self._rnn(x, state)
        context, weights = self.attention(out, keys, values, mask)  # attend with h_t
        h_tilde = torch.tanh(self.output_layer(torch.cat([context, out], dim=-1)))
        if self.input_feeding:
            new["feed"] = self.dropout(h_tilde[:, 0])
        return h_tilde, new, weights

    def decode_step(self, memory, state, prev):
        emb = self.tgt_embedding(prev).unsqueeze(1)  # (B, 1, E)
        t, state, weights = self._step(memory, state, emb)
        log_probs = F.log_softmax(self.project(t[:, 0]), dim=-1)  # (B, V)
        return log_probs, state, weights[:, 0]

    def project(self, features):
        return self.generator(features)

    def features(self, src, src_len, tgt_in):
        memory = self.encode(src, src_len)
        state = self.init_state(memory)
        emb = self.dropout(self.tgt_embedding(tgt_in))  # (B, T, E)
        if self.style == "luong" and not self.input_feeding:
            # No dependence between steps except through the RNN: run it over the whole target.
            out, _ = self._rnn(emb, state)
            context, _ = self.attention(out, memory["keys"], memory["values"], memory["mask"])
            outputs = torch.tanh(self.output_layer(torch.cat([context, out], dim=-1)))
        else:
            steps = []
            for i in range(tgt_in.size(1)):
                t, state, _ = self._step(memory, state, emb[:, i : i + 1])
                steps.append(t)
            outputs = torch.cat(steps, dim=1)  # (B, T, H)
        return self.dropout(outputs)  # (B, T, H)
