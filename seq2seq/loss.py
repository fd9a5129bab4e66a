"""Token-level cross-entropy with label smoothing, fused with the output layer and chunked.

The output layer dominates the memory and much of the time of a small NMT model on a CPU: its
logits are (N, V) with V in the thousands, so a 4,096-token batch over 8k subwords holds 130 MB
of logits, as much again for their softmax in the backward pass, and as much for its gradient.
:func:`linear_cross_entropy_sum` never holds more than one chunk of logits (2^21 by default): for
each chunk of rows it computes the logits, the loss and at once the gradients of the loss with
respect to the features and to the layer's weight and bias, and keeps only those gradients
(N x H and V x H, both small). The backward pass just scales them. The multiply-adds are the
same as an unfused layer and loss (one forward and two gradient products); what is saved is
the memory and the traffic through it.

With the smoothed target distribution (Szegedy et al. 2016) ``q = (1 - eps) * onehot(y) + eps / V``
and logits ``z = h W^T + b``:

    loss_n = lse(z_n) - (1 - eps) * z_{n, y_n} - eps * mean_v z_{n, v}
    dloss_n / dz_n = softmax(z_n) - q_n =: g_n
    dL/dh = g W,   dL/dW = g^T h,   dL/db = sum_n g_n
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CHUNK_LOGITS = 1 << 21  # logits per chunk by default (train.loss_chunk_logits)


def _chunk_rows(vocab: int, chunk_logits: int) -> int:
    return max(1, chunk_logits // vocab)


def _chunk_loss(logits: torch.Tensor, target: torch.Tensor, eps: float
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed loss of logits (n, V) float32, and their log-softmax (n, V), written over the
    logits."""
    log_probs = torch.log_softmax(logits, dim=-1, out=logits)
    loss = -(1.0 - eps) * log_probs.gather(1, target.unsqueeze(1)).sum()
    if eps > 0:
        loss = loss - eps * log_probs.mean(dim=-1).sum()
    return loss, log_probs


def _in_fp32(h: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether the output layer's products run in float32 (no autocast, no other dtype): then
    they write into the chunk buffer and the gradients in place."""
    return (h.dtype == weight.dtype == torch.float32
            and not torch.is_autocast_enabled(h.device.type))


class ChunkBuffer:
    """The float32 buffer every chunk's logits are written into, kept from one call to the
    next (one per training loop): a new buffer of some 30 MB each batch would be fresh memory
    that the system must map and zero page by page, about 16 ms a batch on a 2-core VM."""

    def __init__(self):
        self.tensor: torch.Tensor | None = None

    def get(self, rows: int, vocab: int, device: torch.device) -> torch.Tensor:
        """A (rows, vocab) float32 view of the buffer, grown or moved when it must be."""
        n = rows * vocab
        t = self.tensor
        if t is None or t.numel() < n or t.device != device:
            self.tensor = t = torch.empty(n, dtype=torch.float32, device=device)
        return t[:n].view(rows, vocab)


class _LinearCrossEntropy(torch.autograd.Function):
    """Loss of ``F.linear(h, weight, bias)`` against ``target``; the gradients are computed in
    the forward pass, chunk by chunk, and scaled in the backward pass.

    One (rows, V) float32 buffer (a :class:`ChunkBuffer`'s) serves every chunk: the logits are
    written into it, then replaced by their log-softmax, the softmax and g. In float32 the
    products write into it and into the features' gradient directly (``out=``). A chunk of
    about a thousand rows keeps the products near the matrix-multiply peak (2-core AVX2 CPU:
    82 GFLOP/s for the logits of 262 rows, 107 for 1,024; docs/performance.md). The default
    chunk, 2^21 logits, gives every number of the code before the buffer, bit for bit."""

    @staticmethod
    def forward(ctx, h, weight, bias, target, eps, chunk_logits=CHUNK_LOGITS, buffer=None):
        # h (N, H), weight (V, H), bias (V,) or None, target (N,) long
        N, V = h.size(0), weight.size(0)
        fp32 = _in_fp32(h, weight)
        grad_h = torch.empty_like(h)
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        grad_b = None if bias is None else torch.zeros(V, dtype=torch.float32,
                                                       device=weight.device)
        loss = torch.zeros((), dtype=torch.float32, device=h.device)
        rows = _chunk_rows(V, chunk_logits)
        buf = (buffer or ChunkBuffer()).get(min(rows, N), V, h.device)
        for start in range(0, N, rows):
            hc, tc = h[start : start + rows], target[start : start + rows]
            z = buf[: hc.size(0)]  # (n, V)
            if not fp32:
                z.copy_(F.linear(hc, weight, bias))
            elif bias is None:
                torch.mm(hc, weight.t(), out=z)
            else:
                torch.addmm(bias, hc, weight.t(), out=z)
            part, g = _chunk_loss(z, tc, eps)
            loss += part
            g = g.exp_()  # softmax(z), in place of the log-softmax: (n, V)
            if eps > 0:
                g.sub_(eps / V)
            g.scatter_add_(1, tc.unsqueeze(1), g.new_full((tc.size(0), 1), -(1.0 - eps)))
            if fp32:
                torch.mm(g, weight, out=grad_h[start : start + rows])  # (n, H)
            else:
                grad_h[start : start + rows] = torch.mm(g.to(weight.dtype), weight)
            grad_w += torch.mm(g.t().to(hc.dtype), hc)  # (V, H)
            if grad_b is not None:
                grad_b += g.sum(dim=0)
        ctx.save_for_backward(grad_h, grad_w, grad_b)
        ctx.dtypes = (weight.dtype, None if bias is None else bias.dtype)
        return loss

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w, grad_b = ctx.saved_tensors
        w_dtype, b_dtype = ctx.dtypes
        grad_b = None if grad_b is None else (grad_b * grad_out).to(b_dtype)
        return (grad_h * grad_out.to(grad_h.dtype), (grad_w * grad_out).to(w_dtype), grad_b,
                None, None, None, None)


def linear_cross_entropy_sum(features: torch.Tensor, layer: nn.Linear, target: torch.Tensor,
                             label_smoothing: float = 0.0, chunk_logits: int = CHUNK_LOGITS,
                             buffer: ChunkBuffer | None = None) -> torch.Tensor:
    """Summed (label-smoothed) cross-entropy of ``layer(features)`` (N, V) against target ids
    (N,), computed in chunks of ``chunk_logits // V`` rows (at least one), in ``buffer`` (a
    new one if None). Without gradients to compute (validation), only the loss is computed,
    also in chunks."""
    eps = float(label_smoothing)
    params = (features, layer.weight, layer.bias)
    if torch.is_grad_enabled() and any(p is not None and p.requires_grad for p in params):
        return _LinearCrossEntropy.apply(features, layer.weight, layer.bias, target, eps,
                                         chunk_logits, buffer)
    loss = torch.zeros((), dtype=torch.float32, device=features.device)
    rows = _chunk_rows(layer.out_features, chunk_logits)
    for start in range(0, features.size(0), rows):
        logits = layer(features[start : start + rows]).float()  # a new tensor: overwritten
        loss += _chunk_loss(logits, target[start : start + rows], eps)[0]
    return loss
