"""Linear layers with their weights prepacked for oneDNN, for fp32 or bf16 inference on a CPU.

``torch.nn.functional.linear`` on a CPU hands each product to MKL's sgemm, which copies panels
of the weight matrix into its own layout inside every call. During decoding the same weights
meet a new batch of 64-320 rows at every step. oneDNN can lay a weight out once
(``torch.ops.mkldnn._reorder_linear_weight``) and then multiply any number of rows by it
(``torch.ops.mkldnn._linear_pointwise``, the operator that ``torch.compile``'s CPU backend uses
for frozen linear layers); for the output layer over the vocabulary that is much faster.

Measured on a 2-core AVX2 CPU (docs/performance.md, "The output layer packed for oneDNN"),
the output layer over an 8k vocabulary, [64, 256] x [256, 8000], took 3.0 ms instead of 5.4 ms
with both threads on it, and 4.6 ms instead of 7.2 ms on one thread (each decoding worker's
share). The smaller products inside the model (256-1,024 outputs) gained 10-20% on two threads
but were as fast or slower on one; decoding the test set with the two default workers, packing
the output layer alone did as well as packing every layer. On a 2-core AMD EPYC with AVX-512 the
small products gained on one thread too (a [64, 256] x [256, 1,024] product 324 us instead of
365, greedy decoding 6-11% faster with every layer packed). So by default every layer is packed
on a CPU with AVX-512, and elsewhere only the output layer, for a vocabulary of at least
:data:`MIN_OUTPUTS` words (:func:`packs_every_layer`). A packed feed-forward layer applies its
relu inside the product. The results equal ``F.linear``'s to float rounding (about 3e-6 on
logits of size 1-10); tests check them.

:func:`pack_linears` swaps those ``nn.Linear`` layers of a model for :class:`PackedLinear`;
:class:`seq2seq.inference.Translator` does so on a CPU unless the linear layers are quantized or
``pack=False`` (``--no-pack``). A packed layer keeps its weight and bias as parameters, so the
model's ``state_dict``, parameter count and tied weights are what they were, and it falls back to
``F.linear`` wherever the packed copy does not apply: under autocast or another input dtype,
when gradients are wanted, and for weights moved off the CPU or out of fp32. The copy is made
again after the weight changes in place (an optimizer step, ``load_state_dict``) and after the
module is moved, converted or copied.
Where the operators are missing (a torch built without oneDNN) nothing is packed.

With ``dtype=torch.bfloat16`` (``--quantize bf16``, :mod:`seq2seq.quantize`) a layer packs a
bf16 copy of its weight and bias instead: its input is rounded to bf16, the product accumulates
in fp32 and the output comes back as fp32, as under bf16 autocast. Every linear layer is packed
so; on a CPU with bf16 arithmetic the products run about twice as fast as fp32's.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from seq2seq.runtime import cpu_has_avx512

#: the fewest outputs (words) of an output layer that :func:`pack_linears` packs by default:
#: at 8,000 packing paid in every measured setting, at 1,024 outputs (a feed-forward layer)
#: not on one thread (see the module docstring)
MIN_OUTPUTS = 4096

#: the arithmetic a packed layer can do: fp32, or bf16 products (fp32 in and out)
PACK_DTYPES = (torch.float32, torch.bfloat16)


@functools.cache
def packing_available() -> bool:
    """Whether this torch has oneDNN's packed linear operators and they run (checked once on a
    small fixed product against ``F.linear``; no random numbers are drawn)."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        w = torch.arange(15, dtype=torch.float32).view(5, 3) / 7
        x, b = torch.arange(6, dtype=torch.float32).view(2, 3) / 5, torch.ones(5)
        y = torch.ops.mkldnn._linear_pointwise(x, torch.ops.mkldnn._reorder_linear_weight(w, 2),
                                               b, "none", [], "")
        return bool(torch.allclose(y, F.linear(x, w, b), atol=1e-5))
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


@functools.cache
def bf16_packing_available() -> bool:
    """Whether a bf16 copy can be packed and multiplied here (checked once on a small fixed
    product against ``F.linear`` in fp32, to bf16's precision)."""
    if not packing_available():
        return False
    try:
        w = torch.arange(15, dtype=torch.float32).view(5, 3) / 7
        x, b = torch.arange(6, dtype=torch.float32).view(2, 3) / 5, torch.ones(5)
        packed = torch.ops.mkldnn._reorder_linear_weight(w.bfloat16(), 2)
        y = torch.ops.mkldnn._linear_pointwise(x.bfloat16(), packed, b.bfloat16(), "none",
                                               [], "")
        return bool(torch.allclose(y.float(), F.linear(x, w, b), atol=0.05, rtol=0.02))
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


def _relu_if(y: torch.Tensor, relu: bool) -> torch.Tensor:
    return F.relu(y) if relu else y


class PackedLinear(nn.Module):
    """``y = x W^T + b`` for x (..., in), computed with a copy of W in oneDNN's packed layout.

    The ``nn.Linear`` it replaces lends it its weight and bias (the same parameters, so a weight
    tied to an embedding stays tied); the packed copy serves fp32 inputs without gradients or
    autocast, and ``F.linear`` on the parameters serves everything else."""

    #: ``forward(x, relu=True)`` is ``relu(forward(x))``, fused where it can be (the
    #: Transformer's feed-forward layer asks for it when it sees this)
    fuses_relu = True

    def __init__(self, linear: nn.Linear, rows_hint: int = 64,
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias  # (out, in), (out,) or None
        self.rows_hint = rows_hint  # the batch the layout is tuned for; any rows are accepted
        if dtype not in PACK_DTYPES:
            raise ValueError(f"PackedLinear: dtype must be one of {PACK_DTYPES}, got {dtype}")
        self.dtype = dtype  # the arithmetic: fp32, or bf16 with fp32 input and output
        self.packed: torch.Tensor | None = None
        self.packed_bias: torch.Tensor | None = None  # the bias in ``dtype``
        self.packed_version = (-1, -1)  # the versions (in-place changes) of weight and bias
        self.repack()

    def _versions(self) -> tuple[int, int]:
        return self.weight._version, -1 if self.bias is None else self.bias._version

    def repack(self) -> bool:
        """Pack the current weight if it is fp32 on the CPU; returns whether a copy is there."""
        w = self.weight.detach()
        if w.device.type != "cpu" or w.dtype != torch.float32:
            self.packed = self.packed_bias = None
            return False
        self.packed = torch.ops.mkldnn._reorder_linear_weight(
            w.to(self.dtype).contiguous(), self.rows_hint)
        self.packed_bias = None if self.bias is None else self.bias.detach().to(self.dtype)
        self.packed_version = self._versions()
        return True

    def forward(self, x: torch.Tensor, relu: bool = False) -> torch.Tensor:
        """``x W^T + b``, or ``relu(x W^T + b)`` with ``relu`` (fused into the product when
        the packed fp32 copy serves)."""
        # read once from the parameter dict: each module attribute lookup costs about 1 us, and
        # in a decoding step this runs 20-odd times under the GIL that the workers share
        params = self._parameters
        w, b = params["weight"], params.get("bias")
        if (x.dtype != torch.float32 or not x.is_cpu or torch.is_autocast_enabled("cpu")
                or (torch.is_grad_enabled() and (x.requires_grad or w.requires_grad))):
            return _relu_if(F.linear(x, w, b), relu)
        # packed anew after the weight or bias changed in place (an optimizer step,
        # load_state_dict), was moved or converted, or the module was copied
        if ((self.packed is None or self.packed_version
             != (w._version, -1 if b is None else b._version)) and not self.repack()):
            return _relu_if(F.linear(x, w, b), relu)
        if self.dtype == torch.float32:
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.packed_bias,
                                                      "relu" if relu else "none", [], "")
        # bf16: the input rounded to bf16 as autocast would, the product accumulated in fp32
        # by oneDNN, its output rounded to bf16 and handed back as fp32
        y = torch.ops.mkldnn._linear_pointwise(x.to(self.dtype), self.packed, self.packed_bias,
                                               "none", [], "")
        return _relu_if(y.to(torch.float32), relu)

    def _apply(self, fn, recurse=True):
        # .to(), .cuda(), .double() ... reach the parameters; the packed copy is made again
        self.packed = None
        return super()._apply(fn, recurse)

    def __getstate__(self):  # the opaque packed tensor cannot be copied or pickled
        return {**super().__getstate__(), "packed": None, "packed_bias": None}

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, packed for oneDNN: {self.packed is not None}"
                + ("" if self.dtype == torch.float32 else f" ({str(self.dtype)[6:]})"))


def pack_linears(model: nn.Module, every_layer: bool | None = None,
                 min_outputs: int | None = None, dtype: torch.dtype = torch.float32) -> bool:
    """Replace, in place, plain fp32 ``nn.Linear`` layers on the CPU by :class:`PackedLinear`:
    the model's output layer (``generator``) if it has at least ``min_outputs`` (default
    :data:`MIN_OUTPUTS`) outputs, or with ``every_layer`` every linear layer with at least
    ``min_outputs`` (default 1). ``every_layer=None`` (the default) packs every layer on a CPU
    with AVX-512 and the output layer alone elsewhere (:func:`packs_every_layer`). Returns
    whether anything was packed (nothing where oneDNN's operators are missing)."""
    if not packing_available():
        return False
    if every_layer is None:
        every_layer = packs_every_layer()
    if min_outputs is None:
        min_outputs = 1 if every_layer else MIN_OUTPUTS
    layers = ([(module, name, child) for module in model.modules()
               for name, child in module.named_children()] if every_layer
              else [(model, "generator", getattr(model, "generator", None))])
    packed = False
    for module, name, child in layers:
        if (type(child) is nn.Linear and child.out_features >= min_outputs
                and child.weight.device.type == "cpu" and child.weight.dtype == torch.float32):
            setattr(module, name, PackedLinear(child, dtype=dtype))
            packed = True
    return packed


def packs_every_layer() -> bool:
    """Whether fp32 inference packs every linear layer, not just the output layer: on a CPU
    with AVX-512, where oneDNN's kernels for the model's small products (64 rows, 256-1,024
    outputs) beat ``F.linear`` on one thread too (greedy decoding 6-11% faster on a 2-core
    AMD EPYC, docs/performance.md); on AVX2 CPUs they did not (see the module docstring)."""
    return cpu_has_avx512()
