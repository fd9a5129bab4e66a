"""Speed benchmarks: training throughput of configs and decoding speed of runs, as a table.

    python scripts/bench.py                                   # bahdanau config, 20 updates
    python scripts/bench.py --config configs/multi30k/bahdanau.yaml --updates 50
    python scripts/bench.py --config configs/multi30k/transformer.yaml --precision fp32,bf16
    python scripts/bench.py --run runs/bahdanau --sentences 1000   # decoding speed of a run
    python scripts/bench.py --run runs/transformer --beams 1,5 --batch-sizes 1,64

Training: source+target tokens per second and seconds per update over ``--updates`` updates after
``--warmup`` updates (real Multi30k batches, optimizer step included). Decoding: sentences and
output tokens per second on the test split, for several beam and batch sizes.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from seq2seq.batching import TrainBatches, make_batch  # noqa: E402
from seq2seq.config import load_config  # noqa: E402
from seq2seq.data import load_split, split_name  # noqa: E402
from seq2seq.inference import Translator, decode_ids  # noqa: E402
from seq2seq.models import build_model  # noqa: E402
from seq2seq.optim import build_optimizer  # noqa: E402
from seq2seq.runtime import autocast, resolve_precision, seed_everything  # noqa: E402
from seq2seq.training import batch_loss  # noqa: E402
from seq2seq.vocab import train_or_load  # noqa: E402


def bench_train(config: Path, updates: int, warmup: int, data: str | None,
                precision: str = "fp32") -> dict:
    overrides = [f"data.path={data}"] if data else []
    precision = resolve_precision(precision, torch.device("cpu"))
    overrides.append(f"train.precision={precision}")
    cfg = load_config(config, overrides)
    seed_everything(cfg.train.seed)
    ds = load_split(cfg.data, cfg.data.splits.train)
    sv, tv = train_or_load(cfg.vocab, ds["src"], ds["tgt"])
    src, tgt = sv.encode(ds["src"]), tv.encode(ds["tgt"])
    batches = TrainBatches(src, tgt, cfg.train.batch_tokens, cfg.train.seed).epoch(1)
    model = build_model(cfg.model, len(sv), len(tv))
    opt = build_optimizer(cfg.train, model)
    model.train()
    tokens, elapsed = 0, 0.0
    for i, idx in enumerate(batches[: warmup + updates]):
        b = make_batch([src[i] for i in idx], [tgt[i] for i in idx])
        t0 = time.perf_counter()
        with autocast(precision, torch.device("cpu")):
            loss = batch_loss(model, b) / b.n_tgt_tokens
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.clip_grad_norm)
        opt.step()
        if i >= warmup:
            elapsed += time.perf_counter() - t0
            tokens += b.n_src_tokens + b.n_tgt_tokens
    return {
        "config": config.name, "precision": precision, "params": model.num_parameters(),
        "updates": updates,
        "s/update": elapsed / updates, "tokens/s": tokens / elapsed,
    }


def bench_decode(run: Path, sentences: int, batch_sizes: list[int], beams: list[int]
                 ) -> list[dict]:
    tr = Translator.from_run(run)
    ds = load_split(tr.config.data, split_name(tr.config.data, "test"))
    src_ids = tr.src_vocab.encode(ds["src"][:sentences])
    rows = []
    for beam in beams:
        for bs in batch_sizes:
            decode = tr.config.decode.override(batch_size=bs, beam_size=beam, n_best=1)
            t0 = time.perf_counter()
            hyps = decode_ids(tr.model, src_ids, decode, tr.device)
            dt = time.perf_counter() - t0
            out_tokens = sum(len(h) + 1 for h in hyps)
            rows.append({"run": run.name, "beam": beam, "batch": bs, "sentences": len(src_ids),
                         "sent/s": len(src_ids) / dt, "out tok/s": out_tokens / dt, "s": dt})
    return rows


def table(rows: list[dict]) -> str:
    cols = list(rows[0])

    def fmt(v):
        return f"{v:,.3f}" if isinstance(v, float) and v < 10 else (
            f"{v:,.0f}" if isinstance(v, float) else str(v))

    cells = [[fmt(r[c]) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(cols, widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(v.rjust(w) for v, w in zip(row, widths)) + " |" for row in cells]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--config", type=Path, action="append",
                    help="config(s) to time training for (default: bahdanau)")
    ap.add_argument("--updates", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--precision", default="fp32",
                    help="comma-separated training precisions to time: fp32, bf16")
    ap.add_argument("--data", help="override data.path (e.g. ../shared/data/multi30k)")
    ap.add_argument("--run", type=Path, action="append", help="run(s) to time decoding for")
    ap.add_argument("--sentences", type=int, default=1000)
    ap.add_argument("--batch-sizes", default="1,32,128")
    ap.add_argument("--beams", default="1,5", help="beam sizes to time decoding with")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"cuda {'yes' if torch.cuda.is_available() else 'no'}")
    if not args.run or args.config:
        configs = args.config or [ROOT / "configs/multi30k/bahdanau.yaml"]
        data = args.data
        if data is None and not (ROOT / "data/multi30k").exists():
            data = str(ROOT.parent / "shared/data/multi30k")
        rows = [bench_train(c, args.updates, args.warmup, data, p)
                for c in configs for p in args.precision.split(",")]
        print("\nTraining throughput\n" + table(rows))
    if args.run:
        sizes = [int(x) for x in args.batch_sizes.split(",")]
        beams = [int(x) for x in args.beams.split(",")]
        rows = [r for run in args.run for r in bench_decode(run, args.sentences, sizes, beams)]
        print("\nDecoding (beam 1 = greedy), test split\n" + table(rows))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak resident memory: {peak:,.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
