"""Train and evaluate several configs one after another and print a Markdown table.

    python scripts/reproduce.py configs/multi30k/*.yaml                 # as configured
    python scripts/reproduce.py --updates 1000 --out runs/budget1000 configs/multi30k/*.yaml

Each config is trained into OUT/NAME (skipped when OUT/NAME/train_summary.json exists, so an
interrupted sweep resumes with the next config), evaluated on the test split with greedy search,
and summarised as one row: parameters, updates, wall time, tokens/s (overall, and the median of
the logged 10-update windows, which a few windows slowed by other work on the machine do not
move), the last and the best
validation BLEU, test BLEU and chrF. The table is also written to OUT/results.md and the rows to
OUT/results.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from seq2seq.data import split_name  # noqa: E402
from seq2seq.run import RunDir  # noqa: E402


def run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def row(run_dir: Path) -> dict:
    run = RunDir(run_dir)
    summary = run.read_summary()
    valid = run.records("valid")
    # the median of the per-window rates is robust to a few windows slowed by other work
    windows = [r["tokens_per_s"] for r in run.records("train")]
    cfg = run.read_config()
    test = run.evaluation(split_name(cfg.data, "test"), greedy_only=True)
    if summary is None or test is None:
        raise SystemExit(f"{run_dir}: no train_summary.json or greedy test evaluation")
    return {
        "name": summary["name"], "parameters": summary["parameters"],
        "updates": summary["updates"], "wall_min": round(summary["wall_s"] / 60, 1),
        "tokens_per_s": summary["tokens_per_s"],
        "tokens_per_s_median": round(statistics.median(windows)) if windows else None,
        "valid_bleu_last": valid[-1].get("bleu"),
        "valid_bleu_best": max((r.get("bleu") or 0) for r in valid),
        "test_bleu": test["bleu"]["score"], "test_chrf": test["chrf"]["score"],
        "signature": test["bleu"]["signature"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("configs", nargs="+", type=Path)
    ap.add_argument("--updates", type=int, help="override train.max_updates")
    ap.add_argument("--out", type=Path, default=Path("runs"))
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="extra --set KEY=VALUE passed to every training")
    args = ap.parse_args()
    rows = []
    for config in args.configs:
        run_dir = args.out / config.stem
        if RunDir(run_dir).read_summary() is None:
            cmd = [sys.executable, "-m", "seq2seq", "train", "--config", str(config),
                   "--run-dir", str(run_dir), "--no-progress", "--overwrite"]
            if args.updates:
                cmd += ["--set", f"train.max_updates={args.updates}",
                        "--set", "train.max_minutes=null"]
            for o in args.overrides:
                cmd += ["--set", o]
            run(cmd)
        cfg = RunDir(run_dir).read_config()
        if RunDir(run_dir).evaluation(split_name(cfg.data, "test"), greedy_only=True) is None:
            run([sys.executable, "-m", "seq2seq", "eval", "--run", str(run_dir), "--split", "test"])
        rows.append(row(run_dir))
    cols = ["name", "parameters", "updates", "wall_min", "tokens_per_s", "tokens_per_s_median",
            "valid_bleu_last",
            "valid_bleu_best", "test_bleu", "test_chrf"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(f"{r[c]:,}" if isinstance(r[c], int) else str(r[c])
                                for c in cols) + " |" for r in rows]
    lines.append(f"\nBLEU signature: {rows[0]['signature']}" if rows else "")
    table = "\n".join(lines)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(table + "\n")
    (args.out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
