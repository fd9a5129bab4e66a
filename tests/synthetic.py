"""Small synthetic tasks (copy, reverse) that prove in seconds that a model learns, and a
tiny synthetic German-English corpus for training-loop tests."""

from __future__ import annotations

import random

import torch

from seq2seq.batching import make_batch
from seq2seq.search import Greedy
from seq2seq.training import batch_loss

N_SYMBOLS = 20
VOCAB = 4 + N_SYMBOLS


SMALL_RNN = ["model.embed_size=32", "model.hidden_size=64", "model.tie_output=false",
             "model.dropout=0.0"]


def small_model(*overrides):
    from seq2seq.config import load_config
    from seq2seq.models import build_model

    cfg = load_config(None, [*SMALL_RNN, *overrides])
    torch.manual_seed(0)
    return build_model(cfg.model, VOCAB, VOCAB)


def learn(overrides: list[str], task: str, kwargs: dict) -> float:
    """Build a small model from config overrides, train it on ``task``, return its accuracy.
    Runs in a worker process with one thread, so two models train at once on two cores."""
    torch.set_num_threads(1)
    return train_task(small_model(*overrides), task, **kwargs)


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
        loss = batch_loss(model, b) / b.n_tgt_tokens
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
    hyps = [h[0].tokens for h in Greedy().search(model, b.src, b.src_len, b.src_len + 5)]
    correct = total = 0
    for s, h in zip(src, hyps):
        ref = target(s)
        correct += sum(int(i < len(h) and h[i] == r) for i, r in enumerate(ref))
        total += max(len(ref), len(h))
    return correct / total


LEXICON = {
    "Hund": "dog", "Katze": "cat", "Frau": "woman", "Mann": "man", "Kind": "child",
    "läuft": "runs", "schläft": "sleeps", "spielt": "plays", "liest": "reads",
}


def toy_pairs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    nouns = ["Hund", "Katze", "Frau", "Mann", "Kind"]
    verbs = ["läuft", "schläft", "spielt", "liest"]
    out = []
    for _ in range(n):
        noun, verb = rng.choice(nouns), rng.choice(verbs)
        out.append((f"Ein {noun} {verb}.", f"A {LEXICON[noun]} {LEXICON[verb]}."))
    return out
