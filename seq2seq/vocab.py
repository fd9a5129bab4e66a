"""Subword vocabulary: SentencePiece models trained on the training split.

A joint model (one vocabulary for both languages) or one model per language, unigram or BPE.
Trained models are cached under ``$SEQ2SEQ_CACHE`` (default ``~/.cache/seq2seq``) keyed by a hash of
the training text and the settings, so an unchanged setup reuses them; training copies them into
the run directory (``seq2seq/run.py``) so that ``eval`` and ``translate`` need nothing but the
run.

Every vocabulary uses the special ids of ``seq2seq/special.py``: pad 0, unk 1, bos 2, eos 3.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import sentencepiece as spm

from seq2seq.config import VocabConfig
from seq2seq.errors import CheckpointError, DataError, one_line
from seq2seq.special import BOS, EOS, PAD, UNK

__all__ = ["BOS", "EOS", "PAD", "UNK", "Vocab", "cache_root", "train_or_load"]


def cache_root() -> Path:
    env = os.environ.get("SEQ2SEQ_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "seq2seq"


class Vocab:
    """One SentencePiece model: text <-> ids, with pad/unk/bos/eos at 0/1/2/3."""

    def __init__(self, model_path: Path):
        self.path = Path(model_path)
        if not self.path.is_file():
            raise CheckpointError(f"vocabulary model not found: {self.path}")
        try:
            self.sp = spm.SentencePieceProcessor(model_file=str(self.path))
        except (RuntimeError, OSError) as e:
            msg = f"{self.path}: not a SentencePiece model ({one_line(e)})"
            raise CheckpointError(msg) from None
        if (self.sp.pad_id(), self.sp.unk_id(), self.sp.bos_id(), self.sp.eos_id()) != (
            PAD, UNK, BOS, EOS,
        ):
            raise CheckpointError(f"{self.path}: special ids are not pad 0, unk 1, bos 2, eos 3")

    def __len__(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, lines: Sequence[str]) -> list[list[int]]:
        """Subword ids, without bos/eos."""
        return self.sp.encode(list(lines), out_type=int)

    def decode(self, ids: Sequence[Sequence[int]]) -> list[str]:
        """Detokenized text; ids after the first eos and special ids are dropped."""
        return self.sp.decode([_strip(seq) for seq in ids])

    def pieces(self, ids: Sequence[int]) -> list[str]:
        return [self.sp.id_to_piece(int(i)) for i in _strip(ids)]


def _strip(seq: Sequence[int]) -> list[int]:
    out = []
    for i in seq:
        i = int(i)
        if i == EOS:
            break
        if i > EOS or i == UNK:
            out.append(i)
    return out


def _train_spm(lines: Sequence[str], prefix: Path, cfg: VocabConfig) -> None:
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", suffix=".txt", delete=False) as f:
        for line in lines:
            if line:
                f.write(line.replace("\n", " ") + "\n")
        text_path = f.name
    try:
        spm.SentencePieceTrainer.train(
            input=text_path,
            model_prefix=str(prefix),
            vocab_size=cfg.size,
            model_type=cfg.type,
            character_coverage=cfg.character_coverage,
            input_sentence_size=cfg.max_train_sentences,
            shuffle_input_sentence=True,
            pad_id=PAD, unk_id=UNK, bos_id=BOS, eos_id=EOS,
            hard_vocab_limit=False,  # small corpora: a smaller vocabulary instead of an error
            num_threads=os.cpu_count() or 1,
            minloglevel=2,
        )
    except RuntimeError as e:
        raise DataError(f"SentencePiece training failed: {one_line(e)}") from None
    finally:
        os.unlink(text_path)


def _key(lines_by_side: Sequence[Sequence[str]], cfg: VocabConfig) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(
        [cfg.type, cfg.size, cfg.character_coverage, cfg.max_train_sentences, spm.__version__]
    ).encode())
    for lines in lines_by_side:
        h.update(b"\x00side\x00")
        for line in lines:
            h.update(line.encode("utf-8"))
            h.update(b"\n")
    return h.hexdigest()[:20]


def train_or_load(cfg: VocabConfig, src_lines: Sequence[str], tgt_lines: Sequence[str]
                  ) -> tuple[Vocab, Vocab]:
    """Train (or take from the cache) the SentencePiece model(s). The vocabularies read the
    cached files; a run directory gets its copies through
    :meth:`seq2seq.run.RunDir.install_vocabularies`.

    Returns ``(src_vocab, tgt_vocab)``; with a joint vocabulary both are the same object."""
    if cfg.joint:
        sides = {"joint": [src_lines, tgt_lines]}
    else:
        sides = {"src": [src_lines], "tgt": [tgt_lines]}
    vocabs = {}
    for name, parts in sides.items():
        key = _key(parts, cfg)
        cached = cache_root() / "spm" / key / "spm.model"
        if not cached.is_file():
            cached.parent.mkdir(parents=True, exist_ok=True)
            # Train into a private temporary directory, then rename: concurrent runs never see
            # a half-written model.
            tmp = Path(tempfile.mkdtemp(dir=cached.parent.parent))
            try:
                _train_spm([line for part in parts for line in part], tmp / "spm", cfg)
                os.replace(tmp / "spm.model", cached)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        vocabs[name] = Vocab(cached)
    if cfg.joint:
        return vocabs["joint"], vocabs["joint"]
    return vocabs["src"], vocabs["tgt"]
