"""Parallel text: one loader for every source, returning a :class:`Split`.

Every source ends as a :class:`Split`, two lists of strings, ``src`` and ``tgt`` (``split["src"]``
as with a ``datasets.Dataset``):

* ``local``: a directory of ``{split}.{lang}`` files, plain or gzipped (the Multi30k raw layout);
* ``tsv``:   a directory of ``{split}.tsv`` files whose header row names the language columns;
* ``jsonl``: a directory of ``{split}.jsonl`` files (a ``translation`` dict or a field a language);
* ``hub``:   ``datasets.load_dataset(path, hub_config, split=...)``: a Hugging Face hub dataset
  such as ``bentrevett/multi30k`` or ``wmt14`` (config ``de-en``), or a local dataset directory.

Local files are UTF-8 text, plain or ``.gz``, read a line at a time (lines end at ``\\n``, and a
``\\r`` before it is dropped; a TSV or JSONL file may start with a byte-order mark). A malformed
file raises a one-line :class:`DataError` that starts with ``file:line:`` and says what is wrong.

* TSV: the first line names the columns (at least the two languages'; other columns are
  ignored); every other line is one row with exactly as many tab-separated fields as the header.
  There is no quoting: quotes are text, so a sentence cannot hold a tab or a line break. Blank
  lines at the end of the file are ignored; a blank line between rows is an error (it is a row
  with one field, most often a sentence that was lost or split).
* JSONL: one JSON object a line, either ``{"translation": {"de": ..., "en": ...}}`` or one field
  a language (``{"de": ..., "en": ...}``; other fields are ignored). Values are strings or
  ``null`` (read as ``""``). Blank lines are skipped (as JSON Lines readers do): a record names
  its languages, so no line can shift onto the wrong partner.

Sentences are stripped of surrounding whitespace in every format.

A hub dataset is looked up on the hub, which retries for half a minute when there is no network.
So unless ``HF_HUB_OFFLINE`` or ``HF_DATASETS_OFFLINE`` is set (to anything: ``0`` skips the
check) or the path is local, a TCP connection to the hub's host (``HF_ENDPOINT``'s, or the
proxy's) is tried first, for at most :data:`HUB_PROBE_TIMEOUT` seconds; if it fails, the process
goes offline: a dataset in the local cache still loads, a missing one fails at once.

Hugging Face ``datasets`` is imported only for a hub dataset: the file formats are read with
the standard library, which keeps about 100 MB of its libraries (Arrow, pandas) out of a
training process and 1.5 s out of its start.
"""

from __future__ import annotations

import gzip
import itertools
import json
import os
import socket
import sys
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from seq2seq.config import DataConfig
from seq2seq.download import fetch_missing
from seq2seq.errors import DataError, one_line

if TYPE_CHECKING:
    import datasets


def _datasets():
    """Hugging Face ``datasets``, imported on first use, quiet."""
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    return datasets


@dataclass(frozen=True)
class Split:
    """One split of a parallel corpus: ``src[i]`` translates to ``tgt[i]``."""

    src: list[str]
    tgt: list[str]

    def __len__(self) -> int:
        return len(self.src)

    def __getitem__(self, column: str) -> list[str]:
        """``split["src"]`` or ``split["tgt"]``: the column's sentences."""
        if column not in ("src", "tgt"):
            raise KeyError(column)
        return getattr(self, column)


def load_split(cfg: DataConfig, split: str) -> Split:
    """Load one split (a name from ``cfg.splits`` or any split name of the source)."""
    loader = {"local": _load_local, "tsv": _load_tsv, "jsonl": _load_jsonl, "hub": _load_hub}
    ds = loader[cfg.format](cfg, split)
    if len(ds) == 0:
        raise DataError(f"split {split!r} of {cfg.path} is empty")
    return ds


def split_name(cfg: DataConfig, which: str) -> str:
    """Map ``train``/``valid`` (``val``, ``dev``)/``test`` to the source's split names from the
    config; any other name is taken as the source's own split name."""
    s = cfg.splits
    aliases = {"train": s.train, "valid": s.valid, "val": s.valid, "dev": s.valid, "test": s.test}
    return aliases.get(which, which)


def read_lines(path: Path) -> list[str]:
    """Read a text file (``.gz`` transparently), one sentence a line, without line ends."""
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8", newline="\n") as f:
            return [line.rstrip("\r\n") for line in f]
    except (UnicodeDecodeError, OSError, EOFError) as e:
        error = e
    for _ in numbered_lines(path):  # read again, slowly, to name the line at fault
        pass
    raise DataError(f"{path}: cannot be read as UTF-8 text ({one_line(error)})")


def numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield ``(line number, line)`` from a UTF-8 text file, plain or ``.gz``, without line ends.

    Lines end at ``\\n`` only; bytes are decoded a line at a time, so an encoding error names its
    line (and a truncated or corrupt gzip stream the last line read)."""
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    n = 0
    try:
        with opener(path, "rb") as f:
            for n, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    column = len(raw[: e.start].decode("utf-8", "replace")) + 1
                    raise DataError(
                        f"{path}:{n}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at column "
                        f"{column}); the file must be UTF-8 text"
                    ) from None
                yield n, line.rstrip("\r\n")
    except (OSError, EOFError) as e:
        where = f"after line {n}" if n else "as UTF-8 text"
        raise DataError(f"{path}: cannot be read {where} ({one_line(e)})") from None


def _find(directory: Path, stem: str) -> Path:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(f"file not found: {directory / stem}[.gz]")


def _check_dir(cfg: DataConfig) -> Path:
    if cfg.format == "local":  # the fetched corpora come in the local layout
        fetch_missing(cfg.path, cfg.fetch)
    root = Path(cfg.path)
    if not root.is_dir():
        raise DataError(
            f"data directory not found: {root} (set data.path, or run `make data` for Multi30k)"
        )
    return root


def _load_local(cfg: DataConfig, split: str) -> Split:
    src_path, tgt_path = local_files(cfg, split)
    src, tgt = read_lines(src_path), read_lines(tgt_path)
    if len(src) != len(tgt):
        raise DataError(_unparallel(src_path, len(src), tgt_path, len(tgt)))
    return Split(src, tgt)


def local_files(cfg: DataConfig, split: str) -> tuple[Path, Path]:
    """The source and target files of a split in the ``local`` layout."""
    root = _check_dir(cfg)
    return _find(root, f"{split}.{cfg.src_lang}"), _find(root, f"{split}.{cfg.tgt_lang}")


def local_pairs(cfg: DataConfig, split: str) -> Iterator[tuple[str, str]]:
    """The pairs of a split in the ``local`` layout, one at a time (lines stripped of their
    line ends only, as :func:`read_lines` gives them)."""
    src_path, tgt_path = local_files(cfg, split)
    with closing(numbered_lines(src_path)) as src, closing(numbered_lines(tgt_path)) as tgt:
        n = 0
        for n, (_, s) in enumerate(src, 1):
            t = next(tgt, None)
            if t is None:
                raise DataError(_unparallel(src_path, f"more than {n - 1}", tgt_path, n - 1))
            yield s, t[1]
        if next(tgt, None) is not None:
            raise DataError(_unparallel(src_path, n, tgt_path, f"more than {n}"))


def _unparallel(src_path: Path, n_src, tgt_path: Path, n_tgt) -> str:
    return f"{src_path} has {n_src} lines but {tgt_path} has {n_tgt}: not a parallel corpus"


def split_files(cfg: DataConfig, split: str) -> list[Path]:
    """The files a split of a file format (local, tsv, jsonl) is read from."""
    if cfg.format == "local":
        return list(local_files(cfg, split))
    return [_find(_check_dir(cfg), f"{split}.{cfg.format}")]


def _load_tsv(cfg: DataConfig, split: str) -> Split:
    return _from_pairs(tsv_pairs(cfg, split))


def tsv_pairs(cfg: DataConfig, split: str) -> Iterator[tuple[str, str]]:
    """The ``(source, target)`` pairs of ``{split}.tsv``, one at a time."""
    path = _find(_check_dir(cfg), f"{split}.tsv")
    with closing(numbered_lines(path)) as lines:
        _, header = next(lines, (1, None))
        if header is None:
            raise DataError(f"{path}: empty file; {_TSV_HEADER_HINT.format(cfg=cfg)}")
        columns = [name.strip() for name in header.removeprefix("\ufeff").split("\t")]
        si, ti = (_tsv_column(columns, lang, path, cfg) for lang in (cfg.src_lang, cfg.tgt_lang))
        width = len(columns)
        blank = 0  # the first blank line since the last row: fine at the end of the file only
        for n, line in lines:
            if "\t" not in line and not line.strip():  # (a row has at least two fields)
                blank = blank or n
                continue
            if blank:
                raise DataError(f"{path}:{blank}: empty line (rows have {width} fields)")
            fields = line.split("\t")
            if len(fields) != width:
                k = len(fields)
                hint = "a tab inside a sentence?" if k > width else "a missing tab or line break?"
                raise DataError(
                    f"{path}:{n}: {k} tab-separated field{'s' * (k != 1)}, "
                    f"the header has {width} ({hint})"
                )
            yield fields[si].strip(), fields[ti].strip()


def _from_pairs(pairs: Iterator[tuple[str, str]]) -> Split:
    src: list[str] = []
    tgt: list[str] = []
    for s, t in pairs:
        src.append(s)
        tgt.append(t)
    return Split(src, tgt)


_TSV_HEADER_HINT = "the first line must name the columns, e.g. {cfg.src_lang}<TAB>{cfg.tgt_lang}"


def _tsv_column(columns: list[str], lang: str, path: Path, cfg: DataConfig) -> int:
    """The index of the ``lang`` column named in a TSV header."""
    if columns.count(lang) > 1:
        raise DataError(f"{path}:1: the header names the column {lang!r} twice")
    if lang not in columns:
        raise DataError(
            f"{path}:1: the header has no column {lang!r}; {_TSV_HEADER_HINT.format(cfg=cfg)} "
            f"(columns: {one_line(', '.join(columns), 120)})"
        )
    return columns.index(lang)


def _load_jsonl(cfg: DataConfig, split: str) -> Split:
    return _from_pairs(jsonl_pairs(cfg, split))


def jsonl_pairs(cfg: DataConfig, split: str) -> Iterator[tuple[str, str]]:
    """The ``(source, target)`` pairs of ``{split}.jsonl``, one at a time."""
    path = _find(_check_dir(cfg), f"{split}.jsonl")
    with closing(numbered_lines(path)) as lines:
        for n, line in lines:
            if n == 1:
                line = line.removeprefix("\ufeff")
            if line.strip():  # blank lines carry no record (as JSON Lines readers do)
                yield _jsonl_pair(line, cfg.src_lang, cfg.tgt_lang, f"{path}:{n}")


def _jsonl_pair(line: str, s: str, t: str, where: str) -> tuple[str, str]:
    """The ``s`` and ``t`` sentences of one JSONL line; ``where`` is its ``file:line``."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
    except (ValueError, RecursionError) as e:  # an integer of 5000 digits, too deep a nesting
        raise DataError(f"{where}: not valid JSON ({one_line(e, 100)})") from None
    if not isinstance(record, dict):
        raise DataError(
            f"{where}: not a JSON object but {_json_kind(record)}; each line must be one object "
            f'such as {{"translation": {{"{s}": ..., "{t}": ...}}}} or {{"{s}": ..., "{t}": ...}}'
        )
    if "translation" in record:
        fields, what = record["translation"], '"translation" object'
        if not isinstance(fields, dict):
            raise DataError(f'{where}: "translation" is {_json_kind(fields)}, not a JSON object')
        for lang in (s, t):
            if lang not in fields:
                raise DataError(
                    f'{where}: no "{lang}" field in the "translation" object '
                    f"(fields: {one_line(', '.join(sorted(fields)), 120)})"
                )
    elif s in record and t in record:
        fields, what = record, "record"
    else:
        raise DataError(
            f"{where}: no 'translation' column and no columns {s!r} and {t!r} "
            f"(columns: {one_line(', '.join(sorted(record)), 120)})"
        )
    return _json_text(fields[s], s, what, where), _json_text(fields[t], t, what, where)


def _json_text(value, lang: str, what: str, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DataError(
            f'{where}: the "{lang}" field of the {what} is {_json_kind(value)}, '
            "not a string (or null)"
        )
    return value.strip()


def _json_kind(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _load_hub(cfg: DataConfig, split: str) -> Split:
    if cfg.streaming:  # a split loaded whole (validation, test) is small: collect its pairs
        return _from_pairs(hub_pairs(cfg, split))
    ds = _to_pair(open_hub(cfg, split), cfg, cfg.path)
    return Split(list(ds["src"]), list(ds["tgt"]))


def hub_pairs(cfg: DataConfig, split: str) -> Iterator[tuple[str, str]]:
    """The pairs of a hub split, one at a time; with ``data.streaming`` read as they arrive,
    nothing of the split kept on disk or in memory."""
    ds = open_hub(cfg, split)
    if not cfg.streaming:
        for batch in _to_pair(ds, cfg, cfg.path).iter(batch_size=10_000):
            yield from zip(batch["src"], batch["tgt"])
        return
    s, t = cfg.src_lang, cfg.tgt_lang
    for row in ds:
        if "translation" in row:
            yield _text(row["translation"], s, cfg.path), _text(row["translation"], t, cfg.path)
        elif s in row and t in row:
            yield _str(row[s]), _str(row[t])
        else:
            raise DataError(
                f"{cfg.path}: no 'translation' column and no columns {s!r} and {t!r} "
                f"(columns: {', '.join(sorted(row))})"
            )


def open_hub(cfg: DataConfig, split: str) -> datasets.Dataset | datasets.IterableDataset:
    """``datasets.load_dataset`` for one split, its network errors as one line (a
    ``datasets.IterableDataset`` with ``data.streaming``)."""
    unreachable = None
    if not _offline_mode() and not Path(cfg.path).exists():
        address = _hub_address()
        if not _hub_reachable(address):
            unreachable = f"{address[0]}:{address[1]}"
            _go_offline()
    try:
        ds = _datasets().load_dataset(cfg.path, cfg.hub_config, split=split,
                                      streaming=cfg.streaming)
    except ValueError as e:
        if "split" in str(e).lower():
            raise DataError(f"{cfg.path}: no split {split!r} ({one_line(e)})") from None
        raise DataError(f"{cfg.path}: {one_line(e)}") from None
    except Exception as e:  # network errors come in many types (requests, httpx, OSError, hub)
        why = f" from the Hugging Face hub ({type(e).__name__})"
        if unreachable:
            why = f": the Hugging Face hub ({unreachable}) cannot be reached and it is not cached"
        raise DataError(
            f"cannot load {cfg.path!r}{why}; when offline, point the config at local files: "
            "data.format: local and data.path: a directory of {split}.{lang} files"
        ) from None
    if unreachable:
        print(
            f"warning: the Hugging Face hub ({unreachable}) cannot be reached: loaded "
            f"{cfg.path!r} from the local cache (HF_HUB_OFFLINE=0 skips this check)",
            file=sys.stderr, flush=True,
        )
    return ds


def side_lines(cfg: DataConfig, split: str, side: str, limit: int | None = None
               ) -> Iterator[str]:
    """The sentences of one side (``"src"`` or ``"tgt"``) of the first ``limit`` pairs of a
    split, one at a time; in the local layout only that side's file is read."""
    if cfg.format == "local":
        path = local_files(cfg, split)[side == "tgt"]
        lines: Iterator[str] = (line for _, line in numbered_lines(path))
    else:
        column = side == "tgt"
        lines = (pair[column] for pair in pairs(cfg, split))
    return itertools.islice(lines, limit)


def pairs(cfg: DataConfig, split: str) -> Iterator[tuple[str, str]]:
    """Every ``(source, target)`` pair of a split, one at a time, in the source's order:
    what the token cache encodes without holding the corpus in memory."""
    reader = {"local": local_pairs, "tsv": tsv_pairs, "jsonl": jsonl_pairs, "hub": hub_pairs}
    return reader[cfg.format](cfg, split)


HUB_PROBE_TIMEOUT = 3.0  # seconds for the hub's host to accept a TCP connection
_OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


def _offline_mode() -> bool:
    """Whether the user chose a mode: either variable set (to anything: ``0`` skips the probe),
    or offline mode already on in ``datasets``."""
    chosen = any(v in os.environ for v in _OFFLINE_VARS)
    return chosen or getattr(_datasets().config, "HF_HUB_OFFLINE", False) is True


def _hub_address() -> tuple[str, int]:
    """The host and port a hub request connects to: ``HF_ENDPOINT``'s (``huggingface.co:443``
    by default), or the proxy's where an ``https_proxy``/``all_proxy`` variable applies to it."""
    default = ("huggingface.co", 443)
    endpoint = os.environ.get("HF_ENDPOINT", "").strip() or "https://huggingface.co"
    try:
        url = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        if not url.hostname:
            return default
        address = (url.hostname, url.port or (80 if url.scheme == "http" else 443))
        proxies = urllib.request.getproxies_environment()
        proxy = proxies.get(url.scheme) or proxies.get("all")
        if proxy and not urllib.request.proxy_bypass_environment(url.hostname, proxies):
            p = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
            if p.hostname:
                default_port = {"http": 80, "https": 443}.get(p.scheme, 1080)
                address = (p.hostname, p.port or default_port)
        return address
    except ValueError:  # a malformed URL or port: let the hub client report it
        return default


def _hub_reachable(address: tuple[str, int], timeout: float = HUB_PROBE_TIMEOUT) -> bool:
    """Whether ``address`` accepts a TCP connection within ``timeout`` seconds (no request is
    sent). The name lookup is bounded too: the connection is tried on a daemon thread."""
    ok = []

    def connect() -> None:
        try:
            socket.create_connection(address, timeout=timeout).close()
            ok.append(True)
        except (OSError, ValueError):  # ValueError: a host name that cannot be encoded
            pass

    probe = threading.Thread(target=connect, name="hub-probe", daemon=True)
    probe.start()
    probe.join(timeout)
    return bool(ok)


def _go_offline() -> None:
    """Offline mode for the rest of the process: the variables (for child processes and libraries
    that read them late) and the flags ``datasets`` and ``huggingface_hub`` read at import."""
    for name in _OFFLINE_VARS:
        os.environ[name] = "1"
    try:
        from huggingface_hub import constants as hub_constants
    except ImportError:
        hub_constants = None
    for module, flags in (
        (_datasets().config, ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")),
        (hub_constants, ("HF_HUB_OFFLINE",)),
    ):
        for flag in flags:
            if module is not None and hasattr(module, flag):
                setattr(module, flag, True)


def _to_pair(ds: datasets.Dataset, cfg: DataConfig, where: str) -> datasets.Dataset:
    """Turn a ``translation`` dict column or one column a language into ``src``/``tgt``."""
    s, t = cfg.src_lang, cfg.tgt_lang
    cols = set(ds.column_names)
    if "translation" in cols:

        def pick(batch):
            return {
                "src": [_text(r, s, where) for r in batch["translation"]],
                "tgt": [_text(r, t, where) for r in batch["translation"]],
            }

    elif s in cols and t in cols:

        def pick(batch):
            return {"src": [_str(x) for x in batch[s]], "tgt": [_str(x) for x in batch[t]]}

    else:
        raise DataError(
            f"{where}: no 'translation' column and no columns {s!r} and {t!r} "
            f"(columns: {', '.join(sorted(cols))})"
        )
    return ds.map(pick, batched=True, remove_columns=ds.column_names)


def _text(record: dict | None, lang: str, where: str) -> str:
    if not record or lang not in record:
        raise DataError(f"{where}: a translation record has no {lang!r} field")
    return _str(record[lang])


def _str(x) -> str:
    return "" if x is None else str(x).strip()

