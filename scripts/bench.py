"""Speed benchmarks: training throughput of configs and decoding speed of runs, as tables.

    python scripts/bench.py                                   # bahdanau config, 20 updates
    python scripts/bench.py --config configs/multi30k/transformer.yaml --updates 30
    python scripts/bench.py --config configs/multi30k/transformer.yaml --batch-tokens 1024,4096
    python scripts/bench.py --config configs/multi30k/transformer.yaml --precision fp32,bf16
    python scripts/bench.py --config configs/multi30k/transformer.yaml --masks torch,fast --rounds 3
    python scripts/bench.py --config configs/multi30k/transformer.yaml --masks torch,fast --paired
    python scripts/bench.py --loss-chunks 2097152,8388608 --paired      # bahdanau config
    python scripts/bench.py --run runs/transformer --beams 1,5 --batch-sizes 1,64
    python scripts/bench.py --run runs/transformer --beams 1,5 --batch-sizes 64 --fixed-length 20
    python scripts/bench.py --run runs/transformer --quantize none,int8 --json bench.json
    python scripts/bench.py --run runs/transformer --pack on,off --rounds 3 --fixed-length 20

Training: real Multi30k batches in training order, the update exactly as ``seq2seq train`` takes
it (autocast forward, fused loss, backward, gradient clipping, optimizer step), timed over
``--updates`` updates after ``--warmup``. It reports target and source tokens/s, the padding
fraction of the batches, the model's FLOPs per update (every matrix multiply and attention of
forward and backward, counted by ``torch.utils.flop_counter`` from the operands' shapes on the
same batches, in a separate untimed pass), the GFLOP/s this achieves and its fraction of the
matrix-multiply peak in the training precision's arithmetic (fp32, or bfloat16 for bf16
autocast: model FLOP utilisation, MFU): the peak is measured again after every
timed update (the best of a (2048, 2048) product over 0.25 s) and its median is the yardstick,
so that a shared machine's speed, which drifts by a third within minutes, is the same for
both sides of the ratio; and
where an update's time goes: data (collate), forward (to the decoder output), loss (output layer
and cross-entropy), backward, optimizer (clipping and the step).

Decoding: sentences and output tokens per second on the test split, for several beam and batch
sizes. ``--fixed-length N`` makes every output exactly N decoder steps (N-1 tokens and eos), so
that tools compare on the same work whatever their models have learnt. ``--pack on,off`` times
the output layer with its weights packed for oneDNN (what ``translate`` and ``eval`` do on a
CPU, :mod:`seq2seq.packing`) against plain ``F.linear``; with ``--rounds N`` the settings take
turns N times in alternating order, so that a drifting machine's speed is shared by all of
them, and the medians table adds the median of the round-by-round ratios ("paired").
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import resource
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from seq2seq import dropout  # noqa: E402
from seq2seq.batching import Batch, TrainBatches  # noqa: E402
from seq2seq.config import load_config  # noqa: E402
from seq2seq.data import load_split, split_name  # noqa: E402
from seq2seq.inference import Translator, decode_ids, decode_workers  # noqa: E402
from seq2seq.loss import ChunkBuffer  # noqa: E402
from seq2seq.models import build_model  # noqa: E402
from seq2seq.optim import build_optimizer  # noqa: E402
from seq2seq.runtime import (  # noqa: E402
    autocast,
    bound_onednn_cache,
    cpu_has_bf16,
    cpu_info,
    keep_freed_memory,
    pick_device,
    resolve_precision,
    return_freed_memory,
    seed_everything,
    tune_backends,
)
from seq2seq.training import batch_loss, load_training_data, output_loss  # noqa: E402

SECTIONS = ("data", "forward", "loss", "backward", "optimizer")


def matmul_peak(device: torch.device, dtype: torch.dtype = torch.float32, n: int = 2048,
                seconds: float = 2.0, operands: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> float:
    """The best GFLOP/s of an (n, n) @ (n, n) matrix multiply over about ``seconds`` (on
    ``operands`` when given: two (n, n) matrices)."""
    a, b = operands or (torch.randn(n, n, device=device, dtype=dtype),
                        torch.randn(n, n, device=device, dtype=dtype))
    best, start = 0.0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        sync(device)
        t0 = time.perf_counter()
        torch.mm(a, b)
        sync(device)
        best = max(best, 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Clock:
    """Seconds spent in each named section of the timed updates."""

    def __init__(self, device: torch.device):
        self.device, self.spent = device, dict.fromkeys(SECTIONS, 0.0)
        self.on = False

    @contextmanager
    def section(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        sync(self.device)
        if self.on:
            self.spent[name] += time.perf_counter() - t0


def update(model, opt, batches: TrainBatches, group, cfg, precision: str,
           device: torch.device, clock: Clock, buffer: ChunkBuffer) -> tuple[list[Batch], float]:
    """One training update as the Trainer takes it: the gradients of ``group``'s batches
    (``train.accumulate`` of them) summed, divided by their target tokens, one optimizer step,
    the loss's chunks in ``buffer`` (kept between updates, as the Trainer keeps it); returns
    the batches and their summed loss."""
    with clock.section("data"):
        parts = [batches.collate(idx).to(device) for idx in group]
    total = max(sum(b.n_tgt_tokens for b in parts), 1)
    opt.zero_grad(set_to_none=False)  # as the Trainer does: the gradients stay in place
    loss_value = 0.0
    for b in parts:
        with clock.section("forward"), autocast(precision, device):
            feats = model.features(b.src, b.src_len, b.tgt_in)
        with clock.section("loss"), autocast(precision, device):
            loss = output_loss(model, feats, b, cfg.train.label_smoothing,
                               cfg.train.loss_chunk_logits, buffer)
        with clock.section("backward"):
            (loss / total).backward()
            loss_value += float(loss.detach())
    with clock.section("optimizer"):
        if cfg.train.clip_grad_norm > 0:
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.clip_grad_norm)
            bool(torch.isfinite(norm))
        opt.step()
    return parts, loss_value


def update_groups(batches: TrainBatches, acc: int, n: int) -> list[list]:
    """The batches of the first ``n`` updates in training order, ``acc`` an update."""
    flat = batches.epoch(1)[: n * acc]
    return [flat[i:i + acc] for i in range(0, len(flat), acc)]


def count_flops(model, batches: TrainBatches, order, cfg, precision: str,
                device: torch.device) -> int:
    """Matrix-multiply and attention FLOPs of forward and backward over the batches ``order``."""
    counter = FlopCounterMode(display=False)
    clock = Clock(device)
    with counter:
        for idx in (idx for group in order for idx in group):
            with clock.section("data"):
                b = batches.collate(idx).to(device)
            with autocast(precision, device):
                loss = batch_loss(model, b, cfg.train.label_smoothing,
                                  cfg.train.loss_chunk_logits)
            loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def prepare(config: Path, data: str | None, precision: str, batch_tokens: int | None,
            device: torch.device, masks: str | None = None, loss_chunk: int | None = None):
    overrides = [f"data.path={data}"] if data else []
    overrides.append(f"train.precision={precision}")
    if masks:
        overrides.append(f"train.dropout_masks={masks}")
    if loss_chunk is not None:
        overrides.append(f"train.loss_chunk_logits={loss_chunk}")
    if batch_tokens:  # one batch of this size an update
        overrides += [f"train.batch_tokens={batch_tokens}", "train.accumulate=1"]
    cfg = load_config(config, overrides)
    if cfg.train.release_memory:  # as the Trainer does
        return_freed_memory()
    if device.type == "cpu" and precision == "bf16":  # as the Trainer does
        bound_onednn_cache()
    seed_everything(cfg.train.seed)
    data = load_training_data(cfg, progress=False)  # the token cache, as `train` reads it
    batches, sv, tv = data.batches, data.src_vocab, data.tgt_vocab
    model = build_model(cfg.model, len(sv), len(tv)).to(device)
    return cfg, batches, model, build_optimizer(cfg.train, model)


def bench_train(config: Path, updates: int, warmup: int, data: str | None, precision: str,
                batch_tokens: int | None, device: torch.device,
                flops: bool = True, ops: int = 0, masks: str | None = None,
                loss_chunk: int | None = None) -> dict:
    precision = resolve_precision(precision, device)
    cfg, batches, model, opt = prepare(config, data, precision, batch_tokens, device, masks,
                                       loss_chunk)
    acc = cfg.train.accumulate  # an update sums the gradients of this many batches
    order = update_groups(batches, acc, warmup + updates)
    model.train()
    clock = Clock(device)
    src = tgt = src_pad = tgt_pad = 0
    profiler = torch.profiler.profile() if ops else contextlib.nullcontext()
    # MFU is measured against the peak of the products' own arithmetic: bf16 autocast runs them
    # in bfloat16 (2.5x the fp32 peak on an AVX-512 BF16 CPU), fp16 in float16
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    operands = (torch.randn(2048, 2048, device=device, dtype=dtype),
                torch.randn(2048, 2048, device=device, dtype=dtype))
    buffer = ChunkBuffer()
    peaks = []  # the matmul peak after each timed update
    for i, idx in enumerate(order):
        clock.on = i >= warmup
        with (profiler if i == warmup else contextlib.nullcontext(),
              dropout.masks(cfg.train.dropout_masks)):  # as the Trainer draws them
            parts, _ = update(model, opt, batches, idx, cfg, precision, device, clock, buffer)
        if clock.on and flops:
            peaks.append(matmul_peak(device, seconds=0.25, operands=operands))
        if clock.on:
            for b in parts:
                src, tgt = src + b.n_src_tokens, tgt + b.n_tgt_tokens
                src_pad, tgt_pad = src_pad + b.src.numel(), tgt_pad + b.tgt_out.numel()
    if ops:
        key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
        print(f"\n{config.stem}, {precision}: the {ops} operators with the most time in one "
              f"update\n" + profiler.key_averages().table(sort_by=key, row_limit=ops))
    elapsed = sum(clock.spent.values())
    row = {
        "kind": "train", "config": config.stem, "precision": precision,
        "masks": cfg.train.dropout_masks, "loss chunk": cfg.train.loss_chunk_logits,
        "batch tokens": f"{acc} x {cfg.train.batch_tokens}" if acc > 1 else cfg.train.batch_tokens,
        "params": model.num_parameters(),
        "updates": updates, "s/update": elapsed / updates,
        "tgt tok/s": tgt / elapsed, "src tok/s": src / elapsed,
        "padding": 1 - (src + tgt) / (src_pad + tgt_pad),
    }
    if flops:
        total = count_flops(model, batches, order[warmup:], cfg, precision, device)
        row["GFLOP/update"] = total / updates / 1e9
        row["GFLOP/s"] = total / elapsed / 1e9
        row["peak GFLOP/s"] = statistics.median(peaks)  # of `dtype` products
        row["MFU"] = row["GFLOP/s"] / row["peak GFLOP/s"]
    row.update({f"% {k}": 100 * v / elapsed for k, v in clock.spent.items()})
    return row


def bench_paired(config: Path, updates: int, warmup: int, data: str | None, precision: str,
                 device: torch.device, settings: list[tuple[str | None, int | None]]
                 ) -> list[dict]:
    """Each update taken once with every setting (dropout masks, loss chunk; None: the
    config's) in turn, the order alternating, on the same batches and model: the drift of a
    shared machine, minutes long, weighs on every setting alike. Returns a row per setting:
    its s/update (the same batches for all) and the median over updates of the first
    setting's time over this setting's."""
    precision = resolve_precision(precision, device)
    cfg, batches, model, opt = prepare(config, data, precision, None, device)
    cfgs = [dataclasses.replace(cfg, train=dataclasses.replace(
        cfg.train, dropout_masks=cfg.train.dropout_masks if m is None else m,
        loss_chunk_logits=cfg.train.loss_chunk_logits if c is None else c)) for m, c in settings]
    for c in cfgs:
        c.train.validate()  # as load_config validates the settings of the unpaired path
    order = update_groups(batches, cfg.train.accumulate, warmup + updates)
    model.train()
    clock = Clock(device)
    spent: list[list[float]] = [[] for _ in cfgs]
    buffers = [ChunkBuffer() for _ in cfgs]
    tgt = 0
    for i, idx in enumerate(order):
        turns = list(enumerate(cfgs))
        for k, c in turns if i % 2 == 0 else turns[::-1]:
            with dropout.masks(c.train.dropout_masks):
                t0 = time.perf_counter()
                parts, _ = update(model, opt, batches, idx, c, precision, device, clock,
                                  buffers[k])
                sync(device)
                if i >= warmup:
                    spent[k].append(time.perf_counter() - t0)
        if i >= warmup:
            tgt += sum(b.n_tgt_tokens for b in parts)
    return [{"kind": "train", "config": config.stem, "precision": precision,
             "masks": c.train.dropout_masks, "loss chunk": c.train.loss_chunk_logits,
             "updates": updates, "s/update": sum(t) / updates, "tgt tok/s": tgt / sum(t),
             "median speed vs the first": statistics.median(a / b for a, b in zip(spent[0], t))}
            for c, t in zip(cfgs, spent)]


def bench_decode(run: Path, sentences: int, batch_sizes: list[int], beams: list[int],
                 fixed_length: int | None, quantize: str, device: str,
                 workers: list[int] = (0,), pack: bool = True) -> list[dict]:
    keep_freed_memory()  # as seq2seq eval/translate decode (after any training benchmark)
    tr = Translator.from_run(run, device=device, quantize=quantize, pack=pack)
    ds = load_split(tr.config.data, split_name(tr.config.data, "test"))
    src_ids = tr.src_vocab.encode(ds["src"][:sentences])
    length = {} if fixed_length is None else {
        "max_len_a": 0, "max_len_b": fixed_length, "min_len": fixed_length - 1}
    rows = []
    for beam, bs, w in itertools.product(beams, batch_sizes, workers):
        decode = tr.config.decode.override(batch_size=bs, beam_size=beam, n_best=1,
                                           workers=w, **length)
        # as eval and translate decode: several batches at once in forked processes
        decode_ids(tr.model, src_ids[: 2 * bs], decode, tr.device, processes=True)  # untimed
        sync(tr.device)
        t0 = time.perf_counter()
        hyps = decode_ids(tr.model, src_ids, decode, tr.device, processes=True)
        sync(tr.device)
        dt = time.perf_counter() - t0
        out_tokens = sum(len(h) + 1 for h in hyps)  # eos included: one decoder step each
        batches = -(-len(src_ids) // bs)
        rows.append({"kind": "decode", "run": run.name, "quantize": quantize,
                     "packed": "yes" if tr.packed else "no", "beam": beam,
                     "batch": bs, "workers": decode_workers(w, tr.device, batches),
                     "sentences": len(src_ids), "out tok/s": out_tokens / dt,
                     "sent/s": len(src_ids) / dt, "s": dt})
    return rows


def medians(rows: list[dict], decoding: bool = False) -> list[dict]:
    """One row per training (decoding) setting: the median of its rounds' s/update and
    tokens/s (seconds and output tokens/s), and its speed against the first setting of the same
    config (run, beam and batch size)."""
    if decoding:  # and the median of the round-by-round ratios (rows carry their round)
        keys, same = ("run", "quantize", "packed", "beam", "batch", "workers"), (
            "run", "beam", "batch", "workers")
        values, time_key = ("s", "out tok/s", "sent/s"), "s"
    else:
        keys, same = ("config", "precision", "masks", "loss chunk", "batch tokens"), ("config",)
        values, time_key = ("s/update", "tgt tok/s", "src tok/s"), "s/update"
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    out = []
    for key, group in groups.items():
        med = {k: statistics.median(r[k] for r in group) for k in values}
        out.append({**dict(zip(keys, key)), "rounds": len(group), **med})
    for row in out:
        first = next(r for r in out if all(r[k] == row[k] for k in same))
        row["speed vs first"] = first[time_key] / row[time_key]
        if decoding:
            theirs = {r["round"]: r[time_key] for r in groups[tuple(first[k] for k in keys)]}
            row["paired"] = statistics.median(theirs[r["round"]] / r[time_key]
                                              for r in groups[tuple(row[k] for k in keys)])
    return out


def fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:,.3f}" if v < 10 else f"{v:,.0f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def table(rows: list[dict]) -> str:
    cols = [c for c in rows[0] if c != "kind"]
    cells = [[fmt(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(cols, widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(v.rjust(w) for v, w in zip(row, widths)) + " |" for row in cells]
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--config", type=Path, action="append",
                    help="config(s) to time training for (default: bahdanau)")
    ap.add_argument("--updates", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--precision", default="fp32",
                    help="comma-separated training precisions to time: fp32, bf16, auto")
    ap.add_argument("--batch-tokens", default="",
                    help="comma-separated train.batch_tokens to time, one batch an update "
                    "(default: the config's batch_tokens and accumulate)")
    ap.add_argument("--masks", default="",
                    help="comma-separated train.dropout_masks to time: torch, fast "
                    "(default: the config's)")
    ap.add_argument("--loss-chunks", default="",
                    help="comma-separated train.loss_chunk_logits to time, e.g. 2097152,8388608 "
                    "(default: the config's)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="time every training (decoding) setting this many times, "
                    "alternating their order, and also print each setting's median (for "
                    "decoding also the median of the round-by-round ratios: paired)")
    ap.add_argument("--paired", action="store_true",
                    help="with several --masks or --loss-chunks: take every update with each "
                    "setting in turn, on one model and the same batches, and print the "
                    "per-update speed ratio")
    ap.add_argument("--no-flops", action="store_true", help="skip the FLOP count (faster)")
    ap.add_argument("--ops", type=int, default=0,
                    help="also print the N operators that took the most time in one update")
    ap.add_argument("--data", help="override data.path (e.g. ../shared/data/multi30k)")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    ap.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--run", type=Path, action="append", help="run(s) to time decoding for")
    ap.add_argument("--sentences", type=int, default=1000)
    ap.add_argument("--batch-sizes", default="1,32,128")
    ap.add_argument("--beams", default="1,5", help="beam sizes to time decoding with")
    ap.add_argument("--fixed-length", type=int,
                    help="force every output to this many decoder steps (eos included)")
    ap.add_argument("--quantize", default="none", help="comma-separated: none, int8, bf16")
    ap.add_argument("--pack", default="on", help="comma-separated on, off: the fp32 output "
                    "layer's weights packed for oneDNN on a CPU (seq2seq.packing), or F.linear")
    ap.add_argument("--workers", default="0", help="comma-separated decode.workers: batches "
                    "decoded at once on the CPU, sharing the threads (0: two; 1: one batch "
                    "on all cores)")
    ap.add_argument("--json", type=Path, help="also write every row to this file")
    return ap.parse_args()


def main() -> int:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    tune_backends(device)  # as the Trainer does
    peak = matmul_peak(device)
    print(f"{cpu_info()[0]}; bf16 arithmetic: {'yes' if cpu_has_bf16() else 'no'}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}; "
          f"fp32 matmul peak {peak:,.1f} GFLOP/s at the start")
    rows: list[dict] = []
    if not args.run or args.config:
        configs = args.config or [ROOT / "configs/multi30k/bahdanau.yaml"]
        data = args.data
        if data is None and not (ROOT / "data/multi30k").exists():
            data = str(ROOT.parent / "shared/data/multi30k")
        sizes = [int(x) for x in args.batch_tokens.split(",") if x] or [None]
        masks = [m for m in args.masks.split(",") if m] or [None]
        chunks = [int(x) for x in args.loss_chunks.split(",") if x] or [None]
        if args.paired:
            settings = list(itertools.product(masks, chunks))
            if len(settings) < 2:
                raise SystemExit("bench: --paired needs two or more --masks or --loss-chunks, "
                                 "e.g. --masks torch,fast")
            train = [r for c in configs for p in args.precision.split(",")
                     for r in bench_paired(c, args.updates, args.warmup, data, p, device,
                                           settings)]
            print("\nEach update taken with every setting in turn\n" + table(train))
        else:
            grid = list(itertools.product(configs, args.precision.split(","), sizes, masks,
                                          chunks))
            train = []
            for r in range(args.rounds):  # forward, backward, forward, ...: drift weighs alike
                for c, p, n, m, k in grid if r % 2 == 0 else grid[::-1]:
                    row = bench_train(c, args.updates, args.warmup, data, p, n, device,
                                      not args.no_flops, args.ops, m, k)
                    train.append({"round": r + 1, **row} if args.rounds > 1 else row)
            print("\nTraining throughput (% columns: where an update's time goes)\n"
                  + table(train))
            if args.rounds > 1:
                print(f"\nMedians over {args.rounds} rounds\n" + table(medians(train)))
        rows += train
    if args.run:
        sizes = [int(x) for x in args.batch_sizes.split(",")]
        beams = [int(x) for x in args.beams.split(",")]
        if not set(args.pack.split(",")) <= {"on", "off"}:
            raise SystemExit(f"bench.py: --pack takes on, off or on,off, not {args.pack!r}")
        # (quantize, pack) settings; --pack concerns fp32 only (int8 layers are never packed, bf16
        # ones always), so int8 and bf16 are timed once
        settings = list(dict.fromkeys((q, q == "none" and x == "on")
                                      for q in args.quantize.split(",")
                                      for x in args.pack.split(",")))
        workers = [int(x) for x in args.workers.split(",")]
        dec = []
        for rnd in range(args.rounds):  # forward, backward, forward, ...: drift weighs alike
            for run in args.run:
                for q, pack in settings if rnd % 2 == 0 else settings[::-1]:
                    for r in bench_decode(run, args.sentences, sizes, beams, args.fixed_length,
                                          q, args.device, workers, pack):
                        dec.append({"round": rnd + 1, **r} if args.rounds > 1 else r)
        what = f"exactly {args.fixed_length} steps" if args.fixed_length else "natural lengths"
        print(f"\nDecoding (beam 1 = greedy), test split, {what}\n" + table(dec))
        if args.rounds > 1:
            print(f"\nMedians over {args.rounds} rounds\n" + table(medians(dec, decoding=True)))
        rows += dec
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    worker_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"\npeak resident memory: {peak_rss:,.0f} MiB"
          + (f"; largest child process (the forked decoding workers) {worker_rss:,.0f} MiB "
             "(pages it shares with this process copy-on-write, such as the weights, count in "
             "both)"
             if args.run and worker_rss else ""))
    if args.json:
        meta = {"kind": "machine", "cpu": cpu_info()[0], "bf16": cpu_has_bf16(),
                "torch": torch.__version__, "threads": torch.get_num_threads(),
                "device": str(device), "matmul peak GFLOP/s": peak, "peak RSS MiB": peak_rss,
                "peak worker RSS MiB": worker_rss if args.run else None}
        args.json.write_text(json.dumps([meta, *rows], indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
