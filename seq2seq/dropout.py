"""Dropout that keeps a one-byte mask for the backward pass.

    y = x * m / (1 - p),   m_i ~ Bernoulli(1 - p)       (Srivastava et al. 2014)

On a CPU, ``torch.nn.functional.dropout`` builds ``m / (1 - p)`` as a float tensor and the
multiplication keeps it for the backward pass: four bytes for every element of every dropped
activation. ``torch.native_dropout`` (what ``F.dropout`` already runs on a GPU) draws the same
Bernoulli numbers from the same generator and gives the same values and gradients, bit for bit
(tests/test_dropout.py), but keeps the mask as bool: one byte. In the default Transformer that
is about 10% of a training batch's saved activations (docs/performance.md, Memory).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """``F.dropout(x, p, training)``, keeping a bool mask when it drops anything."""
    if training and 0.0 < p < 1.0:
        return torch.native_dropout(x, p, True)[0]
    return F.dropout(x, p, training)


class Dropout(nn.Dropout):
    """``nn.Dropout`` through :func:`dropout` (same parameters, same state dict)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)
