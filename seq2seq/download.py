"""Fetching Multi30k (task 1, raw, gzipped) into a data directory.

``make data`` (``scripts/get_data.py``) and every config with ``data.fetch: multi30k`` use this:
when the configured ``data.path`` does not exist, training (and ``eval``) fill it first. The
files come from a local copy when there is one (``../shared/data/multi30k`` beside the working
directory or beside the project, or the directory given), otherwise from the public Multi30k
repository, with a progress bar. Each file is written beside its final name and renamed, so an
interrupted fetch leaves no partial file; without a copy and without network the fetch ends in
one clear line.
"""

from __future__ import annotations

import shutil
import sys
import urllib.request
from pathlib import Path

from tqdm import tqdm

from seq2seq.errors import DataError, one_line

URL = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/{name}"
SPLITS = ("train", "val", "test_2016_flickr")
LANGS = ("en", "de", "fr", "cs")
FILES = tuple(f"{split}.{lang}.gz" for split in SPLITS for lang in LANGS)
PROJECT = Path(__file__).resolve().parent.parent
TIMEOUT = 60  # seconds without an answer from the server


def local_copies() -> list[Path]:
    """Where a local copy of Multi30k is looked for, first found first used."""
    beside = [Path.cwd().parent, PROJECT.parent]
    return [p / "shared" / "data" / "multi30k" for p in dict.fromkeys(beside)]


def fetch_multi30k(out: Path, source: Path | None = None, progress: bool = True) -> Path:
    """Put the Multi30k files that ``out`` lacks into it, from ``source``, a local copy or the
    public repository; returns ``out``."""
    out = Path(out)
    missing = [name for name in FILES if not _present(out / name)]
    if not missing:
        return out
    copies = [source] if source is not None else local_copies()
    copy = next((c for c in copies if all((c / name).is_file() for name in missing)), None)
    where = str(copy) if copy else "github.com/multi30k/dataset"
    print(f"fetching Multi30k into {out} from {where} (data.fetch: multi30k; data.fetch=null "
          "turns this off)", file=sys.stderr, flush=True)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create {out}: {one_line(e)}") from None
    with tqdm(missing, desc="Multi30k", unit=" files", file=sys.stderr,
              disable=not progress) as bar:
        for name in bar:
            part = out / f"{name}.part"
            try:
                if copy is not None:
                    shutil.copyfile(copy / name, part)
                else:
                    _download(URL.format(name=name), part)
                part.replace(out / name)
            except OSError as e:
                part.unlink(missing_ok=True)
                raise DataError(
                    f"cannot fetch Multi30k's {name} from {where} ({one_line(e, 120)}); copy "
                    f"the corpus into {out} by hand (files {{train,val,test_2016_flickr}}."
                    "{en,de,fr,cs}.gz) or run `make data` with network access"
                ) from None
    return out


def _present(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0


def _download(url: str, path: Path) -> None:
    with urllib.request.urlopen(url, timeout=TIMEOUT) as r, path.open("wb") as f:
        shutil.copyfileobj(r, f)


def fetch_missing(path: str | Path, corpus: str | None, progress: bool = True) -> None:
    """``data.fetch``: fill a missing data directory with its corpus (only Multi30k is known)."""
    if corpus == "multi30k" and not Path(path).exists():
        fetch_multi30k(Path(path), progress=progress)
