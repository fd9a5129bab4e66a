"""``seq2seq export --format ctranslate2``: CTranslate2 decodes an exported Transformer exactly
as seq2seq does (greedy output token for token, and the log-probability of every target token),
for post- and pre-norm, tied and untied output layers; and the refusals are one-line errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from synthetic import make_run, toy_pairs

from seq2seq.batching import make_batch
from seq2seq.errors import CheckpointError, ConfigError, Seq2SeqError
from seq2seq.export import export_ctranslate2, usage_hint
from seq2seq.inference import Translator, search_ids

ct2 = pytest.importorskip("ctranslate2")

TRANSFORMER = ["model.arch=transformer", "model.attention.score=scaled_dot",
               "model.attention.heads=4", "model.embed_size=32", "model.ff_size=48",
               "model.encoder_layers=2", "model.decoder_layers=2", "model.max_length=64"]
VARIANTS = {
    # the paper's model: post-norm, sinusoids, one vocabulary, embeddings shared and tied
    "post-tied": [],
    # pre-norm (a final norm per stack), learned positions, two vocabularies, untied, unscaled
    "pre-untied": ["model.norm=pre", "model.positions=learned", "vocab.joint=false",
                   "model.share_embeddings=false", "model.tie_output=false",
                   "model.scale_embeddings=false"],
    # post-norm with its own output layer; pre-norm tied to unshared target embeddings
    "post-untied": ["model.tie_output=false"],
    "pre-tied": ["model.norm=pre", "vocab.joint=false", "model.share_embeddings=false"],
}
PAIRS = toy_pairs(200)  # what make_run trains on
SOURCES = ["Ein Hund läuft.", "Eine Katze schläft im Schnee.", "Ein Kind", "Mann liest Frau.",
           "Hund Hund Hund Katze Katze spielt."]
LIMIT = 24  # output tokens, eos included (decode.max_len_a 0, max_len_b 24)


@pytest.fixture(autouse=True)
def _one_thread():
    """Models this small train and decode fastest on one thread, and two threads slow down
    tenfold when the machine is busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def run_of(tmp_path_factory):
    """The run of a variant of :data:`VARIANTS`, made once per module when first asked for."""
    runs: dict[str, Path] = {}

    def get(variant: str) -> Path:
        if variant not in runs:
            path = tmp_path_factory.mktemp("runs") / variant
            runs[variant] = make_run(path, *TRANSFORMER, *VARIANTS[variant], limit=LIMIT)
        return runs[variant]

    return get


def teacher_forced_log_probs(tr: Translator, src: list[int], tgt: list[int]) -> list[float]:
    """log p(y_t | y_<t, x) of every token of ``tgt`` and of the final eos."""
    b = make_batch([src], [tgt])
    with torch.no_grad():
        lp = torch.log_softmax(tr.model.project(tr.model.features(b.src, b.src_len, b.tgt_in)),
                               dim=-1)  # (1, T, V)
    return lp[0].gather(-1, b.tgt_out[0].unsqueeze(-1)).squeeze(-1).tolist()


@pytest.mark.parametrize("variant", VARIANTS)
def test_ctranslate2_decodes_like_seq2seq(variant, run_of, tmp_path):
    run = run_of(variant)
    out = export_ctranslate2(run, tmp_path / "ct2")
    tr = Translator.from_run(run, device="cpu")
    ct = ct2.Translator(str(out), device="cpu", intra_threads=1)
    src_ids = tr.src_vocab.encode(SOURCES)
    src_pieces = [tr.src_vocab.sp.id_to_piece(s) for s in src_ids]  # no "</s>": CT2 adds it

    ours = [h[0].tokens for h in search_ids(tr.model, src_ids, tr.decode, tr.device)]
    theirs = ct.translate_batch(src_pieces, beam_size=1, max_decoding_length=LIMIT - 1)
    assert [tr.tgt_vocab.sp.id_to_piece(t) for t in ours] == [r.hypotheses[0] for r in theirs]
    lengths = {len(t) for t in ours}
    assert len(lengths) > 1 and min(lengths) < LIMIT - 1  # some end with eos before the limit

    refs = tr.tgt_vocab.encode([p[1] for p in PAIRS[:5]])
    scored = ct.score_batch(src_pieces, [tr.tgt_vocab.sp.id_to_piece(r) for r in refs])
    for s, r, res in zip(src_ids, refs, scored):
        assert res.log_probs == pytest.approx(teacher_forced_log_probs(tr, s, r), abs=2e-5)


def test_export_directory_is_self_contained(run_of, tmp_path):
    run = run_of("post-tied")
    out = export_ctranslate2(run, tmp_path / "ct2", quantization="int8")
    names = {p.name for p in out.iterdir()}
    assert {"model.bin", "config.json", "source.spm", "target.spm", "seq2seq_export.json"} <= names
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left
    manifest = json.loads((out / "seq2seq_export.json").read_text())
    assert manifest["quantization"] == "int8" and manifest["checkpoint"].endswith("best.pt")
    config = json.loads((out / "config.json").read_text())
    assert config["add_source_eos"] is True and config["layer_norm_epsilon"] == 1e-5
    assert (config["unk_token"], config["bos_token"], config["eos_token"]) == (
        "<unk>", "<s>", "</s>")
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(out / "source.spm"))
    result = ct2.Translator(str(out), device="cpu", compute_type="int8").translate_batch(
        [sp.encode(SOURCES[0], out_type=str)], max_decoding_length=5)
    assert len(result[0].hypotheses[0]) <= 5
    assert any("translate_batch" in line for line in usage_hint(out))


def test_refusals_are_one_line_errors(run_of, tmp_path, monkeypatch):
    rnn = make_run(tmp_path / "rnn", "model.embed_size=16", "model.hidden_size=16", updates=0)
    with pytest.raises(ConfigError, match="supports model.arch: transformer") as e:
        export_ctranslate2(rnn, tmp_path / "out")
    assert "\n" not in str(e.value) and not (tmp_path / "out").exists()

    run = run_of("post-tied")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="not empty.*--overwrite"):
        export_ctranslate2(run, tmp_path / "taken")
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["keep.txt"]
    export_ctranslate2(run, tmp_path / "taken", overwrite=True)
    assert (tmp_path / "taken" / "model.bin").is_file()
    assert not (tmp_path / "taken" / "keep.txt").exists()

    def disk_full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("seq2seq.export.shutil.copyfile", disk_full)  # fails after model.bin
    with pytest.raises(Seq2SeqError, match="cannot write .*No space left"):
        export_ctranslate2(run, tmp_path / "taken", overwrite=True)
    assert (tmp_path / "taken" / "model.bin").is_file()  # the earlier export, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rnn", "taken"]  # no temporary left
    monkeypatch.undo()
    with pytest.raises(ConfigError, match="--quantization"):
        export_ctranslate2(run, tmp_path / "other", quantization="int4")
    monkeypatch.setitem(sys.modules, "ctranslate2", None)  # as if it were not installed
    with pytest.raises(Seq2SeqError, match=r"pip install 'seq2seq\[ctranslate2\]'"):
        export_ctranslate2(run, tmp_path / "other")


def test_cli_export_prints_a_usage_hint(run_of, tmp_path):
    from typer.testing import CliRunner

    from seq2seq.cli import app

    run = run_of("post-tied")
    result = CliRunner().invoke(app, ["export", str(run), str(tmp_path / "ct2"),
                                      "--format", "ctranslate2", "--quantization", "none"])
    assert result.exit_code == 0, result.output
    assert "source.spm" in result.output and "translate_batch" in result.output
    assert (tmp_path / "ct2" / "model.bin").is_file()
