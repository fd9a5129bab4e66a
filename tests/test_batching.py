import numpy as np
import torch

from seq2seq.batching import TrainBatches, inference_batches, make_batch, token_batches
from seq2seq.vocab import BOS, EOS, PAD


def data(n=500, seed=0):
    rng = np.random.default_rng(seed)
    src = [list(rng.integers(4, 50, rng.integers(1, 40))) for _ in range(n)]
    tgt = [list(rng.integers(4, 50, rng.integers(1, 40))) for _ in range(n)]
    return src, tgt


def test_make_batch_layout():
    b = make_batch([[5, 6, 7], [8]], [[9], [10, 11]])
    assert b.src.tolist() == [[5, 6, 7, EOS], [8, EOS, PAD, PAD]]
    assert b.src_len.tolist() == [4, 2]
    assert b.tgt_in.tolist() == [[BOS, 9, PAD], [BOS, 10, 11]]
    assert b.tgt_out.tolist() == [[9, EOS, PAD], [10, 11, EOS]]
    assert b.n_tgt_tokens == 5


def test_token_budget_and_coverage():
    src, tgt = data()
    tb = TrainBatches.from_lists(src, tgt, max_tokens=300, seed=1, bucket_pool=5)
    batches = tb.epoch(1)
    seen = np.concatenate(batches)
    assert sorted(seen.tolist()) == list(range(len(src)))  # every pair exactly once
    for idx in batches:
        b = tb.collate(idx)
        padded = len(idx) * max(b.src.size(1), b.tgt_in.size(1))
        assert padded <= 300 or len(idx) == 1


def test_bucketing_reduces_padding():
    src, tgt = data(2000)
    tb = TrainBatches.from_lists(src, tgt, max_tokens=400, seed=1)
    real = sum(len(s) + 1 for s in src)
    padded = sum(tb.collate(i).src.numel() for i in tb.epoch(1))
    assert real / padded > 0.7


def test_order_is_a_function_of_seed_and_epoch():
    src, tgt = data()
    a = TrainBatches.from_lists(src, tgt, 300, seed=7).epoch(3)
    b = TrainBatches.from_lists(src, tgt, 300, seed=7).epoch(3)
    c = TrainBatches.from_lists(src, tgt, 300, seed=7).epoch(4)
    d = TrainBatches.from_lists(src, tgt, 300, seed=8).epoch(3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b)) and len(a) == len(b)
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    assert not all(np.array_equal(x, y) for x, y in zip(a, d))


def test_oversized_sentence_gets_its_own_batch():
    lens = np.array([3, 500, 4])
    out = token_batches(lens, None, 100, np.arange(3))
    assert [b.tolist() for b in out] == [[0], [1], [2]]


def test_inference_batches_cover_all_sorted():
    src, _ = data(103)
    out = inference_batches(src, 10)
    assert sorted(np.concatenate(out).tolist()) == list(range(103))
    assert all(len(b) <= 10 for b in out)
    lens = [len(src[i]) for b in out for i in b]
    assert lens == sorted(lens, reverse=True)
    assert torch.is_tensor(make_batch([src[i] for i in out[0]]).src)
