"""Model families behind one interface (:class:`seq2seq.models.base.Seq2SeqModel`).

Each family binds itself to its choice in :data:`seq2seq.choices.ARCHITECTURES` when its module is
imported (the RNN family then picks its decoder from :data:`seq2seq.choices.DECODERS`);
:func:`build_model` builds the one the config names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from seq2seq.choices import ARCHITECTURES
from seq2seq.models import rnn, transformer  # noqa: F401  (bind the implementations)
from seq2seq.models.base import Seq2SeqModel, State, select

if TYPE_CHECKING:
    from seq2seq.config import ModelConfig


def build_model(cfg: ModelConfig, src_vocab_size: int, tgt_vocab_size: int) -> Seq2SeqModel:
    """The model ``cfg.arch`` names, with freshly initialised parameters. The section is
    validated first (a config built in Python need not have come through ``load_config``), so
    a misfit is a one-line ConfigError, not a shape error deep in torch."""
    cfg.validate()
    return ARCHITECTURES.implementation(cfg.arch)(cfg, src_vocab_size, tgt_vocab_size)


__all__ = ["Seq2SeqModel", "State", "build_model", "select"]
