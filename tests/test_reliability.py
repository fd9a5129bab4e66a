"""Faults a user can cause, one test each (docs/reliability.md lists them with these tests):
nothing breaks a run, every bad input is one line and exit status 2, interruptions lose
nothing."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import cli, concurrently, one_line_error, write_parallel
from synthetic import toy_pairs

from seq2seq import checkpoint as ckpt
from seq2seq.config import load_config
from seq2seq.errors import CheckpointError, Interrupted, TrainingError
from seq2seq.run import RunDir
from seq2seq.training import LossModule, Trainer, train

ROOT = Path(__file__).resolve().parent.parent



def tiny(data, run_dir, *extra) -> list[str]:
    return [f"data.path={data}", f"run_dir={run_dir}", "vocab.size=60", "model.embed_size=32",
            "model.hidden_size=32", "train.batch_tokens=400", "train.max_updates=6",
            "train.valid_every=3", "train.log_every=1", "decode.max_len_a=1.0",
            "data.splits.test=test", *extra]


def sets(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def hashes(run: Path) -> dict[str, str]:
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run.rglob("*")) if p.is_file()}


# 1. A refused --resume changes nothing; a failed start leaves nothing behind.

def test_refused_resume_leaves_the_run_as_it_was(toy_data, tmp_path):
    run = tmp_path / "run"
    train(load_config(None, tiny(toy_data, run)), progress=False)
    before = hashes(run)
    changes = ("vocab.size=300", "model.cell=lstm", "model.attention.score=concat")
    *refused, r = concurrently(
        *[lambda c=c: cli("train", "--resume", run, "--set", c) for c in changes],
        lambda: cli("translate", "--run", run, stdin=b"a b c\n"))
    for change, refusal in zip(changes, refused):
        err = one_line_error(refusal)
        assert change.split("=")[0] in err and "cannot change when resuming" in err
    assert hashes(run) == before
    assert r.returncode == 0 and len(r.stdout.decode().splitlines()) == 1
    r = cli("train", "--resume", run, "--no-progress", "--set", "train.max_updates=8",
            "--set", "model.dropout=0.3")  # a dropout rate may change
    assert r.returncode == 0, r.stderr.decode()
    assert json.loads((run / "train_summary.json").read_text())["updates"] == 8


def test_failed_start_writes_nothing(toy_data, tmp_path):
    run = tmp_path / "run"
    err = one_line_error(cli("train", "--config", ROOT / "configs/multi30k/bahdanau.yaml",
                             "--run-dir", run, "--set", f"data.path={tmp_path / 'missing'}",
                             "--set", "data.fetch=null"))
    assert "missing" in err and not run.exists()


# 2. One over-long line costs no more than the input limit.

def test_long_validation_and_input_lines_are_cut_with_a_warning(toy_data, tmp_path, capfd):
    long_src = " ".join(["a b c"] * 1700)  # 5,100 words
    pairs = toy_pairs(20)
    pairs[7] = (long_src, long_src)
    write_parallel(toy_data, "val", pairs)
    tr = Trainer(load_config(None, tiny(toy_data, tmp_path / "run", "decode.max_input_len=50")),
                 progress=False)
    assert max(len(s) for s in tr.data.valid_src_ids) == 50
    assert max(len(s) for s in tr.data.valid_tgt_ids) == 50
    err = capfd.readouterr().err
    assert "val line 8 (source) has" in err and "only the first 50" in err
    tr.run()
    stdin = b"a b\n" + long_src.encode() + b"\n"
    r = cli("translate", "--run", tmp_path / "run", stdin=stdin)
    assert r.returncode == 0 and len(r.stdout.decode().splitlines()) == 2
    assert "input line 2 has" in r.stderr.decode()


# 3. Malformed data files: one line naming the file and the line.

def test_malformed_tsv_names_file_and_line(tmp_path):
    data = tmp_path / "tsv"
    data.mkdir()
    (data / "train.tsv").write_text("de\ten\nein Hund\ta dog\nzwei\tHunde\ttwo dogs\n")
    (data / "val.tsv").write_text("de\ten\nein Hund\ta dog\n")
    err = one_line_error(cli("train", "--config", ROOT / "configs/multi30k/bahdanau.yaml",
                             "--run-dir", tmp_path / "run", "--set", "data.format=tsv",
                             "--set", f"data.path={data}"))
    assert f"{data / 'train.tsv'}:3" in err


# 4. Write failures: checked before the work, one line, the previous file intact.

def test_eval_in_a_read_only_run_fails_before_decoding(toy_data, tmp_path):
    run = tmp_path / "run"
    train(load_config(None, tiny(toy_data, run)), progress=False)
    os.chmod(run, 0o555)
    try:
        if os.access(run, os.W_OK):
            pytest.skip("running as a user who may write anywhere")
        err = one_line_error(cli("eval", "--run", run, "--split", "test"))
        assert "not writable" in err
    finally:
        os.chmod(run, 0o755)


def test_eval_checks_the_run_is_writable_before_decoding(toy_data, tmp_path, monkeypatch):
    """The same check in-process, where permissions can be simulated even for root."""
    from seq2seq import run as run_mod
    from seq2seq.evaluate import evaluate
    from seq2seq.inference import Translator

    run = tmp_path / "run"
    train(load_config(None, tiny(toy_data, run)), progress=False)
    monkeypatch.setattr(run_mod.os, "access", lambda path, mode: False)
    monkeypatch.setattr(Translator, "translate_nbest", lambda *a, **k: pytest.fail("decoded"))
    with pytest.raises(CheckpointError, match="not writable, but seq2seq eval writes into"):
        evaluate(run, split="test")


def test_full_disk_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    ckpt.save_atomic({"model": {"w": torch.ones(3)}, "config": {}}, path)

    def full_disk(payload, f):
        f.write(b"x" * 100)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointError) as e:
        ckpt.save_atomic({"model": {"w": torch.zeros(3)}, "config": {}}, path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and "no space left" in msg and "free" in msg
    assert "previous last.pt is unchanged" in msg
    monkeypatch.undo()
    assert torch.equal(ckpt.load(path)["model"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left


def test_torch_reports_a_full_disk_as_runtime_error(tmp_path, monkeypatch):
    def enforce_fail(payload, f):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64")

    monkeypatch.setattr(torch, "save", enforce_fail)
    with pytest.raises(CheckpointError, match=r"cannot write .*x\.pt: .*unexpected pos 64; .* "
                                              r"free there"):
        ckpt.save_atomic({"model": {}, "config": {}}, tmp_path / "x.pt")


def test_plot_attention_into_an_existing_file(toy_data, tmp_path):
    run = tmp_path / "run"
    train(load_config(None, tiny(toy_data, run)), progress=False)
    target = tmp_path / "plots"
    target.write_text("not a directory")
    err = one_line_error(cli("translate", "--run", run, "--plot-attention", target,
                             stdin=b"a b\n"))
    assert "exists and is not a directory" in err


def test_checkpoints_share_one_file_mode(toy_data, tmp_path):
    run = tmp_path / "run"
    train(load_config(None, tiny(toy_data, run, "train.keep_last=1")), progress=False)
    modes = {p.name: p.stat().st_mode & 0o777 for p in run.glob("*.pt")}
    assert len(set(modes.values())) == 1 and modes["best.pt"] == ckpt.file_mode(), modes


def test_missing_vocabulary_names_what_is_missing(tmp_path):
    with pytest.raises(CheckpointError, match="no vocabulary .*joint.model.*incomplete"):
        RunDir(tmp_path).vocabularies()


# 6. Ctrl-C and SIGTERM save a resumable checkpoint; resuming is exact.

def _empty_config(tmp_path: Path) -> Path:
    path = tmp_path / "empty.yaml"
    path.write_text("{}\n")
    return path


def _interrupt_after(cmd: list[str], run: Path, n_records: int, signals: list[int]):
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    log = run / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if log.is_file() and len(log.read_text().splitlines()) >= n_records:
            break
        time.sleep(0.02)
    for sig in signals:
        proc.send_signal(sig)
    out, err = proc.communicate(timeout=240)
    return proc.returncode, err.decode()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_and_resume_is_bit_identical(toy_data, tmp_path, sig):
    # the Sutskever model runs its recurrence over the whole target at once: fast updates
    overrides = tiny(toy_data, tmp_path / "x", "train.max_updates=90", "train.valid_every=40",
                     "train.valid_bleu=false", "train.valid_metric=loss",
                     "model.decoder=sutskever", "model.attention.score=none")
    base = [sys.executable, "-m", "seq2seq", "train", "--no-progress"]
    config = _empty_config(tmp_path)
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    r = subprocess.run([*base, "--config", config, *sets(overrides), "--run-dir", straight],
                       cwd=ROOT, capture_output=True)
    assert r.returncode == 0, r.stderr.decode()
    code, err = _interrupt_after([*base, "--config", config, *sets(overrides),
                                  "--run-dir", stopped], stopped, 12, [sig])
    assert code == 128 + sig, err
    last_line = err.strip().splitlines()[-1]
    assert f"continue with: seq2seq train --resume {stopped}" in last_line, err
    assert "Traceback" not in err
    stopped_at = torch.load(stopped / "last.pt", weights_only=True)["progress"]["update"]
    assert 0 < stopped_at < 90 and stopped_at % 40, stopped_at  # between two validations
    r = subprocess.run([*base, "--resume", stopped], cwd=ROOT, capture_output=True)
    assert r.returncode == 0, r.stderr.decode()
    a = torch.load(straight / "last.pt", weights_only=True)["model"]
    b = torch.load(stopped / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_second_interrupt_stops_at_once_and_keeps_a_loadable_checkpoint(toy_data, tmp_path):
    run = tmp_path / "run"
    overrides = tiny(toy_data, run, "train.max_updates=100000", "train.valid_every=5",
                     "train.valid_bleu=false", "train.valid_metric=loss")
    code, err = _interrupt_after([sys.executable, "-m", "seq2seq", "train", "--no-progress",
                                  "--config", _empty_config(tmp_path), *sets(overrides)], run, 8,
                                 [signal.SIGINT, signal.SIGINT])
    assert code == 130, err
    assert "Traceback" not in err
    ckpt.load(run / "last.pt")  # whole, whichever moment the second signal came


def _stop_at(update: int, monkeypatch) -> None:
    """A SIGTERM that arrives during update ``update`` (seen right after it)."""
    def requested(self):
        if self.state.update == update and self.signals.received is None:
            self.signals.received = signal.SIGTERM
        return self.signals.received is not None

    monkeypatch.setattr(Trainer, "_stop_requested", requested)


def _valid_records(run: Path) -> list[tuple[int, float]]:
    return [(r["update"], r["loss"]) for r in RunDir(run).records("valid")]


def test_a_stop_after_an_update_due_a_validation_validates_it_on_resume(toy_data, tmp_path,
                                                                        monkeypatch):
    extra = ("train.max_updates=8", "train.valid_every=4", "train.valid_bleu=false",
             "train.valid_metric=loss")
    straight = train(load_config(None, tiny(toy_data, tmp_path / "a", *extra)), progress=False)
    for at in (4, 8):  # a validation in the middle, and the last one
        cfg = load_config(None, tiny(toy_data, tmp_path / f"stop{at}", *extra))
        with monkeypatch.context() as m:
            _stop_at(at, m)
            with pytest.raises(Interrupted, match=f"stopped after update {at} "):
                train(cfg, progress=False)
        assert [u for u, _ in _valid_records(cfg.run_dir)] == ([] if at == 4 else [4])
        train(cfg, progress=False, resume=True)
        assert _valid_records(cfg.run_dir) == _valid_records(straight)
        assert RunDir(cfg.run_dir).read_summary()["updates"] == 8
        a = torch.load(Path(straight) / "best.pt", weights_only=True)["model"]
        b = torch.load(Path(cfg.run_dir) / "best.pt", weights_only=True)["model"]
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_signal_during_the_last_validation_ends_the_finished_run_with_its_code(
        toy_data, tmp_path, monkeypatch):
    cfg = load_config(None, tiny(toy_data, tmp_path / "run", "train.valid_bleu=false",
                                 "train.valid_metric=loss"))
    validate = Trainer.validate

    def slow_validate(self):  # the signal comes while the last validation runs
        if self.state.update == 6:
            self.signals.received = signal.SIGTERM
        return validate(self)

    monkeypatch.setattr(Trainer, "validate", slow_validate)
    with pytest.raises(Interrupted, match="training had finished .update 6.") as e:
        train(cfg, progress=False)
    assert e.value.exit_code == 128 + signal.SIGTERM
    summary = RunDir(cfg.run_dir).read_summary()
    assert summary["updates"] == 6 and "stopped_by" not in summary  # complete, not resumable
    assert [u for u, _ in _valid_records(cfg.run_dir)] == [3, 6]


# 7. A non-finite loss skips the update; too many in a row stop the run.

def _nan_on(calls: set[int], monkeypatch):
    forward = LossModule.forward
    count = {"n": 0}

    def patched(self, b, label_smoothing):
        count["n"] += 1
        loss = forward(self, b, label_smoothing)
        return loss * float("nan") if count["n"] in calls else loss

    monkeypatch.setattr(LossModule, "forward", patched)


def test_nonfinite_loss_skips_the_update(toy_data, tmp_path, monkeypatch):
    _nan_on({2, 3}, monkeypatch)
    run = train(load_config(None, tiny(toy_data, tmp_path / "run")), progress=False)
    records = RunDir(run).records()
    skips = [r for r in records if r["kind"] == "skip"]
    assert [r["update"] for r in skips] == [1, 1] and skips[0]["loss"] == "nan"
    assert [r["update"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4, 5, 6]


def test_nonfinite_loss_in_a_row_stops_with_the_last_checkpoint_intact(toy_data, tmp_path,
                                                                       monkeypatch):
    _nan_on(set(range(5, 1000)), monkeypatch)
    cfg = load_config(None, tiny(toy_data, tmp_path / "run", "train.max_nonfinite=3"))
    with pytest.raises(TrainingError, match=r"3 updates in a row had a non-finite loss .*"
                                            r"after update 4"):
        train(cfg, progress=False)
    assert ckpt.load(tmp_path / "run" / "last.pt")["progress"]["update"] == 3
