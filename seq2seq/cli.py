"""The command line: parses arguments and calls the library. No training or decoding logic here."""

from __future__ import annotations

import atexit
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from seq2seq.choices import LENGTH_PENALTIES
from seq2seq.errors import ConfigError, Interrupted, Seq2SeqError, one_line

if TYPE_CHECKING:
    from seq2seq.inference import Translator

app = typer.Typer(
    help="Train, evaluate and use neural machine translation models, from the RNN "
    "encoder-decoder to the Transformer.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

RunOpt = Annotated[Path, typer.Option("--run", "-r", help="Run directory written by `train`.")]
CheckpointOpt = Annotated[
    str, typer.Option("--checkpoint", "-c", help="Checkpoint: best, last, or a file path.")
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (CUDA when present), cpu or cuda.")]
HardOpt = Annotated[
    bool | None, typer.Option("--hard-attention/--soft-attention", show_default=False,
                              help="Attend only to the argmax source position at inference, or "
                              "softly as in training (default: the run's decode.hard_attention).")
]
BatchOpt = Annotated[
    int | None, typer.Option("--batch-size", "-b", min=1,
                             help="Sentences per decoding batch (default: the run's config).")
]


BeamOpt = Annotated[
    int | None, typer.Option("--beam", "-k", min=1,
                             help="Beam size; 1 is greedy search (default: decode.beam_size).")
]
AlphaOpt = Annotated[
    float | None, typer.Option("--alpha", min=0.0,
                               help="GNMT length-penalty exponent (default: decode.alpha).")
]
PenaltyOpt = Annotated[
    str | None, typer.Option("--length-penalty",
                             help="Ranking of finished hypotheses: "
                             f"{', '.join(LENGTH_PENALTIES.names())} "
                             "(default: decode.length_penalty).")
]
NBestOpt = Annotated[
    int | None, typer.Option("--n-best", min=1,
                             help="Hypotheses per sentence (raises --beam to at least this).")
]

WorkersOpt = Annotated[
    int | None, typer.Option("--workers", min=0,
                             help="Batches decoded at once on the CPU, sharing torch's "
                             "threads (0: two; 1: one batch on all threads; default: "
                             "decode.workers); on Linux forked processes where each gets "
                             "one thread, else threads.")
]
QuantizeOpt = Annotated[
    str, typer.Option("--quantize", help="none; int8: the linear layers in 8-bit integer "
                      "arithmetic on the CPU; bf16: their products in bfloat16, for CPUs "
                      "with bf16 arithmetic (faster; BLEU changes slightly, see "
                      "docs/performance.md).")
]

PackOpt = Annotated[
    bool, typer.Option("--pack/--no-pack", help="On the CPU without --quantize (fp32): "
                       "weights packed once for oneDNN (every linear layer on an AVX-512 CPU, "
                       "the output layer elsewhere; faster, the same results to float "
                       "rounding), or F.linear as in training.")
]


def _translator(run: Path, checkpoint: str, device: str, batch_size: int | None,
                beam: int | None, alpha: float | None, length_penalty: str | None,
                n_best: int | None, hard_attention: bool | None, quantize: str = "none",
                workers: int | None = None, pack: bool = True) -> Translator:
    """Load the run's translator with its search options: the run's decode config with the
    command line's options that were given (None = the run's value), validated."""
    from seq2seq.inference import Translator
    from seq2seq.runtime import keep_freed_memory

    keep_freed_memory()  # a decoding process: large blocks reused, not mapped anew every step
    tr = Translator.from_run(run, checkpoint=checkpoint, device=device, quantize=quantize,
                             pack=pack)
    tr.processes = True  # batches decoded at once by forked workers (seq2seq.forked)
    if n_best is None and beam is not None:  # a narrower beam than the run's n-best list
        n_best = min(tr.config.decode.n_best, beam)
    tr.decode = tr.config.decode.override(
        batch_size=batch_size, beam_size=beam, alpha=alpha, length_penalty=length_penalty,
        n_best=n_best, hard_attention=hard_attention, workers=workers)
    return tr


@app.command()
def train(
    config: Annotated[
        Path | None, typer.Option("--config", help="YAML configuration file.")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", "-s", metavar="KEY=VALUE",
                     help="Override a config value, e.g. --set model.hidden_size=512 "
                     "(repeatable; validated like the file)."),
    ] = None,
    run_dir: Annotated[
        Path | None, typer.Option("--run-dir", help="Where to write the run (default: runs/NAME).")
    ] = None,
    resume: Annotated[
        Path | None, typer.Option("--resume", help="Continue the run in this directory from its "
                                  "last.pt: weights, optimizer, schedule, random states and data "
                                  "position. --set changes its config (e.g. "
                                  "train.max_updates).")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing run in the run directory "
                           "(everything in that directory is deleted first).")
    ] = False,
    nproc: Annotated[
        int, typer.Option("--nproc", min=1, help="Train with this many processes "
                          "(DistributedDataParallel through torchrun; gloo on CPU, nccl on "
                          "GPUs).")
    ] = 1,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Train a model; writes config, vocabulary, checkpoints and metrics into the run directory.

    Ctrl-C (or SIGTERM) saves a resumable last.pt after the current update and prints the
    --resume command; a second Ctrl-C stops at once."""
    from seq2seq.config import load_config
    from seq2seq.run import RunDir
    from seq2seq.training import train as train_fn

    if (config is None) == (resume is None):
        raise Seq2SeqError("give --config FILE to start a run or --resume RUN_DIR to continue one")
    if resume is not None and not RunDir(resume).last.is_file():
        raise Seq2SeqError(f"--resume: {resume} is not a run directory with a last.pt")
    if nproc > 1:
        _torchrun(nproc)
        return
    if resume is not None:
        if run_dir is not None or overwrite:
            raise Seq2SeqError("--resume continues a run in place; drop --run-dir/--overwrite")
        cfg = RunDir(resume).read_config(list(set_ or []))
        cfg.run_dir = str(resume)
    else:
        cfg = load_config(config, list(set_ or []))
        if run_dir is not None:
            cfg.run_dir = str(run_dir)
    try:
        train_fn(cfg, overwrite=overwrite, progress=progress, resume=resume is not None)
    except KeyboardInterrupt:  # a second Ctrl-C: no checkpoint was saved now
        raise Interrupted(f"stopped at once; {RunDir.of(cfg).last} holds the last saved state",
                          signal.SIGINT) from None


def _torchrun(nproc: int) -> None:
    """Re-run this command under torchrun with ``nproc`` processes (without --nproc)."""
    import subprocess

    args, skip = [], False
    for a in sys.argv[1:]:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            args.append(a)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={nproc}", "-m", "seq2seq", *args]
    code = subprocess.call(cmd)
    if code:
        raise Seq2SeqError(f"distributed training failed (exit status {code})")


@app.command("eval")
def evaluate(
    run: RunOpt,
    split: Annotated[
        str, typer.Option("--split", help="train, valid or test (mapped through the config's "
                          "data.splits), or a split name of the data source.")
    ] = "test",
    src: Annotated[
        Path | None, typer.Option("--src", help="Source file to translate instead of a split.")
    ] = None,
    ref: Annotated[Path | None, typer.Option("--ref", help="Reference file for --src.")] = None,
    checkpoint: CheckpointOpt = "best",
    batch_size: BatchOpt = None,
    beam: BeamOpt = None,
    alpha: AlphaOpt = None,
    length_penalty: PenaltyOpt = None,
    n_best: NBestOpt = None,
    hard_attention: HardOpt = None,
    lowercase: Annotated[
        bool, typer.Option("--lowercase", help="Case-insensitive BLEU and chrF (case:lc in the "
                           "signature).")
    ] = False,
    tokenize: Annotated[
        str, typer.Option("--tokenize", help="sacreBLEU tokenizer for BLEU: 13a, intl, char, "
                          "none, zh, ... (tok: in the signature).")
    ] = "13a",
    quantize: QuantizeOpt = "none",
    pack: PackOpt = True,
    workers: WorkersOpt = None,
    device: DeviceOpt = "auto",
) -> None:
    """Translate a split (or --src/--ref files) and report sacreBLEU BLEU, chrF and TER with
    their signatures; writes eval_NAME.json, eval_NAME.md and hyps_NAME.txt (nbest_NAME.txt
    with --n-best) into the run directory."""
    from seq2seq.evaluate import evaluate_translator

    if (src is None) != (ref is None):
        raise Seq2SeqError("--src and --ref go together")
    tr = _translator(run, checkpoint, device, batch_size, beam, alpha, length_penalty, n_best,
                     hard_attention, quantize, workers, pack)
    report = evaluate_translator(tr, split=split, src_file=src, ref_file=ref,
                                 lowercase=lowercase, tokenize=tokenize)
    for name in ("bleu", "chrf", "ter"):
        typer.echo(report[name]["text"])


@app.command()
def translate(
    run: RunOpt,
    checkpoint: CheckpointOpt = "best",
    batch_size: BatchOpt = None,
    beam: BeamOpt = None,
    alpha: AlphaOpt = None,
    length_penalty: PenaltyOpt = None,
    n_best: NBestOpt = None,
    hard_attention: HardOpt = None,
    plot_attention: Annotated[
        Path | None, typer.Option("--plot-attention", help="Write a heatmap of the attention "
                                  "of every sentence into this directory (NNNNN.png).")
    ] = None,
    head: Annotated[
        int | None, typer.Option("--head", min=1, help="With --plot-attention on a multi-head "
                                 "model: plot this head (from 1) instead of the heads' mean.")
    ] = None,
    quantize: QuantizeOpt = "none",
    pack: PackOpt = True,
    workers: WorkersOpt = None,
    device: DeviceOpt = "auto",
) -> None:
    """Translate standard input, one sentence a line, to standard output in the same order.

    Lines are batched while input is waiting and answered at once when it is not, so the
    command suits both pipes and interactive use. An empty line gives an empty line; a line
    that is not UTF-8 gives an empty line and a warning on standard error; a line longer than
    decode.max_input_len subwords (by default data.max_len) is cut, with a warning naming it.
    With --n-best N (or the run's decode.n_best) above 1 every input line gives exactly N
    lines SCORE<TAB>TRANSLATION, best first (empty fields for an empty input line)."""
    from seq2seq.streaming import translate_stream

    tr = _translator(run, checkpoint, device, batch_size, beam, alpha, length_penalty, n_best,
                     hard_attention, quantize, workers, pack)
    plotter = None
    if plot_attention is not None:
        from seq2seq.plotting import AttentionPlotter

        plotter = AttentionPlotter(tr, plot_attention, head=head)
    # the n-best format follows the search's n_best, as eval's n-best file does: --n-best, or
    # the run's decode.n_best when the flag is not given
    n = tr.decode.n_best
    translate_stream(tr, _stdin_reader(), sys.stdout, n_best=n if n > 1 else None,
                     plotter=plotter)


def _stdin_reader():
    """Standard input through a file object of its own (a duplicate of descriptor 0), not
    ``sys.stdin.buffer``: the streaming reader thread waits inside its reader's lock, and a
    decoding worker forked meanwhile starts by closing ``sys.stdin`` (multiprocessing does),
    which would wait for that lock for ever."""
    if sys.stdin is None:  # started with descriptor 0 closed
        raise ConfigError("translate: there is no standard input to read")
    try:
        return open(os.dup(sys.stdin.fileno()), "rb")
    except (OSError, ValueError) as e:  # closed, or not a file
        raise ConfigError(f"translate: cannot read standard input ({one_line(e)})") from None


@app.command()
def average(
    checkpoints: Annotated[
        list[Path] | None, typer.Argument(help="Checkpoint files to average.", show_default=False)
    ] = None,
    run: Annotated[
        Path | None, typer.Option("--run", "-r", help="Pick the checkpoints from this run's "
                                  "ckpt_*.pt (kept by train.keep_last / keep_best).")
    ] = None,
    last: Annotated[int | None, typer.Option("--last", min=1, help="The N latest.")] = None,
    best: Annotated[int | None, typer.Option("--best", min=1, help="The N best-scoring.")] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Where to write the average "
                                  "(default: RUN/averaged.pt).")
    ] = None,
) -> None:
    """Average the weights of several checkpoints of one model into a new checkpoint, e.g.
    `seq2seq average --run runs/transformer --last 5`, then `seq2seq eval --run
    runs/transformer --checkpoint averaged.pt`."""
    from seq2seq.checkpoint import average_checkpoints
    from seq2seq.run import RunDir

    if run is not None:
        if checkpoints:
            raise Seq2SeqError("give checkpoint files or --run, not both")
        checkpoints = RunDir(run).require().pick_checkpoints(last=last, best=best)
        output = output or RunDir(run).averaged
    elif not checkpoints or output is None:
        raise Seq2SeqError("give --run RUN (with --last or --best), or checkpoint files and "
                           "--output")
    average_checkpoints(checkpoints, output)
    typer.echo(f"averaged {len(checkpoints)} checkpoints into {output}: "
               + ", ".join(p.name for p in checkpoints))


@app.command()
def report(
    runs: Annotated[list[Path], typer.Argument(help="Run directories to compare.")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Directory for report.md and the PNGs.")
    ] = Path("report"),
    split: Annotated[
        str, typer.Option("--split", help="Which evaluation to show: the data name of "
                          "eval_NAME.json without beam/hard suffix, or test/valid.")
    ] = "test",
) -> None:
    """Compare runs side by side: a Markdown table (model, attention, parameters, training
    time, tokens/s, best validation BLEU, test BLEU/chrF with signature), a bar chart of test
    BLEU and learning curves (validation BLEU against time and against updates)."""
    from seq2seq.report import write_report

    path = write_report(runs, output, split=split)
    typer.echo(path.read_text(encoding="utf-8"))


@app.command()
def export(
    run: Annotated[Path, typer.Argument(help="Run directory written by `train` (a Transformer).",
                                        show_default=False)],
    out: Annotated[Path, typer.Argument(help="Directory to write the exported model into.",
                                        show_default=False)],
    fmt: Annotated[
        str, typer.Option("--format", help="ctranslate2: a CTranslate2 model directory "
                          "(ctranslate2.Translator(OUT)).")
    ] = "ctranslate2",
    checkpoint: CheckpointOpt = "best",
    quantization: Annotated[
        str, typer.Option("--quantization", help="CTranslate2 weight type: none (float32), int8, "
                          "int8_float32, int8_float16, int16, float16, ...")
    ] = "none",
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace OUT if it exists and is not empty.")
    ] = False,
) -> None:
    """Export a trained Transformer for serving, e.g. `seq2seq export --format ctranslate2
    runs/transformer ct2/`: weights, vocabularies and the SentencePiece models in one directory
    (OUT is written beside and renamed into place, so a failure leaves no part of it)."""
    from seq2seq.export import export_model, usage_hint

    path = export_model(run, out, fmt=fmt, checkpoint=checkpoint, quantization=quantization,
                        overwrite=overwrite)
    weights = "float32" if quantization == "none" else quantization
    typer.echo(f"exported {run} ({checkpoint}) to {path} ({fmt}, {weights} weights)")
    for line in usage_hint(path):
        typer.echo(line)


@app.command()
def reproduce(
    progression: Annotated[
        Path, typer.Argument(help="Progression file, e.g. configs/progression.yaml.",
                             show_default=False)
    ],
    plan: Annotated[
        bool, typer.Option("--plan", help="Print what is done and what is left, with the "
                           "training time left (timed here on 3 updates a step); train nothing.")
    ] = False,
    only: Annotated[
        str | None, typer.Option("--only", help="Run (or plan) this step only.")
    ] = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="The whole pipeline with tiny models, data and "
                           "budgets (about 20 s on a 2-core CPU), into --out (default "
                           "runs/progression-quick).")
    ] = False,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write runs, results and the report under this "
                                  "directory instead of the progression's.")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", "-s", help="KEY=VALUE for every run's config "
                                       "(e.g. data.path=...); repeatable.")
    ] = None,
    verify: Annotated[
        str | None, typer.Option("--verify", help="Train this finished step again from scratch "
                                 "and compare its scores with the kept results (exit status 1 "
                                 "if any differs).")
    ] = None,
    report_only: Annotated[
        bool, typer.Option("--report", help="Rebuild the report (and --readme) from the kept "
                           "results; train nothing.")
    ] = False,
    readme: Annotated[
        Path | None, typer.Option("--readme", help="Also write the short table into this file, "
                                  "between its '<!-- progression table: begin -->' and "
                                  "'<!-- progression table: end -->' lines (make reproduce: "
                                  "README.md).")
    ] = None,
    device: DeviceOpt = "auto",
    jobs: Annotated[
        int, typer.Option("--jobs", "-j", min=1, help="Train this many jobs at once, each in "
                          "its own process with its log in RUNS/logs/ (torch's threads shared "
                          "among them unless --set train.num_threads=N says otherwise); pays "
                          "on a GPU, which one small model leaves mostly idle.")
    ] = 1,
    job: Annotated[
        str | None, typer.Option("--job", hidden=True, help="Run this job (NAME.SRC-TGT.sSEED) "
                                 "alone and write no report: what --jobs starts.")
    ] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
) -> None:
    """Reproduce the history: train every step of PROGRESSION that is not done (a killed sweep
    continues with the run it was in), evaluate each the same way (validation; test greedy and
    beam 5; sacreBLEU cased, and 13a lowercased beside it), copy the small results under the
    progression's reports directory and rebuild its Markdown report."""
    from seq2seq.progression import load_progression
    from seq2seq.progression_report import check_readme, update_readme, write_progression_report
    from seq2seq.reproduce import plan_lines, run_progression, verify_step

    if quick and readme is not None:
        raise ConfigError("--readme: not with --quick, whose tiny runs say nothing about the "
                          "models")
    if jobs > 1 and (plan or verify is not None or report_only):
        raise ConfigError("--jobs: only for training (not with --plan, --verify or --report)")
    if quick and out is None:
        out = Path("runs/progression-quick")
    prog = load_progression(progression, out)
    if readme is not None:
        check_readme(readme)  # a README without the markers fails before any training
    if report_only:
        typer.echo(f"report: {write_progression_report(prog)}")
        if readme is not None:
            update_readme(prog, readme)
        return
    if plan:
        for line in plan_lines(prog, only, quick, list(set_ or [])):
            typer.echo(line)
        return
    if verify is not None:
        ok, lines = verify_step(prog, verify, quick, device, list(set_ or []), progress)
        for line in lines:
            typer.echo(line)
        if not ok:
            raise typer.Exit(1)
        return
    extra = list(set_ or [])
    if job is not None:
        run_progression(prog, only, quick, device, extra, progress=False, job_id=job)
        return
    if jobs > 1:
        try:
            failed = _reproduce_in_parallel(progression, prog, only, quick, out, extra, device,
                                            jobs)
        finally:  # stopped or failed too: the report shows every job that finished
            typer.echo(f"report: {write_progression_report(prog)}")
            if readme is not None:
                update_readme(prog, readme)
        if failed:
            raise Seq2SeqError(f"{len(failed)} job{'s' * (len(failed) > 1)} failed: "
                               f"{failed[0]}" + (
                f"; and {len(failed) - 1} more, their logs in {prog.runs / 'logs'}"
                if len(failed) > 1 else ""))
        return
    report = run_progression(prog, only, quick, device, extra, progress, readme)
    typer.echo(f"report: {report}")


def _reproduce_in_parallel(progression: Path, prog, only: str | None, quick: bool,
                           out: Path | None, extra: list[str], device: str, n: int
                           ) -> list[str]:
    """``reproduce --jobs N``: the jobs left, each as ``seq2seq reproduce ... --job ID`` in its
    own process, N at a time; returns a line per failed job (the caller writes the report).
    The data is fetched here first, once; each job gets an equal share of torch's threads
    unless ``--set train.num_threads=...`` says otherwise (on a CPU, results depend on the
    thread count: a job matches a run made one at a time on as many threads)."""
    import os
    import sys

    import torch

    from seq2seq.config import override_key
    from seq2seq.download import fetch_missing
    from seq2seq.reproduce import add_missing_attention, pending_jobs, run_parallel

    todo = pending_jobs(prog, only, quick, extra)
    for path, fetch in {(cfg.data.path, cfg.data.fetch) for _, cfg in todo}:
        fetch_missing(path, fetch)
    env = None
    if "train.num_threads" not in map(override_key, extra):
        share = max(1, torch.get_num_threads() // max(1, min(n, len(todo))))
        extra = [*extra, f"train.num_threads={share}"]
        env = {**os.environ, "OMP_NUM_THREADS": str(share)}  # evaluating alone, too
    base = [sys.executable, "-m", "seq2seq", "reproduce", str(progression), "--device", device,
            "--no-progress", *(["--quick"] if quick else []),
            *(["--out", str(out)] if out is not None else []),
            *(a for x in extra for a in ("--set", x))]
    failed = run_parallel([job for job, _ in todo], lambda j: [*base, "--job", j.id], n,
                          prog.runs / "logs", env)
    add_missing_attention(prog, only, quick, extra, device)
    return failed


@app.command()
def cache(
    clear: Annotated[
        bool, typer.Option("--clear", help="Delete the token cache and the cached SentencePiece "
                           "models (runs keep their own vocabularies).")
    ] = False,
) -> None:
    """Show the cache: the encoded training splits (tokens/) and SentencePiece models (spm/)
    under $SEQ2SEQ_CACHE (default ~/.cache/seq2seq); --clear deletes them."""
    from seq2seq.token_cache import cache_usage, clear_cache
    from seq2seq.vocab import cache_root

    root = cache_root()
    if clear:
        freed = clear_cache(root)
        typer.echo(f"cleared {root} ({freed / 1e6:,.1f} MB)")
        return
    for kind, entries, size in cache_usage(root):
        typer.echo(f"{root / kind}: {entries} entr{'y' if entries == 1 else 'ies'}, "
                   f"{size / 1e6:,.1f} MB")


def main() -> None:
    """The ``seq2seq`` entry point: run one command, print a library error as one line."""
    try:
        app()
        code: int | str | None = 0
    except SystemExit as e:
        code = e.code
    except Seq2SeqError as e:
        typer.echo(f"error: {e}", err=True)
        code = 2
    except Interrupted as e:
        typer.echo(str(e), err=True)
        code = e.exit_code
    end_process(code)


def end_process(code: int | str | None) -> NoReturn:
    """Exit as ``sys.exit(code)`` would, but without the interpreter's module teardown.

    Every file the commands write is closed (and checkpoints synced) before they return, the
    exit handlers still run and the standard streams are flushed; what is skipped is freeing
    the modules one by one, which takes about 0.4 s once torch is imported: a third of a
    one-sentence ``translate`` beyond ``import torch`` (docs/performance.md)."""
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # sys.exit("message"): printed, status 1
        print(code, file=sys.stderr)
        status = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can be written
            pass
    os._exit(status)


if __name__ == "__main__":
    main()
