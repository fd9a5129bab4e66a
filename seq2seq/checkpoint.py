"""Checkpoint files: atomic writing, safe loading with clear errors, weight averaging.

Which checkpoints a run has and what they are called is :mod:`seq2seq.run`'s business.
Checkpoints are written to a temporary file in the same directory, flushed to disk and renamed
over the old one, so a crash while saving leaves the previous checkpoint intact.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from seq2seq.errors import CheckpointError, one_line


def file_mode(directory: bool = False) -> int:
    """The mode a new file (or directory) gets under the process umask: 0644 (0755) under the
    usual 022."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


def free_bytes(directory: Path) -> int | None:
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return None


def human_size(n: float | None) -> str:
    if n is None:
        return "an unknown amount"
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"  # pragma: no cover


def write_error(path: Path, e: BaseException) -> CheckpointError:
    """One line for a failed write: the file, the reason, the free space; the old file stays."""
    why = e.strerror if isinstance(e, OSError) and e.strerror else one_line(e, 120)
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        why = "no space left on the device"
    kept = f"; the previous {path.name} is unchanged" if path.exists() else ""
    return CheckpointError(f"cannot write {path}: {why}; "
                           f"{human_size(free_bytes(path.parent))} free there{kept}")


def save_atomic(payload: dict[str, Any], path: Path) -> None:
    """Write ``payload`` to ``path`` through a temporary file that is flushed, synced and renamed
    over it: the previous file stays whole whatever happens (a full disk, SIGKILL)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a killed writer
            stale.unlink(missing_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise write_error(path, e) from None
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode())  # mkstemp makes 0600; every checkpoint gets the same mode
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError | RuntimeError):  # torch reports a full disk as RuntimeError
            raise write_error(path, e) from None
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load(path: Path, map_location: str | torch.device = "cpu", mmap: bool = False
         ) -> dict[str, Any]:
    """The payload of a checkpoint, checked to be one of ours. With ``mmap`` the tensors are
    mapped from the file and read only when used: inference touches the weights and never the
    optimizer state that ``best.pt``/``last.pt`` also hold."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as e:
        raise CheckpointError(
            f"{path}: not a readable checkpoint (truncated or corrupt?): {type(e).__name__}"
        ) from None
    if not isinstance(payload, dict) or "model" not in payload or "config" not in payload:
        raise CheckpointError(f"{path}: not a seq2seq checkpoint")
    return payload


def average_checkpoints(paths: list[Path], output: Path) -> dict[str, Any]:
    """Element-wise mean of the floating-point weights of ``paths`` (other tensors are taken
    from the last checkpoint), written atomically to ``output`` with the last one's config."""
    if not paths:
        raise CheckpointError("no checkpoints to average")
    sums: dict[str, torch.Tensor] = {}
    last: dict[str, Any] = {}
    for i, path in enumerate(paths):
        payload = load(path)
        state = payload["model"]
        if i and set(state) != set(sums):
            raise CheckpointError(f"{path}: its weights do not match {paths[0]}")
        for k, v in state.items():
            if i and v.shape != sums[k].shape:
                raise CheckpointError(f"{path}: {k} has shape {tuple(v.shape)}, "
                                      f"not {tuple(sums[k].shape)}")
            if v.is_floating_point():
                sums[k] = v.double() if i == 0 else sums[k] + v.double()
            else:
                sums[k] = v
        last = payload
    model = {k: (v / len(paths)).to(last["model"][k].dtype) if v.is_floating_point() else v
             for k, v in sums.items()}
    out = {"model": model, "config": last["config"], "averaged": [str(p) for p in paths],
           "update": last.get("update")}
    save_atomic(out, Path(output))
    return out
