"""seq2seq.dropout: with ``torch`` masks the same numbers as F.dropout, with ``fast`` masks
16-bit draws; a one-byte mask kept for backward either way."""

import pytest
import torch
import torch.nn.functional as F

import seq2seq.dropout
from seq2seq.dropout import (
    Dropout,
    _bernoulli_draws_words,
    dropout,
    keep_mask,
    mask_kind,
    masks,
)


@pytest.mark.parametrize("shape,transposed", [((7,), False), ((3, 5, 11), False),
                                              ((6, 9, 16), True), ((2, 4, 17, 19), True)])
@pytest.mark.parametrize("p", [0.1, 0.15, 0.5, 0.9])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("words", [True, False])
def test_values_gradients_and_random_stream_equal_f_dropout(shape, transposed, p, dtype, words,
                                                            monkeypatch):
    """With torch masks, bit for bit; ``words``: drawn as 64-bit words where bernoulli_ draws
    them (this CPU, if the probe says so), else by bernoulli_ itself (MKL on Intel). p = 0.15:
    1 / q in float32 is not 1 / float32(q), so the order of rounding shows."""
    if words and not _bernoulli_draws_words():
        pytest.skip("bernoulli_ does not draw 64-bit words on this CPU (MKL on Intel)")
    monkeypatch.setattr(seq2seq.dropout, "_words_are_bernoulli", words)
    x = torch.randn(*shape).to(dtype)
    if transposed:
        x = x.transpose(0, -1)  # a non-contiguous input
    x.requires_grad_(True)
    g = torch.randn(x.shape)
    out = {}
    for name, fn in (("f", F.dropout), ("ours", dropout)):
        torch.manual_seed(5)
        y = fn(x, p, True)
        after = torch.rand(4)  # the generator is left where F.dropout leaves it
        (grad,) = torch.autograd.grad(y, x, g)
        out[name] = (y, after, grad)
    for a, b in zip(out["f"], out["ours"]):
        assert torch.equal(a, b)
    assert 0 < int((out["ours"][0] == 0).sum()) < x.numel() or x.numel() < 10


def test_keeps_a_bool_mask_where_f_dropout_keeps_floats():
    x = torch.randn(32, 64, requires_grad=True)

    def saved_bytes(fn):
        sizes = []

        def pack(t):
            sizes.append(t.untyped_storage().nbytes())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            fn(x * 1.0, 0.1, True)
        return sum(sizes)

    assert saved_bytes(F.dropout) == 32 * 64 * 4
    assert saved_bytes(dropout) == 32 * 64 * 1


def test_identity_when_not_training_or_p_zero_and_zero_at_p_one():
    x = torch.randn(5, 6)
    assert dropout(x, 0.3, False) is x or torch.equal(dropout(x, 0.3, False), x)
    assert torch.equal(dropout(x, 0.0, True), x)
    assert torch.equal(dropout(x, 1.0, True), torch.zeros_like(x))
    m = Dropout(0.4)
    assert torch.equal(m.eval()(x), x)
    torch.manual_seed(3)
    a = m.train()(x)
    torch.manual_seed(3)
    assert torch.equal(a, torch.nn.Dropout(0.4)(x))
    assert m.state_dict() == {} and repr(m) == "Dropout(p=0.4, inplace=False)"


def test_fast_masks_keep_the_rounded_probability_and_scale_to_the_same_mean():
    x = torch.ones(1_000_003)
    torch.manual_seed(0)
    with masks("fast"):
        y = dropout(x, 0.1, True)
    k = round(0.9 * 65536)  # 58,982 of the 2^16 values a 16-bit lane takes are kept
    kept = float((y != 0).float().mean())
    assert abs(kept - k / 65536) < 5 * (0.9 * 0.1 / x.numel()) ** 0.5  # five standard errors
    assert torch.equal(y[y != 0], torch.full_like(y[y != 0], 65536 / k))
    assert abs(float(y.mean()) - 1.0) < 0.003  # E[y] = x


def test_fast_masks_use_a_quarter_of_the_draws_and_are_reproducible():
    x = torch.randn(8, 50, requires_grad=True)  # 400 elements: 100 64-bit draws
    g = torch.randn(8, 50)
    runs = []
    for _ in range(2):
        torch.manual_seed(3)
        with masks("fast"):
            y = dropout(x, 0.3, True)
        after = torch.rand(2)
        (grad,) = torch.autograd.grad(y, x, g)
        runs.append((y, after, grad))
    assert all(torch.equal(a, b) for a, b in zip(*runs))
    torch.manual_seed(3)
    torch.empty(100, dtype=torch.int64).random_(-(1 << 63), None)
    assert torch.equal(runs[0][1], torch.rand(2))  # the generator moved by 100 draws
    y, _, grad = runs[0]
    keep = y != 0
    scale = 65536 / round(0.7 * 65536)
    assert torch.equal(grad, keep.float() * scale * g)  # dL/dx = dL/dy * m * scale
    torch.manual_seed(3)
    assert not torch.equal(keep, F.dropout(x, 0.3, True) != 0)  # another stream than torch's


def test_mask_kind_is_set_for_a_block_only():
    assert mask_kind() == "torch"
    with masks("fast"):
        assert mask_kind() == "fast"
        with masks("torch"):
            assert mask_kind() == "torch"
        assert mask_kind() == "fast"
    assert mask_kind() == "torch"
    with pytest.raises(RuntimeError, match="inside"):
        with masks("fast"):
            raise RuntimeError("inside")
    assert mask_kind() == "torch"  # restored after an error too
    with pytest.raises(ValueError, match="not one of torch, fast"):
        with masks("philox"):
            pass
    # a probability that rounds to keeping all 2^16 values keeps everything, unscaled
    keep, scale = keep_mask(torch.empty(10), 1e-6, "fast")
    assert bool(keep.all()) and scale == 1.0


def test_torch_masks_follow_the_memory_order_of_the_input():
    x = torch.randn(16, 24).t()  # transposed: F.dropout draws its mask in memory order
    torch.manual_seed(9)
    keep, _ = keep_mask(x, 0.5, "torch")
    torch.manual_seed(9)
    assert torch.equal(keep, F.dropout(torch.ones_like(x), 0.5, True) != 0)
    assert keep.stride() == x.stride()


def test_the_probe_leaves_the_default_generator_alone():
    seq2seq.dropout._words_are_bernoulli = None
    torch.manual_seed(4)
    expected = torch.rand(3)
    torch.manual_seed(4)
    assert isinstance(_bernoulli_draws_words(), bool)
    assert torch.equal(torch.rand(3), expected)


def test_the_mask_kinds_are_the_configs_choices():
    import typing

    from seq2seq.config import TrainConfig
    from seq2seq.dropout import MASK_KINDS

    hints = typing.get_type_hints(TrainConfig)
    assert typing.get_args(hints["dropout_masks"]) == MASK_KINDS
