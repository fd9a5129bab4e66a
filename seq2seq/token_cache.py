"""The token cache: a split encoded once into compact arrays, memory-mapped from disk.

A split's pairs are read one at a time (:func:`seq2seq.data.pairs`), encoded in chunks of
:data:`CHUNK` pairs (SentencePiece encodes a chunk on all cores) and written as four flat
arrays: each side's token ids back to back, in the smallest unsigned type that holds the
vocabulary (``uint16`` up to 65,536 subwords, else ``uint32``), and the ``int64`` offsets where
its sentences start (one more than the pairs), so that sentence ``i`` is
``ids[offsets[i]:offsets[i + 1]]``. Nothing of the corpus is kept as Python objects: training
maps the arrays (the operating system pages in what a batch reads) and batches from the
lengths alone (:class:`seq2seq.batching.TrainBatches`).

An entry lives in ``<cache>/tokens/<key>/`` (``<cache>`` is ``$SEQ2SEQ_CACHE``, default
``~/.cache/seq2seq``, beside the SentencePiece models). The key hashes what the arrays depend on:
the data (the bytes of its files; for the hub, the ``datasets`` fingerprint of the split, or its
name with ``data.streaming``), the vocabularies' model files, ``data.max_sentences`` and the
cache format. A second run with the same data and vocabularies maps the arrays and starts at
once; a change to either gives a new key and a new entry. An entry is written into a temporary
directory beside it and renamed into place, so a killed encoding leaves nothing half-written.
``seq2seq cache`` shows the cache, ``seq2seq cache --clear`` deletes it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import mmap
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from seq2seq.config import DataConfig
from seq2seq.data import open_hub, pairs, split_files
from seq2seq.errors import DataError, one_line
from seq2seq.vocab import Vocab, building, cache_root

FORMAT = 1  # bump when the layout of an entry changes
CHUNK = 50_000  # pairs encoded at a time
SIDES = ("src", "tgt")


@dataclass
class EncodedSplit:
    """A split's pairs as token ids: per side the ids back to back and the offsets of the
    sentences (arrays in memory, or mapped from a cache entry)."""

    src_ids: np.ndarray
    src_offsets: np.ndarray  # (n + 1,) int64
    tgt_ids: np.ndarray
    tgt_offsets: np.ndarray
    directory: Path | None = None  # the cache entry, if mapped from one
    maps: list[mmap.mmap] = field(default_factory=list)  # the mapped files of the entry

    def __len__(self) -> int:
        return len(self.src_offsets) - 1

    def lengths(self) -> tuple[np.ndarray, np.ndarray]:
        """(n,) source and target lengths in subwords (int32), without bos/eos.

        Reading them touches every page of the offsets; for a mapped entry those pages are
        handed back afterwards (the kernel reads again the few that a batch needs), so they do
        not stay in the process's memory (36 MB a side for 4.5M pairs)."""
        lengths = tuple(np.diff(o).astype(np.int32) for o in (self.src_offsets, self.tgt_offsets))
        self._release()
        return lengths

    def pairs(self, idx: Iterable[int]) -> tuple[list[list[int]], list[list[int]]]:
        """The source and target ids of the pairs ``idx``, as lists.

        From a mapped entry, the pages read are handed back afterwards: a fault maps the
        neighbouring pages too (64 KB), so a few hundred batches from all over a large corpus
        would otherwise leave hundreds of MB mapped into the process (they stay in the page
        cache, and the next batch's reads find them there)."""
        src, tgt = [], []
        so, to = self.src_offsets, self.tgt_offsets
        for i in idx:
            src.append(self.src_ids[so[i] : so[i + 1]].tolist())
            tgt.append(self.tgt_ids[to[i] : to[i + 1]].tolist())
        self._release()
        return src, tgt

    def _release(self) -> None:
        for m in self.maps:
            if hasattr(mmap, "MADV_DONTNEED"):
                m.madvise(mmap.MADV_DONTNEED)

    @classmethod
    def open(cls, directory: Path) -> EncodedSplit:
        """Map a cache entry (read-only)."""
        try:
            meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
            sizes = {side: (meta[f"{side}_tokens"], np.dtype(meta[f"{side}_dtype"]))
                     for side in SIDES}
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DataError(f"{directory / 'meta.json'}: a damaged token cache entry "
                            f"({one_line(e, 80)}; seq2seq cache --clear)") from None
        arrays, maps = {}, []
        for side in SIDES:
            n_ids, dtype = sizes[side]
            arrays[f"{side}_ids"] = _map(directory / f"{side}.ids", dtype, n_ids, maps)
            arrays[f"{side}_offsets"] = _map(directory / f"{side}.offsets", np.dtype(np.int64),
                                             meta["pairs"] + 1, maps)
        return cls(**arrays, directory=directory, maps=maps)


def _map(path: Path, dtype: np.dtype, n: int, maps: list[mmap.mmap]) -> np.ndarray:
    """A read-only array over a file of ``n`` items of ``dtype``, mapped into memory."""
    if path.stat().st_size != n * dtype.itemsize:
        raise DataError(f"{path}: {path.stat().st_size} bytes, not {n * dtype.itemsize}: a damaged "
                        f"token cache entry (seq2seq cache --clear)")
    if n == 0:  # an empty file cannot be mapped
        return np.zeros(0, dtype=dtype)
    with path.open("rb") as f:
        m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    maps.append(m)
    return np.frombuffer(m, dtype=dtype, count=n)


def id_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned integer type that holds ids below ``vocab_size``."""
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


def fingerprint(cfg: DataConfig, split: str) -> str:
    """A hash of a split's content (the bytes of its files; a hub split's own fingerprint) and
    of how it is read (format, languages): what the vocabulary and the token cache depend on."""
    h = hashlib.sha256(json.dumps(
        [cfg.format, cfg.path if cfg.format == "hub" else "", cfg.hub_config, cfg.src_lang,
         cfg.tgt_lang, split, cfg.streaming]).encode())
    if cfg.format == "hub":
        if not cfg.streaming:  # a streamed dataset has no content to hash before it is read
            h.update(str(getattr(open_hub(cfg, split), "_fingerprint", "")).encode())
        return h.hexdigest()[:20]
    for path in split_files(cfg, split):
        h.update(path.name.encode() + b"\x00")
        with path.open("rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
    return h.hexdigest()[:20]


def _file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def entry_key(data_key: str, src_vocab: Vocab, tgt_vocab: Vocab, limit: int | None) -> str:
    parts = [FORMAT, data_key, _file_hash(src_vocab.path), _file_hash(tgt_vocab.path), limit]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:20]


def encoded_split(cfg: DataConfig, split: str, src_vocab: Vocab, tgt_vocab: Vocab,
                  limit: int | None = None, data_key: str | None = None,
                  progress: bool = True) -> EncodedSplit:
    """The first ``limit`` (all by default) pairs of ``split``, encoded: mapped from the token
    cache when ``data.token_cache`` is on (encoded into it first if it has no entry yet), else
    encoded into memory."""
    chunks = _encoded_chunks(cfg, split, src_vocab, tgt_vocab, limit, progress)
    if not cfg.token_cache:
        return _in_memory(chunks, src_vocab, tgt_vocab)
    key = entry_key(data_key or fingerprint(cfg, split), src_vocab, tgt_vocab, limit)
    entry = cache_root() / "tokens" / key
    if not (entry / "meta.json").is_file():
        with building(entry):
            if not (entry / "meta.json").is_file():  # not built by another process meanwhile
                print(f"encoding the {split} split into the token cache {entry}",
                      file=sys.stderr, flush=True)
                _write_entry(entry, chunks, src_vocab, tgt_vocab, describe=f"{cfg.path} {split}")
    return EncodedSplit.open(entry)


def _encoded_chunks(cfg: DataConfig, split: str, src_vocab: Vocab, tgt_vocab: Vocab,
                    limit: int | None, progress: bool
                    ) -> Iterator[tuple[list[list[int]], list[list[int]]]]:
    """Encode the pairs a chunk at a time, with a progress bar on standard error."""
    stream = pairs(cfg, split)
    if limit is not None:
        stream = itertools.islice(stream, limit)
    with tqdm(desc=f"encoding {split}", unit=" pairs", unit_scale=True, file=sys.stderr,
              disable=not progress, mininterval=1.0) as bar:
        while chunk := list(itertools.islice(stream, CHUNK)):
            src, tgt = zip(*chunk)
            yield src_vocab.encode(src), tgt_vocab.encode(tgt)
            bar.update(len(chunk))


def _flat(ids: Sequence[list[int]], dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """The ids back to back and the lengths of one chunk."""
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=dtype, count=int(lengths.sum()))
    return flat, lengths


def _in_memory(chunks, src_vocab: Vocab, tgt_vocab: Vocab) -> EncodedSplit:
    parts: dict[str, list[np.ndarray]] = {f"{s}_{k}": [] for s in SIDES for k in ("ids", "len")}
    for chunk in chunks:
        for side, ids, vocab in zip(SIDES, chunk, (src_vocab, tgt_vocab)):
            flat, lengths = _flat(ids, id_dtype(len(vocab)))
            parts[f"{side}_ids"].append(flat)
            parts[f"{side}_len"].append(lengths)
    arrays = {}
    for side, vocab in zip(SIDES, (src_vocab, tgt_vocab)):
        ids = parts[f"{side}_ids"]
        arrays[f"{side}_ids"] = np.concatenate(ids) if ids else np.zeros(0, id_dtype(len(vocab)))
        lengths = np.concatenate(parts[f"{side}_len"] or [np.zeros(0, np.int64)])
        arrays[f"{side}_offsets"] = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return EncodedSplit(**arrays)


def _write_entry(entry: Path, chunks, src_vocab: Vocab, tgt_vocab: Vocab,
                 describe: str) -> None:
    """Stream the chunks into a temporary directory beside ``entry``, then rename it."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
    start = time.time()
    try:
        vocabs = dict(zip(SIDES, (src_vocab, tgt_vocab)))
        meta = {"format": FORMAT, "data": describe,
                **_write_arrays(tmp, chunks, {s: id_dtype(len(v)) for s, v in vocabs.items()}),
                **{f"{s}_vocab": str(v.path) for s, v in vocabs.items()},
                "seconds": round(time.time() - start, 1)}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        try:
            tmp.rename(entry)
        except OSError:
            if not (entry / "meta.json").is_file():  # not another process's finished entry
                raise
    except OSError as e:
        raise DataError(f"cannot write the token cache {entry}: {one_line(e)}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already once renamed


def _write_arrays(directory: Path, chunks, dtypes: dict[str, np.dtype]) -> dict:
    """Append each chunk's ids and offsets to the four files; returns their sizes for the
    entry's ``meta.json``."""
    ends = dict.fromkeys(SIDES, 0)
    n = 0
    with ExitStack() as stack:
        files = {f"{side}.{kind}": stack.enter_context((directory / f"{side}.{kind}").open("wb"))
                 for side in SIDES for kind in ("ids", "offsets")}
        for side in SIDES:
            files[f"{side}.offsets"].write(np.zeros(1, np.int64).tobytes())
        for chunk in chunks:
            for side, ids in zip(SIDES, chunk):
                flat, lengths = _flat(ids, dtypes[side])
                files[f"{side}.ids"].write(flat.tobytes())
                files[f"{side}.offsets"].write((ends[side] + np.cumsum(lengths)).tobytes())
                ends[side] += int(lengths.sum())
            n += len(chunk[0])
    return {"pairs": n, **{f"{s}_tokens": ends[s] for s in SIDES},
            **{f"{s}_dtype": dtypes[s].name for s in SIDES}}


def cache_usage(root: Path | None = None) -> list[tuple[str, int, int]]:
    """``(kind, entries, bytes)`` for each kind of cache entry (``tokens``, ``spm``)."""
    root = root or cache_root()
    rows = []
    for kind in ("tokens", "spm"):
        entries = [p for p in (root / kind).glob("*") if p.is_dir()] if (root / kind).is_dir() \
            else []
        size = sum(f.stat().st_size for p in entries for f in p.rglob("*") if f.is_file())
        rows.append((kind, len(entries), size))
    return rows


def clear_cache(root: Path | None = None) -> int:
    """Delete the token cache and the cached SentencePiece models; returns the bytes freed
    (run directories keep their own copies of their vocabularies)."""
    root = root or cache_root()
    freed = sum(size for _, _, size in cache_usage(root))
    for kind in ("tokens", "spm"):
        shutil.rmtree(root / kind, ignore_errors=True)
    return freed
