import math

import pytest
import torch
import torch.nn.functional as F

from seq2seq.attention import (
    SHORT_SOFTMAX,
    Attention,
    LocalMonotonicWindow,
    LocalPredictiveWindow,
    MultiHeadAttention,
    _few_queries,
    _softmax_,
    build_attention,
    build_score,
)
from seq2seq.choices import SCORES
from seq2seq.config import AttentionConfig
from seq2seq.errors import ConfigError

B, T, S, DQ, DK = 3, 5, 30, 16, 16
LENGTHS = torch.tensor([30, 17, 1])
WINDOWS = ["global", "local-m", "local-p"]
ATTENDING = [name for name in SCORES if SCORES.get(name).attends]  # every score but none


def inputs(dk=DK, seed=0):
    torch.manual_seed(seed)
    q = torch.randn(B, T, DQ, requires_grad=True)
    k = torch.randn(B, S, dk, requires_grad=True)
    mask = torch.arange(S)[None, :] < LENGTHS[:, None]
    positions = torch.arange(T).expand(B, T) * 4  # target steps 0, 4, 8, ...
    return q, k, mask, positions


def attention(score="additive", window="global", **kw) -> Attention:
    torch.manual_seed(1)
    return Attention(DQ, DK, AttentionConfig(score=score, window=window, window_size=3, **kw))


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("name", ATTENDING)
def test_weights_are_a_distribution_over_real_tokens(name, window):
    q, k, mask, pos = inputs()
    att = attention(name, window)
    ctx, w = att(q, att.project_keys(k), k, mask, pos)
    assert ctx.shape == (B, T, DK) and w.shape == (B, T, S)
    torch.testing.assert_close(w.sum(-1), torch.ones(B, T))
    pad = ~mask[:, None, :].expand_as(w)
    assert (w[pad] == 0).all()  # exactly zero, not merely small
    if window == "global":
        assert (w[~pad] > 0).all()


@pytest.mark.parametrize("name", ATTENDING)
@pytest.mark.parametrize("window", WINDOWS)
def test_gradients_reach_every_parameter_and_input(name, window):
    q, k, mask, pos = inputs()
    att = attention(name, window)
    ctx, _ = att(q, att.project_keys(k), k, mask, pos)
    ctx.pow(2).sum().backward()
    for pname, p in att.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname
    assert q.grad.abs().sum() > 0 and k.grad.abs().sum() > 0


def test_local_m_window_is_centred_on_the_target_step():
    q, k, mask, pos = inputs()
    att = attention("general", "local-m")
    _, w = att(q, att.project_keys(k), k, mask, pos)
    s = torch.arange(S)
    for b in range(B):
        for t in range(T):
            p = min(int(pos[b, t]), int(LENGTHS[b]) - 1)  # clipped to the source
            outside = (s - p).abs() > 3
            assert (w[b, t, outside] == 0).all()
            assert w[b, t, ~outside & mask[b]].sum() > 0.999


def test_local_p_window_follows_the_predicted_position():
    q, k, mask, pos = inputs()
    att = attention("dot", "local-p")
    win = att.window
    with torch.no_grad():
        p = LENGTHS[:, None] * torch.sigmoid(win.v_p(torch.tanh(win.W_p(q)))).squeeze(-1)
        _, w = att(q, att.project_keys(k), k, mask, pos)
    s = torch.arange(S).float()
    outside = (s.view(1, 1, -1) - p.unsqueeze(-1)).abs() > 3
    assert (w[outside] == 0).all()
    # Inside the window: softmax of score - (s - p)^2 / (2 sigma^2), sigma = D/2 (eq. 10).
    energies = torch.bmm(q, k.transpose(1, 2)).detach()
    sigma = 1.5
    g = energies - (s.view(1, 1, -1) - p.unsqueeze(-1)) ** 2 / (2 * sigma**2)
    g = g.masked_fill(outside | ~mask[:, None, :], float("-inf"))
    torch.testing.assert_close(w, torch.softmax(g, -1))


def test_padding_values_do_not_leak():
    q, k, mask, pos = inputs()
    att = attention()
    k2 = k.detach().clone()
    k2[1, 17:] = 1e3  # garbage in padded positions of sentence 1
    c1, _ = att(q, att.project_keys(k), k, mask, pos)
    c2, _ = att(q, att.project_keys(k2), k2, mask, pos)
    torch.testing.assert_close(c1[1], c2[1])


def test_score_formulas():
    q, k, _, _ = inputs()
    i, t, j = 1, 2, 3
    cfg = AttentionConfig(hidden_size=12)
    add = build_score(DQ, DK, cfg)
    e = add(q, add.project_keys(k))
    manual = add.v.weight @ torch.tanh(add.W.weight @ q[i, t] + add.U.weight @ k[i, j] + add.U.bias)
    torch.testing.assert_close(e[i, t, j], manual.squeeze())
    gen = build_score(DQ, DK, AttentionConfig(score="general"))
    e = gen(q, gen.project_keys(k))
    torch.testing.assert_close(e[i, t, j], q[i, t] @ gen.W.weight @ k[i, j])
    loc = build_score(DQ, DK, AttentionConfig(score="location"))
    torch.testing.assert_close(loc(q, loc.project_keys(k))[i, t], (loc.W(q[i, t]))[:S])
    cos = build_score(DQ, DK, AttentionConfig(score="cosine", beta=2.0, learn_beta=False))
    torch.testing.assert_close(cos(q, cos.project_keys(k))[i, t, j],
                               2.0 * F.cosine_similarity(q[i, t], k[i, j], dim=0))
    assert not any(True for _ in cos.parameters())  # fixed beta: nothing to learn
    sdp = build_score(DQ, DK, AttentionConfig(score="scaled_dot"))
    torch.testing.assert_close(sdp(q, k)[i, t, j], q[i, t] @ k[i, j] / math.sqrt(DQ))


def test_location_score_beyond_its_positions():
    q, k, mask, pos = inputs()
    att = attention("location", max_positions=10)
    _, w = att(q, att.project_keys(k), k, mask, pos)
    assert (w[..., 10:] == 0).all()
    torch.testing.assert_close(w.sum(-1), torch.ones(B, T))


def test_hard_attention_is_one_hot_at_inference_only():
    q, k, mask, pos = inputs()
    att = attention("general")
    _, soft = att(q, att.project_keys(k), k, mask, pos)
    att.hard = True
    _, still_soft = att(q, att.project_keys(k), k, mask, pos)  # training mode
    torch.testing.assert_close(soft, still_soft)
    att.eval()
    ctx, hard = att(q, att.project_keys(k), k, mask, pos)
    assert ((hard == 0) | (hard == 1)).all()
    assert torch.equal(hard.argmax(-1), soft.argmax(-1))
    torch.testing.assert_close(ctx[0, 0], k[0, soft[0, 0].argmax()])


def test_multihead_sdpa_equals_explicit_formula():
    torch.manual_seed(0)
    mha = MultiHeadAttention(DQ, DK, 32, heads=4, out_size=DK).eval()
    q, k, mask, _ = inputs()
    kv = mha.project_keys(k)
    fast, none = mha(q, kv, mask=mask, need_weights=False)
    slow, w = mha(q, kv, mask=mask, need_weights=True)
    assert none is None
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    # the explicit formula, head by head
    Q = mha.W_q(q).view(B, T, 4, 8).transpose(1, 2)
    K, V = (x.view(B, S, 4, 8).transpose(1, 2) for x in mha.W_kv(k).chunk(2, -1))
    scores = (Q @ K.transpose(-1, -2) / math.sqrt(8)).masked_fill(~mask[:, None, None], -math.inf)
    heads = torch.softmax(scores, -1) @ V
    ref = mha.W_o(heads.transpose(1, 2).reshape(B, T, 32))
    torch.testing.assert_close(slow, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(w.sum(-1), torch.ones(B, T))
    assert (w[~mask[:, None, :].expand_as(w)] == 0).all()


@pytest.mark.parametrize("causal", [False, True])
def test_multihead_training_dropout_follows_the_mask_kind(causal):
    """torch masks: the fused kernel's own dropout, as before; fast masks: the weights computed
    here and dropped out by seq2seq.dropout (the kernel would draw bernoulli_ masks)."""
    from seq2seq.dropout import dropout, masks

    torch.manual_seed(0)
    mha = MultiHeadAttention(DQ, DQ, 16, heads=2, dropout=0.3).train()
    x = torch.randn(B, 6, DQ)
    mask = None if causal else torch.arange(6)[None, :] < torch.tensor([6, 4, 1])[:, None]
    kv = mha.project_keys(x)
    Q = mha.W_q(x).view(B, 6, 2, 8).transpose(1, 2)
    K, V = kv[:, :2], kv[:, 2:]
    allowed = torch.ones(6, 6, dtype=torch.bool).tril() if causal else mask[:, None, None]
    torch.manual_seed(5)
    out, _ = mha(x, kv, mask=mask, causal=causal, need_weights=False)
    torch.manual_seed(5)
    sdpa = F.scaled_dot_product_attention(Q, K, V, attn_mask=None if causal else allowed,
                                          dropout_p=0.3, is_causal=causal)
    assert torch.equal(out, mha.W_o(sdpa.transpose(1, 2).reshape(B, 6, 16)))
    with masks("fast"):
        torch.manual_seed(5)
        out, _ = mha(x, kv, mask=mask, causal=causal, need_weights=False)
        scores = (Q @ K.transpose(-1, -2) / math.sqrt(8)).masked_fill(~allowed, -math.inf)
        torch.manual_seed(5)
        heads = dropout(torch.softmax(scores, -1), 0.3, True) @ V
    assert torch.equal(out, mha.W_o(heads.transpose(1, 2).reshape(B, 6, 16)))


def test_multihead_causal_mask():
    torch.manual_seed(0)
    mha = MultiHeadAttention(DQ, DQ, 16, heads=2).eval()
    x = torch.randn(2, 6, DQ)
    for need in (True, False):
        out1, _ = mha(x, mha.project_keys(x), causal=True, need_weights=need)
        x2 = x.clone()
        x2[:, 4:] = torch.randn(2, 2, DQ)  # change later positions only
        out2, _ = mha(x2, mha.project_keys(x2), causal=True, need_weights=need)
        torch.testing.assert_close(out1[:, :4], out2[:, :4])
        assert not torch.allclose(out1[:, 4:], out2[:, 4:])


def test_build_attention_and_errors():
    assert isinstance(build_attention(DQ, DK, AttentionConfig(score="scaled_dot", heads=4)),
                      MultiHeadAttention)
    from seq2seq.config import load_config

    with pytest.raises(ConfigError, match="score: scaled_dot and window: global"):
        load_config(None, ["model.attention.score=general", "model.attention.heads=4"])
    with pytest.raises(ConfigError, match="dot needs the encoder output size"):
        load_config(None, ["model.attention.score=dot", "model.encoder_hidden_size=64"])
    with pytest.raises(ConfigError, match="is not one of"):
        build_score(16, 16, AttentionConfig(score="nope"))
    with pytest.raises(RuntimeError, match="no implementation"):  # "none" builds no module
        build_score(16, 16, AttentionConfig(score="none"))


def test_windows_come_from_the_registry():
    assert attention("general").window is None
    assert isinstance(attention("general", "local-m").window, LocalMonotonicWindow)
    assert isinstance(attention("general", "local-p").window, LocalPredictiveWindow)


@pytest.mark.parametrize("name", ["additive", "general", "location", "cosine", "scaled_dot"])
@pytest.mark.parametrize("window", WINDOWS)
def test_keys_of_another_size(name, window):
    """Encoder outputs of another size than the decoder state (projected by the score)."""
    q, k, mask, pos = inputs(dk=12)
    torch.manual_seed(1)
    att = Attention(DQ, 12, AttentionConfig(score=name, window=window, window_size=2,
                                            max_positions=8))
    ctx, w = att(q, att.project_keys(k), k, mask, pos)
    assert ctx.shape == (B, T, 12)
    assert not torch.isnan(w).any()
    torch.testing.assert_close(w.sum(-1), torch.ones(B, T))
    assert (w[~mask[:, None, :].expand_as(w)] == 0).all()


def test_local_p_as_in_the_paper_multiplies_the_window_softmax_by_the_gaussian():
    """Luong et al. eq. 10: a_t(s) = softmax over the window * exp(-(s - p_t)^2 / 2 sigma^2),
    not renormalised: the weights sum to less than 1."""
    q, k, mask, pos = inputs()
    att = attention("dot", "local-p", local_p_weighting="paper")
    win = att.window
    with torch.no_grad():
        p = LENGTHS[:, None] * torch.sigmoid(win.v_p(torch.tanh(win.W_p(q)))).squeeze(-1)
        _, w = att(q, att.project_keys(k), k, mask, pos)
    s = torch.arange(S).float()
    dist = s.view(1, 1, -1) - p.unsqueeze(-1)
    outside = (dist.abs() > 3) | ~mask[:, None, :]
    energies = torch.bmm(q, k.transpose(1, 2)).detach().masked_fill(outside, float("-inf"))
    expected = torch.softmax(energies, -1) * torch.exp(-dist**2 / (2 * 1.5**2))
    torch.testing.assert_close(w, expected)
    assert (w[outside] == 0).all() and (w.sum(-1) < 1).all() and (w.sum(-1) > 0).all()


def test_scaled_local_p_divides_the_position_logit_by_sqrt_d():
    q, k, mask, pos = inputs()
    plain, scaled = attention("dot", "local-p"), attention("dot", "local-p", local_p_scaled=True)
    scaled.load_state_dict(plain.state_dict())  # the same weights
    src_len = LENGTHS[:, None].float()
    with torch.no_grad():
        logit = plain.window.v_p(torch.tanh(plain.window.W_p(q))).squeeze(-1)
        p = scaled.window.aligned_positions(q, src_len, pos)
    torch.testing.assert_close(p, src_len * torch.sigmoid(logit / math.sqrt(DQ)))


def test_scaled_dot_with_projections_projects_query_and_keys():
    q, k, mask, pos = inputs()
    att = attention("scaled_dot", projections=True)
    score = att.score
    with torch.no_grad():
        _, w = att(q, att.project_keys(k), k, mask, pos)
        e = torch.bmm(score.W_q(q), score.W(k).transpose(1, 2)) / math.sqrt(DQ)
    expected = torch.softmax(e.masked_fill(~mask[:, None, :], float("-inf")), -1)
    torch.testing.assert_close(w, expected)
    assert attention("scaled_dot").score.W_q is None  # without: the states themselves
    with pytest.raises(ConfigError, match="projections: only for score: scaled_dot"):
        AttentionConfig(score="dot", projections=True).validate()


@pytest.mark.parametrize("T", [1, 3])
def test_a_decoder_step_as_batched_products_equals_the_fused_kernel(T, monkeypatch):
    """``step=True`` on a CPU without gradients runs as two batched products
    (``_few_queries``) over contiguous keys and values: the same output as the fused kernel,
    padding masked, for one query (greedy) and a few (a sentence's beams)."""
    import seq2seq.attention as attention

    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 16, 16, heads=4).eval()
    B, S = 5, 7
    query, keys = torch.randn(B, T, 16), torch.randn(B, S, 16)
    mask = torch.ones(B, S, dtype=torch.bool)
    mask[1, 4:], mask[3, 1:] = False, False  # padding; sentence 3 has one token
    calls = []
    monkeypatch.setattr(attention, "_few_queries",
                        lambda *a: calls.append(1) or _few_queries(*a))
    with torch.no_grad():
        k, v = mha.split_keys(mha.project_keys(keys))
        fused = mha(query, (k, v), mask=mask, need_weights=False)[0]
        assert not calls
        fast = mha(query, (k.contiguous(), v.contiguous()), mask=mask, need_weights=False,
                   step=True)[0]
        assert len(calls) == 1
        explicit, _ = mha(query, (k, v), mask=mask, need_weights=True)
    torch.testing.assert_close(fast, fused, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(fast, explicit, atol=1e-6, rtol=1e-5)
    with torch.no_grad():  # views, not contiguous: the fused kernel, as before
        mha(query, (k, v), mask=mask, need_weights=False, step=True)
    mha.train()  # never with gradients or in training (dropout)
    mha(query, (k.contiguous(), v.contiguous()), mask=mask, need_weights=False, step=True)
    with torch.no_grad():
        mha.dropout = 0.5
        mha(query, (k.contiguous(), v.contiguous()), mask=mask, need_weights=False, step=True)
    assert len(calls) == 1



@pytest.mark.parametrize("keys", [1, 5, 15, 16, 40])
def test_decoding_softmax_equals_torch_and_writes_over_the_scores(keys):
    torch.manual_seed(0)
    scores = torch.randn(6, 4, 2, keys) * 4
    scores[0, :, :, 1:] = float("-inf")  # masked keys get exactly 0
    want = torch.softmax(scores, dim=-1)
    x = scores.clone()
    got = _softmax_(x)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    assert (got[0, :, :, 1:] == 0).all() and (got[0, :, :, 0] == 1).all()
    if keys < SHORT_SOFTMAX:  # its own four passes, in place
        assert got.data_ptr() == x.data_ptr()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_decoding_softmax_of_low_precision_scores_is_torchs(dtype):
    """bf16/fp16 scores keep torch's softmax, which accumulates in fp32 (and which CUDA's
    autocast lifts to fp32); the four passes in bf16 would round every partial sum."""
    torch.manual_seed(0)
    scores = (torch.randn(6, 4, 1, 7) * 4).to(dtype)
    x = scores.clone()
    got = _softmax_(x)
    assert got.dtype == dtype and got.data_ptr() != x.data_ptr()
    assert torch.equal(got, torch.softmax(scores, dim=-1)) and torch.equal(x, scores)
