"""Attention: the scores and windows of ``seq2seq.choices``, and the modules that use them.

A *score* turns queries (decoder states) and keys (encoder states) into energies ``e_ij``; each is
a small class bound to its choice in :data:`seq2seq.choices.SCORES`. :class:`Attention` owns
everything the scores share: masking of padded source positions, the window (global, or Luong's
local-m / local-p, bound to :data:`seq2seq.choices.WINDOWS`), the softmax
``a_ij = exp(e_ij) / sum_k exp(e_ik)``, optional hard (argmax) attention at inference, and the
context vector ``c_i = sum_j a_ij h_j`` (Bahdanau et al. 2014, eqs. 5-6).
:class:`MultiHeadAttention` (Vaswani et al. 2017) is the Transformer's attention; the RNN decoders
use it too when ``model.attention.heads > 1``.

Both modules split the work the same way: ``project_keys(keys)`` runs once per source sentence,
then each call attends from queries to those projected keys. :class:`Attention` also takes the
values (the encoder states) and, for a local window, the target positions; the projected keys of
:class:`MultiHeadAttention` already hold its per-head values.

Shapes: queries ``(B, T, Dq)`` (T = 1 during step-wise decoding), keys and values ``(B, S, Dk)``,
mask ``(B, S)`` with True at real (non-pad) positions, target positions ``(B, T)``, energies and
weights ``(B, T, S)``.

Adding a score is a choice in ``seq2seq/choices.py``, one class here with
``@SCORES.implements(choices.TheChoice)``, and a test.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from seq2seq import choices
from seq2seq.choices import SCORES, WINDOWS
from seq2seq.dropout import dropout, mask_kind

if TYPE_CHECKING:
    from seq2seq.config import AttentionConfig


class Score(nn.Module):
    """Base class: ``energies = score(query, project_keys(keys))``.

    ``project_keys`` runs once per source sentence (before decoding), so the part of a score
    that depends only on the keys is not recomputed at every target step."""

    def __init__(self, query_size: int, key_size: int, cfg: AttentionConfig):
        super().__init__()

    def project_keys(self, keys: torch.Tensor) -> torch.Tensor:
        return keys

    def forward(self, query: torch.Tensor, proj_keys: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@SCORES.implements(choices.Additive)
class AdditiveScore(Score):
    """Bahdanau et al. 2014 (eq. 6, appendix A.1.2): ``e_ij = v_a^T tanh(W_a s_{i-1} + U_a h_j)``.
    """

    # model.init: gaussian (appendix B.1): W_a, U_a from N(0, 0.001^2), v_a zero; the standard
    # deviation of each parameter, 0 for zeros
    gaussian_std: ClassVar[dict[str, float]] = {"W.weight": 1e-3, "U.weight": 1e-3, "v.weight": 0.0}

    def __init__(self, query_size: int, key_size: int, cfg: AttentionConfig):
        super().__init__(query_size, key_size, cfg)
        hidden = cfg.hidden_size or query_size
        self.W = nn.Linear(query_size, hidden, bias=False)
        self.U = nn.Linear(key_size, hidden, bias=True)
        self.v = nn.Linear(hidden, 1, bias=False)

    def project_keys(self, keys):
        return self.U(keys)  # (B, S, A)

    def forward(self, query, proj_keys):
        q = self.W(query)  # (B, T, A)
        hidden = torch.tanh(q.unsqueeze(2) + proj_keys.unsqueeze(1))  # (B, T, S, A)
        return self.v(hidden).squeeze(-1)  # (B, T, S)


@SCORES.implements(choices.Concat)
class ConcatScore(AdditiveScore):
    """Luong et al. 2015, eq. 8: ``score(h_t, h_s) = v_a^T tanh(W_a [h_t; h_s])``.

    ``W_a [h_t; h_s] = W_1 h_t + W_2 h_s``: the additive form, attending from the current state."""

    gaussian_std: ClassVar[dict[str, float]] = {}  # Luong et al. initialise every parameter alike


@SCORES.implements(choices.Dot)
class DotScore(Score):
    """Luong et al. 2015, eq. 8: ``score(h_t, h_s) = h_t^T h_s`` (query and key sizes equal:
    :meth:`seq2seq.choices.Dot.check_sizes` has checked the config)."""

    def forward(self, query, proj_keys):
        return torch.bmm(query, proj_keys.transpose(1, 2))  # (B, T, S)


@SCORES.implements(choices.General)
class GeneralScore(Score):
    """Luong et al. 2015, eq. 8: ``score(h_t, h_s) = h_t^T W_a h_s``."""

    def __init__(self, query_size: int, key_size: int, cfg: AttentionConfig):
        super().__init__(query_size, key_size, cfg)
        self.W = nn.Linear(key_size, query_size, bias=False)

    def project_keys(self, keys):
        return self.W(keys)  # (B, S, Dq)

    def forward(self, query, proj_keys):
        return torch.bmm(query, proj_keys.transpose(1, 2))


@SCORES.implements(choices.Location)
class LocationScore(Score):
    """Luong et al. 2015, eq. 9: ``a_t = softmax(W_a h_t)``: the energies depend on the decoder
    state only, one learned weight vector per source position. Positions beyond
    ``max_positions`` get a very low energy: no weight unless a local window leaves nothing
    else (then uniform weights over the window instead of NaN)."""

    def __init__(self, query_size: int, key_size: int, cfg: AttentionConfig):
        super().__init__(query_size, key_size, cfg)
        self.W = nn.Linear(query_size, cfg.max_positions)

    def forward(self, query, proj_keys):
        S = proj_keys.size(1)
        e = self.W(query)  # (B, T, max_positions)
        if S <= e.size(-1):
            return e[..., :S]
        return F.pad(e, (0, S - e.size(-1)), value=-1e9)


@SCORES.implements(choices.Cosine)
class CosineScore(Score):
    """Graves et al. 2014 (Neural Turing Machines, eqs. 5-6), content-based addressing:
    ``e_ij = beta * cos(q_i, k_j)`` with a learned or fixed sharpening ``beta`` (keys projected
    to the query size when the sizes differ)."""

    keeps_own_init = True  # rho starts at softplus^-1(beta), not at the model's default init

    def __init__(self, query_size: int, key_size: int, cfg: AttentionConfig):
        super().__init__(query_size, key_size, cfg)
        self.W = nn.Linear(key_size, query_size, bias=False) if key_size != query_size else None
        # beta = softplus(rho) keeps the sharpening positive while it is learned.
        rho = torch.tensor(math.log(math.expm1(cfg.beta)))
        if cfg.learn_beta:
            self.rho = nn.Parameter(rho)
        else:
            self.register_buffer("rho", rho)

    @property
    def beta(self) -> torch.Tensor:
        return F.softplus(self.rho)

    def project_keys(self, keys):
        k = self.W(keys) if self.W is not None else keys
        return F.normalize(k, dim=-1)

    def forward(self, query, proj_keys):
        return self.beta * torch.bmm(F.normalize(query, dim=-1), proj_keys.transpose(1, 2))


@SCORES.implements(choices.ScaledDot)
class ScaledDotScore(Score):
    """Vaswani et al. 2017, eq. 1: ``score(q, k) = q^T k / sqrt(d_k)``. With ``projections``
    (as the paper always has): ``q = W_q h_t``, ``k = W_k h_s``; without, the states themselves,
    keys projected to the query size only when the sizes differ. With ``heads > 1`` see
    :class:`MultiHeadAttention`."""

    def __init__(self, query_size: int, key_size: int, cfg: AttentionConfig):
        super().__init__(query_size, key_size, cfg)
        project_keys = cfg.projections or key_size != query_size
        self.W = nn.Linear(key_size, query_size, bias=False) if project_keys else None
        self.W_q = nn.Linear(query_size, query_size, bias=False) if cfg.projections else None
        self.scale = 1.0 / math.sqrt(query_size)

    def project_keys(self, keys):
        return self.W(keys) if self.W is not None else keys  # (B, S, Dq)

    def forward(self, query, proj_keys):
        q = self.W_q(query) if self.W_q is not None else query  # (B, T, Dq)
        return torch.bmm(q, proj_keys.transpose(1, 2)) * self.scale


def build_score(query_size: int, key_size: int, cfg: AttentionConfig) -> Score:
    """The score ``cfg.score`` names (a ConfigError for an unknown name or for ``none``)."""
    return SCORES.implementation(cfg.score)(query_size, key_size, cfg)


# ------------------------------------------------------------------------------------------------
# Windows (Luong et al. 2015, section 3.2)


class LocalWindow(nn.Module):
    """Restricts attention to ``[p_t - D, p_t + D]`` around an aligned position ``p_t``; the
    subclasses below choose ``p_t`` (and may reweigh the energies inside the window)."""

    def __init__(self, query_size: int, half_width: int):
        super().__init__()
        self.D = half_width

    def aligned_positions(self, query: torch.Tensor, src_len: torch.Tensor,
                          positions: torch.Tensor) -> torch.Tensor:
        """query (B, T, Dq), src_len (B, 1), positions (B, T) target steps -> p_t (B, T)."""
        raise NotImplementedError

    def reweigh(self, energies: torch.Tensor, dist: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """energies (B, T, S), dist ``s - p_t`` (B, T, S) -> (the energies inside the window,
        a factor (B, T, S) for the weights after the softmax, or None)."""
        return energies, None

    def forward(self, energies, query, mask, positions):
        """energies (B, T, S), query (B, T, Dq), mask (B, S), positions (B, T) target steps
        -> (energies with -inf outside the window, reweighed inside it; a factor for the
        weights after the softmax, or None)."""
        src_len = mask.sum(-1, keepdim=True).to(energies.dtype)  # (B, 1)
        s = torch.arange(energies.size(-1), device=energies.device, dtype=energies.dtype)
        p = self.aligned_positions(query, src_len, positions)  # (B, T)
        dist = s.view(1, 1, -1) - p.unsqueeze(-1)  # (B, T, S)
        outside = dist.abs() > self.D
        energies, factor = self.reweigh(energies, dist)
        return energies.masked_fill(outside, float("-inf")), factor


@WINDOWS.implements(choices.LocalMonotonic)
class LocalMonotonicWindow(LocalWindow):
    """``local-m``: ``p_t = t``, clipped to the last source position."""

    def aligned_positions(self, query, src_len, positions):
        return torch.minimum(positions.to(src_len.dtype), src_len - 1)


@WINDOWS.implements(choices.LocalPredictive)
class LocalPredictiveWindow(LocalWindow):
    """``local-p``: ``p_t = S * sigmoid(v_p^T tanh(W_p h_t))`` (eq. 9) with ``S`` the source
    length, and a Gaussian ``exp(-(s - p_t)^2 / (2 sigma^2))``, ``sigma = D / 2``, favouring
    positions near ``p_t`` (eq. 10).

    ``weighting="paper"``: eq. 10 as written, ``a_t(s) = align(h_t, h_s) * Gaussian`` with
    ``align`` the softmax over the window; the weights sum to less than 1.
    ``weighting="renormalised"``: the Gaussian is added to the energies in log space, so the
    weights are that product renormalised over the window and sum to 1.
    ``scaled``: the logit is divided by ``sqrt(Dq)`` (not in the paper), which keeps ``p_t``
    from saturating at 0 or ``S`` in the first updates."""

    def __init__(self, query_size: int, half_width: int, weighting: str = "renormalised",
                 scaled: bool = False):
        super().__init__(query_size, half_width)
        self.W_p = nn.Linear(query_size, query_size, bias=False)
        self.v_p = nn.Linear(query_size, 1, bias=False)
        self.multiply = weighting == "paper"
        self.logit_scale = query_size**-0.5 if scaled else 1.0
        # while set (in eval mode), one (sum, sum of squares, count) of p_t / S per call:
        # validation logs their totals. Appending is atomic, so batches decoded in several
        # threads (decode.workers) lose nothing
        self.position_stats: list[tuple[float, float, float]] | None = None

    def aligned_positions(self, query, src_len, positions):
        logit = self.v_p(torch.tanh(self.W_p(query))).squeeze(-1) * self.logit_scale
        relative = torch.sigmoid(logit)  # p_t / S, (B, T)
        if self.position_stats is not None and not self.training:
            r = relative.detach().double()
            self.position_stats.append((float(r.sum()), float(r.pow(2).sum()), float(r.numel())))
        return src_len * relative  # (B, T)

    def reweigh(self, energies, dist):
        log_gauss = -dist.pow(2) / (2 * (self.D / 2.0) ** 2)
        if self.multiply:  # eq. 10: after the softmax, no renormalisation
            return energies, torch.exp(log_gauss)
        return energies + log_gauss, None


class Attention(nn.Module):
    """Masked soft (or, at inference on request, hard) attention with any registered score."""

    def __init__(self, query_size: int, key_size: int, cfg: AttentionConfig):
        super().__init__()
        self.score = build_score(query_size, key_size, cfg)
        self.window = None
        if cfg.window == choices.LocalPredictive.name:
            self.window = LocalPredictiveWindow(query_size, cfg.window_size,
                                                cfg.local_p_weighting, cfg.local_p_scaled)
        elif WINDOWS.get(cfg.window).local:
            self.window = WINDOWS.implementation(cfg.window)(query_size, cfg.window_size)
        self.hard = False  # set by Seq2SeqModel.set_hard_attention; used only in eval mode

    def project_keys(self, keys: torch.Tensor) -> torch.Tensor:
        return self.score.project_keys(keys)

    def forward(
        self, query: torch.Tensor, proj_keys: torch.Tensor, values: torch.Tensor,
        mask: torch.Tensor, positions: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """query (B, T, Dq), proj_keys from :meth:`project_keys`, values (B, S, Dv), positions
        (B, T) target steps (needed by a local window only) -> context (B, T, Dv), weights
        (B, T, S)."""
        energies = self.score(query, proj_keys)  # (B, T, S)
        energies = energies.masked_fill(~mask.unsqueeze(1), float("-inf"))
        if self.window is not None:
            if positions is None:
                raise ValueError("a local window needs the target positions")
            energies, factor = self.window(energies, query, mask, positions)
        weights = F.softmax(energies, dim=-1)  # masked positions: exp(-inf) = 0 exactly
        if self.window is not None and factor is not None:
            weights = weights * factor  # local-p as in the paper (eq. 10)
        if self.hard and not self.training:
            weights = hard_weights(weights)
        context = torch.bmm(weights, values)  # (B, T, Dv)
        return context, weights


def hard_weights(weights: torch.Tensor) -> torch.Tensor:
    """Hard attention: all weight on the argmax position (a one-hot along the last dim)."""
    return F.one_hot(weights.argmax(-1), weights.size(-1)).to(weights.dtype)


class MultiHeadAttention(nn.Module):
    """Vaswani et al. 2017, section 3.2.2:

        MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O,
        head_i = softmax(Q W_i^Q (K W_i^K)^T / sqrt(d_k)) V W_i^V

    The product runs through ``torch.nn.functional.scaled_dot_product_attention`` (fused kernels
    on CPU and GPU) unless the weights are needed (plots, hard attention) or dropped out with
    ``fast`` masks (training on a CPU, :mod:`seq2seq.dropout`), when the formula above is
    computed explicitly, or a decoder step on a CPU, which runs as two batched products
    (:func:`_few_queries`, faster for a few queries); tests check that they agree. The
    returned weights are the mean over heads. ``key_size`` is the size of the keys/values; the
    output has ``out_size`` features; ``heads`` divides ``model_size`` (the config checks it).
    """

    def __init__(self, query_size: int, key_size: int, model_size: int, heads: int,
                 out_size: int | None = None, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        self.heads, self.d_k = heads, model_size // heads
        self.W_q = nn.Linear(query_size, model_size, bias=bias)
        self.W_kv = nn.Linear(key_size, 2 * model_size, bias=bias)
        self.W_o = nn.Linear(model_size, out_size or query_size, bias=bias)
        self.dropout = dropout
        self.hard = False  # set by Seq2SeqModel.set_hard_attention; used only in eval mode

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        B, L, _ = x.shape
        return x.view(B, L, self.heads, self.d_k).transpose(1, 2)  # (B, h, L, d_k)

    def project_keys(self, keys: torch.Tensor) -> torch.Tensor:
        """keys (B, S, Dk) -> per-head keys and values stacked: (B, 2h, S, d_k). W_kv's output
        features are [keys | values], h heads of d_k each, so this is a view, not a copy."""
        B, S, _ = keys.shape
        return self.W_kv(keys).view(B, S, 2 * self.heads, self.d_k).transpose(1, 2)

    def split_keys(self, proj_keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 2h, S, d_k) from :meth:`project_keys` -> keys and values, (B, h, S, d_k) each,
        as views."""
        return proj_keys[:, : self.heads], proj_keys[:, self.heads :]

    def project_key_rows(self, x: torch.Tensor, rows: torch.Tensor,
                         mask: torch.Tensor) -> torch.Tensor:
        """:meth:`project_keys` from the real positions of a padded batch only: x (N, Dk) holds
        the N = mask.sum() real positions of mask (B, S) in row-major order, rows (N,) their
        flat indices into B * S -> (B, 2h, S, d_k), zeros at the padded positions."""
        return _heads_from_rows(self.W_kv(x), rows, mask.shape, 2 * self.heads)

    def over_rows(self, x: torch.Tensor, rows: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Self-attention over the real positions of a padded batch without gradients (the
        encoder at inference), x and rows as in :meth:`project_key_rows` -> (N, out). The
        position-wise products W_q, W_kv and W_o see the N rows only; the product of queries
        and keys runs padded, with the padded keys masked and the padded queries' results
        dropped."""
        B, S = mask.shape
        q = _heads_from_rows(self.W_q(x), rows, mask.shape, self.heads)  # (B, h, S, d_k)
        k, v = self.split_keys(self.project_key_rows(x, rows, mask))  # (B, h, S, d_k) each
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
        ctx = ctx.transpose(1, 2).reshape(B * S, self.heads * self.d_k)  # (B * S, h * d_k)
        return self.W_o(ctx.index_select(0, rows))

    def one_query(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                  bias: torch.Tensor | None = None) -> torch.Tensor:
        """A decoder step's attention at inference, one new position a row: x (B, Dq), keys
        and values (R, h, S, d_k) each, contiguous, with R = B (a target prefix) or B / K
        (a source memory row shared by K beams, rows grouped by sentence), bias None or
        (R, h, 1, S), added to the scores (0 where a key is seen, -inf where it is masked:
        :func:`additive_mask`) -> (B, out). The same values as :meth:`forward` with one query
        (tests check it), in fewer operators: the scale goes on the query (B, h * d_k), the
        mask is added by the product itself (``baddbmm``), and with K = 1 the heads come and
        go as views. A step's attention is tiny, (B * h, 1, S) scores, so its cost is mostly
        the count of operators: greedy search at batch 64 ran about 4% faster this way than
        through :meth:`forward` (docs/performance.md, One-query decoder steps)."""
        R, h, S, d_k = k.shape
        B = x.size(0)
        if B % R:
            raise ValueError(f"{B} query rows do not share {R} key rows evenly")
        K = B // R  # queries per key row
        q = self.W_q(x).mul_(1.0 / math.sqrt(d_k))  # (B, h * d_k)
        q = (q.view(R * h, 1, d_k) if K == 1
             else q.view(R, K, h, d_k).transpose(1, 2).reshape(R * h, K, d_k))
        k_t = k.view(R * h, S, d_k).transpose(1, 2)  # (R * h, d_k, S)
        scores = (torch.bmm(q, k_t) if bias is None
                  else torch.baddbmm(bias.view(R * h, 1, S), q, k_t))  # (R * h, K, S)
        ctx = torch.bmm(_softmax_(scores), v.view(R * h, S, d_k))  # (R * h, K, d_k)
        ctx = (ctx.view(B, h * d_k) if K == 1
               else ctx.view(R, h, K, d_k).transpose(1, 2).reshape(B, h * d_k))
        return self.W_o(ctx)

    def forward(self, query, proj_keys, mask=None, need_weights: bool = True,
                causal: bool = False, average_heads: bool = True, step: bool = False):
        """query (B, T, Dq), proj_keys from :meth:`project_keys` (or its keys and values as a
        pair, see :meth:`split_keys`), mask (B, S) True = attend -> output (B, T, out), weights
        (B, T, S) averaged over heads, or (B, h, T, S) with ``average_heads=False`` (None if
        not needed). ``causal``: the T queries are the last T of the S keys' positions and see
        keys up to their own (one query, as in incremental decoding, sees them all). ``step``:
        a decoder step (a few queries: one, or a sentence's beams), which on a CPU, without
        gradients or dropout and over contiguous keys and values, runs as batched products
        (:func:`_few_queries`)."""
        q = self._split(self.W_q(query))  # (B, h, T, d_k)
        k, v = (proj_keys if isinstance(proj_keys, tuple)
                else self.split_keys(proj_keys))  # (B, h, S, d_k)
        attn_mask = None if mask is None else mask[:, None, None, :]  # (B, 1, 1, S)
        T, S = q.size(2), k.size(2)
        p = self.dropout if self.training else 0.0
        # the fused kernel draws its dropout mask itself (bernoulli_ on a CPU): with fast masks
        # (seq2seq.dropout) the weights are computed here and dropped out by our dropout
        own_dropout = p > 0 and q.device.type == "cpu" and mask_kind() == "fast"
        explicit = need_weights or (self.hard and not self.training) or own_dropout
        fused_causal = causal and T > 1 and T == S and attn_mask is None and not explicit
        if causal and T > 1 and not fused_causal:
            allowed = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(S - T)
            attn_mask = allowed if attn_mask is None else attn_mask & allowed
        if (step and not explicit and p == 0.0 and (T == 1 or not causal)
                and q.device.type == "cpu" and k.is_contiguous() and v.is_contiguous()
                and not torch.is_grad_enabled()):
            ctx, mean_weights = _few_queries(q, k, v, attn_mask), None
        elif explicit:
            scores = q @ k.transpose(-2, -1) / math.sqrt(self.d_k)  # (B, h, T, S)
            if attn_mask is not None:
                scores = scores.masked_fill(~attn_mask, float("-inf"))
            weights = F.softmax(scores, dim=-1)
            if self.hard and not self.training:
                weights = hard_weights(weights)
            ctx = dropout(weights, p, self.training) @ v
            mean_weights = None if not need_weights else (weights.mean(dim=1) if average_heads
                                                           else weights)
        else:
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p,
                                                 is_causal=fused_causal)
            mean_weights = None
        B = ctx.size(0)
        out = self.W_o(ctx.transpose(1, 2).reshape(B, T, self.heads * self.d_k))
        return out, mean_weights


def _heads_from_rows(y: torch.Tensor, rows: torch.Tensor, shape: torch.Size,
                     heads: int) -> torch.Tensor:
    """y (N, heads * d_k) at the flat positions ``rows`` of a (B, S) batch -> (B, heads, S, d_k),
    zeros at the other positions."""
    B, S = shape
    full = y.new_zeros(B * S, y.size(1)).index_copy_(0, rows, y)
    return full.view(B, S, heads, -1).transpose(1, 2)


def additive_mask(mask: torch.Tensor, heads: int, dtype: torch.dtype) -> torch.Tensor:
    """mask (B, S), True = attend -> (B, heads, 1, S) of 0 and -inf in ``dtype``: the ``bias``
    of :meth:`MultiHeadAttention.one_query`, made once for all of a batch's steps."""
    B, S = mask.shape
    bias = torch.zeros(B, 1, 1, S, dtype=dtype, device=mask.device)
    bias.masked_fill_(~mask[:, None, None, :], float("-inf"))
    return bias.expand(B, heads, 1, S).contiguous()


def _few_queries(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                 attn_mask: torch.Tensor | None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d_k)) v for a few queries (a decoder step: one, or a sentence's K
    beams) over contiguous keys and values, as batched products: q (B, h, T, d_k), k and v
    (B, h, S, d_k), attn_mask broadcastable to (B, h, T, S), True = attend -> (B, h, T, d_k).
    Every query must see at least one key (a source ends with eos; a target prefix includes
    the query's own position), or its row would be NaN.
    Timed alone on a CPU, one query over 20-30 keys took 0.6-0.7 of the fused kernel's time;
    in the decoder, greedy search was 2-14% faster (docs/performance.md, Decoding). It serves
    inference only (no gradients), where the memory's keys and values are made contiguous."""
    B, h, T, d_k = q.shape
    S = k.size(2)
    scores = torch.bmm(q.reshape(B * h, T, d_k), k.view(B * h, S, d_k).transpose(1, 2))
    scores = scores.view(B, h, T, S).mul_(1.0 / math.sqrt(d_k))
    if attn_mask is not None:
        scores.masked_fill_(~attn_mask, float("-inf"))
    weights = _softmax_(scores)
    return torch.bmm(weights.view(B * h, T, S), v.view(B * h, S, d_k)).view(B, h, T, d_k)


#: below this many keys :func:`_softmax_` computes the softmax itself
SHORT_SOFTMAX = 16


def _softmax_(scores: torch.Tensor) -> torch.Tensor:
    """``softmax(scores, dim=-1)`` for decoding, written over fp32 ``scores``. torch's CPU
    kernel handles a last dimension shorter than 16 element by element: on one thread of an
    AVX-512 CPU it took 17-20 ns an element there, against 1-2.6 ns from 16 up, while max, exp,
    sum and a division over the whole tensor took 3-4.4 ns an element (8,192 rows of 4-64
    keys). So below :data:`SHORT_SOFTMAX` keys (a decoder's self-attention over its first 15
    positions, a short source) an fp32 softmax is those four operations, equal to torch's to
    float rounding (within 1e-6); from 16 keys up, and for bf16 or fp16 scores (whose exp and
    sum torch accumulates in fp32, and which CUDA's autocast computes in fp32), it is torch's."""
    if scores.size(-1) >= SHORT_SOFTMAX or scores.dtype != torch.float32:
        return torch.softmax(scores, dim=-1)
    scores.sub_(scores.amax(dim=-1, keepdim=True)).exp_()  # masked keys: exp(-inf) = 0
    return scores.div_(scores.sum(dim=-1, keepdim=True))


def build_attention(query_size: int, key_size: int, cfg: AttentionConfig) -> nn.Module:
    """The attention module the config asks for: multi-head when ``heads > 1`` (the config
    has checked that the score is scaled_dot with a global window)."""
    if cfg.heads > 1:
        return MultiHeadAttention(query_size, key_size, query_size, cfg.heads, out_size=key_size)
    return Attention(query_size, key_size, cfg)
