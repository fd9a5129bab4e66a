"""Small synthetic tasks (copy, reverse) that prove in seconds that a model learns, and a
tiny synthetic German-English corpus for training-loop tests."""

from __future__ import annotations

import random
from pathlib import Path

import torch

from seq2seq.batching import make_batch
from seq2seq.config import load_config
from seq2seq.models import build_model
from seq2seq.run import RunDir
from seq2seq.search import Greedy
from seq2seq.training import batch_loss
from seq2seq.vocab import train_or_load

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


def make_run(path: Path, *overrides: str, updates: int = 30, limit: int = 24) -> Path:
    """A run directory (config, vocabulary, best.pt) written directly, its model trained for a
    few ``updates`` on 200 :func:`toy_pairs`, enough for outputs of different lengths, some
    ending with eos and some at the length limit (``limit`` output tokens, eos included). The
    initial parameters carry noise, so biases and layer norms differ from (0, 1) and every
    weight the mapping moves changes the output."""
    pairs = toy_pairs(200)
    cfg = load_config(None, [f"run_dir={path}", "vocab.size=60", "model.dropout=0.0",
                             "decode.max_len_a=0", f"decode.max_len_b={limit}", *overrides])
    src, tgt = train_or_load(cfg.vocab, [p[0] for p in pairs], [p[1] for p in pairs])
    torch.manual_seed(0)
    model = build_model(cfg.model, len(src), len(tgt))
    with torch.no_grad():
        for p in model.parameters():  # shared and tied parameters once
            p.add_(torch.randn_like(p) * 0.1)
    src_ids, tgt_ids = src.encode([p[0] for p in pairs]), tgt.encode([p[1] for p in pairs])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(updates):
        i = slice(step * 50 % len(pairs), step * 50 % len(pairs) + 50)
        batch = make_batch(src_ids[i], tgt_ids[i])
        loss = batch_loss(model, batch) / batch.n_tgt_tokens
        opt.zero_grad()
        loss.backward()
        opt.step()
    run = RunDir(path)
    run.write_config(cfg)
    run.install_vocabularies(src, tgt)
    run.save_last({"model": model.state_dict(), "config": cfg.to_dict()}, best=True)
    return path
