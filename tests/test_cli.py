"""End to end: train a few updates on a slice of Multi30k, evaluate, translate through a pipe."""

import gzip
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import cli, concurrently, one_line_error

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "multi30k" / "bahdanau.yaml"


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    src_dir = ROOT.parent / "shared" / "data" / "multi30k"
    if not (src_dir / "train.de.gz").is_file():
        pytest.skip("Multi30k not found")
    base = tmp_path_factory.mktemp("e2e")
    data = base / "data"
    data.mkdir()
    for split, n in (("train", 3000), ("val", 40), ("test_2016_flickr", 30)):
        for lang in ("de", "en"):
            with gzip.open(src_dir / f"{split}.{lang}.gz", "rt", encoding="utf-8") as f:
                lines = [next(f) for _ in range(n)]
            with gzip.open(data / f"{split}.{lang}.gz", "wt", encoding="utf-8") as f:
                f.writelines(lines)
    run = base / "run"
    env = {"SEQ2SEQ_CACHE": str(base / "cache")}
    r = cli("train", "--config", CONFIG, "--run-dir", run, "--no-progress",
            "--set", f"data.path={data}", "--set", "vocab.size=800",
            "--set", "model.embed_size=64", "--set", "model.hidden_size=64",
            "--set", "train.max_updates=6", "--set", "train.valid_every=3",
            "--set", "train.batch_tokens=1000", "--set", "train.log_every=2",
            "--set", "decode.max_len_a=0.5", "--set", "train.keep_last=2", env=env)
    assert r.returncode == 0, r.stderr.decode()
    return run


def test_train_writes_a_complete_run(trained_run):
    names = {p.name for p in trained_run.iterdir()}
    assert {"config.yaml", "best.pt", "last.pt", "metrics.jsonl", "train_summary.json",
            "vocab"} <= names
    records = [json.loads(x) for x in (trained_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["update"] for r in records if r["kind"] == "valid"] == [3, 6]
    assert all("bleu" in r for r in records if r["kind"] == "valid")
    assert [r["update"] for r in records if r["kind"] == "train"] == [2, 4, 6]


def test_eval_reports_bleu_and_chrf_with_signatures(trained_run):
    r = cli("eval", "--run", trained_run, "--split", "test")
    assert r.returncode == 0, r.stderr.decode()
    out = r.stdout.decode()
    assert "BLEU|nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:" in out
    assert "chrF2|nrefs:1|" in out
    report = json.loads((trained_run / "eval_test_2016_flickr.json").read_text())
    assert report["sentences"] == 30 and "signature" in report["bleu"]
    hyps = (trained_run / "hyps_test_2016_flickr.txt").read_text().splitlines()
    assert len(hyps) == 30


def test_eval_with_hard_attention_writes_its_own_report(trained_run):
    r = cli("eval", "--run", trained_run, "--split", "test", "--hard-attention")
    assert r.returncode == 0, r.stderr.decode()
    report = json.loads((trained_run / "eval_test_2016_flickr_hard.json").read_text())
    assert report["search"]["hard_attention"] is True
    assert (trained_run / "eval_test_2016_flickr.json").is_file()  # the soft one stays


def test_eval_int8_writes_its_own_report_and_bad_names_fail(trained_run):
    r = cli("eval", "--run", trained_run, "--split", "test", "--quantize", "int8")
    assert r.returncode == 0, r.stderr.decode()
    report = json.loads((trained_run / "eval_test_2016_flickr_int8.json").read_text())
    assert report["quantize"] == "int8" and report["sentences"] == 30
    r = cli("translate", "--run", trained_run, "--quantize", "int8", stdin=b"Ein Hund.\n")
    assert r.returncode == 0 and len(r.stdout.decode().splitlines()) == 1
    err = one_line_error(cli("translate", "--run", trained_run, "--quantize", "int4",
                             stdin=b"Ein Hund.\n"))
    assert "--quantize" in err and "int8" in err


def test_eval_and_translate_with_bf16_products(trained_run):
    from seq2seq.packing import bf16_packing_available

    if not bf16_packing_available():  # oneDNN without bf16 products (an AVX2-only CPU)
        err = one_line_error(cli("eval", "--run", trained_run, "--split", "test",
                                 "--quantize", "bf16"))
        assert "--quantize bf16" in err and "use none or int8" in err
        return
    r = cli("eval", "--run", trained_run, "--split", "test", "--quantize", "bf16")
    assert r.returncode == 0, r.stderr.decode()
    report = json.loads((trained_run / "eval_test_2016_flickr_bf16.json").read_text())
    assert report["quantize"] == "bf16" and report["sentences"] == 30 and report["packed"]
    r = cli("translate", "--run", trained_run, "--quantize", "bf16", stdin=b"Ein Hund.\n\n")
    assert r.returncode == 0 and len(r.stdout.decode().splitlines()) == 2


def test_eval_on_files(trained_run, tmp_path):
    (tmp_path / "s.de").write_text("Ein Hund.\nEine Frau.\n")
    (tmp_path / "r.en").write_text("A dog.\nA woman.\n")
    r = cli("eval", "--run", trained_run, "--src", tmp_path / "s.de", "--ref", tmp_path / "r.en")
    assert r.returncode == 0, r.stderr.decode()
    assert (trained_run / "eval_s.de.json").is_file()


def test_translate_pipe_keeps_lines(trained_run):
    r = cli("translate", "--run", trained_run, stdin=b"\n\nEin Hund.\n")
    assert r.returncode == 0, r.stderr.decode()
    lines = r.stdout.decode().split("\n")
    assert len(lines) == 4 and lines[:2] == ["", ""] and lines[2] and lines[3] == ""
    r = cli("translate", "--run", trained_run, "--batch-size", "2",
            stdin=b"Ein Hund.\n\xff\xfe kaputt\nEine Frau.")
    assert r.returncode == 0
    assert len(r.stdout.decode().splitlines()) == 3
    assert "line 2 is not valid UTF-8" in r.stderr.decode()


def test_bad_inputs_give_one_line_errors(trained_run, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  atention: {score: dot}\n")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "best.pt").write_bytes((trained_run / "best.pt").read_bytes()[:1000])
    cases = {  # what the one-line error must name: the command
        "model.hiden_size": lambda: cli("train", "--config", CONFIG,
                                        "--set", "model.hiden_size=3"),
        "model.atention": lambda: cli("train", "--config", bad),
        str(tmp_path / "missing"): lambda: cli(
            "train", "--config", CONFIG, "--run-dir", tmp_path / "r",
            "--set", f"data.path={tmp_path / 'missing'}", "--set", "data.fetch=null"),
        "run directory not found": lambda: cli("translate", "--run", tmp_path / "nope",
                                               stdin=b"x\n"),
        "truncated or corrupt": lambda: cli("translate", "--run", broken, stdin=b""),
        "already holds checkpoints": lambda: cli("train", "--config", CONFIG,
                                                 "--run-dir", trained_run),
        "no CUDA device": lambda: cli("translate", "--run", trained_run, "--device", "cuda",
                                      stdin=b"x\n"),
    }
    for expected, r in zip(cases, concurrently(*cases.values())):
        assert expected in one_line_error(r)


def test_help_describes_every_option():
    for cmd in ([], ["train"], ["eval"], ["translate"], ["average"], ["report"]):
        r = cli(*cmd, "--help")
        assert r.returncode == 0
        assert "Usage" in r.stdout.decode()
    out = cli("eval", "--help").stdout.decode()
    for opt in ("--run", "--split", "--src", "--ref", "--checkpoint", "--batch-size", "--device",
                "--beam", "--alpha", "--length-penalty", "--n-best", "--lowercase", "--tokenize"):
        assert opt in out


def test_translate_answers_interactively_before_eof(trained_run):
    """A line typed at a prompt is answered at once, while stdin stays open."""
    import select

    p = subprocess.Popen([sys.executable, "-m", "seq2seq", "translate", "--run", trained_run],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT)
    try:
        p.stdin.write(b"Ein Hund.\n")
        p.stdin.flush()
        ready, _, _ = select.select([p.stdout], [], [], 120)
        assert ready, "no answer while stdin is still open"
        assert p.stdout.readline().endswith(b"\n")
    finally:
        p.stdin.close()
        p.wait(timeout=60)
    assert p.returncode == 0


def test_translate_answers_a_burst_of_batches_before_eof(trained_run):
    """Lines enough for two batches at once (decoded by forked workers), then a pause with
    stdin still open: every line is answered. A worker forked while the reader thread waits
    on stdin must not touch the stdin the reader holds (it would wait for ever)."""
    import select

    p = subprocess.Popen([sys.executable, "-m", "seq2seq", "translate", "--run", trained_run,
                          "--batch-size", "2", "--workers", "2"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT,
                         start_new_session=True)
    got = b""
    try:
        p.stdin.write(b"Ein Hund.\nEine Frau.\nZwei Kinder.\nEin Mann.\n" * 2)
        p.stdin.flush()
        while got.count(b"\n") < 8:  # raw reads: a buffered readline would hide lines
            ready, _, _ = select.select([p.stdout], [], [], 120)
            assert ready, f"{len(got.splitlines())} of 8 lines answered, stdin still open"
            got += os.read(p.stdout.fileno(), 65536)
    finally:
        if p.poll() is None and got.count(b"\n") < 8:
            os.killpg(p.pid, signal.SIGKILL)  # the process and any worker it forked
        p.stdin.close()
        p.wait(timeout=60)
    assert p.returncode == 0


def test_translate_without_stdin_is_a_one_line_error(trained_run):
    r = subprocess.run([sys.executable, "-m", "seq2seq", "translate", "--run", trained_run],
                       stdin=subprocess.DEVNULL, preexec_fn=lambda: os.close(0),
                       capture_output=True, cwd=ROOT, timeout=300)  # started with fd 0 closed
    assert "no standard input" in one_line_error(r)


def test_eval_beam_nbest_report_files(trained_run):
    r = cli("eval", "--run", trained_run, "--beam", "3", "--n-best", "2", "--lowercase")
    assert r.returncode == 0, r.stderr.decode()
    out = r.stdout.decode()
    assert "BLEU|nrefs:1|case:lc|" in out and "TER|nrefs:1|" in out
    name = "test_2016_flickr_beam3"
    report = json.loads((trained_run / f"eval_{name}.json").read_text())
    assert report["search"]["method"] == "beam" and report["search"]["beam_size"] == 3
    assert report["scoring"] == {"lowercase": True, "tokenize": "13a"}
    assert {"bleu", "chrf", "ter"} <= set(report)
    md = (trained_run / f"eval_{name}.md").read_text()
    assert "beam 3" in md and "| BLEU |" in md
    nbest = [x.split("\t") for x in (trained_run / f"nbest_{name}.txt").read_text().splitlines()]
    assert len(nbest) == 60 and [int(x[0]) for x in nbest[:4]] == [0, 0, 1, 1]
    assert all(float(a[1]) >= float(b[1]) for a, b in zip(nbest[::2], nbest[1::2]))
    hyps = (trained_run / f"hyps_{name}.txt").read_text().splitlines()
    assert hyps == [x[2] for x in nbest[::2]]  # the 1-best is the first of each n-best list


def test_translate_nbest_and_attention_plots(trained_run, tmp_path):
    r = cli("translate", "--run", trained_run, "--n-best", "3", "--plot-attention",
            tmp_path / "plots", stdin=b"Ein Hund.\n\nEine Frau.\n")
    assert r.returncode == 0, r.stderr.decode()
    lines = r.stdout.decode().split("\n")[:-1]
    assert len(lines) == 9  # three lines per input line, the empty one included
    assert lines[3:6] == ["\t", "\t", "\t"]
    scores = [float(x.split("\t")[0]) for x in lines[:3]]
    assert scores == sorted(scores, reverse=True)
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["00001.png", "00003.png"]
    assert (tmp_path / "plots" / "00001.png").read_bytes()[:4] == b"\x89PNG"


def test_translate_follows_the_runs_n_best_unless_the_flag_says_otherwise(trained_run, tmp_path):
    # decode.n_best in the run's config decides the output, as it does eval's n-best file
    copy = tmp_path / "run"
    subprocess.run(["cp", "-r", str(trained_run), str(copy)], check=True)
    payload = torch.load(copy / "best.pt", weights_only=True)  # the config inference reads
    payload["config"]["decode"].update(beam_size=2, n_best=2)
    torch.save(payload, copy / "best.pt")
    r = cli("translate", "--run", copy, stdin=b"Ein Hund.\n")
    assert r.returncode == 0, r.stderr.decode()
    assert [line.count("\t") for line in r.stdout.decode().splitlines()] == [1, 1]
    for flags in (["--n-best", "1"], ["--beam", "1"]):  # a greedy search keeps one
        r = cli("translate", "--run", copy, *flags, stdin=b"Ein Hund.\n")
        assert r.returncode == 0 and len(r.stdout.decode().splitlines()) == 1, flags
        assert "\t" not in r.stdout.decode()


def test_average_and_resume(trained_run, tmp_path):
    kept = sorted(p.name for p in trained_run.glob("ckpt_*.pt"))
    assert kept == ["ckpt_0000003.pt", "ckpt_0000006.pt"]
    r = cli("average", "--run", trained_run, "--last", "2")
    assert r.returncode == 0, r.stderr.decode()
    r = cli("eval", "--run", trained_run, "--checkpoint", "averaged.pt")
    assert r.returncode == 0, r.stderr.decode()
    assert "averaged.pt" in json.loads(
        (trained_run / "eval_test_2016_flickr_averaged.json").read_text())["checkpoint"]
    assert "best.pt" in json.loads(  # the evaluation of best.pt is not overwritten
        (trained_run / "eval_test_2016_flickr.json").read_text())["checkpoint"]
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(trained_run), str(copy)], check=True)
    r = cli("train", "--resume", copy, "--no-progress", "--set", "train.max_updates=8",
            "--set", "train.valid_every=4")
    assert r.returncode == 0, r.stderr.decode()
    assert "resuming at update 6" in r.stdout.decode() + r.stderr.decode()
    records = [json.loads(x) for x in (copy / "metrics.jsonl").read_text().splitlines()]
    assert [r["update"] for r in records if r["kind"] == "valid"] == [3, 6, 8]
    assert one_line_error(cli("train", "--resume", tmp_path / "nothing")).startswith("error:")


def test_report_compares_runs(trained_run, tmp_path):
    other = tmp_path / "other"
    subprocess.run(["cp", "-r", str(trained_run), str(other)], check=True)
    r = cli("report", trained_run, other, "--output", tmp_path / "rep")
    assert r.returncode == 0, r.stderr.decode()
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| run | model | attention |" in md and "bahdanau GRU" in md
    assert "BLEU|nrefs:1|" in md
    for png in ("bleu.png", "curves.png"):
        assert (tmp_path / "rep" / png).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("code, status, err",
                         [(3, 3, ""), (None, 0, ""), ("stopped", 1, "stopped")])
def test_end_process_keeps_exit_status_handlers_and_output(tmp_path, code, status, err):
    """The entry point skips the interpreter's teardown, not the exit handlers or the output."""
    marker = tmp_path / "atexit"
    script = (
        "import atexit, pathlib, sys\n"
        "from seq2seq.cli import end_process\n"
        f"atexit.register(pathlib.Path({str(marker)!r}).write_text, 'ran')\n"
        "sys.stdout.write('buffered, no newline')\n"
        f"end_process({code!r})\n"
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == status
    assert r.stdout == "buffered, no newline"
    assert r.stderr.strip() == err
    assert marker.read_text() == "ran"


def test_cache_command_shows_and_clears(tmp_path):
    cache = tmp_path / "cache"
    (cache / "tokens" / "abc").mkdir(parents=True)
    (cache / "tokens" / "abc" / "src.ids").write_bytes(b"\0" * 2_000_000)
    env = {"SEQ2SEQ_CACHE": str(cache)}
    r = cli("cache", env=env)
    assert r.returncode == 0
    assert f"{cache / 'tokens'}: 1 entry, 2.0 MB" in r.stdout.decode()
    assert f"{cache / 'spm'}: 0 entries" in r.stdout.decode()
    r = cli("cache", "--clear", env=env)
    assert r.returncode == 0 and "2.0 MB" in r.stdout.decode()
    assert not (cache / "tokens").exists()
