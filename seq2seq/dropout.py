"""Dropout that keeps a one-byte mask for the backward pass.

    y = x * m / (1 - p),   m_i ~ Bernoulli(1 - p)       (Srivastava et al. 2014)

On a CPU, ``torch.nn.functional.dropout`` builds ``m / (1 - p)`` as a float tensor and the
multiplication keeps it for the backward pass: four bytes for every element of every dropped
activation. ``torch.native_dropout`` (what ``F.dropout`` already runs on a GPU) draws the same
Bernoulli numbers from the same generator and gives the same values, but returns the mask as
bool: one byte. In the default Transformer that is about 10% of a training batch's saved
activations (docs/performance.md, Memory). Its own backward pass on a CPU multiplies the float
gradient by the bool mask element by element with a type conversion each (about 30x slower
than a float product), so the backward here turns the mask into floats first: the gradients
are those of ``F.dropout``, bit for bit (tests/test_dropout.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _MaskedDropout(torch.autograd.Function):
    """y = x * m * scale with m drawn by ``torch.native_dropout``; keeps only m (bool)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:
        y, mask = torch.native_dropout(x, p, True)
        ctx.save_for_backward(mask)
        ctx.scale = 1.0 / (1.0 - p)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (mask,) = ctx.saved_tensors
        # dL/dx = dL/dy * m * scale, with m as floats: one vectorised product
        return mask.to(grad.dtype).mul_(ctx.scale).mul_(grad), None


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """``F.dropout(x, p, training)``, keeping a bool mask when it drops anything."""
    if training and 0.0 < p < 1.0 and torch.is_grad_enabled() and x.requires_grad:
        return _MaskedDropout.apply(x, p)
    return F.dropout(x, p, training)


class Dropout(nn.Dropout):
    """``nn.Dropout`` through :func:`dropout` (same parameters, same state dict)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)
