import pytest
import torch

from seq2seq.attention import SCORES, Attention, build_score
from seq2seq.errors import ConfigError

B, T, S, DQ, DK = 3, 2, 7, 16, 16
LENGTHS = torch.tensor([7, 4, 1])


def inputs(dk=DK):
    torch.manual_seed(0)
    q = torch.randn(B, T, DQ, requires_grad=True)
    k = torch.randn(B, S, dk, requires_grad=True)
    mask = torch.arange(S)[None, :] < LENGTHS[:, None]
    return q, k, mask


@pytest.mark.parametrize("name", sorted(SCORES))
def test_weights_are_a_distribution_over_real_tokens(name):
    q, k, mask = inputs()
    att = Attention(build_score(name, DQ, DK, 12))
    ctx, w = att(q, att.project_keys(k), k, mask)
    assert ctx.shape == (B, T, DK) and w.shape == (B, T, S)
    torch.testing.assert_close(w.sum(-1), torch.ones(B, T))
    assert (w.masked_select(~mask[:, None, :].expand_as(w)) == 0).all()  # exactly zero
    assert (w.masked_select(mask[:, None, :].expand_as(w)) > 0).all()


@pytest.mark.parametrize("name", sorted(SCORES))
def test_gradients_reach_every_parameter_and_input(name):
    q, k, mask = inputs()
    att = Attention(build_score(name, DQ, DK, 12))
    ctx, _ = att(q, att.project_keys(k), k, mask)
    ctx.pow(2).sum().backward()
    for pname, p in att.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname
    assert q.grad.abs().sum() > 0 and k.grad.abs().sum() > 0


def test_padding_values_do_not_leak():
    q, k, mask = inputs()
    att = Attention(build_score("additive", DQ, DK, 12))
    k2 = k.detach().clone()
    k2[1, 4:] = 1e3  # garbage in padded positions of sentence 1
    c1, _ = att(q, att.project_keys(k), k, mask)
    c2, _ = att(q, att.project_keys(k2), k2, mask)
    torch.testing.assert_close(c1[1], c2[1])


def test_additive_matches_formula():
    q, k, mask = inputs()
    sc = build_score("additive", DQ, DK, 12)
    e = sc(q, sc.project_keys(k))
    i, t, j = 1, 0, 2
    manual = sc.v.weight @ torch.tanh(sc.W.weight @ q[i, t] + sc.U.weight @ k[i, j] + sc.U.bias)
    torch.testing.assert_close(e[i, t, j], manual.squeeze())


def test_dot_needs_equal_sizes_and_unknown_names():
    with pytest.raises(ConfigError, match="dot needs equal"):
        build_score("dot", 16, 32, 8)
    with pytest.raises(ConfigError, match="is not one of"):
        build_score("nope", 16, 16, 8)
