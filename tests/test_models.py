import pytest
import torch

from seq2seq.attention import MultiHeadAttention
from seq2seq.config import ModelConfig, load_config
from seq2seq.errors import ConfigError
from seq2seq.models import build_model, select
from seq2seq.models.base import log_softmax_
from seq2seq.models.transformer import append_positions
from seq2seq.special import BOS

V = 30
VARIANTS = {
    "bahdanau-gru": [],
    "bahdanau-lstm-2layer": ["model.cell=lstm", "model.encoder_layers=2",
                             "model.decoder_layers=2", "model.decoder_start=backward"],
    "luong-general-feed": ["model.decoder=luong", "model.attention.score=general"],
    "luong-dot-nofeed": ["model.decoder=luong", "model.attention.score=dot",
                         "model.attention.input_feeding=false"],
    "unidirectional-untied": ["model.bidirectional=false", "model.tie_output=false",
                              "model.share_embeddings=false", "vocab.joint=false"],
    "sutskever-reversed": ["model.decoder=sutskever", "model.attention.score=none",
                           "model.cell=lstm", "model.encoder_layers=2", "model.decoder_layers=2",
                           "model.bidirectional=false", "model.reverse_source=true",
                           "model.decoder_start=final"],
    "cho": ["model.decoder=cho", "model.attention.score=none", "model.bidirectional=false",
            "model.decoder_start=summary"],
    "luong-concat": ["model.decoder=luong", "model.attention.score=concat"],
    "luong-location": ["model.decoder=luong", "model.attention.score=location"],
    "luong-local-m": ["model.decoder=luong", "model.attention.window=local-m",
                      "model.attention.window_size=1", "model.attention.score=general"],
    "luong-local-p-nofeed": ["model.decoder=luong", "model.attention.window=local-p",
                             "model.attention.score=dot", "model.attention.input_feeding=false"],
    "luong-cosine": ["model.decoder=luong", "model.attention.score=cosine"],
    "bahdanau-multihead": ["model.attention.score=scaled_dot", "model.attention.heads=4"],
    "luong-multihead-nofeed": ["model.decoder=luong", "model.attention.score=scaled_dot",
                               "model.attention.heads=2", "model.attention.input_feeding=false"],
    "transformer-post": ["model.arch=transformer", "model.attention.score=scaled_dot",
                         "model.attention.heads=2", "model.encoder_layers=2",
                         "model.decoder_layers=2", "model.ff_size=32"],
    "transformer-pre-learned": ["model.arch=transformer", "model.attention.score=scaled_dot",
                                "model.attention.heads=4", "model.norm=pre",
                                "model.positions=learned", "model.ff_size=32",
                                "model.share_embeddings=false", "vocab.joint=false",
                                "model.tie_output=false"],
}
TRANSFORMERS = [name for name in VARIANTS if name.startswith("transformer")]


def model_for(overrides) -> torch.nn.Module:
    cfg = load_config(None, ["model.embed_size=16", "model.hidden_size=16", *overrides])
    torch.manual_seed(0)
    return build_model(cfg.model, V, V).eval()


def toy_batch():
    torch.manual_seed(1)
    src = torch.randint(4, V, (3, 6))
    src_len = torch.tensor([6, 4, 2])
    src[1, 4:] = 0
    src[2, 2:] = 0
    tgt_in = torch.cat([torch.full((3, 1), BOS), torch.randint(4, V, (3, 4))], dim=1)
    return src, src_len, tgt_in


@pytest.mark.parametrize("name", VARIANTS)
def test_teacher_forcing_equals_stepwise_decoding(name):
    model = model_for(VARIANTS[name])
    src, src_len, tgt_in = toy_batch()
    with torch.no_grad():
        full = torch.log_softmax(model(src, src_len, tgt_in), dim=-1)  # (B, T, V)
        memory = model.encode(src, src_len)
        state = model.init_state(memory)
        for t in range(tgt_in.size(1)):
            lp, state, attn = model.decode_step(memory, state, tgt_in[:, t])
            torch.testing.assert_close(lp, full[:, t], atol=1e-5, rtol=1e-5)
            if getattr(model, "attentional", True):
                assert attn.shape == src.shape
                assert (attn[src == 0] == 0).all()
            else:
                assert attn is None


@pytest.mark.parametrize("name", VARIANTS)
def test_sentence_alone_equals_sentence_in_padded_batch(name):
    model = model_for(VARIANTS[name])
    src, src_len, tgt_in = toy_batch()
    with torch.no_grad():
        batch = model(src, src_len, tgt_in)
        alone = model(src[2:3, :2], src_len[2:3], tgt_in[2:3])
    torch.testing.assert_close(batch[2:3], alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("how", ["select", "reorder_state", "reorder_state twice"])
def test_state_can_be_reordered_mid_sentence(name, how):
    """Reordering memory and state after a few steps (as beam search does) equals decoding the
    reordered sentences from the start: with ``select``, and with the model's
    ``reorder_state`` (which the Transformer defers to the next step), once or twice in a row
    (rows [2, 0, 0] picked as [1, 2, 0] then [1, 2, 2] of those)."""
    model = model_for(VARIANTS[name])
    src, src_len, tgt_in = toy_batch()
    idx = torch.tensor([2, 0, 0])
    with torch.no_grad():
        memory = model.encode(src, src_len)
        state = model.init_state(memory)
        for t in range(3):
            _, state, _ = model.decode_step(memory, state, tgt_in[:, t])
        memory = select(memory, idx)
        if how == "select":
            state = select(state, idx)
        elif how == "reorder_state":
            state = model.reorder_state(state, idx)
        else:
            first = torch.tensor([1, 2, 0])
            second = torch.tensor([1, 2, 2])
            assert torch.equal(first[second], idx)
            state = model.reorder_state(model.reorder_state(state, first), second)
        lp_sel, state, _ = model.decode_step(memory, state, tgt_in[idx, 3])
        lp_next, _, _ = model.decode_step(memory, state, tgt_in[idx, 4])
        ref = torch.log_softmax(model(src[idx], src_len[idx], tgt_in[idx]), -1)
    torch.testing.assert_close(lp_sel, ref[:, 3], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lp_next, ref[:, 4], atol=1e-5, rtol=1e-5)


def test_tied_and_shared_embeddings():
    model = model_for([])
    assert model.generator.weight is model.tgt_embedding.weight
    assert model.encoder.embedding is model.tgt_embedding
    untied = model_for(VARIANTS["unidirectional-untied"])
    assert untied.generator.weight is not untied.tgt_embedding.weight


@pytest.mark.parametrize("name", VARIANTS)
def test_gradients_reach_every_parameter(name):
    model = model_for(VARIANTS[name]).train()
    src, src_len, tgt_in = toy_batch()
    model(src, src_len, tgt_in).logsumexp(-1).sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


def test_reverse_padded():
    from seq2seq.models.rnn import reverse_padded

    x = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0]])
    assert reverse_padded(x, torch.tensor([3, 2])).tolist() == [[3, 2, 1, 0], [5, 4, 0, 0]]


def test_reversed_source_keeps_annotations_in_source_order():
    """Reading the source backwards equals reading the reversed source forwards, with the
    annotations put back so that position j still belongs to source token j."""
    from seq2seq.models.rnn import reverse_padded

    uni = ["model.bidirectional=false"]
    fwd = model_for(uni)
    rev = model_for([*uni, "model.reverse_source=true"])
    rev.load_state_dict(fwd.state_dict())
    src, src_len, _ = toy_batch()
    with torch.no_grad():
        backwards = rev.encode(src, src_len)["values"]
        manual = fwd.encode(reverse_padded(src, src_len), src_len)["values"]
    torch.testing.assert_close(backwards, reverse_padded(manual, src_len))
    assert not torch.allclose(backwards, fwd.encode(src, src_len)["values"])


def test_default_model_config_builds():
    build_model(ModelConfig(), 100, 100)


@pytest.mark.parametrize("name", TRANSFORMERS)
def test_transformer_decoder_never_sees_the_future(name):
    model = model_for(VARIANTS[name])
    src, src_len, tgt_in = toy_batch()
    changed = tgt_in.clone()
    changed[:, 3:] = (changed[:, 3:] + 7) % (V - 4) + 4
    with torch.no_grad():
        a, b = model(src, src_len, tgt_in), model(src, src_len, changed)
    torch.testing.assert_close(a[:, :3], b[:, :3])
    assert not torch.allclose(a[:, 3:], b[:, 3:])


@pytest.mark.parametrize("name", TRANSFORMERS)
def test_transformer_converted_to_another_dtype_runs_in_it(name):
    """The sinusoidal position table follows the embeddings' dtype (made anew after .to()): a
    bf16 model runs in bf16 (a float32 table would make the first product fail)."""
    model = model_for(VARIANTS[name])
    src, src_len, tgt_in = toy_batch()
    with torch.no_grad():
        ref = model(src, src_len, tgt_in)
        out = model.bfloat16()(src, src_len, tgt_in)
    assert out.dtype == torch.bfloat16
    assert (out.float() - ref).abs().max() < 0.05 * ref.abs().max()


@pytest.mark.parametrize("name", TRANSFORMERS)
def test_decoder_layer_with_shared_memory_gives_per_head_weights_per_hypothesis(name):
    """K hypotheses a memory row (beam search) give what K copies of the memory give: outputs,
    averaged weights and per-head weights, row for row."""
    model = model_for(VARIANTS[name])
    src, src_len, tgt_in = toy_batch()
    K = 3
    with torch.no_grad():
        memory = model.encode(src, src_len)
        layer = model.decoder_layers[0]
        B = src.size(0)
        y = torch.randn(B * K, 1, model.cfg.embed_size)
        rows = torch.arange(B).repeat_interleave(K)
        shared = model._cross(memory, 0)
        copies = tuple(t.index_select(0, rows) for t in shared)
        empty = model.init_state(memory)
        cache = tuple(empty[f"self_{p}0"].index_select(0, rows) for p in "kv")
        for average in (True, False):
            a = layer(y, shared, memory["mask"], cache, need_weights=True, average_heads=average)
            r = layer(y, copies, memory["mask"][rows], cache, need_weights=True,
                      average_heads=average)
            torch.testing.assert_close(a[0], r[0], atol=1e-5, rtol=1e-5)
            assert a[2].shape == r[2].shape
            torch.testing.assert_close(a[2], r[2], atol=1e-6, rtol=1e-5)
        with pytest.raises(ValueError, match="evenly"):
            layer(y[:-1], shared, memory["mask"], tuple(c[:-1] for c in cache))


def test_transformer_parameter_count_of_the_cpu_config():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    cfg = load_config(root / "configs/multi30k/transformer.yaml")
    model = build_model(cfg.model, 8000, 8000)
    # 3+3 layers, d_model 256, ff 1024, shared and tied 8k embeddings: about 7.6M parameters
    assert 7.0e6 < model.num_parameters() < 8.2e6


@pytest.mark.parametrize(("name", "cls", "max_positions"), [
    ("bahdanau-gru", "BahdanauRNN", None), ("luong-concat", "LuongRNN", None),
    ("sutskever-reversed", "SutskeverRNN", None), ("cho", "ChoRNN", None),
    ("transformer-post", "Transformer", 1024),
])
def test_build_model_picks_the_registered_class(name, cls, max_positions):
    model = model_for(VARIANTS[name])
    assert type(model).__name__ == cls
    assert model.max_positions == max_positions


@pytest.mark.parametrize("kind", ["torch", "fast"])
def test_fused_relu_dropout_equals_the_unfused_pair(kind):
    import torch.nn.functional as F

    from seq2seq.dropout import masks
    from seq2seq.models.transformer import FeedForward

    torch.manual_seed(0)
    ff = FeedForward(8, 32, 0.3).train()
    x = torch.randn(4, 5, 8, requires_grad=True)
    with masks(kind):
        torch.manual_seed(1)
        fused = ff(x)
        g1 = torch.autograd.grad(fused.sum(), [x, *ff.parameters()])
        torch.manual_seed(1)
        plain = ff.w2(ff.dropout(F.relu(ff.w1(x))))
        g2 = torch.autograd.grad(plain.sum(), [x, *ff.parameters()])
    assert torch.equal(fused, plain)
    assert all(torch.equal(a, b) for a, b in zip(g1, g2))


def _rnn(*overrides):
    torch.manual_seed(0)
    return build_model(load_config(None, ["model.embed_size=32", "model.hidden_size=32",
                                          *overrides]).model, 50, 50)


def test_uniform_init_puts_every_parameter_in_range():
    model = _rnn("model.init=uniform", "model.init_range=0.08", "model.cell=lstm")
    for name, p in model.named_parameters():
        assert p.abs().max() <= 0.08, name
        if p.dim() > 1 and "embedding" not in name:
            assert p.abs().max() > 0.07, name  # spread over the range, not left at zero
    assert (model.tgt_embedding.weight[0] == 0).all()  # the pad row


def test_gaussian_init_has_orthogonal_recurrent_gates_and_zero_biases():
    model = _rnn("model.init=gaussian", "model.init_range=0.01")
    for name, p in model.named_parameters():
        if "weight_hh" in name:
            H = p.size(1)
            for block in p.split(H):
                torch.testing.assert_close(block @ block.T, torch.eye(H), atol=1e-5, rtol=0)
        elif p.dim() == 1 or name == "attention.score.v.weight":  # v_a zero (appendix B.1)
            assert (p == 0).all(), name
        elif name in ("attention.score.W.weight", "attention.score.U.weight"):
            assert 0.0005 < p.std() < 0.0015, name  # W_a, U_a from N(0, 0.001^2)
        elif "embedding" not in name:
            assert 0.005 < p.std() < 0.015, name


@pytest.mark.parametrize("how, std", [("scheme", 0.01), ("normal", 32 ** -0.5)])
def test_embedding_init_gives_the_embeddings_their_own_gaussian(how, std):
    model = _rnn("model.init=gaussian", "model.init_range=0.01", f"model.embedding_init={how}")
    emb = model.tgt_embedding.weight
    assert (emb[0] == 0).all() and 0.8 * std < emb[1:].std() < 1.2 * std  # pad row zero
    enc = [p for n, p in model.named_parameters() if "weight_ih" in n][0]
    assert 0.005 < enc.std() < 0.015  # the rest keeps the scheme


def test_forget_bias_and_the_default_is_unchanged():
    model = _rnn("model.cell=lstm", "model.forget_bias=1.0")
    for module in model.modules():
        if isinstance(module, torch.nn.LSTM):
            for name, p in module.named_parameters():
                if name.startswith("bias_"):
                    H = p.numel() // 4
                    assert (p[H : 2 * H] == (1.0 if "ih" in name else 0.0)).all()
                    assert (p[:H] == 0).all() and (p[2 * H :] == 0).all()
    a, b = _rnn(), _rnn("model.init=xavier")
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    with pytest.raises(ConfigError, match="forget_bias: only for cell: lstm"):
        _rnn("model.forget_bias=1.0")


def _start(*overrides):
    """An RNN model in eval mode, a batch, its encoder's final states and the decoder's s_0."""
    model = _rnn(*overrides).eval()
    src = torch.randint(4, 50, (3, 6))
    src_len = torch.tensor([6, 4, 2])
    _, finals = model.encoder(src, src_len)  # each (layers, B, De)
    return model, finals, model.encode(src, src_len)


def test_decoder_start_final_is_the_encoder_state_itself():
    # Sutskever et al. 2014: a 2-layer LSTM decoder starts from the encoder's (h, c) layer by layer.
    model, finals, memory = _start("model.decoder=sutskever", "model.attention.score=none",
                                   "model.cell=lstm", "model.bidirectional=false",
                                   "model.encoder_layers=2", "model.decoder_layers=2",
                                   "model.decoder_start=final")
    assert len(model.bridge) == 0
    torch.testing.assert_close(memory["h0"], finals[0].transpose(0, 1), rtol=0, atol=0)
    torch.testing.assert_close(memory["c0"], finals[1].transpose(0, 1), rtol=0, atol=0)
    # Luong et al. 2015 with a bidirectional encoder: both directions concatenated.
    model, finals, memory = _start("model.decoder=luong", "model.attention.score=general",
                                   "model.decoder_start=final")
    torch.testing.assert_close(memory["h0"], finals[0].transpose(0, 1), rtol=0, atol=0)


def test_decoder_start_backward_and_summary():
    # Bahdanau et al. 2015, A.2.2: s_0 = tanh(W_s h<-_1), the backward half of the final state.
    model, finals, memory = _start("model.decoder_start=backward")
    half = model.cfg.encoder_hidden
    assert model.bridge[0].in_features == half
    expected = torch.tanh(model.bridge[0](finals[0][..., half:])).transpose(0, 1)
    torch.testing.assert_close(memory["h0"], expected)
    # Cho et al. 2014: h'_0 = tanh(V' c) from the fixed context c.
    model, finals, memory = _start("model.decoder=cho", "model.attention.score=none",
                                   "model.bidirectional=false", "model.decoder_start=summary")
    torch.testing.assert_close(memory["h0"], torch.tanh(model.bridge[0](memory["context"])))
    assert not torch.equal(memory["h0"], torch.tanh(model.bridge[0](finals[0])).transpose(0, 1))


@pytest.mark.parametrize(("overrides", "message"), [
    (["model.decoder_start=final", "model.encoder_hidden_size=8"], "final needs the encoder"),
    (["model.decoder_start=backward", "model.bidirectional=false"], "backward needs bidirect"),
    (["model.decoder_start=backward", "model.reverse_source=true"], "reverse_source: false"),
    (["model.decoder_start=final", "model.arch=transformer", "model.attention.score=scaled_dot"],
     "final is for arch: rnn"),
    (["model.decoder_start=summary"], "summary is for decoder: cho"),
    (["model.decoder_start=first"], "decoder_start"),
])
def test_decoder_start_is_checked(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_log_softmax_in_place_when_decoding_and_differentiable_in_training():
    logits = torch.randn(4, 9) * 3
    want = torch.log_softmax(logits, dim=-1)
    with torch.no_grad():
        x = logits.clone()
        got = log_softmax_(x)
        assert got.data_ptr() == x.data_ptr()  # written over the logits
        assert torch.equal(got, want)
    w = logits.clone().requires_grad_()
    out = log_softmax_(w)
    assert out.data_ptr() != w.data_ptr() and torch.equal(out, want)
    out[:, 0].sum().backward()
    assert w.grad is not None and torch.allclose(w.grad.sum(dim=-1), torch.zeros(4), atol=1e-6)


def test_log_softmax_leaves_low_precision_logits_to_autocast():
    """Under autocast, bf16 logits go through torch's function and its autocast rule (on CUDA
    that gives fp32); fp32 logits are still written over."""
    logits = torch.randn(4, 9) * 3
    low = logits.bfloat16()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        x = low.clone()
        got = log_softmax_(x)
        assert got.data_ptr() != x.data_ptr() and torch.equal(x, low)
        assert torch.equal(got, torch.log_softmax(low, dim=-1))
        y = logits.clone()
        assert log_softmax_(y).data_ptr() == y.data_ptr()


@pytest.mark.parametrize("name", TRANSFORMERS)
def test_transformer_defers_the_cache_reorder_to_its_next_step(name):
    """reorder_state keeps the key/value caches as they are and records the rows; the next
    step writes the picked rows straight into the longer caches."""
    model = model_for(VARIANTS[name])
    src, src_len, tgt_in = toy_batch()
    with torch.no_grad():
        memory = model.encode(src, src_len)
        _, state, _ = model.decode_step(memory, model.init_state(memory), tgt_in[:, 0])
        idx = torch.tensor([2, 0, 0])
        lazy = model.reorder_state(state, idx)
        assert lazy["self_k0"] is state["self_k0"] and torch.equal(lazy["cache_rows"], idx)
        _, after, _ = model.decode_step(select(memory, idx), lazy, tgt_in[idx, 1])
        assert "cache_rows" not in after and after["self_k0"].shape[0] == 3
        assert torch.equal(after["self_k0"][:, :, :1], state["self_k0"][idx])


@pytest.mark.parametrize("name", TRANSFORMERS)
def test_transformer_one_query_steps_equal_the_general_step(name, monkeypatch):
    """At CPU inference without attention weights, decode_step runs each layer's one-query step
    (DecoderLayer.step, MultiHeadAttention.one_query); step by step it equals the general path
    (which asking for the weights takes), after a deferred reorder into K = 2 hypotheses that
    share a memory row, as beam search lays them out."""
    model = model_for(VARIANTS[name])
    src, src_len, tgt_in = toy_batch()
    calls = []
    one_query = MultiHeadAttention.one_query

    def counted(self, *args):
        calls.append(args[0].shape)
        return one_query(self, *args)

    monkeypatch.setattr(MultiHeadAttention, "one_query", counted)
    with torch.no_grad():
        memory = model.encode(src, src_len)
        fast = general = model.init_state(memory)
        for t in range(3):
            lp_fast, fast, weights = model.decode_step(memory, fast, tgt_in[:, t], False)
            lp, general, _ = model.decode_step(memory, general, tgt_in[:, t], True)
            assert weights is None
            torch.testing.assert_close(lp_fast, lp, atol=1e-5, rtol=1e-5)
        rows = torch.arange(3).repeat_interleave(2)  # K = 2 rows a sentence, one memory row
        fast, general = model.reorder_state(fast, rows), model.reorder_state(general, rows)
        differ = tgt_in[:, 3:5].reshape(-1)  # a sentence's two rows read different tokens
        lp_fast, fast, _ = model.decode_step(memory, fast, differ, False)
        lp, general, _ = model.decode_step(memory, general, differ, True)
        torch.testing.assert_close(lp_fast, lp, atol=1e-5, rtol=1e-5)
        swap = torch.tensor([1, 0, 3, 2, 5, 4])  # each sentence's two rows trade places
        fast, general = model.reorder_state(fast, swap), model.reorder_state(general, swap)
        lp_fast, _, _ = model.decode_step(memory, fast, tgt_in[rows[swap], 4], False)
        lp, _, _ = model.decode_step(memory, general, tgt_in[rows[swap], 4], True)
        torch.testing.assert_close(lp_fast, lp, atol=1e-5, rtol=1e-5)
        layers = len(model.decoder_layers)
        assert len(calls) == 2 * layers * 5 and calls[-1] == (6, model.cfg.embed_size)
        with pytest.raises(ValueError, match="do not share"):  # 4 rows over 3 memory rows
            model.decode_step(memory, model.reorder_state(fast, swap[:4]), rows[:4], False)
    memory = model.encode(src, src_len)  # gradients enabled (training): the general path only
    assert "src_bias" not in memory


@pytest.mark.parametrize("cache_grad", [True, False])
def test_append_positions_picks_rows_and_keeps_gradients(cache_grad):
    """The fused pick-and-append equals index_select then cat, in values and, when the cache
    or the new positions need gradients, in the gradients that reach them."""
    torch.manual_seed(0)
    cache = torch.randn(4, 2, 3, 5, requires_grad=cache_grad)
    new = torch.randn(3, 2, 1, 5, requires_grad=True)
    rows = torch.tensor([3, 0, 3])
    want = torch.cat([cache.index_select(0, rows), new], dim=2)
    got = append_positions(cache, new, rows)
    assert got.is_contiguous() and torch.equal(got, want)
    g = torch.randn_like(want)
    inputs = (cache, new) if cache_grad else (new,)
    for a, b in zip(torch.autograd.grad(want, inputs, g), torch.autograd.grad(got, inputs, g)):
        torch.testing.assert_close(a, b)
    with torch.no_grad():
        assert torch.equal(append_positions(cache, new, rows), want)
        assert torch.equal(append_positions(cache[:3], new), torch.cat([cache[:3], new], dim=2))


@pytest.mark.parametrize("name", TRANSFORMERS)
def test_transformer_encoder_at_inference_skips_padding_with_the_same_result(name):
    """Without gradients the encoder's position-wise layers run over the real positions only
    (Transformer.encode); the memory and the next decoder step equal the padded path's,
    which training (gradients enabled) takes."""
    model = model_for(VARIANTS[name])
    src, src_len, tgt_in = toy_batch()
    mask = src != 0
    with torch.no_grad():
        rows_memory = model.encode(src, src_len)
    padded_memory = model.encode(src, src_len)  # gradients enabled: the padded path
    assert padded_memory["cross_k0"].requires_grad and not rows_memory["cross_k0"].requires_grad
    real = mask[:, None, :, None]  # (B, 1, S, 1) over (B, h, S, d_k)
    # the rows path leaves the padded positions' keys at zero; the padded path projects them
    assert not (rows_memory["cross_k0"] * ~real).any()
    assert (padded_memory["cross_k0"].detach() * ~real).any()
    for name_ in rows_memory:
        if name_.startswith("cross_"):
            torch.testing.assert_close(rows_memory[name_] * real,
                                       padded_memory[name_].detach() * real,
                                       atol=1e-6, rtol=1e-5)
    with torch.no_grad():
        steps = [model.decode_step(memory, model.init_state(memory), tgt_in[:, 0])[0]
                 for memory in (rows_memory, {k: v.detach() for k, v in padded_memory.items()})]
    torch.testing.assert_close(steps[0], steps[1], atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # a source in column-major memory takes the same path
        transposed = model.encode(src.t().contiguous().t(), src_len)
    torch.testing.assert_close(transposed["cross_k0"], rows_memory["cross_k0"])
