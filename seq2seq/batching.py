"""Token-count batching with length bucketing.

Training batches are formed so that ``n_sentences * max(longest source, longest target)`` stays
within a token budget: padding is small because sentences of similar length share a batch
(they are sorted by length inside pools of ``bucket_pool`` batches), and the batch order is
shuffled. The order of an epoch is a pure function of ``(seed, epoch)``, so the same seed gives
the same batches in the same order, and a position in the data is just ``(epoch, batch index)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from seq2seq.special import BOS, EOS, PAD


@dataclass
class Batch:
    """A padded batch. Source and target exclude bos; targets end with eos."""

    src: torch.Tensor  # (B, S) source ids + eos, padded with PAD
    src_len: torch.Tensor  # (B,)
    tgt_in: torch.Tensor | None = None  # (B, T) bos + target ids
    tgt_out: torch.Tensor | None = None  # (B, T) target ids + eos
    index: torch.Tensor | None = None  # (B,) positions of the sentences in the corpus

    @property
    def n_tgt_tokens(self) -> int:
        return int((self.tgt_out != PAD).sum()) if self.tgt_out is not None else 0

    @property
    def n_src_tokens(self) -> int:
        return int(self.src_len.sum())

    def to(self, device: torch.device) -> Batch:
        def move(t):
            return None if t is None else t.to(device, non_blocking=True)

        return Batch(move(self.src), move(self.src_len), move(self.tgt_in), move(self.tgt_out),
                     self.index)


def pad(seqs: Sequence[Sequence[int]], prefix: int | None = None, suffix: int | None = None
        ) -> torch.Tensor:
    """Right-pad id lists into a (B, L) long tensor, adding an optional first and last id."""
    extra = (prefix is not None) + (suffix is not None)
    width = max((len(s) for s in seqs), default=0) + extra
    out = torch.full((len(seqs), max(width, 1)), PAD, dtype=torch.long)
    for i, s in enumerate(seqs):
        row = ([prefix] if prefix is not None else []) + list(s)
        if suffix is not None:
            row.append(suffix)
        if row:
            out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out


def make_batch(src: Sequence[Sequence[int]], tgt: Sequence[Sequence[int]] | None = None,
               index: Sequence[int] | None = None) -> Batch:
    src_t = pad(src, suffix=EOS)
    src_len = torch.tensor([len(s) + 1 for s in src], dtype=torch.long)
    tgt_in = tgt_out = None
    if tgt is not None:
        tgt_in = pad(tgt, prefix=BOS)
        tgt_out = pad(tgt, suffix=EOS)
    idx = torch.tensor(list(index), dtype=torch.long) if index is not None else None
    return Batch(src_t, src_len, tgt_in, tgt_out, idx)


def token_batches(src_lens: np.ndarray, tgt_lens: np.ndarray | None, max_tokens: int,
                  order: np.ndarray) -> list[np.ndarray]:
    """Cut ``order`` (indices, already sorted as wanted) into consecutive batches whose padded
    size ``n * max_len`` (+1 for eos/bos) stays within ``max_tokens``; a single sentence longer
    than the budget gets a batch of its own."""
    lens = src_lens[order] if tgt_lens is None else np.maximum(src_lens[order], tgt_lens[order])
    lens = (lens + 1).tolist()  # Python ints: a loop over them is several times faster
    batches: list[np.ndarray] = []
    start, longest = 0, 0
    for i, length in enumerate(lens):
        new_longest = longest if longest >= length else length
        if i > start and new_longest * (i - start + 1) > max_tokens:
            batches.append(order[start:i])
            start, new_longest = i, length
        longest = new_longest
    if start < len(order):
        batches.append(order[start:])
    return batches


Fetch = Callable[[np.ndarray], tuple[Sequence[Sequence[int]], Sequence[Sequence[int]]]]


class TrainBatches:
    """The training batches of every epoch, reproducible from ``(seed, epoch)``.

    Batching needs only the lengths: ``src_lens`` and ``tgt_lens`` (subwords, without bos/eos)
    of the pairs ``0 .. n-1``; ``fetch(idx)`` returns the ids of the pairs ``idx`` when a batch
    is collated (from the token cache, :mod:`seq2seq.token_cache`). No per-sentence Python
    object lives for the whole corpus."""

    def __init__(self, src_lens: np.ndarray, tgt_lens: np.ndarray, max_tokens: int, seed: int,
                 bucket_pool: int = 100, fetch: Fetch | None = None):
        self.src_lens = np.asarray(src_lens, dtype=np.int32)  # 4 bytes a pair and side
        self.tgt_lens = np.asarray(tgt_lens, dtype=np.int32)
        self.max_tokens, self.seed, self.bucket_pool = max_tokens, seed, bucket_pool
        self.fetch = fetch

    @classmethod
    def from_lists(cls, src: Sequence[Sequence[int]], tgt: Sequence[Sequence[int]],
                   max_tokens: int, seed: int, bucket_pool: int = 100) -> TrainBatches:
        """Batches over id lists in memory."""
        def fetch(idx):
            return [src[i] for i in idx], [tgt[i] for i in idx]

        return cls([len(s) for s in src], [len(t) for t in tgt], max_tokens, seed, bucket_pool,
                   fetch)

    def __len__(self) -> int:
        return len(self.src_lens)

    def epoch(self, epoch: int) -> list[np.ndarray]:
        """The list of batches (arrays of sentence indices) of one epoch, in training order."""
        rng = np.random.default_rng([self.seed, epoch])
        n = len(self.src_lens)
        perm = rng.permutation(n)
        longest = np.maximum(self.src_lens, self.tgt_lens)
        # Mean sentences a batch, to size the sorting pools.
        mean_len = float(longest.mean()) + 1
        pool = max(1, int(self.bucket_pool * self.max_tokens / mean_len))
        batches: list[np.ndarray] = []
        for start in range(0, n, pool):
            chunk = perm[start : start + pool]
            key = longest[chunk].astype(np.int64) * 1000 + self.src_lens[chunk]
            chunk = chunk[np.argsort(key, kind="stable")]
            batches.extend(token_batches(self.src_lens, self.tgt_lens, self.max_tokens, chunk))
        order = rng.permutation(len(batches))
        return [batches[i] for i in order]

    def collate(self, idx: np.ndarray) -> Batch:
        src, tgt = self.fetch(idx)
        return make_batch(src, tgt, idx)


def inference_batches(src: Sequence[Sequence[int]], max_sentences: int) -> list[np.ndarray]:
    """Batches for decoding: sorted by length (less padding), at most ``max_sentences`` each.
    Callers restore the original order through ``Batch.index``."""
    lens = np.array([len(s) for s in src], dtype=np.int64)
    order = np.argsort(-lens, kind="stable")
    return [order[i : i + max_sentences] for i in range(0, len(order), max_sentences)]
