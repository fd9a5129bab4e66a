"""`seq2seq reproduce`: the progression file, the whole pipeline with --quick, skipping what is
done, continuing a stopped run, the same result from the same seed, and --plan."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import cli, one_line_error

from seq2seq import checkpoint as ckpt
from seq2seq.config import TrainConfig
from seq2seq.errors import ConfigError, Interrupted, Seq2SeqError
from seq2seq.progression import Job, job_config, load_progression
from seq2seq.progression_report import (
    README_BEGIN,
    README_END,
    check_readme,
    comparison_section,
    finished_results,
    readme_table,
    update_readme,
    write_progression_report,
)
from seq2seq.reproduce import (
    config_differences,
    evaluate_job,
    plan_lines,
    run_parallel,
    stale_result,
    trained,
)
from seq2seq.run import RunDir

ROOT = Path(__file__).resolve().parent.parent
PROGRESSION = ROOT / "configs" / "progression.yaml"
MULTI30K = ROOT.parent / "shared" / "data" / "multi30k"


def reproduce(*args, out: Path):
    return subprocess.run(
        [sys.executable, "-m", "seq2seq", "reproduce", *map(str, args), "--quick", "--out",
         str(out), "--set", f"data.path={MULTI30K}", "--no-progress"],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
        env={**os.environ, "SEQ2SEQ_CACHE": str(out / "cache")},
    )


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    if not (MULTI30K / "train.de.gz").is_file():
        pytest.skip("Multi30k not found")
    out = tmp_path_factory.mktemp("quick")
    r = reproduce(PROGRESSION, out=out)
    assert r.returncode == 0, r.stderr[-2000:]
    return out, r


def test_quick_runs_every_job_and_writes_the_report(quick):
    out, r = quick
    prog = load_progression(PROGRESSION, out)
    jobs = prog.jobs()
    assert len(jobs) == 9  # 6 steps, 3 Bahdanau seeds, the Transformer both ways
    for job in jobs:
        result = json.loads((prog.reports / job.id / "result.json").read_text())
        assert [(e["split"], e["beam"]) for e in result["evaluations"]] == [
            ("valid", 1), ("test", 1), ("test", 5)]
        assert all("case:lc" in e["signature_13a_lc"] for e in result["evaluations"])
        assert result["updates"] == 2 and result["quick"] and result["machine"]["threads"] >= 1
        assert result["code"] is None or len(result["code"]["commit"]) == 12  # a git checkout
        for name in ("config.yaml", "metrics.jsonl", "hyps_test_2016_flickr_beam5.txt"):
            assert (prog.reports / job.id / name).is_file(), (job.id, name)
    assert not list(prog.reports.glob("*/*.pt"))  # no checkpoint among the committed results
    report = prog.report.read_text()
    measured = report.split("Published results")[0]
    assert measured.count("\n| ") == 8  # the header and 7 rows (one per step and direction)
    assert "± " in report and "Noise level: the test BLEU (beam 5) of bahdanau de-en" in report
    assert "`--quick` results" in report and "Code (the git commit of seq2seq" in report
    assert (out / "progression_curves.png").stat().st_size > 0
    assert f"report: {prog.report}" in r.stdout
    # attention of the same test sentence for every attention model, none for Sutskever/Cho
    assert json.loads((prog.reports / "sutskever.de-en.s1234" / "attention.json").read_text()) \
        == []
    for job in ("bahdanau.de-en.s1234", "transformer.de-en.s1234"):
        (sample,) = json.loads((prog.reports / job / "attention.json").read_text())
        assert sample["line"] == 2 and sample["source"][-1] == "</s>"
        assert len(sample["weights"]) == len(sample["output"])
        assert all(len(row) == len(sample["source"]) and abs(sum(row) - 1) < 1e-2
                   for row in sample["weights"])
    assert sample["name"] == "layer 3, mean of 4 heads"  # the Transformer's last layer
    assert "![attention, test sentence 3](progression_attention_2.png)" in report
    assert (out / "progression_attention_2.png").stat().st_size > 0
    assert "| Transformer base / big | Vaswani et al. 2017 |" in report  # published results


def test_a_second_call_skips_what_is_done(quick):
    out, _ = quick
    kept = out / "progression" / "luong_general.de-en.s1234" / "attention.json"
    before = kept.read_text()
    kept.unlink()  # a job finished before attention samples were kept
    r = reproduce(PROGRESSION, out=out)
    assert r.returncode == 0 and "reproduce: " not in r.stdout  # nothing trained again
    assert kept.read_text() == before  # taken from the run's checkpoint


def test_a_stopped_run_is_continued_and_the_same_seed_gives_the_same_result(quick, tmp_path):
    out, _ = quick
    prog = load_progression(PROGRESSION, out)
    job = "cho.de-en.s1234"
    before = json.loads((prog.reports / job / "result.json").read_text())
    (prog.reports / job / "result.json").unlink()
    summary = prog.runs / job / "train_summary.json"
    summary.write_text(json.dumps({**json.loads(summary.read_text()), "stopped_by": "SIGINT"}))
    r = reproduce(PROGRESSION, "--only", "cho", out=out)
    assert r.returncode == 0 and f"reproduce: {job}: continuing from" in r.stdout
    after = json.loads((prog.reports / job / "result.json").read_text())
    assert after["evaluations"] == before["evaluations"]
    again = reproduce(PROGRESSION, "--verify", "cho", out=out)  # from scratch, compared
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"  same  {job}: 9 scores compared" in again.stdout  # same seed, same test BLEU
    assert (prog.runs / "verify" / job / "best.pt").is_file()
    kept = prog.reports / job / "result.json"
    changed = json.loads(kept.read_text())
    changed["evaluations"][2]["bleu"] += 1.0
    kept.write_text(json.dumps(changed))
    try:
        r = reproduce(PROGRESSION, "--verify", "cho", out=out)
    finally:
        kept.write_text(json.dumps(after))
    assert r.returncode == 1 and f"  DIFFERS  {job}" in r.stdout
    assert "    test beam 5 bleu: " in r.stdout


def test_a_result_from_another_config_is_made_again(quick, tmp_path):
    # the job id stays, the config changed (here by --set): the kept result and the run are
    # stale, and the job is trained again from the start
    job = "cho.de-en.s1234"
    assert reproduce(PROGRESSION, "--only", "cho", out=tmp_path).returncode == 0
    r = reproduce(PROGRESSION, "--only", "cho", "--set", "model.dropout=0.3", out=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (f"reproduce: {job}: its kept result came from another config "
            "(model.dropout: 0.2 -> 0.3)") in r.stdout
    assert "was trained with another config (model.dropout: 0.2 -> 0.3): starting again" \
        in r.stdout
    kept = (tmp_path / "progression" / job / "config.yaml").read_text()
    assert "dropout: 0.3" in kept


def test_plan_lists_done_and_left_with_an_estimate(quick):
    out, _ = quick
    prog = load_progression(PROGRESSION, out)
    (prog.reports / "sutskever.de-en.s1234" / "result.json").rename(out / "kept.json")
    try:
        lines = plan_lines(prog, quick=True, extra=[f"data.path={MULTI30K}"])
    finally:
        (out / "kept.json").rename(prog.reports / "sutskever.de-en.s1234" / "result.json")
    assert sum(line.strip().startswith("done") for line in lines) == 8
    left = [line for line in lines if "sutskever" in line]
    assert left and " s = " in left[0] and "min" in left[0]
    assert lines[-1].startswith("training left: about")


@pytest.mark.parametrize("text, match", [
    ("steps: []\n", "needs a list of steps"),
    ("stepz: [{}]\n", "needs a list of steps"),
    ("steps: [{name: a}]\nextra: 1\n", r"unknown key\(s\) extra"),
    ("steps: [{name: a, config: multi30k/cho.yaml}]\n", "missing label, paper, updates, year"),
    ("steps: [{name: a, config: nope.yaml, label: x, year: 1, paper: p, updates: 5}]\n",
     "config not found"),
    ("steps: [{name: a, config: multi30k/cho.yaml, label: x, year: 1, paper: p, "
     "updates: 3001}]\n", r"updates must be 1\.\.3000"),
    ("steps: [{name: a, config: multi30k/cho.yaml, label: x, year: 1, paper: p, updates: 5, "
     "directions: [de]}]\n", "direction 'de' is not SRC-TGT"),
    ("steps: [{name: a, config: multi30k/cho.yaml, label: x, year: 1, paper: p, updates: 5, "
     "colour: red}]\n", r"unknown key\(s\) colour"),
    ("steps: [{name: a, config: multi30k/cho.yaml, label: x, year: 1, paper: p, updates: 5, "
     "set: model.init=xavier}]\n", "'set' must be a list of KEY=VALUE"),
    ("steps: [{name: a, config: multi30k/cho.yaml, label: x, year: 1, paper: p, updates: 5, "
     "set: [model.colour=red]}]\n", r"\(a\): set: .*model\.colour"),
    ("steps: [{name: a, config: multi30k/cho.yaml, label: x, year: 1, paper: p, updates: 5, "
     "seeds: [1, 2, 1]}]\n", r"\(a\): seeds repeat: \[1, 2, 1\]"),
    ("steps: [{name: a, config: multi30k/cho.yaml, label: x, year: 1, paper: p, updates: 5, "
     "against: b}]\n", r"\(a\): against: 'b' is not another step"),
])
def test_a_bad_progression_is_one_line(text, match):
    path = ROOT / "configs" / "_test_progression.yaml"
    path.write_text(text)
    try:
        with pytest.raises(ConfigError, match=match) as e:
            load_progression(path)
        assert "\n" not in str(e.value)
    finally:
        path.unlink()


def test_only_names_a_step():
    with pytest.raises(ConfigError, match="--only nope: no such step"):
        load_progression(PROGRESSION).jobs("nope")


def test_a_step_sets_config_values_before_the_budget_and_seed(tmp_path):
    # An ablation is a step with `set:` lines; the budget, seed and direction still come last.
    path = ROOT / "configs" / "_test_progression.yaml"
    path.write_text("steps: [{name: a, config: multi30k/bahdanau.yaml, label: x, year: 1, "
                    "paper: p, updates: 7, set: [model.init=xavier, train.max_updates=99]}]\n")
    try:
        prog = load_progression(path, out=tmp_path)
    finally:
        path.unlink()
    (job,) = prog.jobs()
    cfg = job_config(prog, job, quick=False)
    assert job.step.overrides == ("model.init=xavier", "train.max_updates=99")
    assert cfg.model.init == "xavier" and cfg.model.decoder_start == "backward"
    assert cfg.train.max_updates == 7


def _block(text: str) -> list[str]:
    return text[text.index(README_BEGIN) + len(README_BEGIN):text.index(README_END)] \
        .strip("\n").splitlines()


def test_the_readme_table_is_written_between_its_markers(quick, tmp_path):
    out, _ = quick
    prog = load_progression(PROGRESSION, out)
    readme = tmp_path / "README.md"
    readme.write_text(f"# T\n\nbefore\n\n{README_BEGIN}\nold\n{README_END}\n\nafter\n")
    update_readme(prog, readme)
    text = readme.read_text()
    assert text.startswith(f"# T\n\nbefore\n\n{README_BEGIN}\n| model | config |")
    assert text.endswith(f".md).\n{README_END}\n\nafter\n") and "old" not in text
    rows = [line for line in _block(text) if line.startswith("| ")]
    assert len(rows) == 8  # the header and one row per step and direction
    bahdanau = next(r for r in rows if "bahdanau.yaml" in r)
    assert "| de-en | 3 | 3,000 |" in bahdanau and " ± " in bahdanau
    assert "9 of 9 runs of" in text
    update_readme(prog, readme)
    assert readme.read_text() == text  # rebuilding changes nothing


def test_a_readme_without_its_markers_is_refused_before_anything_runs(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# T\n")
    with pytest.raises(ConfigError, match="needs the lines"):
        check_readme(readme)
    with pytest.raises(ConfigError, match="no such file"):
        check_readme(tmp_path / "nope.md")
    r = subprocess.run([sys.executable, "-m", "seq2seq", "reproduce", str(PROGRESSION),
                        "--readme", str(readme), "--out", str(tmp_path / "out")],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode != 0 and "needs the lines" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
    assert readme.read_text() == "# T\n"
    r = reproduce(PROGRESSION, "--readme", ROOT / "README.md", out=tmp_path / "quick")
    assert r.returncode != 0 and "not with --quick" in r.stderr


def test_the_readmes_reproduction_table_matches_the_kept_results(monkeypatch):
    """README.md shows what reports/progression/ holds: after a sweep's run, rebuild it with
    `seq2seq reproduce configs/progression.yaml --report --readme README.md`."""
    monkeypatch.chdir(ROOT)
    prog = load_progression(Path("configs/progression.yaml"), None)
    expected = readme_table(prog, finished_results(prog), ROOT)
    assert _block((ROOT / "README.md").read_text(encoding="utf-8")) == expected


def test_where_a_job_runs_and_an_auto_precision_that_was_fp32_make_no_difference(quick):
    out, _ = quick
    prog = load_progression(PROGRESSION, out)
    (job,) = prog.jobs("cho")
    extra = [f"data.path={MULTI30K}"]
    cfg = job_config(prog, job, True, extra)
    assert cfg.train.precision == "fp32"  # whatever the machine: a sweep spans machines
    assert cfg.decode.workers == 1  # one batch at a time, as the kept results were decoded
    # dropout masks and loss chunks as every kept result was trained, whatever the model configs
    # choose for speed (a kept config without the keys reads as these defaults)
    assert cfg.train.dropout_masks == "torch"
    assert cfg.train.loss_chunk_logits == TrainConfig().loss_chunk_logits == 1 << 21
    assert stale_result(prog, job, cfg) == []
    for place in ("train.log_every=3", "data.token_cache=false", "train.num_threads=1",
                  "train.keep_last=2", "train.release_memory=true", "decode.workers=2"):
        assert stale_result(prog, job, job_config(prog, job, True, [*extra, place])) == []
    bf16 = job_config(prog, job, True, [*extra, "train.precision=bf16"])
    assert stale_result(prog, job, bf16) == ["train.precision: fp32 -> bf16"]
    auto = job_config(prog, job, True, [*extra, "train.precision=auto"])  # as earlier results
    assert config_differences(auto, cfg, precision="fp32") == []
    assert config_differences(auto, cfg, precision="bf16") == ["train.precision: auto -> fp32"]


def test_a_kept_result_that_cannot_be_checked_is_an_error_and_is_kept(quick, tmp_path):
    out, _ = quick
    prog = load_progression(PROGRESSION, tmp_path)
    (job,) = prog.jobs("cho")
    kept = prog.reports / job.id
    shutil.copytree(out / "progression" / job.id, kept)
    (kept / "config.yaml").write_text("model: {hiden_size: 3}\n")
    with pytest.raises(Seq2SeqError, match=f"{job.id}: its kept result cannot be checked .*"
                                           "delete it to train the job again"):
        stale_result(prog, job, job_config(prog, job, True, [f"data.path={MULTI30K}"]))
    assert (kept / "result.json").is_file()


def test_a_finished_run_without_its_checkpoint_is_not_trained(quick, tmp_path):
    out, _ = quick
    run = tmp_path / "run"
    shutil.copytree(out / "runs" / "cho.de-en.s1234", run)
    assert trained(RunDir(run), 2)
    (run / "best.pt").unlink()
    assert not trained(RunDir(run), 2)


def test_a_step_against_another_is_set_beside_it_with_the_difference(quick):
    out, _ = quick
    path = ROOT / "configs" / "_test_against.yaml"
    path.write_text("steps:\n"
                    "  - {name: cho, config: multi30k/cho.yaml, label: C, year: 1, paper: p, "
                    "updates: 2}\n"
                    "  - {name: sutskever, config: multi30k/sutskever.yaml, label: S, year: 1, "
                    "paper: p, updates: 2, against: cho}\n")
    try:
        prog = load_progression(path, out)
    finally:
        path.unlink()
    results = finished_results(prog)
    lines = comparison_section(prog, results)
    (row,) = [line for line in lines if line.startswith("| C / S |")]
    cho, sut = results["cho.de-en.s1234"], results["sutskever.de-en.s1234"]
    greedy = [_test_bleu(cho, 1), _test_bleu(sut, 1)]
    assert f"{greedy[0]:.2f} / {greedy[1]:.2f} (**{greedy[0] - greedy[1]:+.2f}**)" in row
    assert comparison_section(prog, {k: v for k, v in results.items() if "cho" not in k}) == []


def _test_bleu(result: dict, beam: int) -> float:
    return next(e["bleu"] for e in result["evaluations"] if e["split"] == "test"
                and e["beam"] == beam)


def test_a_run_saved_on_another_machine_is_evaluated_on_this_ones_data(quick, tmp_path):
    out, _ = quick
    prog = load_progression(PROGRESSION, out)
    (job,) = prog.jobs("cho")
    run = tmp_path / "run"
    shutil.copytree(out / "runs" / job.id, run)
    payload = ckpt.load(run / "best.pt")
    payload["config"]["data"]["path"] = str(tmp_path / "elsewhere")  # that machine's path
    ckpt.save_atomic(payload, run / "best.pt")
    with pytest.raises(Seq2SeqError, match="elsewhere"):
        evaluate_job(RunDir(run), "cpu")
    data = job_config(prog, job, True, [f"data.path={MULTI30K}"]).data
    kept = json.loads((prog.reports / job.id / "result.json").read_text())["evaluations"]
    assert evaluate_job(RunDir(run), "cpu", data) == kept


def test_results_from_several_machines_name_theirs(quick, tmp_path):
    """A sweep spread over a CPU and a GPU: each row and curve says where it was trained, and
    the time axis is logarithmic (GPU minutes beside CPU hours)."""
    out, _ = quick
    shutil.copytree(out / "progression", tmp_path / "progression")
    prog = load_progression(PROGRESSION, tmp_path)
    kept = prog.reports / "luong_general.de-en.s1234" / "result.json"
    result = json.loads(kept.read_text())
    result["device"], result["machine"]["cuda"] = "cuda", "NVIDIA H200"
    kept.write_text(json.dumps(result))
    report = write_progression_report(prog).read_text()
    (row,) = [line for line in report.splitlines() if line.startswith("| global attention")]
    assert "NVIDIA H200, fp32" in row
    assert report.count("(NVIDIA H200, ") == 1 and "CPU, " in report
    assert "a logarithmic axis, since the runs were trained on different machines" in report
    result["device"] = "cpu"  # one machine again: a linear axis, nothing said
    kept.write_text(json.dumps(result))
    assert "logarithmic" not in write_progression_report(prog).read_text()


def test_jobs_at_once_give_the_scores_of_one_at_a_time(tmp_path):
    if not (MULTI30K / "train.de.gz").is_file():
        pytest.skip("Multi30k not found")
    one = reproduce(PROGRESSION, "--only", "transformer", "--set", "train.num_threads=1",
                    out=tmp_path / "one")
    assert one.returncode == 0, one.stderr[-2000:]
    both = reproduce(PROGRESSION, "--only", "transformer", "--jobs", "2", "--set",
                     "train.num_threads=1", out=tmp_path / "two")
    assert both.returncode == 0, both.stderr[-2000:]
    prog = load_progression(PROGRESSION, tmp_path / "two")
    first, second = [job.id for job in prog.jobs("transformer")]  # de-en and en-de
    out = both.stdout
    assert out.index(f"reproduce: {second} started") < out.index(f"reproduce: {first} done in")
    for job in (first, second):
        assert "done: 2 updates" in (prog.runs / "logs" / f"{job}.log").read_text()
        kept = [json.loads((tmp_path / d / "progression" / job / "result.json").read_text())
                for d in ("one", "two")]
        assert kept[0]["evaluations"] == kept[1]["evaluations"], job
        assert kept[1]["machine"]["threads"] == 1
    assert "Transformer (3+3 layers, d_model 256)" in prog.report.read_text()
    again = reproduce(PROGRESSION, "--only", "transformer", "--jobs", "2", out=tmp_path / "two")
    assert again.returncode == 0 and "started" not in again.stdout  # nothing left to run


def test_a_job_that_fails_is_named_with_its_log_and_the_report_is_still_written(tmp_path):
    if not (MULTI30K / "train.de.gz").is_file():
        pytest.skip("Multi30k not found")
    (tmp_path / "cache").write_text("a file where the jobs want their cache directory")
    r = reproduce(PROGRESSION, "--only", "cho", "--jobs", "2", out=tmp_path)
    assert r.returncode == 2
    error = r.stderr.strip().splitlines()
    assert len(error) == 1 and error[0].startswith(
        "error: 1 job failed: cho.de-en.s1234: exit status 2: error: cannot use the cache "
        "directory ")
    assert f"(log: {tmp_path / 'runs' / 'logs' / 'cho.de-en.s1234.log'})" in error[0]
    assert "report: " in r.stdout  # written from whatever finished


def test_a_stop_signal_reaches_the_running_jobs_once_and_no_more_start(tmp_path):
    step = load_progression(PROGRESSION).steps[0]
    jobs = [Job(step, "de-en", seed) for seed in (1, 2, 3)]
    # a job that saves on its first SIGTERM and would stop at once on a second
    child = ("import signal, sys, time\n"
             "def stop(*a):\n"
             "    signal.signal(signal.SIGTERM, lambda *a: (print('twice', flush=True),"
             " sys.exit(1)))\n"
             "    print('saved', flush=True); time.sleep(1); sys.exit(143)\n"
             "signal.signal(signal.SIGTERM, stop); print('up', flush=True); time.sleep(60)\n")
    logs = [tmp_path / f"{job.id}.log" for job in jobs]

    def stop_when_both_are_up():
        for _ in range(600):
            if all(log.is_file() and "up" in log.read_text() for log in logs[:2]):
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.1)

    threading.Thread(target=stop_when_both_are_up, daemon=True).start()
    with pytest.raises(Interrupted, match="stopped on SIGTERM") as stopped:
        run_parallel(jobs, lambda job: [sys.executable, "-c", child], 2, tmp_path)
    assert stopped.value.exit_code == 128 + signal.SIGTERM
    assert not logs[2].exists()  # the third never started
    for log in logs[:2]:
        assert log.read_text().splitlines()[-2:] == ["up", "saved"]  # one signal, not two


def test_jobs_are_only_for_training():
    err = one_line_error(cli("reproduce", PROGRESSION, "--plan", "--jobs", "2"))
    assert err == "error: --jobs: only for training (not with --plan, --verify or --report)"
