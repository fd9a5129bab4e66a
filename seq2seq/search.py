"""Search over whole batches through the shared model interface.

A search is a :class:`DecodeStrategy` object (after OpenNMT-py's design): it holds the search
options and drives any :class:`~seq2seq.models.base.Seq2SeqModel` through ``encode``,
``init_state`` and ``decode_step`` only. Every strategy returns, per sentence, a list of
:class:`Hypothesis` sorted best first, and all share one loop (:meth:`DecodeStrategy.search`):

1. encode the batch and start a :class:`WorkingBatch`: the sentences still being searched,
   ``width`` rows each (1 for greedy search, ``K`` beams for beam search; a model that
   :attr:`~seq2seq.models.base.Seq2SeqModel.shares_memory` keeps one memory row per sentence);
2. at every step, run one ``decode_step`` on all rows (beam search's first step on one row per
   sentence, since its ``K`` beams are still the same, spread to ``K`` rows after it), let the
   strategy :meth:`advance` (pick the next tokens, record what finished) and report which
   sentences are done; the beams picked are given to the model's ``reorder_state``;
3. drop the done sentences from the working batch (:meth:`WorkingBatch.shrink`, the one
   batch-shrinking step: memory, state and bookkeeping lose the same rows), so the cost of a
   step follows the number of unfinished sentences.

* :class:`Greedy` advances every sentence by its most probable token; a sentence is done when it
  emits eos.
* :class:`Beam` keeps ``K`` hypotheses per sentence for all sentences of the batch in one
  ``(b * K, ...)`` tensor. Each step scores all ``K * V`` continuations of a sentence, keeps the
  ``2K`` best: those ending in eos among the first ``K`` become finished hypotheses (a finished
  hypothesis is never extended), and the ``K`` best that do not end in eos become the next beams.
  A sentence is done when it has ``K`` finished hypotheses or reaches its length limit.

The length limit of a sentence (:func:`max_lengths`) counts the final eos; at the limit only eos
may follow. Before ``min_len`` output tokens eos may not follow (the limit wins where it is
shorter). Finished hypotheses are ranked by their length-normalised score, with a length
penalty from :data:`seq2seq.choices.LENGTH_PENALTIES` (``gnmt``, ``average``, ``none``); greedy
scores its single hypothesis the same way, so n-best lists compare.

Every operation acts on each sentence's rows independently, so a sentence gets the same output
alone and inside any batch (tests check this for the RNN and the Transformer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch

from seq2seq.choices import LENGTH_PENALTIES
from seq2seq.models.base import Seq2SeqModel, State, select
from seq2seq.special import BOS, EOS

if TYPE_CHECKING:
    from seq2seq.config import DecodeConfig


@dataclass
class Hypothesis:
    tokens: list[int]  # output ids without the final eos
    score: float  # the length-normalised log-probability that ranks hypotheses
    log_prob: float  # log P(tokens + eos | source)
    attention: torch.Tensor | None = None  # (len(tokens) + 1, S): each output token and eos


def max_lengths(src_len: torch.Tensor, a: float, b: int, cap: int | None = None
                ) -> torch.Tensor:
    """Output length limit per sentence: ``a * src_len + b`` tokens (eos included), at most
    ``cap`` (a model's longest sequence)."""
    limit = (src_len.float() * a).long() + b
    return limit.clamp(max=cap) if cap else limit


#: the width of the blocks in which :func:`top_k` looks for the largest values first
TOP_K_BLOCK = 64


def top_k(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest values of every row of ``x`` (b, n) and their indices, best first:
    ``x.topk(k, dim=1)``'s values, found in two passes. The maximum of every block of
    :data:`TOP_K_BLOCK` values is a fast vectorised reduction; the k largest values lie in the
    k blocks with the largest maxima (a block whose maximum is not among them holds no value
    above k others), and a top-k over those k blocks finds them. For beam search's (64, 5 x
    8,000) scores this took 0.9 ms against torch.topk's 3.1 ms on one CPU thread, the same
    values and indices (among equal values the index may differ). Rows not made of whole
    blocks, or of fewer than 4k of them, use ``torch.topk``."""
    b, n = x.shape
    blocks = n // TOP_K_BLOCK
    if n % TOP_K_BLOCK or blocks < 4 * k or not x.is_contiguous():
        return x.topk(k, dim=1)
    split = x.view(b, blocks, TOP_K_BLOCK)
    best = split.amax(dim=2).topk(k, dim=1).indices  # (b, k) the blocks to search
    values = split.gather(1, best.unsqueeze(2).expand(b, k, TOP_K_BLOCK))  # (b, k, block)
    top, at = values.view(b, k * TOP_K_BLOCK).topk(k, dim=1)
    return top, best.gather(1, at // TOP_K_BLOCK) * TOP_K_BLOCK + at % TOP_K_BLOCK


class WorkingBatch:
    """The sentences of one input batch that are still being searched, ``width`` rows each.

    Row ``r`` of ``state`` (as the model sees it: a model may keep a reorder pending, see
    :meth:`~seq2seq.models.base.Seq2SeqModel.reorder_state`), ``prev`` and of every tensor
    named in ``row_fields`` belongs to working sentence ``r // width``, and so does row ``r``
    of ``memory`` unless the model shares it (:attr:`Seq2SeqModel.shares_memory`: one memory
    row per sentence); ``sent`` and the tensors named in ``sentence_fields`` have one entry per
    working sentence. Other attributes (outputs kept per input sentence, the limits, the source
    lengths) are indexed by input position and never shrink. A strategy subclasses this to add
    its bookkeeping."""

    row_fields: ClassVar[tuple[str, ...]] = ("prev",)
    sentence_fields: ClassVar[tuple[str, ...]] = ("sent",)

    def __init__(self, memory: State, state: State, src_len: torch.Tensor,
                 limit: torch.Tensor, width: int):
        B, device = limit.numel(), limit.device
        self.memory, self.state, self.width = memory, state, width
        # memory rows per sentence: width, or 1 where the model shares them among the rows
        self.memory_width = memory["mask"].size(0) // B
        self.src_len, self.limit = src_len, limit  # (B,) per input sentence
        self.sent = torch.arange(B, device=device)  # input index of each working sentence
        self.prev = torch.full((B * width,), BOS, dtype=torch.long, device=device)
        self.reorder_state = select  # the model's Seq2SeqModel.reorder_state, set by the search

    def at_limit(self, step: int) -> torch.Tensor:
        """(b,): the working sentences whose next token is their last (only eos may follow)."""
        return self.limit[self.sent] <= step + 1

    def shrink(self, keep: torch.Tensor) -> None:
        """Keep only the working sentences ``keep`` (indices into ``sent``) and their rows, in
        the memory, the decoder state and the strategy's bookkeeping."""
        def rows_of(width: int) -> torch.Tensor:
            offsets = torch.arange(width, device=keep.device)
            return ((keep * width).unsqueeze(1) + offsets).view(-1)

        rows = rows_of(self.width)
        self.memory = select(self.memory, rows_of(self.memory_width))
        self.state = self.reorder_state(self.state, rows)
        for names, index in ((self.row_fields, rows), (self.sentence_fields, keep)):
            for name in names:
                value = getattr(self, name)
                if value is not None:
                    setattr(self, name, value.index_select(0, index))


class DecodeStrategy:
    """One way of searching: the options, the shared loop, and the hooks a strategy fills in
    (:meth:`begin`, :meth:`advance`, :meth:`finish`)."""

    width: int = 1  # rows (hypotheses) per sentence in the working batch

    def __init__(self, length_penalty: str = "gnmt", alpha: float = 0.6,
                 return_attention: bool = False, min_len: int = 0):
        self.penalty = LENGTH_PENALTIES.get(length_penalty)  # an unknown name fails here
        self.alpha = alpha
        self.return_attention = return_attention
        self.min_len = min_len

    def score(self, log_prob: float, length: int) -> float:
        """The length-normalised score of a hypothesis of ``length`` tokens (eos included)."""
        return self.penalty.normalise(log_prob, length, self.alpha)

    @torch.no_grad()
    def search(self, model: Seq2SeqModel, src: torch.Tensor, src_len: torch.Tensor,
               max_len: torch.Tensor) -> list[list[Hypothesis]]:
        """Search a padded batch ``src`` (B, S) with output length limits ``max_len`` (B,);
        per sentence its hypotheses, best first."""
        memory = model.encode(src, src_len)
        if self.width == 1:
            state = model.init_state(memory)
        else:  # K rows per sentence: (B * K, ...), the memory too unless the model shares it
            rows = torch.arange(src.size(0), device=src.device).repeat_interleave(self.width)
            if model.shares_memory:
                state = model.reorder_state(model.init_state(memory), rows)
            else:
                memory = select(memory, rows)
                state = model.init_state(memory)
        batch = self.begin(memory, state, src, src_len, max_len.to(src.device))
        batch.reorder_state = model.reorder_state
        for step in range(int(batch.limit.max())):
            log_probs, batch.state, weights = self._decode_step(model, batch, step)
            if step < self.min_len:  # too short to end, unless at the limit
                rows = ~batch.at_limit(step).repeat_interleave(self.width)
                log_probs[rows, EOS] = float("-inf")
            done = self.advance(batch, step, log_probs, weights)
            if bool(done.all()):
                break
            if bool(done.any()):
                batch.shrink((~done).nonzero(as_tuple=True)[0])
        return self.finish(batch)

    def _decode_step(self, model: Seq2SeqModel, batch: WorkingBatch, step: int
                     ) -> tuple[torch.Tensor, State, torch.Tensor | None]:
        """One ``decode_step`` on every row of ``batch``. At step 0 the ``width`` rows of a
        sentence hold the same start state and token (bos), so one row of each sentence is
        decoded and its outputs are copied to the others: for beam search's 5 beams a fifth of
        the first step's products."""
        if step > 0 or batch.width == 1:
            return model.decode_step(batch.memory, batch.state, batch.prev, self.return_attention)
        rows = batch.prev.numel()
        first = torch.arange(0, rows, batch.width, device=batch.prev.device)  # (b,)
        memory = batch.memory if batch.memory_width == 1 else select(batch.memory, first)
        log_probs, state, weights = model.decode_step(
            memory, model.reorder_state(batch.state, first), batch.prev[first],
            self.return_attention)
        spread = torch.arange(first.numel(), device=first.device).repeat_interleave(batch.width)
        return (log_probs.index_select(0, spread), model.reorder_state(state, spread),
                None if weights is None else weights.index_select(0, spread))

    def begin(self, memory: State, state: State, src: torch.Tensor, src_len: torch.Tensor,
              limit: torch.Tensor) -> WorkingBatch:
        """The working batch at step 0."""
        raise NotImplementedError

    def advance(self, batch: WorkingBatch, step: int, log_probs: torch.Tensor,
                weights: torch.Tensor | None) -> torch.Tensor:
        """Take one step from the model's ``log_probs`` (rows, V) and attention ``weights``:
        set ``batch.prev`` and record outputs; returns (b,) True for each done sentence."""
        raise NotImplementedError

    def finish(self, batch: WorkingBatch) -> list[list[Hypothesis]]:
        """The hypotheses of every input sentence, best first."""
        raise NotImplementedError


class GreedyBatch(WorkingBatch):
    def __init__(self, memory: State, state: State, src: torch.Tensor, src_len: torch.Tensor,
                 limit: torch.Tensor, return_attention: bool):
        super().__init__(memory, state, src_len, limit, width=1)
        (B, S), T, device = src.shape, int(limit.max()), src.device
        # per input sentence: the output ids (eos-padded), log P and attention so far
        self.out = torch.full((B, T), EOS, dtype=torch.long, device=device)
        self.logp = torch.zeros(B, device=device)
        self.attn = torch.zeros(B, T, S, device=device) if return_attention else None


class Greedy(DecodeStrategy):
    """Greedy decoding: the most probable token at every step. One hypothesis per sentence; its
    score is normalised as :class:`Beam` would, so n-best lists compare."""

    def begin(self, memory, state, src, src_len, limit) -> GreedyBatch:
        return GreedyBatch(memory, state, src, src_len, limit, self.return_attention)

    def advance(self, batch: GreedyBatch, step, log_probs, weights) -> torch.Tensor:
        nxt = top_k(log_probs, 1)[1].squeeze(1)  # (b,) argmax, 4x faster than torch's
        nxt = nxt.masked_fill(batch.at_limit(step), EOS)  # the limit includes eos
        batch.out[batch.sent, step] = nxt
        batch.logp[batch.sent] += log_probs.gather(1, nxt.unsqueeze(1)).squeeze(1).float()
        if batch.attn is not None and weights is not None:
            batch.attn[batch.sent, step] = weights.float()
        batch.prev = nxt
        return nxt == EOS

    def finish(self, batch: GreedyBatch) -> list[list[Hypothesis]]:
        results = []
        for i, (row, lp) in enumerate(zip(batch.out.tolist(), batch.logp.tolist())):
            tokens = row[: row.index(EOS)] if EOS in row else row
            a = None
            if batch.attn is not None:
                a = batch.attn[i, : len(tokens) + 1, : int(batch.src_len[i])].cpu()
            results.append([Hypothesis(tokens, self.score(lp, len(tokens) + 1), lp, a)])
        return results


class BeamBatch(WorkingBatch):
    row_fields = ("prev", "history", "attn_hist")
    sentence_fields = ("sent", "scores")

    def __init__(self, memory: State, state: State, src: torch.Tensor, src_len: torch.Tensor,
                 limit: torch.Tensor, K: int, return_attention: bool):
        super().__init__(memory, state, src_len, limit, width=K)
        (B, S), device = src.shape, src.device
        # cumulative log-probabilities of the live beams (b, K); at the start only beam 0 is real
        self.scores = torch.full((B, K), float("-inf"), device=device)
        self.scores[:, 0] = 0.0
        self.history = torch.zeros(B * K, 0, dtype=torch.long, device=device)  # tokens (b*K, t)
        self.attn_hist = torch.zeros(B * K, 0, S, device=device) if return_attention else None
        self.finished: list[list[Hypothesis]] = [[] for _ in range(B)]  # per input sentence
        self.n_finished = torch.zeros(B, dtype=torch.long, device=device)


class Beam(DecodeStrategy):
    """Batched beam search with ``beam_size`` beams; returns the ``n_best`` (<= ``beam_size``)
    best finished hypotheses of every sentence, best first."""

    def __init__(self, beam_size: int = 5, n_best: int = 1, length_penalty: str = "gnmt",
                 alpha: float = 0.6, return_attention: bool = False, min_len: int = 0):
        if beam_size < 1 or not 1 <= n_best <= beam_size:
            raise ValueError(f"need 1 <= n_best ({n_best}) <= beam_size ({beam_size})")
        super().__init__(length_penalty, alpha, return_attention, min_len)
        self.width, self.n_best = beam_size, n_best

    def begin(self, memory, state, src, src_len, limit) -> BeamBatch:
        return BeamBatch(memory, state, src, src_len, limit, self.width, self.return_attention)

    def advance(self, batch: BeamBatch, step, log_probs, weights) -> torch.Tensor:
        K = self.width
        log_probs = log_probs.float()  # (b*K, V)
        b, V = batch.sent.numel(), log_probs.size(-1)
        at_limit = batch.at_limit(step)
        if bool(at_limit.any()):  # only eos may follow
            rows = at_limit.repeat_interleave(K)
            eos_lp = log_probs[rows, EOS]
            log_probs[rows] = float("-inf")
            log_probs[rows, EOS] = eos_lp
        # score every continuation of every beam: (b, K*V), written over log_probs (a (b*K, V)
        # tensor fewer to fill a step); keep the 2K best
        cand = log_probs.add_(batch.scores.view(-1, 1)).view(b, K * V)
        top_scores, top_idx = top_k(cand, min(2 * K, K * V))  # sorted, best first
        top_beam, top_tok = top_idx // V, top_idx % V
        src_row = (torch.arange(b, device=cand.device) * K).unsqueeze(1) + top_beam  # (b, 2K)
        is_eos = top_tok == EOS
        self._end_hypotheses(batch, step, top_scores, src_row, is_eos, weights)
        self._next_beams(batch, top_scores, src_row, top_tok, is_eos, weights)
        # sentences with K finished hypotheses, or at their limit, are done
        return (batch.n_finished[batch.sent] >= K) | at_limit

    def _end_hypotheses(self, batch: BeamBatch, step: int, top_scores: torch.Tensor,
                        src_row: torch.Tensor, is_eos: torch.Tensor,
                        weights: torch.Tensor | None) -> None:
        """eos among the K best candidates ends a hypothesis (never extended afterwards)."""
        K = self.width
        ends = is_eos[:, :K] & torch.isfinite(top_scores[:, :K])
        if not bool(ends.any()):
            return
        batch.n_finished.index_add_(0, batch.sent, ends.sum(dim=1))
        step_attn = None
        if batch.attn_hist is not None and weights is not None:
            step_attn = torch.cat([batch.attn_hist, weights.float().unsqueeze(1)], dim=1)
        for i, j in ends.nonzero().tolist():
            r, lp, s = int(src_row[i, j]), float(top_scores[i, j]), int(batch.sent[i])
            a = step_attn[r, :, : int(batch.src_len[s])].cpu() if step_attn is not None else None
            batch.finished[s].append(
                Hypothesis(batch.history[r].tolist(), self.score(lp, step + 1), lp, a))

    def _next_beams(self, batch: BeamBatch, top_scores: torch.Tensor, src_row: torch.Tensor,
                    top_tok: torch.Tensor, is_eos: torch.Tensor,
                    weights: torch.Tensor | None) -> None:
        """The K best candidates that do not end in eos are the next beams."""
        width = is_eos.size(1)
        order = (is_eos.long() * width
                 + torch.arange(width, device=is_eos.device)).argsort(dim=1)[:, : self.width]
        batch.scores = top_scores.gather(1, order)  # (b, K)
        rows = src_row.gather(1, order).view(-1)  # (b*K,)
        batch.prev = top_tok.gather(1, order).view(-1)
        batch.state = batch.reorder_state(batch.state, rows)
        batch.history = torch.cat([batch.history.index_select(0, rows),
                                   batch.prev.unsqueeze(1)], dim=1)
        if batch.attn_hist is not None and weights is not None:
            batch.attn_hist = torch.cat([batch.attn_hist.index_select(0, rows),
                                         weights.float().index_select(0, rows).unsqueeze(1)],
                                        dim=1)

    def finish(self, batch: BeamBatch) -> list[list[Hypothesis]]:
        # stable sort: among equal scores the earlier-finished hypothesis stays first
        return [sorted(f, key=lambda h: -h.score)[: self.n_best] for f in batch.finished]


def make_search(decode: DecodeConfig, return_attention: bool = False) -> DecodeStrategy:
    """The strategy that ``decode`` asks for: greedy search for ``beam_size`` 1, else beam
    search."""
    if decode.beam_size == 1:
        return Greedy(decode.length_penalty, decode.alpha, return_attention, decode.min_len)
    return Beam(decode.beam_size, decode.n_best, decode.length_penalty, decode.alpha,
                return_attention, decode.min_len)
