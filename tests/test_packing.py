import copy
import json

import pytest
import torch
import torch.nn.functional as F
from synthetic import make_run
from torch import nn
from typer.testing import CliRunner

from seq2seq.batching import make_batch
from seq2seq.cli import app
from seq2seq.config import load_config
from seq2seq.evaluate import evaluate
from seq2seq.inference import Translator, decode_ids
from seq2seq.models import build_model
from seq2seq.packing import (
    MIN_OUTPUTS,
    PackedLinear,
    bf16_packing_available,
    pack_linears,
    packing_available,
    packs_every_layer,
)
from seq2seq.reproduce import _translator
from seq2seq.run import RunDir

needs_onednn = pytest.mark.skipif(not packing_available(),
                                  reason="this torch has no oneDNN packed linear operators")
# oneDNN packs bf16 weights only on CPUs with AVX-512 (BW, VL, DQ) or AVX-NE-CONVERT
needs_bf16_packing = pytest.mark.skipif(not bf16_packing_available(),
                                        reason="oneDNN cannot pack bf16 weights on this CPU")

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


@needs_onednn
@pytest.mark.parametrize("bias", [True, False])
def test_packed_linear_is_f_linear_for_any_rows_and_layout(bias):
    torch.manual_seed(0)
    lin = nn.Linear(24, 70, bias=bias)
    packed = PackedLinear(lin, rows_hint=64)
    assert packed.weight is lin.weight and packed.packed is not None
    x = torch.randn(5, 7, 24)
    with torch.no_grad():
        for inp in (x, x[:, 0], x.transpose(0, 1), torch.randn(1, 24), torch.randn(300, 24)):
            ref = F.linear(inp, lin.weight, lin.bias)
            out = packed(inp)
            assert out.shape == ref.shape
            torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        # the weight changed in place (an optimizer step, load_state_dict): packed anew
        lin.weight.add_(1.0)
        torch.testing.assert_close(packed(x), F.linear(x, lin.weight, lin.bias),
                                   rtol=1e-5, atol=1e-5)


@needs_bf16_packing
@pytest.mark.parametrize("bias", [True, False])
def test_bf16_packed_linear_rounds_like_autocast_and_returns_fp32(bias):
    torch.manual_seed(0)
    lin = nn.Linear(48, 70, bias=bias)
    packed = PackedLinear(lin, dtype=torch.bfloat16)
    assert packed.weight is lin.weight and packed.weight.dtype == torch.float32
    assert "bfloat16" in repr(packed)
    x = torch.randn(9, 48)
    with torch.no_grad():
        out, ref = packed(x), F.linear(x, lin.weight, lin.bias)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            amp = lin(x)  # the products training's bf16 autocast computes
        assert out.dtype == torch.float32 and not torch.equal(out, ref)
        # fp32 accumulation of bf16 operands: within a few bf16 roundings of fp32 ...
        torch.testing.assert_close(out, ref, rtol=0.02, atol=0.02)
        # ... and about what autocast gives (its output rounded to bf16 as well)
        torch.testing.assert_close(out, amp.float(), rtol=0.016, atol=0.016)
        lin.bias.add_(1.0) if bias else lin.weight.add_(1.0)  # changed in place: packed anew
        ref = F.linear(x, lin.weight, lin.bias)
        assert (packed(x) - ref).abs().max() < 0.01 * ref.abs().max()
    with pytest.raises(ValueError, match="dtype"):
        PackedLinear(lin, dtype=torch.float16)


@needs_onednn
def test_packed_linear_falls_back_where_the_packed_copy_does_not_apply():
    torch.manual_seed(0)
    lin = nn.Linear(24, 70)
    packed = PackedLinear(lin)
    x = torch.randn(4, 24)
    # gradients: through F.linear, to the very parameters of the layer it replaced
    packed(x).sum().backward()
    assert lin.weight.grad is not None and lin.bias.grad is not None
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast's dtype, as F.linear gives
            assert packed(x).dtype == torch.bfloat16 == lin(x).dtype
        copied = copy.deepcopy(packed)  # the opaque packed tensor is not copied, but made again
        torch.testing.assert_close(copied(x), lin(x), rtol=1e-5, atol=1e-5)
        packed.double()  # converted: no fp32 copy any more, F.linear in float64
        assert packed(x.double()).dtype == torch.float64 and packed.packed is None
        torch.testing.assert_close(packed(x.double()), lin(x.double()))


@needs_onednn
@pytest.mark.parametrize("arch", ARCHS)
def test_pack_linears_replaces_the_layers_and_keeps_the_outputs(arch):
    ref, cfg = model(arch)
    packed, _ = model(arch)
    n_linear = sum(type(m) is nn.Linear for m in ref.modules())
    # a 50-word output layer is below MIN_OUTPUTS: unchanged
    assert not pack_linears(packed, every_layer=False)
    assert sum(type(m) is nn.Linear for m in packed.modules()) == n_linear
    assert pack_linears(packed, every_layer=True)
    assert not any(type(m) is nn.Linear for m in packed.modules())
    assert sum(isinstance(m, PackedLinear) for m in packed.modules()) == n_linear
    assert packed.state_dict().keys() == ref.state_dict().keys()  # the same parameters
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


@needs_onednn
def test_without_avx512_only_the_output_layer_of_a_large_vocabulary_is_packed(monkeypatch):
    monkeypatch.setattr("seq2seq.packing.cpu_has_avx512", lambda: False)
    assert not packs_every_layer()
    ref, _ = model("transformer", vocab=MIN_OUTPUTS)
    packed, _ = model("transformer", vocab=MIN_OUTPUTS)
    assert pack_linears(packed)
    assert isinstance(packed.generator, PackedLinear)
    assert sum(isinstance(m, PackedLinear) for m in packed.modules()) == 1
    # still tied to the target embedding, and the same parameters under the same names
    assert packed.generator.weight is packed.tgt_embedding.weight
    assert packed.state_dict().keys() == ref.state_dict().keys()
    assert sum(p.numel() for p in packed.parameters()) == sum(p.numel() for p in ref.parameters())
    h = torch.randn(3, 32)
    with torch.no_grad():
        torch.testing.assert_close(packed.project(h), ref.project(h), rtol=1e-5, atol=1e-5)


@needs_onednn
@pytest.mark.parametrize("arch", ARCHS)
def test_with_avx512_every_layer_is_packed_by_default(arch, monkeypatch):
    monkeypatch.setattr("seq2seq.packing.cpu_has_avx512", lambda: True)
    assert packs_every_layer()
    ref, _ = model(arch)
    packed, _ = model(arch)
    assert pack_linears(packed)  # every layer, the 50-word output layer too
    assert not any(type(m) is nn.Linear for m in packed.modules())
    b = make_batch([[5, 6, 7, 8], [9, 10]], [[11, 12, 13], [14]])
    with torch.no_grad():
        torch.testing.assert_close(packed(b.src, b.src_len, b.tgt_in),
                                   ref(b.src, b.src_len, b.tgt_in), rtol=1e-4, atol=1e-5)


@needs_onednn
def test_relu_is_fused_into_a_packed_product_and_equals_the_unfused_pair():
    torch.manual_seed(0)
    lin = nn.Linear(24, 40)
    packed = PackedLinear(lin)
    x = torch.randn(5, 24)
    with torch.no_grad():
        want = F.relu(lin(x))
        assert (want == 0).any() and (want > 0).any()
        torch.testing.assert_close(packed(x, relu=True), want, rtol=1e-5, atol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # the fallback applies it after
            assert (packed(x, relu=True) >= 0).all()
        if bf16_packing_available():
            assert (PackedLinear(lin, dtype=torch.bfloat16)(x, relu=True) >= 0).all()
    y = packed(x, relu=True)  # with gradients: F.linear, then the relu
    y.sum().backward()
    assert lin.weight.grad is not None and bool(lin.weight.grad.abs().sum() > 0)
    # the Transformer's feed-forward layer asks a packed first layer for the fused relu
    ref, _ = model("transformer")
    fused, _ = model("transformer")
    pack_linears(fused, every_layer=True)
    ff, calls = fused.decoder_layers[0].ff, []
    forward = ff.w1.forward
    ff.w1.forward = lambda h, relu=False: calls.append(relu) or forward(h, relu=relu)
    h = torch.randn(2, 3, 32)
    with torch.no_grad():
        torch.testing.assert_close(ff(h), ref.decoder_layers[0].ff(h), rtol=1e-5, atol=1e-5)
    assert calls == [True]


LINES = ["Ein Hund läuft.", "Eine Katze schläft im Schnee.", "Ein Kind", "Mann liest Frau.",
         "Hund Hund Hund Katze Katze spielt."]


@needs_onednn
@pytest.mark.parametrize("arch", ARCHS)
def test_translator_packs_on_the_cpu_and_translates_alike(arch, tmp_path, monkeypatch):
    monkeypatch.setattr("seq2seq.packing.cpu_has_avx512", lambda: False)  # the output layer
    run = make_run(tmp_path / "run", *ARCHS[arch])
    plain = Translator.from_run(run, device="cpu", pack=False)
    assert not plain.packed and not Translator.from_run(run, device="cpu").packed  # 60 words
    monkeypatch.setattr("seq2seq.packing.MIN_OUTPUTS", 1)
    tr = Translator.from_run(run, device="cpu")
    assert tr.packed and isinstance(tr.model.generator, PackedLinear)
    assert tr.translate(LINES) == plain.translate(LINES)
    # two batches decoded at once on worker threads, and the bf16 autocast a caller may set
    two = tr.decode.override(batch_size=2, workers=2)
    assert tr.translate(LINES, two) == plain.translate(LINES, two)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert len(tr.translate(LINES)) == len(LINES)
    monkeypatch.setattr("seq2seq.packing.cpu_has_avx512", lambda: True)  # every layer
    every = Translator.from_run(run, device="cpu")
    assert not any(type(m) is nn.Linear for m in every.model.modules())
    assert every.translate(LINES) == plain.translate(LINES)
    assert every.translate(LINES, two) == plain.translate(LINES, two)
    # eval's report says how the output layer computed
    (tmp_path / "src.txt").write_text("\n".join(LINES) + "\n", encoding="utf-8")
    (tmp_path / "ref.txt").write_text("\n".join(LINES) + "\n", encoding="utf-8")
    files = {"src_file": tmp_path / "src.txt", "ref_file": tmp_path / "ref.txt"}
    assert evaluate(run, device="cpu", **files)["packed"] is True
    assert evaluate(run, device="cpu", pack=False, **files)["packed"] is False
    # and the command line's switch reaches it
    for flag, packed in (("--pack", True), ("--no-pack", False)):
        result = CliRunner().invoke(app, ["eval", "--run", str(run), "--device", "cpu",
                                          "--src", str(files["src_file"]),
                                          "--ref", str(files["ref_file"]), flag])
        assert result.exit_code == 0, result.output
        report = json.loads((run / "eval_src.txt.json").read_text(encoding="utf-8"))
        assert report["packed"] is packed


def test_no_packing_when_quantized_asked_not_to_or_unavailable(tmp_path, monkeypatch):
    run = make_run(tmp_path / "run", *ARCHS["rnn"], updates=0)
    monkeypatch.setattr("seq2seq.packing.MIN_OUTPUTS", 1)

    def refuse(model, *args, **kwargs):
        raise AssertionError("pack_linears called")

    with monkeypatch.context() as m:
        m.setattr("seq2seq.inference.pack_linears", refuse)
        assert not Translator.from_run(run, device="cpu", quantize="int8").packed
        assert not Translator.from_run(run, device="cpu", pack=False).packed
        # seq2seq reproduce evaluates as its kept results were, with F.linear (--verify)
        assert not _translator(RunDir(run), "cpu", None).packed
    monkeypatch.setattr("seq2seq.packing.packing_available", lambda: False)
    tr = Translator.from_run(run, device="cpu")  # a torch without oneDNN: left as it is
    assert not tr.packed and type(tr.model.generator) is nn.Linear
    assert len(tr.translate(LINES)) == len(LINES)
