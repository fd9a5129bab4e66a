"""Small synthetic tasks (copy, reverse) that prove in seconds that a model learns."""

from __future__ import annotations

import torch

from seq2seq.batching import make_batch
from seq2seq.loss import cross_entropy_sum
from seq2seq.search import greedy
from seq2seq.vocab import PAD

N_SYMBOLS = 20
VOCAB = 4 + N_SYMBOLS


def sequences(n: int, min_len: int, max_len: int, gen: torch.Generator) -> list[list[int]]:
    lens = torch.randint(min_len, max_len + 1, (n,), generator=gen)
    return [torch.randint(4, VOCAB, (int(n_),), generator=gen).tolist() for n_ in lens]


def train_task(model, task: str, steps: int, batch_size: int = 64, lr: float = 3e-3,
               min_len: int = 4, max_len: int = 12, seed: int = 0) -> float:
    """Train on ``task`` ('copy' or 'reverse') and return greedy token accuracy on held-out data."""
    gen = torch.Generator().manual_seed(seed)
    target = (lambda s: s) if task == "copy" else (lambda s: s[::-1])
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        src = sequences(batch_size, min_len, max_len, gen)
        b = make_batch(src, [target(s) for s in src])
        feats = model.features(b.src, b.src_len, b.tgt_in)
        keep = b.tgt_out != PAD
        loss = cross_entropy_sum(model.project(feats[keep]), b.tgt_out[keep]) / keep.sum()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return accuracy(model, target, min_len, max_len, gen)


@torch.no_grad()
def accuracy(model, target, min_len, max_len, gen, n: int = 200) -> float:
    model.eval()
    src = sequences(n, min_len, max_len, gen)
    b = make_batch(src)
    hyps, _ = greedy(model, b.src, b.src_len, b.src_len + 5)
    correct = total = 0
    for s, h in zip(src, hyps):
        ref = target(s)
        correct += sum(int(i < len(h) and h[i] == r) for i, r in enumerate(ref))
        total += max(len(ref), len(h))
    return correct / total
