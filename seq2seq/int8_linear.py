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
        params = self._packed_params
        if params.dtype != torch.qint8 or (self.version or 0) < 4:  # torch's older layouts
            y = super().forward(x)
            return torch.relu(y) if relu else y
        # the operators themselves: torch's Python wrapper and the operator's checks cost 11 of
        # a small layer's 20 us a call, held under the GIL that the decoding workers share
        op = _LINEAR_RELU if relu else _LINEAR
        y = op(x, params._packed_params, True)  # reduce_range, as torch's layer asks
        return y if y.dtype == x.dtype else y.to(x.dtype)


def _direct(overload):
    """The operator's C++ entry: an ``OpOverload`` taking a torchbind argument first looks for
    the fake objects of tracing (5 us a call, in Python), which inference never passes."""
    return getattr(overload, "_op", overload)


_LINEAR = _direct(torch.ops.quantized.linear_dynamic.default)
_LINEAR_RELU = _direct(torch.ops.quantized.linear_relu_dynamic.default)
