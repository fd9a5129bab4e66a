import json

import pytest

from seq2seq import checkpoint as ckpt
from seq2seq.config import load_config
from seq2seq.errors import CheckpointError, Seq2SeqError
from seq2seq.run import RunDir, eval_name


def test_run_dir_of_a_config(tmp_path):
    assert RunDir.of(load_config(None, ["name=abc"])).path.as_posix() == "runs/abc"
    assert RunDir.of(load_config(None, [f"run_dir={tmp_path}/x"])).path == tmp_path / "x"


def test_eval_name_tells_searches_apart():
    assert eval_name("test_2016_flickr") == "test_2016_flickr"
    assert eval_name("test_2016_flickr", beam_size=5) == "test_2016_flickr_beam5"
    assert eval_name("a/b.de", 5, True, "averaged.pt") == "a_b.de_averaged_beam5_hard"
    run = RunDir("r")
    files = run.eval_files(eval_name("test", 4))
    assert [p.name for p in (files.report, files.markdown, files.hyps, files.nbest)] == [
        "eval_test_beam4.json", "eval_test_beam4.md", "hyps_test_beam4.txt",
        "nbest_test_beam4.txt"]


def test_checkpoint_lookup(tmp_path):
    with pytest.raises(CheckpointError, match="run directory not found"):
        RunDir(tmp_path / "no-run").checkpoint("best")
    run = RunDir(tmp_path)
    ckpt.save_atomic({"model": {}, "config": {}}, run.last)
    assert run.checkpoint("best") == run.last  # no best.pt yet
    run.save_last({"model": {}, "config": {}}, best=True)
    assert run.checkpoint("best") == run.best and run.best.is_file()
    assert run.checkpoint("x.pt") == tmp_path / "x.pt"


def test_keep_and_pick_checkpoints(tmp_path):
    run = RunDir(tmp_path)
    kept: list = []
    for update, score in ((10, 5.0), (20, 9.0), (30, 7.0), (40, 1.0)):
        kept = run.keep({"model": {}, "config": {}, "score": score}, update, score, kept,
                        keep_last=2, keep_best=1)
    names = lambda ps: [p.name for p in ps]  # noqa: E731
    # the last two (30, 40) and the best (20, score 9)
    assert names(run.kept_checkpoints()) == ["ckpt_0000020.pt", "ckpt_0000030.pt",
                                             "ckpt_0000040.pt"]
    assert [u for u, _ in kept] == [20, 30, 40]
    assert names(run.pick_checkpoints(last=2)) == ["ckpt_0000030.pt", "ckpt_0000040.pt"]
    assert names(run.pick_checkpoints(best=2)) == ["ckpt_0000020.pt", "ckpt_0000030.pt"]
    with pytest.raises(CheckpointError, match="only 3"):
        run.pick_checkpoints(last=4)
    with pytest.raises(CheckpointError, match="choose"):
        run.pick_checkpoints()


def test_metrics_log(tmp_path):
    run = RunDir(tmp_path)
    assert run.records() == []
    for u in (10, 20, 30):
        run.log({"kind": "train", "update": u, "loss": 1.0})
    run.log({"kind": "valid", "update": 30, "bleu": 3.0})
    assert [r["update"] for r in run.records("train")] == [10, 20, 30]
    assert run.records("valid")[0]["bleu"] == 3.0
    run.truncate_log_after(20)
    assert [r["update"] for r in run.records()] == [10, 20]
    run.metrics_path.write_text(run.metrics_path.read_text() + "{broken\n")
    with pytest.raises(Seq2SeqError, match=r"metrics.jsonl:3: not a JSON record"):
        run.records()


def test_evaluation_prefers_greedy_then_best_beam(tmp_path):
    run = RunDir(tmp_path)

    def write(name, bleu):
        run.eval_files(name).report.write_text(json.dumps({"bleu": {"score": bleu}}))

    assert run.evaluation("test") is None
    write("test_beam5", 30.0)
    write("test_beam10", 31.0)
    write("test_beam5_hard", 40.0)  # hard attention is not the model's own result
    write("test_averaged", 50.0)  # another checkpoint
    assert run.evaluation("test")["bleu"]["score"] == 31.0
    assert run.evaluation("test", greedy_only=True) is None
    write("test", 29.0)
    assert run.evaluation("test")["bleu"]["score"] == 29.0


def test_config_round_trip(tmp_path):
    run = RunDir(tmp_path / "r")
    cfg = load_config(None, ["model.hidden_size=128", "model.embed_size=128"])
    run.write_config(cfg)
    assert run.read_config() == cfg
