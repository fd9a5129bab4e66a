"""``seq2seq report RUN...``: runs side by side in one Markdown table, a bar chart of test BLEU
and learning curves, from what each run directory already holds (``train_summary.json``,
``metrics.jsonl``, ``eval_*.json``); nothing is recomputed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from seq2seq.choices import ARCHITECTURES
from seq2seq.data import split_name
from seq2seq.errors import Seq2SeqError
from seq2seq.run import RunDir


def describe(cfg) -> tuple[str, str]:
    """(model family, attention) in words, from a run's config."""
    return ARCHITECTURES.get(cfg.model.arch).describe(cfg.model)


def collect(run: Path, split: str = "test") -> dict[str, Any]:
    """One row of the report: what ``run`` holds about its training and its evaluation."""
    rd = RunDir(run).require()
    summary = rd.read_summary()
    if summary is None:
        raise Seq2SeqError(f"{rd.path}: no train_summary.json (is the training finished?)")
    cfg = rd.read_config()
    valid = rd.records("valid")
    family, attention = describe(cfg)
    ev = rd.evaluation(split_name(cfg.data, split))
    best_bleu = max((r["bleu"] for r in valid if r.get("bleu") is not None), default=None)
    search = signature = None
    if ev:
        beam = ev["search"].get("beam_size", 1)  # reports of older versions: greedy only
        search = "greedy" if beam == 1 else f"beam {beam}"
        signature = ev["bleu"]["signature"]
        if not signature.startswith("BLEU|"):  # older versions left out the metric's name
            signature = "BLEU|" + signature
    return {
        "name": rd.path.name, "family": family, "attention": attention,
        "parameters": summary["parameters"], "updates": summary["updates"],
        "train_min": summary["train_s"] / 60, "tokens_per_s": summary["tokens_per_s"],
        "best_valid_bleu": best_bleu, "valid": valid,
        "test_bleu": ev["bleu"]["score"] if ev else None,
        "test_chrf": ev["chrf"]["score"] if ev else None,
        "search": search, "signature": signature,
    }


def markdown_table(rows: list[dict[str, Any]], split: str) -> str:
    def num(v, fmt):
        return "–" if v is None else format(v, fmt)

    head = (f"| run | model | attention | parameters | updates | train min | tokens/s | "
            f"best valid BLEU | {split} BLEU | {split} chrF | search |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['family']} | {r['attention']} | {r['parameters']:,} | "
            f"{r['updates']:,} | {r['train_min']:.1f} | {r['tokens_per_s']:,} | "
            f"{num(r['best_valid_bleu'], '.2f')} | {num(r['test_bleu'], '.2f')} | "
            f"{num(r['test_chrf'], '.2f')} | {r['search'] or '–'} |")
    signatures = sorted({r["signature"] for r in rows if r["signature"]})
    if signatures:
        lines += ["", "BLEU signature" + ("s" if len(signatures) > 1 else "") + ": "
                  + ", ".join(f"`{s}`" for s in signatures)]
    missing = [r["name"] for r in rows if r["test_bleu"] is None]
    if missing:
        lines += ["", f"Not evaluated on {split} (run `seq2seq eval --run RUN --split {split}`): "
                  + ", ".join(missing)]
    return "\n".join(lines) + "\n"


def write_report(runs: list[Path], output: Path, split: str = "test") -> Path:
    """Write ``report.md``, ``bleu.png`` and ``curves.png`` into ``output``; returns the
    Markdown file."""
    from seq2seq.plotting import bar_chart, learning_curves

    if not runs:
        raise Seq2SeqError("give at least one run directory")
    rows = [collect(Path(r), split) for r in runs]
    names = [r["name"] for r in rows]
    if len(set(names)) < len(names):  # runs/a/x and runs/b/x: tell them apart
        for r, run in zip(rows, runs):
            r["name"] = f"{Path(run).parent.name}/{Path(run).name}"
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    md = ["# Run comparison", "", markdown_table(rows, split)]
    scored = [r for r in rows if r["test_bleu"] is not None]
    if scored:
        bar_chart([r["name"] for r in scored], [r["test_bleu"] for r in scored],
                  f"{split} BLEU", output / "bleu.png", title=f"sacreBLEU on {split}")
        md += ["![BLEU](bleu.png)", ""]
    learning_curves({r["name"]: r["valid"] for r in rows}, output / "curves.png")
    md += ["![learning curves](curves.png)", ""]
    path = output / "report.md"
    path.write_text("\n".join(md), encoding="utf-8")
    return path
