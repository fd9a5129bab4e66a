"""Dropout that keeps a one-byte mask for the backward pass, with two ways to draw the mask.

    y = x * m / q,   m_i ~ Bernoulli(q),   q = 1 - p           (Srivastava et al. 2014)

On a CPU, ``torch.nn.functional.dropout`` builds ``m / q`` as a float tensor and the
multiplication keeps it for the backward pass: four bytes for every element of every dropped
activation. Here the mask is kept as bool, one byte: in the default Transformer about 10% of a
training batch's saved activations (docs/performance.md, Memory). The backward pass turns it
into floats first (multiplying a float gradient by a bool tensor converts element by element,
about 30x slower than a float product).

Drawing the mask is what costs on a CPU: torch draws each element serially from its Mersenne
Twister, 53 random bits compared with q, about 10 ns an element, some 10% of a Transformer
update. ``train.dropout_masks`` chooses how (:func:`masks` sets it for a block of code):

* ``torch``: the mask ``F.dropout`` draws, bit for bit, and the generator left where
  ``F.dropout`` leaves it (tests/test_dropout.py). Drawn as 64-bit integers from the same
  generator and compared in a vectorised pass, which is the same stream of numbers as
  ``bernoulli_``: u = (r mod 2^53) / 2^53 < q  <=>  r mod 2^53 < ceil(q 2^53). About 30% cheaper
  than ``bernoulli_``, same values. What every result of the reproduction sweeps was trained
  with, and what a config without the key means.
* ``fast``: 16 random bits an element (four elements from each 64-bit draw), kept where they
  are below k = round(q 2^16): q is rounded to a multiple of 2^-16 (p = 0.1 becomes
  0.100006), and y = x * m * 2^16 / k, so that E[y] = x still holds exactly. A quarter of the
  generator's work; the Transformer's update about 7% faster on a 2-core CPU. Another stream
  of masks, so other weights than ``torch`` from the same seed.

On a GPU both are ``torch.native_dropout`` (a fused kernel with its own generator, already
fast), and so is every mask when nothing needs a gradient.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

MaskKind = Literal["torch", "fast"]
MASK_KINDS: tuple[str, ...] = ("torch", "fast")
_kind: str = "torch"  # what masks() last set

_LOW_53 = (1 << 53) - 1


def mask_kind() -> str:
    """How dropout masks are drawn now: ``torch`` or ``fast``."""
    return _kind


@contextmanager
def masks(kind: str) -> Iterator[None]:
    """Draw dropout masks the ``kind`` way inside the block (the Trainer wraps training in it)."""
    global _kind
    if kind not in MASK_KINDS:
        raise ValueError(f"dropout masks: {kind!r} is not one of {', '.join(MASK_KINDS)}")
    before, _kind = _kind, kind
    try:
        yield
    finally:
        _kind = before


def _random_words(n: int) -> torch.Tensor:
    """n 64-bit words from torch's CPU generator, each its ``random64()`` (as ``bernoulli_``
    draws them, one per element, in order)."""
    return torch.empty(n, dtype=torch.int64).random_(-(1 << 63), None)


def keep_mask(like: torch.Tensor, p: float, kind: str | None = None
              ) -> tuple[torch.Tensor, float]:
    """A CPU mask shaped as ``like``, True = kept, each element kept with probability 1 - p
    (0 < p < 1), and the factor that makes the kept values' expectation right: 1 / q, where q
    is the probability the mask keeps with (1 - p, or its 16-bit rounding for ``fast``). The
    mask is drawn in the order of ``like``'s elements in memory, as ``bernoulli_`` fills
    ``torch.empty_like(like)`` (a transposed input gets a transposed mask)."""
    kind = kind or _kind
    n = like.numel()
    q = 1.0 - p
    if kind == "torch":
        threshold = math.ceil(q * 2.0**53)  # exact: q * 2^53 is a float with the same mantissa
        flat, scale = _random_words(n).bitwise_and_(_LOW_53) < threshold, 1.0 / q
    else:
        k = min(max(round(q * 65536), 1), 65536)  # kept values among the 2^16 a lane can take
        if k == 65536:
            return torch.ones(like.shape, dtype=torch.bool), 1.0
        lanes = _random_words((n + 3) // 4).view(torch.int16)[:n]  # uniform on [-2^15, 2^15)
        flat, scale = lanes < k - 32768, 65536.0 / k
    layout = torch.empty_like(like, dtype=torch.bool)  # dense: contiguous or permuted
    return flat.as_strided(layout.shape, layout.stride()), scale


def _drop(x: torch.Tensor, p: float) -> tuple[torch.Tensor, torch.Tensor, float]:
    """y = x * m * scale, the mask m (bool) and the scale."""
    if x.device.type != "cpu":
        y, keep = torch.native_dropout(x, p, True)
        return y, keep, 1.0 / (1.0 - p)
    keep, scale = keep_mask(x, p)
    # (m * x) * scale, in the order native_dropout multiplies: the same float values
    return keep.to(x.dtype).mul_(x).mul_(scale), keep, scale


def noise(x: torch.Tensor, p: float) -> tuple[torch.Tensor, float]:
    """m * scale as x's dtype, for a fused dropout that multiplies by it itself (with
    ``torch`` masks on a CPU, what ``torch.empty_like(x).bernoulli_(1 - p).div_(1 - p)``
    gives), and the scale."""
    if x.device.type != "cpu":
        return torch.empty_like(x).bernoulli_(1 - p).div_(1 - p), 1.0 / (1.0 - p)
    keep, scale = keep_mask(x, p)
    if _kind == "torch":
        return keep.to(x.dtype).div_(1 - p), scale
    return keep.to(x.dtype).mul_(scale), scale


class _MaskedDropout(torch.autograd.Function):
    """y = x * m * scale; keeps only m (bool)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:
        y, keep, ctx.scale = _drop(x, p)
        ctx.save_for_backward(keep)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (keep,) = ctx.saved_tensors
        # dL/dx = dL/dy * m * scale, with m as floats: one vectorised product
        return keep.to(grad.dtype).mul_(ctx.scale).mul_(grad), None


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """``F.dropout(x, p, training)`` with the mask drawn as :func:`masks` says, keeping a bool
    mask when a gradient needs it."""
    if not training or p <= 0.0 or p >= 1.0:
        return F.dropout(x, p, training)
    if torch.is_grad_enabled() and x.requires_grad:
        return _MaskedDropout.apply(x, p)
    return _drop(x, p)[0]


class Dropout(nn.Dropout):
    """``nn.Dropout`` through :func:`dropout` (same parameters, same state dict)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)
