"""Search over whole batches through the shared model interface.

Greedy search advances every sentence of the batch one token per step in a single tensor
operation; sentences that have emitted eos are dropped from the working batch, so the cost of a
step follows the number of unfinished sentences.
"""

from __future__ import annotations

import torch

from seq2seq.models.base import Seq2SeqModel, select
from seq2seq.vocab import BOS, EOS


def max_lengths(src_len: torch.Tensor, a: float, b: int, cap: int | None = None
                ) -> torch.Tensor:
    """Output length limit per sentence: ``a * src_len + b`` tokens (eos included), at most
    ``cap`` (a model's longest sequence)."""
    limit = (src_len.float() * a).long() + b
    return limit.clamp(max=cap) if cap else limit


@torch.no_grad()
def greedy(
    model: Seq2SeqModel, src: torch.Tensor, src_len: torch.Tensor, max_len: torch.Tensor,
    return_attention: bool = False,
) -> tuple[list[list[int]], list[torch.Tensor] | None]:
    """Greedy decoding. Returns token ids per sentence (without eos) and, on request, the
    attention weights per sentence (T, S)."""
    B, S = src.shape
    device = src.device
    memory = model.encode(src, src_len)
    state = model.init_state(memory)
    limit = max_len.to(device)
    T = int(limit.max())
    out = torch.full((B, T), EOS, dtype=torch.long, device=device)
    attn = torch.zeros(B, T, S, device=device) if return_attention else None
    prev = torch.full((B,), BOS, dtype=torch.long, device=device)
    alive = torch.arange(B, device=device)  # rows of the original batch still decoding
    for step in range(T):
        log_probs, state, weights = model.decode_step(memory, state, prev)
        nxt = log_probs.argmax(dim=-1)  # (b,)
        nxt = nxt.masked_fill(limit[alive] <= step + 1, EOS)  # the limit includes eos
        out[alive, step] = nxt
        if attn is not None and weights is not None:
            attn[alive, step] = weights.float()
        keep = (nxt != EOS).nonzero(as_tuple=True)[0]
        if keep.numel() == 0:
            break
        if keep.numel() < alive.numel():
            alive = alive[keep]
            memory, state = select(memory, keep), select(state, keep)
            nxt = nxt[keep]
        prev = nxt
    tokens = [_until_eos(row) for row in out.tolist()]
    attention = None
    if attn is not None:
        # (T_i + 1 rows: each output token and the final eos) x (source tokens incl. eos)
        attention = [attn[i, : len(tokens[i]) + 1, : int(src_len[i])].cpu() for i in range(B)]
    return tokens, attention


def _until_eos(row: list[int]) -> list[int]:
    return row[: row.index(EOS)] if EOS in row else row
