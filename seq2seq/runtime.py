"""Where and how computation runs: the device, the precision, the random states.

Shared by training and inference: ``pick_device`` maps ``auto``/``cpu``/``cuda`` to a
``torch.device``; ``resolve_precision`` and ``autocast`` decide mixed precision;
``seed_everything``, ``rng_state`` and ``set_rng_state`` make runs repeatable and resumable;
``return_freed_memory`` keeps a CPU training process's resident memory near what it uses, and
``keep_freed_memory`` keeps a decoding process's large blocks for reuse;
``bound_onednn_cache`` caps what oneDNN keeps for the shapes it has seen.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import platform
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seq2seq.errors import Seq2SeqError

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # glibc's mallopt parameters

#: glibc's environment settings of the same parameters; where one is set, the user decides
MALLOC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
              "GLIBC_TUNABLES")

#: Entries in each cache of compiled oneDNN primitives while bf16 training runs on a CPU (both
#: default to 1,024): oneDNN's own, and the one torch's oneDNN wrapper (ideep) keeps before it.
ONEDNN_CACHE_CAPACITY = 16
ONEDNN_CACHES = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")


def _mallopt(*settings: tuple[int, int]) -> bool:
    """glibc's ``mallopt(param, value)`` for each pair; whether all of them took (False where
    this is not Linux's glibc)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return all([libc.mallopt(param, value) == 1 for param, value in settings])
    except (OSError, AttributeError):
        return False


def return_freed_memory(threshold: int = 1 << 20) -> bool:
    """Have glibc's malloc serve every block of ``threshold`` bytes or more with its own memory
    map, handed back to the system when freed.

    By default glibc raises that threshold to the largest block freed so far (up to 32 MB),
    after which blocks of that size come from the heap and stay there when freed. A training
    loop frees and reallocates activations of a different size every batch, so the heap
    fragments and the process holds about half as much memory again as it uses (Transformer
    on Multi30k: 1.6 GB peak instead of 1.2 GB, docs/performance.md). Returns False where
    this is not glibc (nothing changes there)."""
    return _mallopt((M_MMAP_THRESHOLD, threshold))


def keep_freed_memory(threshold: int = 64 << 20) -> bool:
    """For a decoding process: have glibc's malloc serve blocks of up to ``threshold`` bytes
    from its heap, keep up to four times that freed at the heap's top instead of handing it
    back, and grow the heap by ``threshold`` at a time.

    A search step allocates the same large blocks every step (a beam's reordered key/value
    caches, the logits over the vocabulary); by default each block over glibc's threshold is a
    fresh memory map whose pages fault in one by one, and freed heap memory is trimmed back to
    the system. Decoding Multi30k's test set with beam 5 was 4-7% faster this way with two
    workers (8-16% on one thread) for 80-100 MB more peak memory (docs/performance.md). The
    CLI's ``eval`` and ``translate`` call this; training does the opposite
    (:func:`return_freed_memory`). Returns False where this is not glibc or where the user
    set glibc's malloc variables (:data:`MALLOC_ENV`, or ``glibc.malloc`` tunables): nothing
    changes then."""
    user = [v for v in MALLOC_ENV if v in os.environ]
    if user == ["GLIBC_TUNABLES"] and "glibc.malloc." not in os.environ["GLIBC_TUNABLES"]:
        user = []  # tunables of other parts of glibc
    if user:
        return False
    return _mallopt((M_MMAP_THRESHOLD, threshold), (M_TRIM_THRESHOLD, 4 * threshold),
                    (M_TOP_PAD, threshold))


def bound_onednn_cache(capacity: int = ONEDNN_CACHE_CAPACITY) -> dict[str, str]:
    """Cap both caches of compiled oneDNN primitives (:data:`ONEDNN_CACHES`) at ``capacity``
    entries, each unless the user set its variable; returns the values in force. Effective only
    before the process's first oneDNN operation (each cache reads its variable once), so the
    Trainer calls it, for bf16 on a CPU, before it builds the model.

    bf16 matrix products on a CPU run in oneDNN, which compiles a primitive (JIT code and its
    buffers, about 0.3 MB) for every new shape, and keeps up to 1,024 of them in each cache.
    Variable-length NMT batches bring dozens of new shapes every update: the caches filled
    within 60 updates, and the blocks they kept, scattered among the activations, fragmented
    the heap. With 16 entries (one layer's forward, input-gradient and weight-gradient
    products of a batch's shapes are reused across layers) the default configs in bf16 on an
    AVX-512 BF16 CPU trained as fast as with 1,024, and the memory in use between updates is
    what fp32 uses (docs/performance.md, On a CPU with bf16 arithmetic). The Trainer bounds the
    caches for bf16 only: fp32 matrix products, the GRUs' included, run in MKL, which caches
    nothing, and fp32 LSTMs, which do run as oneDNN primitives, keep torch's defaults."""
    return {name: os.environ.setdefault(name, str(capacity)) for name in ONEDNN_CACHES}


def tune_backends(device: torch.device) -> None:
    """Backend choices for variable-shape NMT batches. On CUDA, cuDNN's attention kernels
    (torch's first choice for bf16/fp16 on recent GPUs) build an execution plan for every new
    shape; NMT batches change shape every update, so each call spent about 12 ms of CPU time
    building plans and bf16 training ran 10x slower than fp32 (H200, docs/performance.md).
    The flash and memory-efficient kernels have no such cost.

    ``fp32`` means IEEE float32 there too: cuDNN's recurrent layers would otherwise round
    their inputs to TF32 (10-bit mantissa) on Ampere and later GPUs, and a result trained
    "in fp32" would not be one (``bf16``/``fp16`` are the opt-in fast paths)."""
    if device.type == "cuda":
        torch.backends.cuda.enable_cudnn_sdp(False)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` (CUDA when present), ``cpu`` or ``cuda``."""
    if name not in ("auto", "cpu", "cuda"):
        raise Seq2SeqError(f"device: {name!r} is not one of auto, cpu, cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise Seq2SeqError("device: cuda was asked for, but torch sees no CUDA device")
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def parse_cpuinfo(text: str) -> tuple[str | None, frozenset[str]]:
    """The first CPU's model name and its feature flags from Linux's /proc/cpuinfo text: the
    ``model name`` and ``flags`` lines on x86, ``Features`` on ARM (None, empty: not listed)."""
    name, flags = None, None
    for line in text.splitlines():
        key, colon, value = line.partition(":")
        key = key.strip()
        if colon and key == "model name" and name is None:
            name = value.strip()
        elif colon and key in ("flags", "Features") and flags is None:
            flags = frozenset(value.split())
    return name, flags or frozenset()


@functools.cache
def cpu_info() -> tuple[str, frozenset[str]]:
    """This CPU's model name (the platform's name where Linux does not list one) and flags."""
    try:
        name, flags = parse_cpuinfo(Path("/proc/cpuinfo").read_text(encoding="utf-8",
                                                                  errors="replace"))
    except OSError:
        name, flags = None, frozenset()
    return name or platform.processor() or platform.machine(), flags


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux lists them in /proc/cpuinfo (empty elsewhere)."""
    return cpu_info()[1]


def cpu_has_bf16() -> bool:
    """Whether this CPU computes in bfloat16 natively (Linux flags avx512_bf16 or amx_bf16);
    elsewhere bf16 autocast is emulated and slower than fp32."""
    flags = cpu_flags()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_has_avx512() -> bool:
    """Whether this CPU has AVX-512 (Linux flag avx512f)."""
    return "avx512f" in cpu_flags()


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> bf16 where the hardware has bfloat16 arithmetic, else fp32."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_bf16() else "fp32"


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The forward pass's mixed-precision context: nothing for fp32, ``torch.autocast`` to
    bfloat16 or float16 otherwise (matrix products in low precision, reductions in fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def seed_everything(seed: int) -> None:
    """One seed for Python, NumPy and torch (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """All random states, in a form ``torch.load(weights_only=True)`` accepts."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos,
                  "has_gauss": has_gauss, "gauss": gauss},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].cpu().numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
