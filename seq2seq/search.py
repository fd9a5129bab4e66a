"""Search over whole batches through the shared model interface.

Both searches drive any :class:`~seq2seq.models.base.Seq2SeqModel` through ``encode``,
``init_state`` and ``decode_step`` only, and both return, per sentence, a list of
:class:`Hypothesis` sorted best first.

* :func:`greedy` advances every sentence one token per step in a single tensor operation;
  sentences that have emitted eos are dropped from the working batch, so the cost of a step
  follows the number of unfinished sentences.
* :func:`beam_search` keeps ``K`` hypotheses per sentence for all sentences of the batch in one
  ``(b * K, ...)`` tensor. Each step scores all ``K * V`` continuations of a sentence, keeps the
  ``2K`` best: those ending in eos among the first ``K`` become finished hypotheses (a finished
  hypothesis is never extended), and the ``K`` best that do not end in eos become the next beams.
  A sentence is done when it has ``K`` finished hypotheses or reaches its length limit (where
  only eos may follow); done sentences leave the working batch. Finished hypotheses are ranked
  by their length-normalised score (:func:`normalise`), and the best one wins.

Every operation acts on each sentence's rows independently, so a sentence gets the same output
alone and inside any batch (tests check this for the RNN and the Transformer).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from seq2seq.models.base import Seq2SeqModel, select
from seq2seq.vocab import BOS, EOS

LENGTH_PENALTIES = ("gnmt", "average", "none")


@dataclass
class Hypothesis:
    tokens: list[int]  # output ids without the final eos
    score: float  # the length-normalised log-probability that ranks hypotheses
    log_prob: float  # log P(tokens + eos | source)
    attention: torch.Tensor | None = None  # (len(tokens) + 1, S): each output token and eos


def normalise(log_prob: float, length: int, penalty: str = "gnmt", alpha: float = 0.6) -> float:
    """Length-normalised score of a hypothesis of ``length`` tokens (eos included).

    * ``gnmt``: ``log P / lp``, ``lp = ((5 + length) / 6) ** alpha`` (Wu et al. 2016, eq. 14);
      alpha = 0 is the raw log-probability.
    * ``average``: ``log P / length``, the mean log-probability per token.
    * ``none``: ``log P``, which favours short outputs.
    """
    if penalty == "gnmt":
        return log_prob / (((5.0 + length) / 6.0) ** alpha)
    if penalty == "average":
        return log_prob / length
    if penalty == "none":
        return log_prob
    raise ValueError(f"length penalty {penalty!r} is not one of {', '.join(LENGTH_PENALTIES)}")


def max_lengths(src_len: torch.Tensor, a: float, b: int, cap: int | None = None
                ) -> torch.Tensor:
    """Output length limit per sentence: ``a * src_len + b`` tokens (eos included), at most
    ``cap`` (a model's longest sequence)."""
    limit = (src_len.float() * a).long() + b
    return limit.clamp(max=cap) if cap else limit


@torch.no_grad()
def greedy(
    model: Seq2SeqModel, src: torch.Tensor, src_len: torch.Tensor, max_len: torch.Tensor,
    return_attention: bool = False, length_penalty: str = "gnmt", alpha: float = 0.6,
) -> list[list[Hypothesis]]:
    """Greedy decoding: the most probable token at every step. One hypothesis per sentence;
    its score is normalised as :func:`beam_search` would, so n-best lists compare."""
    B, S = src.shape
    device = src.device
    memory = model.encode(src, src_len)
    state = model.init_state(memory)
    limit = max_len.to(device)
    T = int(limit.max())
    out = torch.full((B, T), EOS, dtype=torch.long, device=device)
    logp = torch.zeros(B, device=device)
    attn = torch.zeros(B, T, S, device=device) if return_attention else None
    prev = torch.full((B,), BOS, dtype=torch.long, device=device)
    alive = torch.arange(B, device=device)  # rows of the original batch still decoding
    for step in range(T):
        log_probs, state, weights = model.decode_step(memory, state, prev, return_attention)
        nxt = log_probs.argmax(dim=-1)  # (b,)
        nxt = nxt.masked_fill(limit[alive] <= step + 1, EOS)  # the limit includes eos
        out[alive, step] = nxt
        logp[alive] += log_probs.gather(1, nxt.unsqueeze(1)).squeeze(1).float()
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
    results = []
    for i, (row, lp) in enumerate(zip(out.tolist(), logp.tolist())):
        tokens = row[: row.index(EOS)] if EOS in row else row
        a = attn[i, : len(tokens) + 1, : int(src_len[i])].cpu() if attn is not None else None
        score = normalise(lp, len(tokens) + 1, length_penalty, alpha)
        results.append([Hypothesis(tokens, score, lp, a)])
    return results


@torch.no_grad()
def beam_search(
    model: Seq2SeqModel, src: torch.Tensor, src_len: torch.Tensor, max_len: torch.Tensor,
    beam_size: int = 5, n_best: int = 1, length_penalty: str = "gnmt", alpha: float = 0.6,
    return_attention: bool = False,
) -> list[list[Hypothesis]]:
    """Batched beam search; returns the ``n_best`` (<= ``beam_size``) best finished hypotheses
    of every sentence, best first."""
    if beam_size < 1 or not 1 <= n_best <= beam_size:
        raise ValueError(f"need 1 <= n_best ({n_best}) <= beam_size ({beam_size})")
    normalise(0.0, 1, length_penalty, alpha)  # reject an unknown penalty before any work
    B, S = src.shape
    K = beam_size
    device = src.device
    memory = model.encode(src, src_len)
    memory = select(memory, torch.arange(B, device=device).repeat_interleave(K))  # (B*K, ...)
    state = model.init_state(memory)
    limit = max_len.to(device)
    sent = torch.arange(B, device=device)  # original index of each sentence still searching
    # cumulative log-probabilities of the live beams (b, K); at the start only beam 0 is real
    scores = torch.full((B, K), float("-inf"), device=device)
    scores[:, 0] = 0.0
    history = torch.zeros(B * K, 0, dtype=torch.long, device=device)  # tokens so far (b*K, t)
    attn_hist = torch.zeros(B * K, 0, S, device=device) if return_attention else None
    prev = torch.full((B * K,), BOS, dtype=torch.long, device=device)
    finished: list[list[Hypothesis]] = [[] for _ in range(B)]
    n_finished = torch.zeros(B, dtype=torch.long, device=device)
    offsets = torch.arange(K, device=device)
    for step in range(int(limit.max())):
        log_probs, state, weights = model.decode_step(memory, state, prev, return_attention)
        log_probs = log_probs.float()  # (b*K, V)
        b, V = sent.numel(), log_probs.size(-1)
        at_limit = limit[sent] <= step + 1  # (b,): only eos may follow
        if bool(at_limit.any()):
            rows = at_limit.repeat_interleave(K)
            eos_lp = log_probs[rows, EOS]
            log_probs[rows] = float("-inf")
            log_probs[rows, EOS] = eos_lp
        # score every continuation of every beam: (b, K*V); keep the 2K best
        cand = (scores.view(-1, 1) + log_probs).view(b, K * V)
        top_scores, top_idx = cand.topk(min(2 * K, K * V), dim=1)  # sorted, best first
        top_beam, top_tok = top_idx // V, top_idx % V
        src_row = (torch.arange(b, device=device) * K).unsqueeze(1) + top_beam  # (b, 2K)
        is_eos = top_tok == EOS

        # eos among the K best candidates ends a hypothesis (never extended afterwards)
        ends = is_eos[:, :K] & torch.isfinite(top_scores[:, :K])
        if bool(ends.any()):
            n_finished.index_add_(0, sent, ends.sum(dim=1))
            step_attn = None
            if attn_hist is not None and weights is not None:
                step_attn = torch.cat([attn_hist, weights.float().unsqueeze(1)], dim=1)
            for i, j in ends.nonzero().tolist():
                r = int(src_row[i, j])
                lp = float(top_scores[i, j])
                a = None
                if step_attn is not None:
                    a = step_attn[r, :, : int(src_len[sent[i]])].cpu()
                finished[int(sent[i])].append(Hypothesis(
                    history[r].tolist(), normalise(lp, step + 1, length_penalty, alpha), lp, a))

        # the K best candidates that do not end in eos are the next beams
        order = (is_eos.long() * is_eos.size(1)
                 + torch.arange(is_eos.size(1), device=device)).argsort(dim=1)[:, :K]
        scores = top_scores.gather(1, order)  # (b, K)
        rows = src_row.gather(1, order).view(-1)  # (b*K,)
        prev = top_tok.gather(1, order).view(-1)
        state = select(state, rows)
        history = torch.cat([history.index_select(0, rows), prev.unsqueeze(1)], dim=1)
        if attn_hist is not None and weights is not None:
            attn_hist = torch.cat([attn_hist.index_select(0, rows),
                                   weights.float().index_select(0, rows).unsqueeze(1)], dim=1)

        # sentences with K finished hypotheses, or at their limit, leave the batch
        done = (n_finished[sent] >= K) | at_limit
        if bool(done.all()):
            break
        if bool(done.any()):
            keep = (~done).nonzero(as_tuple=True)[0]
            rows = ((keep * K).unsqueeze(1) + offsets).view(-1)
            sent, scores = sent[keep], scores[keep]
            memory, state = select(memory, rows), select(state, rows)
            history, prev = history.index_select(0, rows), prev.index_select(0, rows)
            if attn_hist is not None:
                attn_hist = attn_hist.index_select(0, rows)
    # stable sort: among equal scores the earlier-finished hypothesis stays first
    return [sorted(f, key=lambda h: -h.score)[:n_best] for f in finished]
