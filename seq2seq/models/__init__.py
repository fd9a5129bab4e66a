"""Model families behind one interface (:class:`seq2seq.models.base.Seq2SeqModel`)."""

from __future__ import annotations

from seq2seq.config import ModelConfig
from seq2seq.models.base import Seq2SeqModel, State, select
from seq2seq.models.rnn import RNNSeq2Seq
from seq2seq.models.transformer import Transformer

ARCHITECTURES: dict[str, type[Seq2SeqModel]] = {"rnn": RNNSeq2Seq, "transformer": Transformer}


def build_model(cfg: ModelConfig, src_vocab_size: int, tgt_vocab_size: int) -> Seq2SeqModel:
    return ARCHITECTURES[cfg.arch](cfg, src_vocab_size, tgt_vocab_size)


__all__ = ["ARCHITECTURES", "Seq2SeqModel", "State", "build_model", "select"]
