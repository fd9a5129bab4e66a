"""The int8 linear layer that ``--quantize int8`` puts in place of every ``nn.Linear``.

A module of its own, imported only when int8 is asked for (it imports ``torch.ao``), and a
class at module level so that a quantized model pickles, deep-copies and scripts like any
other.
"""

from __future__ import annotations

import warnings

import torch

with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao
    warnings.simplefilter("ignore")
    from torch.ao.nn.quantized.dynamic import Linear as _DynamicLinear


class DynamicInt8Linear(_DynamicLinear):
    """torch's dynamically quantized ``Linear`` (int8 weights with one scale per output row,
    the input quantized on the fly), which a feed-forward layer can also ask for
    ``relu(x W^T + b)`` in one call: ``forward(x, relu=True)`` is fbgemm's
    ``linear_relu_dynamic``, the same values as the relu after the product with one pass over
    the (rows, d_ff) output fewer."""

    #: seq2seq.models.transformer.FeedForward asks for the fused relu when this is set
    fuses_relu = True

    def forward(self, x: torch.Tensor, relu: bool = False) -> torch.Tensor:
        if not relu:
            return super().forward(x)
        if self._packed_params.dtype != torch.qint8 or (self.version or 0) < 4:
            return torch.relu(super().forward(x))
        return torch.ops.quantized.linear_relu_dynamic(
            x, self._packed_params._packed_params, reduce_range=True).to(x.dtype)
