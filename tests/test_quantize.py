import copy
import io

import pytest
import torch
from torch import nn

from seq2seq.batching import make_batch
from seq2seq.config import load_config
from seq2seq.errors import ConfigError
from seq2seq.models import build_model
from seq2seq.quantize import check_quantize, quantize_model

ARCHS = {
    "rnn": ["model.embed_size=32", "model.hidden_size=32"],
    "transformer": ["model.arch=transformer", "model.attention.score=scaled_dot",
                    "model.attention.heads=2", "model.embed_size=32", "model.ff_size=64"],
}


def model(arch):
    cfg = load_config(None, ARCHS[arch])
    torch.manual_seed(0)
    return build_model(cfg.model, 50, 50).eval()


@pytest.mark.parametrize("arch", ARCHS)
def test_int8_replaces_every_linear_layer_and_stays_close(arch):
    fp32 = model(arch)
    n_linear = sum(isinstance(m, nn.Linear) for m in fp32.modules())
    q = quantize_model(model(arch), "int8")
    assert n_linear > 0 and not any(type(m) is nn.Linear for m in q.modules())
    assert sum(isinstance(m, torch.ao.nn.quantized.dynamic.Linear)
               for m in q.modules()) == n_linear
    b = make_batch([[5, 6, 7, 8], [9, 10]], [[11, 12, 13], [14]])
    with torch.no_grad():
        ref = fp32(b.src, b.src_len, b.tgt_in).log_softmax(-1)
        out = q(b.src, b.src_len, b.tgt_in).log_softmax(-1)
    assert not torch.equal(ref, out)  # it did change the arithmetic ...
    assert (ref.exp() - out.exp()).abs().max() < 0.05  # ... but not the distributions


def test_int8_feed_forward_fuses_its_relu_into_the_product():
    q = quantize_model(model("transformer"), "int8")
    ff = q.decoder_layers[0].ff
    assert ff.w1.fuses_relu
    h = torch.randn(3, 4, 32)
    with torch.no_grad():
        fused = ff.w1(h, relu=True)
        assert torch.equal(fused, torch.relu(ff.w1(h))) and (fused == 0).any()
        assert torch.equal(ff(h), ff.w2(torch.relu(ff.w1(h))))
        calls = []
        forward = ff.w1.forward
        ff.w1.forward = lambda x, relu=False: calls.append(relu) or forward(x, relu=relu)
        ff(h)
    assert calls == [True]  # the layer asked for the fused product


@pytest.mark.filterwarnings("ignore:TypedStorage is deprecated")  # torch's packed params
def test_an_int8_model_pickles_and_copies_like_any_other():
    q = quantize_model(model("transformer"), "int8")
    b = make_batch([[5, 6, 7, 8], [9, 10]], [[11, 12, 13], [14]])
    buf = io.BytesIO()
    torch.save(q, buf)
    buf.seek(0)
    for other in (torch.load(buf, weights_only=False), copy.deepcopy(q)):
        assert type(other.decoder_layers[0].ff.w1) is type(q.decoder_layers[0].ff.w1)
        with torch.no_grad():
            assert torch.equal(other(b.src, b.src_len, b.tgt_in), q(b.src, b.src_len, b.tgt_in))


def test_none_is_the_model_itself_and_names_are_checked():
    m = model("rnn")
    assert quantize_model(m, "none") is m
    with pytest.raises(ConfigError, match="one of none, int8, bf16"):
        quantize_model(m, "int4")
    with pytest.raises(ConfigError, match="--device cpu"):
        check_quantize("int8", torch.device("cuda"))
    check_quantize("none", torch.device("cuda"))


@pytest.mark.parametrize("arch", ARCHS)
def test_bf16_packs_every_linear_layer_in_bf16_and_keeps_the_weights(arch, monkeypatch,
                                                                      capsys):
    from seq2seq.packing import PackedLinear, bf16_packing_available

    if not bf16_packing_available():
        pytest.skip("this torch has no oneDNN packed linear operators")
    monkeypatch.setattr("seq2seq.quantize.cpu_has_bf16", lambda: True)
    fp32 = model(arch)
    n_linear = sum(isinstance(m, nn.Linear) for m in fp32.modules())
    q = quantize_model(model(arch), "bf16")
    packed = [m for m in q.modules() if isinstance(m, PackedLinear)]
    assert len(packed) == n_linear > 0 and not any(type(m) is nn.Linear for m in q.modules())
    assert all(m.dtype == torch.bfloat16 and m.packed is not None for m in packed)
    # the parameters themselves stay fp32 and unchanged: only the packed copies are bf16
    assert all(p.dtype == torch.float32 for p in q.parameters())
    ref_state, q_state = fp32.state_dict(), q.state_dict()
    assert list(ref_state) == list(q_state)
    for name, a in ref_state.items():
        assert torch.equal(a, q_state[name]), name
    b = make_batch([[5, 6, 7, 8], [9, 10]], [[11, 12, 13], [14]])
    with torch.no_grad():
        ref = fp32(b.src, b.src_len, b.tgt_in).log_softmax(-1)
        out = q(b.src, b.src_len, b.tgt_in)
        assert out.dtype == torch.float32  # fp32 out, the search's scores in fp32
        out = out.log_softmax(-1)
    assert not torch.equal(ref, out)  # bf16 products round ...
    assert (ref.exp() - out.exp()).abs().max() < 0.02  # ... but keep the distributions
    assert "warning" not in capsys.readouterr().err


def test_bf16_warns_on_a_cpu_without_bf16_arithmetic(monkeypatch, capsys):
    from seq2seq.packing import bf16_packing_available

    if not bf16_packing_available():
        pytest.skip("this torch has no oneDNN packed linear operators")
    monkeypatch.setattr("seq2seq.quantize.cpu_has_bf16", lambda: False)
    quantize_model(model("transformer"), "bf16")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--quantize bf16" in err and "emulated" in err


def test_bf16_needs_the_cpu_and_onednn(monkeypatch):
    with pytest.raises(ConfigError, match="--device cpu"):
        check_quantize("bf16", torch.device("cuda"))
    monkeypatch.setattr("seq2seq.quantize.bf16_packing_available", lambda: False)
    with pytest.raises(ConfigError, match="oneDNN"):
        check_quantize("bf16", torch.device("cpu"))
