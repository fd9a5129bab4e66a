"""Checkpoints and run directories.

A run directory holds everything ``eval`` and ``translate`` need::

    runs/NAME/config.yaml      the resolved configuration
    runs/NAME/vocab/*.model    the SentencePiece model(s)
    runs/NAME/best.pt          the checkpoint with the best validation score
    runs/NAME/last.pt          the latest checkpoint
    runs/NAME/metrics.jsonl    one JSON record per log line and per validation

Checkpoints are written to a temporary file in the same directory, flushed to disk and renamed
over the old one, so a crash while saving leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from seq2seq.errors import CheckpointError


def save_atomic(payload: dict[str, Any], path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"{path}: not a readable checkpoint (truncated or corrupt?): {type(e).__name__}"
        ) from None
    if not isinstance(payload, dict) or "model" not in payload or "config" not in payload:
        raise CheckpointError(f"{path}: not a seq2seq checkpoint")
    return payload


def resolve(run: Path, checkpoint: str = "best") -> Path:
    """``checkpoint`` is ``best``, ``last`` or a path; relative names are looked up in the run."""
    run = Path(run)
    if not run.is_dir():
        raise CheckpointError(f"run directory not found: {run}")
    if checkpoint in ("best", "last"):
        path = run / f"{checkpoint}.pt"
        if not path.is_file() and checkpoint == "best" and (run / "last.pt").is_file():
            path = run / "last.pt"
        return path
    p = Path(checkpoint)
    return p if p.is_absolute() or p.exists() else run / p
