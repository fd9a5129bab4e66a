"""Attention: alignment scores behind one registry, and the one module that uses them.

A *score* turns a query (a decoder state) and the keys (encoder states) into energies
``e_ij``; it is a small class registered by name. :class:`Attention` owns everything the scores
share: masking of padded source positions, the softmax ``a_ij = exp(e_ij) / sum_k exp(e_ik)`` and
the context vector ``c_i = sum_j a_ij h_j`` (Bahdanau et al. 2014, eqs. 5-6).

Shapes: queries ``(B, T, Dq)`` (T = 1 during step-wise decoding), keys and values ``(B, S, Dk)``,
mask ``(B, S)`` with True at real (non-pad) positions, energies and weights ``(B, T, S)``.

Adding a score is one class with ``@register("name")`` and a test.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from seq2seq.errors import ConfigError

SCORES: dict[str, type[Score]] = {}


def register(name: str):
    def deco(cls: type[Score]) -> type[Score]:
        SCORES[name] = cls
        cls.name = name
        return cls

    return deco


class Score(nn.Module):
    """Base class: ``energies = score(query, project_keys(keys))``.

    ``project_keys`` runs once per source sentence (before decoding), so the part of a score
    that depends only on the keys is not recomputed at every target step."""

    name = "base"

    def __init__(self, query_size: int, key_size: int, hidden_size: int):
        super().__init__()

    def project_keys(self, keys: torch.Tensor) -> torch.Tensor:
        return keys

    def forward(self, query: torch.Tensor, proj_keys: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@register("additive")
class AdditiveScore(Score):
    """Bahdanau et al. 2014 (eq. 6, appendix A.1.2): ``e_ij = v_a^T tanh(W_a s_{i-1} + U_a h_j)``.

    Luong et al. 2015 call the same form with ``[h_t; h_s]`` concatenated *concat*."""

    def __init__(self, query_size: int, key_size: int, hidden_size: int):
        super().__init__(query_size, key_size, hidden_size)
        self.W = nn.Linear(query_size, hidden_size, bias=False)
        self.U = nn.Linear(key_size, hidden_size, bias=True)
        self.v = nn.Linear(hidden_size, 1, bias=False)

    def project_keys(self, keys):
        return self.U(keys)  # (B, S, A)

    def forward(self, query, proj_keys):
        q = self.W(query)  # (B, T, A)
        hidden = torch.tanh(q.unsqueeze(2) + proj_keys.unsqueeze(1))  # (B, T, S, A)
        return self.v(hidden).squeeze(-1)  # (B, T, S)


@register("dot")
class DotScore(Score):
    """Luong et al. 2015, eq. 8: ``score(h_t, h_s) = h_t^T h_s`` (query and key sizes equal)."""

    def __init__(self, query_size: int, key_size: int, hidden_size: int):
        super().__init__(query_size, key_size, hidden_size)
        if query_size != key_size:
            raise ConfigError(
                f"model.attention.score: dot needs equal decoder ({query_size}) and encoder "
                f"output ({key_size}) sizes; use general"
            )

    def forward(self, query, proj_keys):
        return torch.bmm(query, proj_keys.transpose(1, 2))  # (B, T, S)


@register("general")
class GeneralScore(Score):
    """Luong et al. 2015, eq. 8: ``score(h_t, h_s) = h_t^T W_a h_s``."""

    def __init__(self, query_size: int, key_size: int, hidden_size: int):
        super().__init__(query_size, key_size, hidden_size)
        self.W = nn.Linear(key_size, query_size, bias=False)

    def project_keys(self, keys):
        return self.W(keys)  # (B, S, Dq)

    def forward(self, query, proj_keys):
        return torch.bmm(query, proj_keys.transpose(1, 2))


@register("scaled_dot")
class ScaledDotScore(Score):
    """Vaswani et al. 2017, eq. 1: ``score(q, k) = q^T k / sqrt(d_k)``, keys projected to the
    query size when the sizes differ."""

    def __init__(self, query_size: int, key_size: int, hidden_size: int):
        super().__init__(query_size, key_size, hidden_size)
        self.W = nn.Linear(key_size, query_size, bias=False) if key_size != query_size else None
        self.scale = 1.0 / math.sqrt(query_size)

    def project_keys(self, keys):
        return self.W(keys) if self.W is not None else keys

    def forward(self, query, proj_keys):
        return torch.bmm(query, proj_keys.transpose(1, 2)) * self.scale


def build_score(name: str, query_size: int, key_size: int, hidden_size: int) -> Score:
    if name not in SCORES:
        raise ConfigError(
            f"model.attention.score: {name!r} is not one of {', '.join(sorted(SCORES))}"
        )
    return SCORES[name](query_size, key_size, hidden_size)


class Attention(nn.Module):
    """Masked soft attention over the source with any registered score."""

    def __init__(self, score: Score):
        super().__init__()
        self.score = score

    def project_keys(self, keys: torch.Tensor) -> torch.Tensor:
        return self.score.project_keys(keys)

    def forward(
        self, query: torch.Tensor, proj_keys: torch.Tensor, values: torch.Tensor,
        mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """query (B, T, Dq) -> context (B, T, Dv), weights (B, T, S)."""
        energies = self.score(query, proj_keys)  # (B, T, S)
        energies = energies.masked_fill(~mask.unsqueeze(1), float("-inf"))
        weights = F.softmax(energies, dim=-1)  # padded positions: exp(-inf) = 0 exactly
        context = torch.bmm(weights, values)  # (B, T, Dv)
        return context, weights
