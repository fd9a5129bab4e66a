"""Linear layers with their weights prepacked for oneDNN, for fp32 inference on a CPU.

``torch.nn.functional.linear`` on a CPU hands each product to MKL's sgemm, which copies panels
of the weight matrix into its own layout inside every call. During decoding the same weights
meet a new batch of 64-320 rows at every step. oneDNN can lay a weight out once
(``torch.ops.mkldnn._reorder_linear_weight``) and then multiply any number of rows by it
(``torch.ops.mkldnn._linear_pointwise``, the operator that ``torch.compile``'s CPU backend uses
for frozen linear layers); for the output layer over the vocabulary that is much faster.

Measured on a 2-core AVX2 CPU (docs/performance.md), the output layer over an 8k vocabulary,
[64, 256] x [256, 8000], took 2.2 ms instead of 3.8-4.7 ms with both threads on it, and 4.6-5.6
ms instead of 7.0-7.2 ms on one thread (each decoding worker's share). The small products of
the layers inside the model (256-1,024 outputs) gained 10-20% on two threads but were as fast
or slower on one. Decoding the test set with the two default workers (one thread each), the
Transformer was 1.085x faster greedy and 1.12x with beam 5 packing only the output layer, 1.087x
and 1.05x packing every layer; with one worker on two threads, 1.105x against 1.155x greedy. So
only layers with at least :data:`MIN_OUTPUTS` outputs are packed. The results equal
``F.linear``'s to float rounding (about 3e-6 on logits of size 1-10); a test checks them.

:func:`pack_linears` swaps those ``nn.Linear`` layers of a model in eval mode for a
:class:`PackedLinear`; :class:`seq2seq.inference.Translator` does so on a CPU when the linear
layers are not quantized. The packed model is for inference only: it has no gradients, its
packed weights are not in its ``state_dict`` and it cannot be moved to another device. Where the
operators are missing (a torch built without oneDNN) the model is left as it is.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

#: the fewest outputs of a layer that :func:`pack_linears` packs by default: the output layer
#: over a vocabulary, where packing paid in every measured setting (see the module docstring)
MIN_OUTPUTS = 4096


@functools.cache
def packing_available() -> bool:
    """Whether this torch has oneDNN's packed linear operators and they run (checked once on a
    small product against ``F.linear``)."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        w, b, x = torch.randn(5, 3), torch.randn(5), torch.randn(2, 3)
        y = torch.ops.mkldnn._linear_pointwise(x, torch.ops.mkldnn._reorder_linear_weight(w, 2),
                                               b, "none", [], "")
        return bool(torch.allclose(y, torch.nn.functional.linear(x, w, b), atol=1e-5))
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


class PackedLinear(nn.Module):
    """``y = x W^T + b`` for x (..., in) with W held in oneDNN's packed layout; a copy of the
    ``nn.Linear`` it was made from, so a weight tied to an embedding stays with the embedding."""

    def __init__(self, linear: nn.Linear, rows_hint: int = 64):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach().float().contiguous()  # (out, in)
        # rows_hint: the batch the layout is tuned for; any number of rows is accepted
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight, rows_hint)
        self.bias = None if linear.bias is None else linear.bias.detach().float().clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, packed for oneDNN")


def pack_linears(model: nn.Module, min_outputs: int | None = None) -> bool:
    """Replace, in place, every fp32 ``nn.Linear`` of ``model`` (on the CPU) with at least
    ``min_outputs`` (default :data:`MIN_OUTPUTS`) outputs by a :class:`PackedLinear`; puts the
    model in eval mode. Returns
    whether anything was packed (False where oneDNN's operators are missing, the model then
    unchanged, or where no layer is that large)."""
    if not packing_available():
        return False
    min_outputs = MIN_OUTPUTS if min_outputs is None else min_outputs
    model.eval()
    packed = False
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if (type(child) is nn.Linear and child.out_features >= min_outputs
                    and child.weight.device.type == "cpu"
                    and child.weight.dtype == torch.float32):
                setattr(module, name, PackedLinear(child))
                packed = True
    return packed
