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
@pytest.mark.parametrize("chunk", [1 << 23, 3 * 57])  # one chunk; chunks of 3 rows
def test_fused_output_layer_and_loss_match_the_reference(eps, bias, chunk):
    torch.manual_seed(0)
    layer = nn.Linear(16, 57, bias=bias)
    h = torch.randn(40, 16, requires_grad=True)
    y = torch.randint(0, 57, (40,))
    ours = linear_cross_entropy_sum(h, layer, y, eps, chunk)
    ref = reference(h, layer, y, eps)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-4)
    params = [h, *layer.parameters()]
    g1 = torch.autograd.grad(ours * 0.5, params)
    g2 = torch.autograd.grad(ref * 0.5, params)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # validation: the loss alone, also in chunks
        torch.testing.assert_close(linear_cross_entropy_sum(h, layer, y, eps, chunk), ref,
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


def test_gradcheck():
    torch.manual_seed(0)
    h = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(7, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(7, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 7, (5,))

    def f(h, w, b):
        return loss_mod._LinearCrossEntropy.apply(h, w, b, y, 0.1, 14).double()  # 2-row chunks

    # the loss is accumulated in float32, so compare at float32's precision
    assert torch.autograd.gradcheck(f, (h, w, b), eps=1e-3, atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("chunk", [1 << 21, 300 * 1000, 300 * 7])  # 1, 3, 358 chunks
def test_chunks_of_any_size_add_the_same_gradients(chunk):
    """The chunk size (train.loss_chunk_logits) changes only the order of the sums; and the
    default is the chunk every kept reproduction result was trained with."""
    assert loss_mod.CHUNK_LOGITS == 1 << 21
    torch.manual_seed(0)
    layer = nn.Linear(32, 300)
    h = torch.randn(2500, 32, requires_grad=True)
    y = torch.randint(0, 300, (2500,))
    ours = linear_cross_entropy_sum(h, layer, y, 0.1, chunk)
    ref = reference(h, layer, y, 0.1)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-3)
    for a, b in zip(torch.autograd.grad(ours, [h, *layer.parameters()]),
                    torch.autograd.grad(ref, [h, *layer.parameters()])):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("chunk", [1 << 23, 3 * 57])
def test_bf16_autocast_matches_the_reference_at_its_precision(chunk):
    """Under autocast the products run in bf16 and are copied into the float32 chunk buffer."""
    torch.manual_seed(0)
    layer = nn.Linear(16, 57)
    h = torch.randn(40, 16, requires_grad=True)
    y = torch.randint(0, 57, (40,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = linear_cross_entropy_sum(h.bfloat16(), layer, y, 0.1, chunk)
    ref = reference(h, layer, y, 0.1)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, ref, rtol=2e-2, atol=0.0)
    for a, b in zip(torch.autograd.grad(ours, [h, *layer.parameters()]),
                    torch.autograd.grad(ref, [h, *layer.parameters()])):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b, rtol=5e-2, atol=2e-2)


def test_label_smoothing_changes_the_loss():
    layer = nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.eye(3))
    h, y = torch.tensor([[4.0, 0.0, 0.0]]), torch.tensor([0])
    assert linear_cross_entropy_sum(h, layer, y, 0.1) > linear_cross_entropy_sum(h, layer, y, 0.0)


def test_a_kept_buffer_serves_every_call_and_changes_no_number():
    torch.manual_seed(0)
    layer = nn.Linear(16, 57)
    y = torch.randint(0, 57, (40,))
    buffer = loss_mod.ChunkBuffer()
    h = torch.randn(40, 16, requires_grad=True)
    fresh = torch.autograd.grad(linear_cross_entropy_sum(h, layer, y, 0.1, 10 * 57), [h])[0]
    kept = torch.autograd.grad(linear_cross_entropy_sum(h, layer, y, 0.1, 10 * 57, buffer), [h])[0]
    assert torch.equal(fresh, kept)
    first = buffer.tensor
    assert first is not None and first.numel() == 10 * 57  # chunks of 10 rows
    h2 = torch.randn(7, 16, requires_grad=True)  # fewer rows: a view of the same memory
    linear_cross_entropy_sum(h2, layer, y[:7], 0.1, 10 * 57, buffer).backward()
    assert buffer.tensor is first
    linear_cross_entropy_sum(h, layer, y, 0.1, 20 * 57, buffer).backward()  # grows
    assert buffer.tensor.numel() == 20 * 57


def test_a_bias_that_alone_needs_a_gradient_gets_it():
    torch.manual_seed(0)
    layer = nn.Linear(16, 57)
    layer.weight.requires_grad_(False)
    h, y = torch.randn(40, 16), torch.randint(0, 57, (40,))
    linear_cross_entropy_sum(h, layer, y, 0.1, 3 * 57).backward()
    ours = layer.bias.grad.clone()
    layer.bias.grad = None
    reference(h, layer, y, 0.1).backward()
    torch.testing.assert_close(ours, layer.bias.grad, rtol=1e-5, atol=1e-6)
