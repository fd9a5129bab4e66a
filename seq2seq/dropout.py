"""Dropout that keeps a one-byte mask for the backward pass, with two ways to draw the mask.

    y = x * m * v,   m_i ~ Bernoulli(q),   q = 1 - p,   v = 1 / q      (Srivastava et al. 2014)

On a CPU, ``torch.nn.functional.dropout`` builds the noise ``m * v`` as a float tensor and the
multiplication keeps it for the backward pass: four bytes for every element of every dropped
activation. Here the mask is kept as bool, one byte: in the default Transformer about 10% of a
training batch's saved activations (docs/performance.md, Memory). The backward pass turns it
into the same noise first (multiplying a float gradient by a bool tensor converts element by
element, about 30x slower than a float product). v is 1 / q rounded to x's dtype, as
``F.dropout`` divides its noise by q, so values and gradients are those of ``F.dropout``.

Drawing the mask is what costs on a CPU: torch's own ``bernoulli_`` kernel draws each element
serially, one 64-bit number from its Mersenne Twister compared with q, about 10 ns an element,
some 11% of a Transformer update (with MKL on an Intel CPU torch uses MKL's generator instead).
``train.dropout_masks`` chooses how (:func:`masks` sets it for a block of code):

* ``torch``: the mask ``F.dropout`` draws, bit for bit, and the generator left where
  ``F.dropout`` leaves it (tests/test_dropout.py). Where torch's own kernel draws them, the same
  64-bit numbers are drawn as integers from the same generator and compared in one vectorised
  pass: u = (r mod 2^53) / 2^53 < q  <=>  r mod 2^53 < ceil(q 2^53), about 30% cheaper than
  ``bernoulli_``. Where it does not (MKL on Intel, found by a probe at first use), by
  ``bernoulli_`` itself. What every result of the reproduction sweeps was trained with, and what
  a config without the key means. Like torch's, these masks differ between Intel CPUs with MKL
  and the others.
* ``fast``: 16 random bits an element (four elements from each 64-bit draw), kept where they
  are below k = round(q 2^16): q is rounded to a multiple of 2^-16 (p = 0.1 becomes 0.100006)
  and v = 2^16 / k, so that E[y] = x still holds. A quarter of the generator's work; the same
  masks on every CPU; the Transformer's update about 7% faster on a 2-core AVX2 AMD CPU. Another
  stream of masks than ``torch``, so other weights from the same seed.

On a GPU both are ``torch.native_dropout`` (a fused kernel with its own generator, already
fast). Not covered: the dropout ``nn.LSTM``/``nn.GRU`` apply between their stacked layers,
which torch draws inside the recurrent kernel.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

MASK_KINDS: tuple[str, ...] = ("torch", "fast")
_kind: str = "torch"  # what masks() last set

_LOW_53 = (1 << 53) - 1
_words_are_bernoulli: bool | None = None  # found at first use by _bernoulli_draws_words


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


def _random_words(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """n 64-bit words from torch's CPU generator, each its ``random64()``, in order."""
    return torch.empty(n, dtype=torch.int64).random_(-(1 << 63), None, generator=generator)


def _words_below(words: torch.Tensor, q: float) -> torch.Tensor:
    """u < q for u = (word mod 2^53) / 2^53, the uniform number ``bernoulli_`` makes of a word
    (q * 2^53 is exact: q's mantissa, another exponent)."""
    return words.bitwise_and_(_LOW_53) < math.ceil(q * 2.0**53)


def _bernoulli_draws_words() -> bool:
    """Whether ``bernoulli_`` here compares one 64-bit word an element (torch's own kernel), so
    that :func:`_words_below` gives its masks; not with MKL on an Intel CPU. Probed once, on
    generators of its own (the default generator is not touched)."""
    global _words_are_bernoulli
    if _words_are_bernoulli is None:
        a, b = torch.Generator().manual_seed(2014), torch.Generator().manual_seed(2014)
        ref = torch.empty(1000).bernoulli_(0.75, generator=a) != 0
        ours = _words_below(_random_words(1000, b), 0.75)
        _words_are_bernoulli = (torch.equal(ref, ours)
                                and torch.equal(a.get_state(), b.get_state()))
    return _words_are_bernoulli


def _kept_value(dtype: torch.dtype, q: float) -> float:
    """1 / q rounded to ``dtype`` as ``F.dropout`` computes it (its noise divided by q)."""
    return torch.ones((), dtype=dtype).div_(q).item()


def _noise_of(keep: torch.Tensor, dtype: torch.dtype, value: float) -> torch.Tensor:
    """The noise m * v of a bool mask, as ``dtype`` (exact: 0 or v)."""
    return keep.to(dtype).mul_(value)


def keep_mask(like: torch.Tensor, p: float, kind: str | None = None
              ) -> tuple[torch.Tensor, float]:
    """A CPU mask shaped as ``like``, True = kept, each element kept with probability q = 1 - p
    (0 < p < 1; for ``fast`` q rounded to a multiple of 2^-16), and v, the factor of the kept
    values: 1 / q rounded to ``like``'s dtype (exact in it). The mask is drawn in the order of
    ``like``'s elements in memory, as ``bernoulli_`` fills ``torch.empty_like(like)`` (a
    transposed input gets a transposed mask)."""
    kind = kind or _kind
    n, q = like.numel(), 1.0 - p
    if kind == "torch":
        value = _kept_value(like.dtype, q)
        if not _bernoulli_draws_words():
            return torch.empty_like(like).bernoulli_(q) != 0, value
        flat = _words_below(_random_words(n), q)
    else:
        k = min(max(round(q * 65536), 1), 65536)  # kept values among the 2^16 a lane can take
        if k == 65536:
            return torch.ones(like.shape, dtype=torch.bool), 1.0
        lanes = _random_words((n + 3) // 4).view(torch.int16)[:n]  # uniform on [-2^15, 2^15)
        flat = lanes < k - 32768
        value = torch.tensor(65536.0 / k, dtype=like.dtype).item()
    layout = torch.empty_like(like, dtype=torch.bool)  # dense: contiguous or permuted
    return flat.as_strided(layout.shape, layout.stride()), value


def noise(x: torch.Tensor, p: float) -> tuple[torch.Tensor, float]:
    """The noise m * v as x's dtype (with ``torch`` masks, what ``F.dropout`` multiplies x by:
    ``torch.empty_like(x).bernoulli_(1 - p).div_(1 - p)``), and v."""
    if x.device.type != "cpu":
        m = torch.empty_like(x).bernoulli_(1 - p).div_(1 - p)
        return m, _kept_value(x.dtype, 1 - p)
    keep, value = keep_mask(x, p)
    return _noise_of(keep, x.dtype, value), value


def _drop(x: torch.Tensor, p: float) -> tuple[torch.Tensor, torch.Tensor, float]:
    """y = x * noise, the mask (bool) and v."""
    if x.device.type != "cpu":
        y, keep = torch.native_dropout(x, p, True)
        return y, keep, 1.0 / (1.0 - p)
    keep, value = keep_mask(x, p)
    return _noise_of(keep, x.dtype, value).mul_(x), keep, value  # x * noise, as F.dropout


class _MaskedDropout(torch.autograd.Function):
    """y = x * m * v; keeps only m (bool)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:
        y, keep, ctx.value = _drop(x, p)
        ctx.save_for_backward(keep)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (keep,) = ctx.saved_tensors
        # dL/dx = dL/dy * m * v: the noise rebuilt as floats, then one vectorised product
        return _noise_of(keep, grad.dtype, ctx.value).mul_(grad), None


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """``F.dropout(x, p, training)`` with the mask drawn as :func:`masks` says, keeping a bool
    mask when a gradient needs it."""
    if not training or p <= 0.0:
        return x  # as F.dropout, which hands back its input here
    if p >= 1.0:
        return F.dropout(x, p, training)
    if torch.is_grad_enabled() and x.requires_grad:
        return _MaskedDropout.apply(x, p)
    return _drop(x, p)[0]


class Dropout(nn.Dropout):
    """``nn.Dropout`` through :func:`dropout` (same parameters, same state dict)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)
