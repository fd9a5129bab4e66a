import pytest
import torch
import torch.nn.functional as F
from synthetic import make_run
from torch import nn

from seq2seq.batching import make_batch
from seq2seq.config import load_config
from seq2seq.inference import Translator, decode_ids
from seq2seq.models import build_model
from seq2seq.packing import MIN_OUTPUTS, PackedLinear, pack_linears, packing_available
from seq2seq.reproduce import _translator
from seq2seq.run import RunDir

pytestmark = pytest.mark.skipif(not packing_available(),
                                reason="this torch has no oneDNN packed linear operators")

ARCHS = {
    "rnn": ["model.embed_size=32", "model.hidden_size=32"],
    "transformer": ["model.arch=transformer", "model.attention.score=scaled_dot",
                    "model.attention.heads=2", "model.embed_size=32", "model.ff_size=64"],
}


def model(arch, vocab=50):
    cfg = load_config(None, ARCHS[arch])
    torch.manual_seed(0)
    m = build_model(cfg.model, vocab, vocab).eval()
    with torch.no_grad():  # noise, so that the outputs differ from sentence to sentence
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return m, cfg


@pytest.mark.parametrize("bias", [True, False])
def test_packed_linear_is_f_linear_for_any_rows_and_layout(bias):
    torch.manual_seed(0)
    lin = nn.Linear(24, 70, bias=bias)
    packed = PackedLinear(lin, rows_hint=64)
    x = torch.randn(5, 7, 24)
    for inp in (x, x[:, 0], x.transpose(0, 1), torch.randn(1, 24), torch.randn(300, 24)):
        ref = F.linear(inp, lin.weight, lin.bias)
        out = packed(inp)
        assert out.shape == ref.shape
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    # a copy: changing the layer afterwards does not reach the packed weights
    with torch.no_grad():
        lin.weight.add_(1.0)
    assert not torch.allclose(packed(x), F.linear(x, lin.weight, lin.bias))


@pytest.mark.parametrize("arch", ARCHS)
def test_pack_linears_replaces_the_large_layers_and_keeps_the_outputs(arch):
    ref, cfg = model(arch)
    packed, _ = model(arch)
    n_linear = sum(type(m) is nn.Linear for m in ref.modules())
    assert not pack_linears(packed)  # a 50-word output layer is below MIN_OUTPUTS: unchanged
    assert sum(type(m) is nn.Linear for m in packed.modules()) == n_linear
    assert pack_linears(packed, min_outputs=1)
    assert not any(type(m) is nn.Linear for m in packed.modules())
    assert sum(isinstance(m, PackedLinear) for m in packed.modules()) == n_linear
    b = make_batch([[5, 6, 7, 8], [9, 10]], [[11, 12, 13], [14]])
    with torch.no_grad():
        torch.testing.assert_close(packed(b.src, b.src_len, b.tgt_in),
                                   ref(b.src, b.src_len, b.tgt_in), rtol=1e-4, atol=1e-5)
    src = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]
    for beam in (1, 3):
        decode = cfg.decode.override(beam_size=beam, max_len_a=0, max_len_b=8, workers=1)
        got = decode_ids(packed, src, decode, torch.device("cpu"))
        want = decode_ids(ref, src, decode, torch.device("cpu"))
        assert got == want and len({tuple(h) for h in got}) > 1


def test_the_default_threshold_packs_the_output_layer_of_a_real_vocabulary():
    ref, _ = model("transformer", vocab=MIN_OUTPUTS)
    packed, _ = model("transformer", vocab=MIN_OUTPUTS)
    assert pack_linears(packed)
    assert isinstance(packed.generator, PackedLinear)
    assert sum(isinstance(m, PackedLinear) for m in packed.modules()) == 1
    # the tied embedding keeps its weight: only the output layer holds a packed copy
    assert torch.equal(packed.tgt_embedding.weight, ref.tgt_embedding.weight)
    h = torch.randn(3, 32)
    torch.testing.assert_close(packed.project(h), ref.project(h), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_translator_packs_on_the_cpu_unless_quantized_or_asked_not_to(arch, tmp_path,
                                                                      monkeypatch):
    run = make_run(tmp_path / "run", *ARCHS[arch])
    lines = ["Ein Hund läuft.", "Eine Katze schläft im Schnee.", "Ein Kind", "Mann liest Frau."]
    plain = Translator.from_run(run, device="cpu", pack=False)
    assert not plain.packed and not Translator.from_run(run, device="cpu").packed  # 60 words
    monkeypatch.setattr("seq2seq.packing.MIN_OUTPUTS", 1)
    tr = Translator.from_run(run, device="cpu")
    assert tr.packed and isinstance(tr.model.generator, PackedLinear)
    assert tr.translate(lines) == plain.translate(lines)
    assert not Translator.from_run(run, device="cpu", quantize="int8").packed
    # seq2seq reproduce evaluates as its kept results were, with F.linear (--verify compares)
    assert not _translator(RunDir(run), "cpu", None).packed
