"""seq2seq.dropout: the same numbers as F.dropout, with a one-byte mask kept for backward."""

import pytest
import torch
import torch.nn.functional as F

from seq2seq.dropout import Dropout, dropout


@pytest.mark.parametrize("shape,transposed", [((7,), False), ((3, 5, 11), False),
                                              ((6, 9, 16), True), ((2, 4, 17, 19), True)])
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_values_gradients_and_random_stream_equal_f_dropout(shape, transposed, p):
    x = torch.randn(*shape)
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
