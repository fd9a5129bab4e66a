import pytest
import torch
import torch.nn.functional as F

from seq2seq.loss import cross_entropy_sum


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_fused_cross_entropy_matches_reference(eps):
    torch.manual_seed(0)
    z = torch.randn(40, 57, dtype=torch.float32, requires_grad=True)
    y = torch.randint(0, 57, (40,))
    ours = cross_entropy_sum(z, y, eps)
    ref = F.cross_entropy(z, y, reduction="sum", label_smoothing=eps)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-4)
    g1, = torch.autograd.grad(ours * 0.5, z)
    g2, = torch.autograd.grad(ref * 0.5, z)
    torch.testing.assert_close(g1, g2, rtol=1e-5, atol=1e-6)


def test_gradcheck():
    torch.manual_seed(0)
    z = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 7, (5,))
    from seq2seq.loss import _FusedCrossEntropy

    assert torch.autograd.gradcheck(lambda x: _FusedCrossEntropy.apply(x, y, 0.1), (z,))
