"""The command line: parses arguments and calls the library. No training or decoding logic here."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from seq2seq.errors import Seq2SeqError

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


@app.command()
def train(
    config: Annotated[Path, typer.Option("--config", help="YAML configuration file.")],
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", "-s", metavar="KEY=VALUE",
                     help="Override a config value, e.g. --set model.hidden_size=512 "
                     "(repeatable; validated like the file)."),
    ] = None,
    run_dir: Annotated[
        Path | None, typer.Option("--run-dir", help="Where to write the run (default: runs/NAME).")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing run in the run directory "
                           "(everything in that directory is deleted first).")
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Train a model; writes config, vocabulary, checkpoints and metrics into the run directory."""
    from seq2seq.config import load_config
    from seq2seq.training import train as train_fn

    cfg = load_config(config, list(set_ or []))
    if run_dir is not None:
        cfg.run_dir = str(run_dir)
    train_fn(cfg, overwrite=overwrite, progress=progress)


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
    hard_attention: HardOpt = None,
    device: DeviceOpt = "auto",
) -> None:
    """Translate a split (or --src/--ref files) and report sacreBLEU BLEU and chrF with their
    signatures; writes eval_NAME.json and hyps_NAME.txt into the run directory."""
    from seq2seq.evaluate import evaluate as evaluate_fn

    if (src is None) != (ref is None):
        raise Seq2SeqError("--src and --ref go together")
    report = evaluate_fn(run, split=split, src_file=src, ref_file=ref, checkpoint=checkpoint,
                         batch_size=batch_size, hard_attention=hard_attention, device=device)
    for name in ("bleu", "chrf"):
        typer.echo(report[name]["text"])


@app.command()
def translate(
    run: RunOpt,
    checkpoint: CheckpointOpt = "best",
    batch_size: BatchOpt = None,
    hard_attention: HardOpt = None,
    device: DeviceOpt = "auto",
) -> None:
    """Translate standard input, one sentence a line, to standard output in the same order.

    Lines are batched while input is waiting and answered at once when it is not, so the
    command suits both pipes and interactive use. An empty line gives an empty line; a line
    that is not UTF-8 gives an empty line and a warning on standard error."""
    from seq2seq.inference import Translator, with_overrides
    from seq2seq.streaming import translate_stream

    tr = Translator.from_run(run, checkpoint=checkpoint, device=device)
    tr.config.decode = with_overrides(tr.config.decode, batch_size=batch_size,
                                      hard_attention=hard_attention)
    translate_stream(tr, sys.stdin.buffer, sys.stdout)


def main() -> None:
    try:
        app()
    except Seq2SeqError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
