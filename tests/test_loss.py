import pytest
import torch
import torch.nn.functional as F
from torch import nn

from seq2seq import loss as loss_mod
from seq2seq.loss import linear_cross_entropy_sum


def reference(h, layer, y, eps):
    return F.cross_entropy(layer(h), y, reduction="sum", label_smoothing=eps)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("chunk_elements", [1 << 23, 3 * 57])  # one chunk; chunks of 3 rows
def test_fused_output_layer_and_loss_match_the_reference(eps, bias, chunk_elements, monkeypatch):
    monkeypatch.setattr(loss_mod, "CHUNK_ELEMENTS", chunk_elements)
    torch.manual_seed(0)
    layer = nn.Linear(16, 57, bias=bias)
    h = torch.randn(40, 16, requires_grad=True)
    y = torch.randint(0, 57, (40,))
    ours = linear_cross_entropy_sum(h, layer, y, eps)
    ref = reference(h, layer, y, eps)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-4)
    params = [h, *layer.parameters()]
    g1 = torch.autograd.grad(ours * 0.5, params)
    g2 = torch.autograd.grad(ref * 0.5, params)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # validation: the loss alone, also in chunks
        torch.testing.assert_close(linear_cross_entropy_sum(h, layer, y, eps), ref,
                                   rtol=1e-5, atol=1e-4)


def test_tied_weight_gets_both_gradients():
    torch.manual_seed(0)
    emb = nn.Embedding(11, 8)
    layer = nn.Linear(8, 11)
    layer.weight = emb.weight
    x, y = torch.randint(0, 11, (6,)), torch.randint(0, 11, (6,))
    linear_cross_entropy_sum(emb(x) * 2, layer, y, 0.1).backward()
    ours = emb.weight.grad.clone()
    emb.weight.grad = None
    reference(emb(x) * 2, layer, y, 0.1).backward()
    torch.testing.assert_close(ours, emb.weight.grad, rtol=1e-5, atol=1e-6)


def test_gradcheck(monkeypatch):
    monkeypatch.setattr(loss_mod, "CHUNK_ELEMENTS", 14)  # chunks of 2 rows
    torch.manual_seed(0)
    h = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(7, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(7, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 7, (5,))

    def f(h, w, b):
        return loss_mod._LinearCrossEntropy.apply(h, w, b, y, 0.1).double()

    # the loss is accumulated in float32, so compare at float32's precision
    assert torch.autograd.gradcheck(f, (h, w, b), eps=1e-3, atol=1e-3, rtol=1e-3)


def test_label_smoothing_changes_the_loss():
    layer = nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.eye(3))
    h, y = torch.tensor([[4.0, 0.0, 0.0]]), torch.tensor([0])
    assert linear_cross_entropy_sum(h, layer, y, 0.1) > linear_cross_entropy_sum(h, layer, y, 0.0)
