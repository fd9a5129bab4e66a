"""``seq2seq reproduce PROGRESSION``: the history of attention, each step trained, evaluated and
reported the same way.

A progression file (``configs/progression.yaml``) lists the steps: a config, a label, the year
and paper, a budget in updates (the same result on every machine), the seeds and the directions
(``de-en``). Every (step, direction, seed) is a *job*, ``NAME.SRC-TGT.sSEED``:

1. train into ``RUNS/JOB`` (``train.max_updates`` = the budget, ``train.max_minutes`` off), or
   continue it there when a checkpoint is left from a stopped or killed sweep;
2. evaluate the best checkpoint the same way for every job: the validation split greedily, the
   test split greedily and with beam 5, sacreBLEU cased and detokenized, plus BLEU with
   ``--tokenize 13a --lowercase`` for comparison with papers that report that;
3. copy the small results (resolved config, metrics log, summary, evaluation reports and
   hypotheses, ``attention.json``: the attention over three fixed test sentences) into
   ``REPORTS/JOB/`` with ``result.json`` (scores, timing, the machine's CPU, precision and
   threads), written last: a job is done when its ``result.json`` exists and came from the
   job's config as it is now (one from another config is trained again).

Then ``REPORTS.md`` is rebuilt from every ``result.json`` (``seq2seq/progression_report.py``),
so a sweep can be spread over days and machines: commit ``REPORTS/`` and continue elsewhere.
``--plan`` prints what is done and what is left with a time estimate from a short timing on
this machine; ``--only NAME`` runs one step; ``--jobs N`` trains N jobs at once, each in a
process of its own (:func:`run_parallel`), which pays on a GPU; ``--quick`` runs the whole
pipeline with tiny models, data and budgets (the test suite does).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from seq2seq.config import Config, DataConfig
from seq2seq.errors import ConfigError, Seq2SeqError, one_line
from seq2seq.interrupts import HANDLED as HANDLED_SIGNALS
from seq2seq.progression import ATTENTION_FILE, QUICK_UPDATES, Job, Progression, job_config
from seq2seq.run import RunDir, changed_keys, write_text_atomic

EVALUATIONS = (("valid", 1), ("test", 1), ("test", 5))  # (split, beam) of every job
# Test sentences (line numbers from 0) whose attention the report draws for every attention
# model side by side: a verb before its object phrase, a verb-final subordinate clause
# ("während ein Mann sie fotografiert"), a short plain one.
ATTENTION_LINES = (2, 24, 58)


def trained(rd: RunDir, updates: int) -> bool:
    """Whether the run finished its budget (not stopped by a signal, not killed) and still has
    the checkpoint to evaluate."""
    summary = rd.read_summary()
    return (bool(summary) and "stopped_by" not in summary and summary["updates"] >= updates
            and rd.best.is_file())


# Where and how a job runs, not what it computes: a difference here does not make its run or
# results stale (another machine, its data elsewhere, a GPU, the token cache on or off, how
# often it logs, which checkpoints it keeps, how many batches decode at once; none of these
# changes a trained weight).
PLACE_KEYS = ("run_dir", "data.path", "data.fetch", "data.token_cache", "train.device",
              "train.num_threads", "train.release_memory", "train.log_every", "train.keep_last",
              "train.keep_best", "decode.workers")


def config_differences(before: Config, now: Config, precision: str | None = None) -> list[str]:
    """The dotted keys whose values differ between two resolved configs, except
    :data:`PLACE_KEYS`, as ``key: before -> now``. ``precision`` is the one ``before`` was
    trained in: a run made with ``train.precision: auto`` that resolved to the precision asked
    for now is no difference (runs made before the progression asked for fp32 by name)."""
    return [f"{k}: {a} -> {b}" for k, (a, b) in changed_keys(before, now).items()
            if k not in PLACE_KEYS
            and not (k == "train.precision" and a == "auto" and b == precision)]


def stale_result(prog: Progression, job: Job, cfg: Config) -> list[str] | None:
    """None when the job has no kept result; else how the config it was made with differs from
    the job's config now (empty: current). A kept config that cannot be read is an error: the
    result is neither trusted nor thrown away."""
    kept = prog.reports / job.id
    if not (kept / "result.json").is_file():
        return None
    try:
        before = RunDir(kept).read_config()
        precision = json.loads((kept / "result.json").read_text(encoding="utf-8"))["precision"]
    except (Seq2SeqError, OSError, ValueError, KeyError) as e:
        raise Seq2SeqError(f"reproduce: {job.id}: its kept result cannot be checked against "
                           f"the config now ({one_line(e)}); repair {kept} or delete it to "
                           "train the job again") from None
    return config_differences(before, cfg, precision)


def run_differences(rd: RunDir, cfg: Config) -> list[str]:
    """How the config of the run left in ``rd`` differs from ``cfg`` (empty: none, or no run)."""
    if not rd.config_path.is_file():
        return []
    summary = rd.read_summary() or {}
    return config_differences(rd.read_config(), cfg, summary.get("precision"))


def train_job(prog: Progression, job: Job, quick: bool, extra: list[str], progress: bool
              ) -> RunDir:
    """Train the job, or continue it from the checkpoint a stopped sweep left; a run left from
    another config is started again."""
    from seq2seq.training import train

    cfg = job_config(prog, job, quick, extra)
    rd = RunDir(cfg.run_dir)
    changed = run_differences(rd, cfg)
    if changed:
        print(f"reproduce: {job.id}: {rd.path} was trained with another config "
              f"({'; '.join(changed[:3])}{'; ...' if len(changed) > 3 else ''}): starting again",
              flush=True)
        train(cfg, overwrite=True, progress=progress)
        return rd
    if trained(rd, cfg.train.max_updates):
        return rd
    if rd.last.is_file():  # with this machine's device, threads and data path
        print(f"reproduce: {job.id}: continuing from {rd.last}", flush=True)
        train(cfg, progress=progress, resume=True)
    else:
        train(cfg, overwrite=True, progress=progress)
    return rd


def _translator(rd: RunDir, device: str, data: DataConfig | None):
    """The run's best checkpoint, reading its data where ``data`` (the job's config on this
    machine) says rather than where the machine that saved it had it. Its linear layers compute
    with ``F.linear``, not oneDNN-packed weights (:mod:`seq2seq.packing`): the arithmetic every
    kept result was evaluated with, so that ``--verify`` compares to the last digit."""
    from seq2seq.inference import Translator

    tr = Translator.from_run(rd.path, device=device, pack=False)
    if data is not None:
        tr.config.data = data
    return tr


def evaluate_job(rd: RunDir, device: str, data: DataConfig | None = None
                 ) -> list[dict[str, Any]]:
    """Every evaluation of :data:`EVALUATIONS`, with BLEU tokenized and lowercased beside it."""
    from seq2seq.data import load_split, split_name
    from seq2seq.evaluate import evaluate_translator
    from seq2seq.metrics import corpus_scores

    tr = _translator(rd, device, data)
    base = tr.decode
    out = []
    for split, beam in EVALUATIONS:
        tr.decode = base.override(beam_size=beam, n_best=1)
        report = evaluate_translator(tr, split=split)
        hyps = rd.eval_files(_eval_stem(report)).hyps.read_text(encoding="utf-8").splitlines()
        refs = load_split(tr.config.data, split_name(tr.config.data, split))["tgt"]
        lc = corpus_scores(hyps, refs, lowercase=True, tokenize="13a", ter=False)["bleu"]
        out.append({"split": split, "data": report["data"], "beam": beam,
                    "bleu": report["bleu"]["score"], "signature": report["bleu"]["signature"],
                    "chrf": report["chrf"]["score"], "chrf_signature": report["chrf"]["signature"],
                    "bleu_13a_lc": lc["score"], "signature_13a_lc": lc["signature"],
                    "sentences": report["sentences"]})
    return out


def attention_samples(rd: RunDir, device: str, data: DataConfig | None = None
                      ) -> list[dict[str, Any]]:
    """The greedy translations of :data:`ATTENTION_LINES` of the test split with the attention
    that produced them (the RNN's; the Transformer's last decoder layer, mean of its heads):
    ``[{line, source, output, name, weights (T, S)}]``, empty for a model without attention.
    Lines past the end of the test split and empty lines are left out; the first three lines
    stand in when none is left (``--quick``'s short split)."""
    from seq2seq.data import load_split, split_name
    from seq2seq.plotting import translation_maps

    tr = _translator(rd, device, data)
    src = load_split(tr.config.data, split_name(tr.config.data, "test"))["src"]
    lines = [i for i in ATTENTION_LINES if i < len(src)] or list(range(min(3, len(src))))
    lines = [i for i in lines if src[i].strip()]
    decode = tr.decode.override(beam_size=1, n_best=1)
    out = []
    for i, nbest in zip(lines, tr.translate_nbest([src[i] for i in lines], decode)):
        t = nbest[0]
        maps = translation_maps(tr, t)
        if not maps:  # no attention
            return []
        name, weights = list(maps.items())[-1]  # the last layer
        out.append({"line": i, "source": tr.src_vocab.pieces(t.src_tokens) + ["</s>"],
                    "output": tr.tgt_vocab.pieces(t.tokens) + ["</s>"], "name": name,
                    "weights": [[round(x, 4) for x in row] for row in weights.tolist()]})
    return out


def _eval_stem(report: dict[str, Any]) -> str:
    from seq2seq.run import eval_name

    return eval_name(report["data"], report["search"]["beam_size"],
                     report["search"]["hard_attention"], "best", report["quantize"])


def machine() -> dict[str, Any]:
    """The CPU (model and the flags that decide speed and precision), threads and torch."""
    import torch

    from seq2seq.runtime import cpu_info

    model, flags = cpu_info()
    keep = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    return {"cpu": model, "cpu_flags": [f for f in keep if f in flags],
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def code_version() -> dict[str, Any] | None:
    """The git commit of the package's checkout and whether its code or configs have changes
    not committed (None outside a git checkout): which code made a result."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root,
                                capture_output=True, text=True, timeout=30)
        status = subprocess.run(["git", "status", "--porcelain", "--", "seq2seq", "configs"],
                                cwd=root, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if commit.returncode or status.returncode:
        return None
    return {"commit": commit.stdout.strip(), "modified": bool(status.stdout.strip())}


def collect_job(prog: Progression, job: Job, rd: RunDir, evaluations: list[dict[str, Any]],
                quick: bool, attention: list[dict[str, Any]] | None = None,
                code: dict[str, Any] | None = None) -> Path:
    """Copy the job's small results into its report directory, with ``attention.json``
    (:func:`attention_samples`), and write ``result.json`` (``code``: :func:`code_version` of
    the sweep that finished the job, taken when it started)."""
    out = prog.reports / job.id
    out.mkdir(parents=True, exist_ok=True)
    for f in rd.small_files():
        shutil.copyfile(f, out / f.name)
    if attention is not None:
        write_text_atomic(out / ATTENTION_FILE, json.dumps(attention) + "\n")
    summary = rd.read_summary() or {}
    valid = rd.records("valid")
    result = {
        "job": job.id, "step": job.step.name, "label": job.step.label, "year": job.step.year,
        "paper": job.step.paper, "attention": job.step.attention, "direction": job.direction,
        "seed": job.seed, "quick": quick, "parameters": summary.get("parameters"),
        "updates": summary.get("updates"),
        "train_minutes": round(summary.get("train_s", 0) / 60, 2),
        "tokens_per_s": summary.get("tokens_per_s"), "precision": summary.get("precision"),
        "device": summary.get("device"),
        "best_valid_bleu": max((r["bleu"] for r in valid if r.get("bleu") is not None),
                               default=None),
        "evaluations": evaluations, "machine": machine(), "code": code,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    write_text_atomic(out / "result.json", json.dumps(result, indent=1) + "\n")
    return out


def seconds_per_update(cfg: Config, n: int = 3) -> float:
    """Seconds a training update of ``cfg`` takes here: the mean of ``n`` updates after one
    warm-up, through the trainer's own step (its dropout masks drawn as training draws them),
    in a scratch run directory."""
    from seq2seq import dropout
    from seq2seq.training import Trainer

    with tempfile.TemporaryDirectory() as tmp, dropout.masks(cfg.train.dropout_masks):
        cfg = dataclasses.replace(cfg, run_dir=str(Path(tmp) / "run"))
        tr = Trainer(cfg, overwrite=True, progress=False)
        order = tr.data.batches.epoch(1)
        tr._step([order[0]])
        start = time.perf_counter()
        for idx in order[1 : n + 1]:
            tr._step([idx])
        return (time.perf_counter() - start) / max(1, min(n, len(order) - 1))


def run_progression(prog: Progression, only: str | None = None, quick: bool = False,
                    device: str = "auto", extra: list[str] | None = None,
                    progress: bool = True, readme: Path | None = None,
                    job_id: str | None = None) -> Path:
    """Run every job that is not done (train or continue, evaluate, collect), in order, and
    rebuild the report (and the table in ``readme``) after each; returns the report.
    ``job_id``: that job alone, without the report (what :func:`run_parallel` runs; the
    process that started it writes the report once every job has ended)."""
    from seq2seq.progression_report import update_readme, write_progression_report

    def write_report() -> Path:
        report = write_progression_report(prog)
        if readme is not None:
            update_readme(prog, readme)
        return report

    extra = list(extra or [])
    if device != "auto":
        extra.append(f"train.device={device}")
    code = code_version()  # the code this process runs, before anyone edits the checkout
    jobs = prog.jobs(only)
    if job_id is not None:
        jobs = [job for job in jobs if job.id == job_id]
        if not jobs:
            raise ConfigError(f"--job {job_id}: no such job in {prog.path} (jobs: "
                               f"{', '.join(j.id for j in prog.jobs(only))})")
    for job in jobs:
        cfg = job_config(prog, job, quick, extra)
        stale = stale_result(prog, job, cfg)
        if stale == []:
            _add_attention(prog, job, cfg, device)
            continue
        if stale:  # nothing of the old result stays beside the new one (git keeps it)
            print(f"reproduce: {job.id}: its kept result came from another config "
                  f"({'; '.join(stale[:3])}{'; ...' if len(stale) > 3 else ''})", flush=True)
            shutil.rmtree(prog.reports / job.id)
        updates = QUICK_UPDATES if quick else job.step.updates
        print(f"reproduce: {job.id} ({job.step.label}, {updates:,} updates)", flush=True)
        rd = train_job(prog, job, quick, extra, progress)
        collect_job(prog, job, rd, evaluate_job(rd, device, cfg.data), quick,
                    attention_samples(rd, device, cfg.data), code)
        if job_id is None:
            write_report()
    return prog.reports / job_id if job_id is not None else write_report()


def pending_jobs(prog: Progression, only: str | None, quick: bool, extra: list[str]
                 ) -> list[tuple[Job, Config]]:
    """The jobs that are not done (to train, continue or train again), with their configs."""
    configs = [(job, job_config(prog, job, quick, extra)) for job in prog.jobs(only)]
    return [(job, cfg) for job, cfg in configs if stale_result(prog, job, cfg) != []]


def add_missing_attention(prog: Progression, only: str | None, quick: bool, extra: list[str],
                          device: str) -> None:
    """What :func:`run_progression` does for finished jobs: the attention samples of a job
    finished before they were kept, from its run."""
    for job in prog.jobs(only):
        cfg = job_config(prog, job, quick, extra)
        if stale_result(prog, job, cfg) == []:
            _add_attention(prog, job, cfg, device)


def run_parallel(jobs: list[Job], command: Callable[[Job], list[str]], n: int, logs: Path,
                 env: dict[str, str] | None = None) -> list[str]:
    """Run every job as its own process, ``command(job)`` (with ``env``), ``n`` at a time, each
    appending its output to ``logs/JOB.log``; returns one line per job that failed. The jobs
    share the data, token and SentencePiece caches, which their processes build under a lock.
    The first SIGINT or SIGTERM is passed on, once, to the running jobs, which save their
    checkpoints and end; no new job starts, and :class:`Interrupted` says how to go on. A
    second signal stops them at once. Should this process fail, the jobs are stopped too."""
    from seq2seq.errors import Interrupted
    from seq2seq.interrupts import StopSignals

    logs.mkdir(parents=True, exist_ok=True)
    waiting, running, failed = list(jobs), {}, []
    with StopSignals() as stop:
        try:
            _supervise(waiting, running, failed, command, n, logs, env, stop)
        except BaseException as e:  # a second signal, or this process failing
            for sig in HANDLED_SIGNALS:  # no third signal interrupts the stopping below
                signal.signal(sig, signal.SIG_IGN)
            _stop_all(running, stop.received or signal.SIGINT)
            if isinstance(e, KeyboardInterrupt):
                raise Interrupted("reproduce: stopped at once; each job's last saved "
                                  "checkpoint stays: run the same command to go on",
                                  stop.received or signal.SIGINT) from None
            raise
        if stop.received is not None:
            raise Interrupted(f"reproduce: stopped on {stop.name}; the jobs that were running "
                              "kept their checkpoints: run the same command to go on",
                              stop.received)
    return failed


def _stop_all(running: dict[str, Any], sig: int, grace: float = 30.0) -> None:
    """Signal every running job, wait up to ``grace`` seconds for each, then kill it."""
    for proc, _, _ in running.values():
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)
    for proc, log, _ in running.values():
        try:
            if proc is not None:
                proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    running.clear()


def _supervise(waiting: list[Job], running: dict[str, Any], failed: list[str],
               command: Callable[[Job], list[str]], n: int, logs: Path,
               env: dict[str, str] | None, stop: Any) -> None:
    """:func:`run_parallel`'s loop: start jobs while fewer than ``n`` run, pass a stop signal
    on, collect the ended ones."""
    forwarded = False
    while waiting or running:
        while waiting and len(running) < n and stop.received is None:
            job = waiting.pop(0)
            cmd = command(job)
            log = open(logs / f"{job.id}.log", "a", encoding="utf-8")  # noqa: SIM115
            log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n")
            log.flush()
            running[job.id] = (None, log, time.perf_counter())  # closed if Popen fails
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True)  # signals come from here alone
            running[job.id] = (proc, log, time.perf_counter())
            print(f"reproduce: {job.id} started (log: {log.name})", flush=True)
        if stop.received is not None and not forwarded:  # once: a second one stops at once
            for proc, _, _ in running.values():
                if proc.poll() is None:
                    proc.send_signal(stop.received)
            waiting.clear()
            forwarded = True
        time.sleep(0.2)
        for job_id, (proc, log, t0) in list(running.items()):
            if proc.poll() is None:
                continue
            log.close()
            del running[job_id]
            minutes = (time.perf_counter() - t0) / 60
            code = proc.returncode
            if code == 0:
                print(f"reproduce: {job_id} done in {minutes:.1f} min", flush=True)
            elif forwarded and code == 128 + stop.received:  # stopped as asked, checkpoint kept
                print(f"reproduce: {job_id} stopped ({_last_line(Path(log.name))})", flush=True)
            else:
                how = (f"killed by {signal.Signals(-code).name}" if code < 0
                       else f"exit status {code}")
                last = _last_line(Path(log.name))
                failed.append(f"{job_id}: {how}" + (f": {last}" if last else "")
                              + f" (log: {log.name})")
                print(f"reproduce: {failed[-1]}", flush=True)


def _last_line(path: Path) -> str:
    """The last non-empty line of a log (progress bars' carriage returns split lines too)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    lines = [ln.strip() for ln in text.replace("\r", "\n").splitlines() if ln.strip()]
    return one_line(lines[-1]) if lines else ""


def _add_attention(prog: Progression, job: Job, cfg: Config, device: str) -> None:
    """A job finished before its attention samples were kept gets them from its run, while
    the run's checkpoint is still there (and came from the job's config)."""
    out = prog.reports / job.id / ATTENTION_FILE
    rd = RunDir(prog.runs / job.id)
    if not out.is_file() and rd.best.is_file() and not run_differences(rd, cfg):
        write_text_atomic(out, json.dumps(attention_samples(rd, device, cfg.data)) + "\n")


SCORES = ("bleu", "bleu_13a_lc", "chrf")  # what --verify compares, per evaluation


def verify_step(prog: Progression, name: str, quick: bool = False, device: str = "auto",
                extra: list[str] | None = None, progress: bool = True) -> tuple[bool, list[str]]:
    """Train the finished jobs of step ``name`` again from scratch (into ``RUNS/verify/JOB``),
    evaluate them alike and compare every score with the kept ``result.json``: (all equal,
    a line per job and any score that differs). Equal is expected on a machine of the kind
    and precision the result names; another CPU kind or thread count may round otherwise."""
    from seq2seq.training import train

    extra = list(extra or []) + ([f"train.device={device}"] if device != "auto" else [])
    ok, lines = True, []
    for job in prog.jobs(name, flag="--verify"):
        kept = prog.reports / job.id / "result.json"
        if not kept.is_file():
            ok = False
            lines.append(f"  not done {job.id}: no result to compare with (run it first)")
            continue
        before = json.loads(kept.read_text(encoding="utf-8"))
        cfg = dataclasses.replace(job_config(prog, job, quick, extra),
                                  run_dir=str(prog.runs / "verify" / job.id))
        print(f"verify: {job.id}: training again into {cfg.run_dir}", flush=True)
        train(cfg, overwrite=True, progress=progress)
        after = {(e["split"], e["beam"]): e
                 for e in evaluate_job(RunDir(cfg.run_dir), device, cfg.data)}
        then = {(e["split"], e["beam"]): e for e in before["evaluations"]}
        diffs = [f"{split} beam {beam}: not in the kept result" for split, beam in after
                 if (split, beam) not in then]
        diffs += [f"{split} beam {beam} {k}: {then[split, beam][k]} then, {e[k]} now"
                  for (split, beam), e in after.items() if (split, beam) in then
                  for k in SCORES if e[k] != then[split, beam][k]]
        if before.get("quick", False) != quick:
            diffs.append(f"the kept result is {'' if before.get('quick') else 'not '}--quick")
        ok = ok and not diffs
        lines.append(f"  {'same' if not diffs else 'DIFFERS'}  {job.id}: "
                     f"{len(after) * len(SCORES)} scores compared")
        lines += [f"    {d}" for d in diffs]
        here, kept_on = machine(), before["machine"]
        if diffs and (here["cpu_flags"], here["threads"]) != (kept_on["cpu_flags"],
                                                              kept_on["threads"]):
            lines.append(f"    (kept from {kept_on['cpu']} {kept_on['cpu_flags']}, "
                         f"{kept_on['threads']} threads; here {here['cpu']} "
                         f"{here['cpu_flags']}, {here['threads']} threads)")
    return ok, lines


def plan_lines(prog: Progression, only: str | None = None, quick: bool = False,
               extra: list[str] | None = None) -> list[str]:
    """What is done and what is left, with the training time left estimated from a timing of
    each step's updates on this machine (3 updates after a warm-up)."""
    lines, total, timed = [], 0.0, {}
    for job in prog.jobs(only):
        cfg = job_config(prog, job, quick, extra)
        rd = RunDir(cfg.run_dir)
        stale = stale_result(prog, job, cfg)
        if stale == []:
            lines.append(f"  done     {job.id}")
            continue
        # a result or run made with another config is done again from the start
        redo = bool(stale) or bool(run_differences(rd, cfg))
        at = max((r["update"] for r in rd.records("train")), default=0) \
            if rd.last.is_file() and not redo else 0
        key = (job.step.name, job.direction)
        if key not in timed:
            timed[key] = seconds_per_update(cfg)
        left = (cfg.train.max_updates - at) * timed[key]
        total += left
        state = "stale" if redo else f"at update {at:,}" if at else "to do"
        lines.append(f"  {state:<8} {job.id}: {cfg.train.max_updates - at:,} updates x "
                     f"{timed[key]:.2f} s = {left / 60:.0f} min")
    lines.append(f"training left: about {total / 3600:.1f} h on this machine, plus evaluation "
                 "(validation, test greedy and beam 5) of each run")
    return lines
