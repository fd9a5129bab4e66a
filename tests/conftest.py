from __future__ import annotations

import gzip
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
MULTI30K = ROOT.parent / "shared" / "data" / "multi30k"

torch.set_num_threads(min(2, torch.get_num_threads()))


def cli(*args, stdin: bytes | None = None, env=None, timeout=300) -> subprocess.CompletedProcess:
    """``seq2seq ARGS`` in a new process, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "seq2seq", *map(str, args)], input=stdin, capture_output=True,
        cwd=ROOT, env={**os.environ, **(env or {})}, timeout=timeout,
    )


def concurrently(*calls):
    """Each call's result, in order, two at a time: a CLI call that fails early spends most of
    its time importing torch, which one core does while the other imports the next."""
    with ThreadPoolExecutor(2) as pool:
        return [f.result() for f in [pool.submit(call) for call in calls]]


def one_line_error(r: subprocess.CompletedProcess) -> str:
    """The error a refused command printed: exit status 2 and one line, no traceback."""
    err = r.stderr.decode().strip()
    assert r.returncode == 2, (r.returncode, err)
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """SentencePiece models are cached per test session, never in the user's home."""
    monkeypatch.setenv("SEQ2SEQ_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture
def multi30k() -> Path:
    if not (MULTI30K / "train.de.gz").is_file():
        pytest.skip(f"Multi30k not found at {MULTI30K}")
    return MULTI30K


def write_parallel(directory: Path, split: str, pairs: list[tuple[str, str]],
                   src: str = "de", tgt: str = "en", gz: bool = False) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for lang, col in ((src, 0), (tgt, 1)):
        text = "".join(p[col] + "\n" for p in pairs)
        path = directory / f"{split}.{lang}"
        if gz:
            with gzip.open(f"{path}.gz", "wt", encoding="utf-8") as f:
                f.write(text)
        else:
            path.write_text(text, encoding="utf-8")


PAIRS = [
    ("Ein Hund läuft im Schnee.", "A dog runs in the snow."),
    ('Zwei Männer sagen "Hallo".', 'Two men say "hello".'),
    ("Eine Frau liest ein Buch.", "A woman reads a book."),
]


@pytest.fixture
def toy_data(tmp_path) -> Path:
    """A tiny synthetic de-en corpus: 300 training pairs, 20 validation and 10 test pairs."""
    from synthetic import toy_pairs

    data = tmp_path / "data"
    pairs = toy_pairs(300)
    write_parallel(data, "train", pairs)
    write_parallel(data, "val", pairs[:20])
    write_parallel(data, "test", pairs[20:30])
    return data
