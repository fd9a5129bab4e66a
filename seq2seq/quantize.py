"""Post-training quantization for CPU inference (``eval``/``translate --quantize int8|bf16``).

``int8`` is dynamic quantization of every linear layer (the attention projections, the
feed-forward layers, the RNN decoders' output and attention layers, and the output layer over
the vocabulary): the weights are stored as 8-bit integers with one scale per output row
(per-channel), and each call quantizes its input on the fly from the input's own range, so no
calibration data is needed. The matrix products then run in 8-bit integer arithmetic (fbgemm on
x86, qnnpack on ARM), which does about twice the multiply-adds per cycle of fp32 and reads a
quarter of the weight memory. Embeddings, layer norms and the recurrent cells stay in fp32.

``bf16`` keeps the model in fp32 and gives every linear layer a bfloat16 copy of its weight
and bias, packed once for oneDNN (:class:`seq2seq.packing.PackedLinear`); each call rounds its
input to bf16, multiplies with fp32 accumulation and hands its output back in fp32, the products
that bf16 autocast computes in training. Embeddings, layer norms, attention, softmax and the
scores of the search stay in fp32. Only a CPU with bf16 arithmetic (AVX-512 BF16 or AMX) gains:
the products run at about twice the fp32 rate there, and elsewhere they are emulated and slower
than fp32, which a warning says.

The translation changes a little (the report's BLEU says how much: docs/performance.md); the
model is never trained or saved quantized.
"""

from __future__ import annotations

import sys
import warnings

import torch
from torch import nn

from seq2seq.errors import ConfigError
from seq2seq.packing import bf16_packing_available, pack_linears
from seq2seq.runtime import cpu_has_bf16

QUANTIZATIONS = ("none", "int8", "bf16")


def check_quantize(how: str, device: torch.device | None = None) -> None:
    """A one-line error for an unknown name, or int8 on a device without int8 kernels."""
    if how not in QUANTIZATIONS:
        raise ConfigError(f"--quantize: must be one of {', '.join(QUANTIZATIONS)}, got {how!r}")
    if how != "none" and device is not None and device.type != "cpu":
        raise ConfigError(f"--quantize {how}: quantized kernels run on the CPU; add --device cpu "
                          f"(on a GPU, fp32/bf16 inference is the fast path)")
    if how == "bf16" and not bf16_packing_available():
        raise ConfigError("--quantize bf16: this torch's oneDNN cannot multiply in bf16 here "
                          "(checked on a small product); use none or int8")


def quantize_model(model: nn.Module, how: str) -> nn.Module:
    """The model with its linear layers quantized as ``how`` says (``none``: unchanged); for
    inference only (eval mode)."""
    check_quantize(how)
    if how == "none":
        return model
    if how == "bf16":
        if not cpu_has_bf16():  # one line, as seq2seq.inference.print_warning writes them
            print("warning: --quantize bf16: this CPU has no bf16 arithmetic (AVX-512 BF16 or "
                  "AMX), so the products are emulated and slower than fp32", file=sys.stderr,
                  flush=True)
        pack_linears(model.eval(), every_layer=True, dtype=torch.bfloat16)
        return model
    with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao
        warnings.simplefilter("ignore")
        from torch.ao.quantization import quantize_dynamic
        from torch.ao.quantization.qconfig import per_channel_dynamic_qconfig

        from seq2seq.int8_linear import DynamicInt8Linear

        return quantize_dynamic(model.eval(), {nn.Linear: per_channel_dynamic_qconfig},
                                dtype=torch.qint8, mapping={nn.Linear: DynamicInt8Linear})
