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
import itertools
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import sentencepiece as spm

from seq2seq.config import VocabConfig
from seq2seq.errors import CheckpointError, DataError, one_line
from seq2seq.special import BOS, EOS, PAD, UNK

__all__ = ["BOS", "EOS", "PAD", "UNK", "Vocab", "cache_root", "train_or_load",
           "train_or_load_stream"]


def cache_root() -> Path:
    env = os.environ.get("SEQ2SEQ_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "seq2seq"


@contextmanager
def building(entry: Path) -> Iterator[None]:
    """Hold an exclusive lock while a cache entry (a directory) is built: processes that want
    the same entry (the ranks of a distributed run, two runs started together) wait for the
    first to finish and then find it built, instead of each building it. A lock file beside the
    entry, ``flock``-ed (released by the system if the holder dies)."""
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        lock = open(entry.parent / f".{entry.name}.lock", "w")  # noqa: SIM115
    except OSError as e:
        raise DataError(f"cannot use the cache directory {entry.parent}: {one_line(e)} "
                        f"(SEQ2SEQ_CACHE names another; it is {cache_root()})") from None
    with lock as f:
        try:
            import fcntl
        except ImportError:  # not a POSIX system: build without waiting (renames stay atomic)
            fcntl = None
        if fcntl is not None:
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


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


# SentencePiece trains in a child process: its peak (about 1.6 GB for a million lines of 70
# characters) and the memory glibc keeps after it never add to the training process's own.
_TRAINER = ("import json, sys, sentencepiece as spm; "
            "spm.SentencePieceTrainer.train(**json.loads(sys.argv[1]))")


def _train_spm(lines: Sequence[str], prefix: Path, cfg: VocabConfig) -> None:
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", suffix=".txt", delete=False) as f:
        for line in lines:
            if line:
                f.write(line.replace("\n", " ") + "\n")
        text_path = f.name
    del lines  # the caller's sample is no longer needed while SentencePiece trains
    settings = dict(
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
    try:
        done = subprocess.run([sys.executable, "-c", _TRAINER, json.dumps(settings)],
                              capture_output=True, text=True)
    finally:
        os.unlink(text_path)
    if done.returncode != 0:
        said = [line for line in done.stderr.splitlines() if line.strip()]
        why = said[-1] if said else f"exit status {done.returncode}"
        raise DataError(f"SentencePiece training failed: {one_line(why)}")


def _key(cfg: VocabConfig, data_key: str, sides: Sequence[str]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(
        [cfg.type, cfg.size, cfg.character_coverage, cfg.max_train_sentences, spm.__version__,
         data_key, list(sides)]
    ).encode())
    return h.hexdigest()[:20]


def text_key(lines_by_side: dict[str, Sequence[str]]) -> str:
    """A hash of in-memory text, side by side (the data key of :func:`train_or_load`)."""
    h = hashlib.sha256()
    for side, lines in lines_by_side.items():
        h.update(f"\x00{side}\x00".encode())
        for line in lines:
            h.update(line.encode("utf-8"))
            h.update(b"\n")
    return h.hexdigest()


def sample_lines(lines: Iterable[str], n: int, seed: int = 0) -> list[str]:
    """A uniform random sample of ``n`` of the non-empty ``lines`` (all of them when there are
    no more than ``n``), in their original order; reservoir sampling, so only the sample is
    ever held in memory."""
    rng = random.Random(seed)
    keep: list[tuple[int, str]] = []
    seen = 0
    for line in lines:
        if not line:
            continue
        if seen < n:
            keep.append((seen, line))
        else:
            j = rng.randrange(seen + 1)
            if j < n:
                keep[j] = (seen, line)
        seen += 1
    keep.sort()
    return [line for _, line in keep]


def train_or_load(cfg: VocabConfig, src_lines: Sequence[str], tgt_lines: Sequence[str]
                  ) -> tuple[Vocab, Vocab]:
    """:func:`train_or_load_stream` for text in memory."""
    text = {"src": src_lines, "tgt": tgt_lines}
    return train_or_load_stream(cfg, text.__getitem__, text_key(text))


def train_or_load_stream(cfg: VocabConfig, lines: Callable[[str], Iterable[str]], data_key: str
                         ) -> tuple[Vocab, Vocab]:
    """Train (or take from the cache) the SentencePiece model(s). The vocabularies read the
    cached files; a run directory gets its copies through
    :meth:`seq2seq.run.RunDir.install_vocabularies`.

    ``lines(side)`` iterates the training text of a side (``"src"`` or ``"tgt"``); a joint model
    reads both. The model is trained on a random sample of at most ``vocab.max_train_sentences``
    non-empty lines (:func:`sample_lines`: all of them, in order, when there are fewer), so a
    large corpus is never held in memory. ``data_key`` names the text (a hash of the data);
    the cache key adds the settings.

    Returns ``(src_vocab, tgt_vocab)``; with a joint vocabulary both are the same object."""
    sides = {"joint": ("src", "tgt")} if cfg.joint else {"src": ("src",), "tgt": ("tgt",)}
    vocabs = {}
    for name, parts in sides.items():
        cached = cache_root() / "spm" / _key(cfg, data_key, parts) / "spm.model"
        if not cached.is_file():
            with building(cached.parent):
                if not cached.is_file():  # not built by another process meanwhile
                    _train_into(cached, lines, parts, cfg)
        vocabs[name] = Vocab(cached)
    if cfg.joint:
        return vocabs["joint"], vocabs["joint"]
    return vocabs["src"], vocabs["tgt"]


def _train_into(cached: Path, lines: Callable[[str], Iterable[str]], parts: Sequence[str],
                cfg: VocabConfig) -> None:
    """Train into a private temporary directory, then rename: no process ever sees a
    half-written model."""
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cached.parent.parent))
    try:
        text = itertools.chain.from_iterable(lines(side) for side in parts)
        _train_spm(sample_lines(text, cfg.max_train_sentences), tmp / "spm", cfg)
        os.replace(tmp / "spm.model", cached)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
