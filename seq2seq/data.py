"""Parallel text: one loader for every source, returning a ``datasets.Dataset``.

Every source ends as a :class:`datasets.Dataset` with two string columns, ``src`` and ``tgt``:

* ``local``: a directory of ``{split}.{lang}`` files, plain or gzipped (the Multi30k raw layout);
* ``tsv``:   a directory of ``{split}.tsv`` files whose header row names the language columns;
* ``jsonl``: a directory of ``{split}.jsonl`` files (a ``translation`` dict or a field a language);
* ``hub``:   ``datasets.load_dataset(path, hub_config, split=...)``: a Hugging Face hub dataset
  such as ``bentrevett/multi30k`` or ``wmt14`` (config ``de-en``), or a local dataset directory.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import datasets

from seq2seq.config import DataConfig
from seq2seq.errors import DataError, one_line

datasets.disable_progress_bars()
datasets.logging.set_verbosity_error()


def load_split(cfg: DataConfig, split: str) -> datasets.Dataset:
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
        raise DataError(f"{path}: cannot be read as UTF-8 text ({e})") from None


def _find(directory: Path, stem: str) -> Path:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(f"file not found: {directory / stem}[.gz]")


def _check_dir(cfg: DataConfig) -> Path:
    root = Path(cfg.path)
    if not root.is_dir():
        raise DataError(
            f"data directory not found: {root} (set data.path, or run `make data` for Multi30k)"
        )
    return root


def _load_local(cfg: DataConfig, split: str) -> datasets.Dataset:
    root = _check_dir(cfg)
    src_path = _find(root, f"{split}.{cfg.src_lang}")
    tgt_path = _find(root, f"{split}.{cfg.tgt_lang}")
    src, tgt = read_lines(src_path), read_lines(tgt_path)
    if len(src) != len(tgt):
        raise DataError(
            f"{src_path} has {len(src)} lines but {tgt_path} has {len(tgt)}: not a parallel corpus"
        )
    return datasets.Dataset.from_dict({"src": src, "tgt": tgt})


def _load_tsv(cfg: DataConfig, split: str) -> datasets.Dataset:
    root = _check_dir(cfg)
    path = _find(root, f"{split}.tsv")
    # QUOTE_NONE: sentences contain quotes that are text, not CSV quoting.
    ds = datasets.load_dataset(
        "csv", data_files={split: str(path)}, split=split, delimiter="\t", quoting=3,
        keep_default_na=False,
    )
    return _to_pair(ds, cfg, str(path))


def _load_jsonl(cfg: DataConfig, split: str) -> datasets.Dataset:
    root = _check_dir(cfg)
    path = _find(root, f"{split}.jsonl")
    ds = datasets.load_dataset("json", data_files={split: str(path)}, split=split)
    return _to_pair(ds, cfg, str(path))


def _load_hub(cfg: DataConfig, split: str) -> datasets.Dataset:
    try:
        ds = datasets.load_dataset(cfg.path, cfg.hub_config, split=split)
    except ValueError as e:
        if "split" in str(e).lower():
            raise DataError(f"{cfg.path}: no split {split!r} ({one_line(e)})") from None
        raise DataError(f"{cfg.path}: {one_line(e)}") from None
    except Exception as e:  # network errors come in many types (requests, httpx, OSError, hub)
        raise DataError(
            f"cannot load {cfg.path!r} from the Hugging Face hub ({type(e).__name__}); "
            "when offline, point the config at local files: data.format: local and "
            "data.path: a directory of {split}.{lang} files"
        ) from None
    return _to_pair(ds, cfg, cfg.path)


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

