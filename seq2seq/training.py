"""The training loop: token-count batches, Adam, clipping, validation, checkpoints, metrics log.

``train(config)`` is the library entry point that ``seq2seq train`` calls.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from seq2seq import checkpoint as ckpt
from seq2seq.batching import Batch, TrainBatches, inference_batches, make_batch
from seq2seq.config import Config, save_config
from seq2seq.data import load_split
from seq2seq.errors import CheckpointError, DataError
from seq2seq.inference import decode_ids, pick_device
from seq2seq.loss import cross_entropy_sum
from seq2seq.metrics import bleu
from seq2seq.models import Seq2SeqModel, build_model
from seq2seq.vocab import PAD, Vocab, train_or_load


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_optimizer(cfg: Config, model: Seq2SeqModel) -> torch.optim.Optimizer:
    t = cfg.train
    params = [p for p in model.parameters() if p.requires_grad]
    if t.optimizer == "adam":
        return torch.optim.Adam(params, lr=t.lr, betas=t.betas, weight_decay=t.weight_decay)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=t.lr, betas=t.betas, weight_decay=t.weight_decay)
    return torch.optim.SGD(params, lr=t.lr, weight_decay=t.weight_decay)


def build_scheduler(cfg: Config, optimizer: torch.optim.Optimizer
                    ) -> torch.optim.lr_scheduler.LRScheduler:
    """Learning-rate factor per update (update counted from 1)."""
    t = cfg.train
    warm = max(t.warmup_updates, 0)

    def factor(step: int) -> float:
        n = step + 1  # LambdaLR counts from 0; the first update is update 1
        if warm and n < warm:
            return n / warm
        if t.schedule == "inverse_sqrt" and warm:
            return math.sqrt(warm / n)
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def batch_loss(model: Seq2SeqModel, b: Batch, label_smoothing: float = 0.0) -> torch.Tensor:
    """Summed token cross-entropy of a batch; the output layer runs on non-pad positions only."""
    feats = model.features(b.src, b.src_len, b.tgt_in)  # (B, T, H)
    keep = b.tgt_out != PAD  # (B, T)
    logits = model.project(feats[keep])  # (N, V)
    return cross_entropy_sum(logits, b.tgt_out[keep], label_smoothing)


class MetricsLog:
    """Append-only JSON-lines log (``metrics.jsonl``)."""

    def __init__(self, path: Path):
        self.path = path

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def _prepare_run_dir(cfg: Config, overwrite: bool) -> Path:
    run_dir = cfg.resolved_run_dir()
    if run_dir.exists() and any(run_dir.glob("*.pt")):
        if not overwrite:
            raise CheckpointError(
                f"run directory {run_dir} already holds checkpoints; choose another run_dir "
                "(--run-dir) or pass --overwrite to delete them"
            )
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    return run_dir


def _encode_pairs(src_vocab: Vocab, tgt_vocab: Vocab, src: list[str], tgt: list[str],
                  max_len: int | None) -> tuple[list[list[int]], list[list[int]]]:
    s_ids, t_ids = src_vocab.encode(src), tgt_vocab.encode(tgt)
    if max_len is None:
        return s_ids, t_ids
    keep = [i for i, (s, t) in enumerate(zip(s_ids, t_ids))
            if 0 < len(s) <= max_len and 0 < len(t) <= max_len]
    return [s_ids[i] for i in keep], [t_ids[i] for i in keep]


@torch.no_grad()
def validation_loss(model: Seq2SeqModel, src: list[list[int]], tgt: list[list[int]],
                    device: torch.device, batch_size: int = 64) -> float:
    model.eval()
    total, n = 0.0, 0
    for idx in inference_batches(src, batch_size):
        b = make_batch([src[i] for i in idx], [tgt[i] for i in idx]).to(device)
        total += float(batch_loss(model, b))
        n += b.n_tgt_tokens
    return total / max(n, 1)


def train(cfg: Config, overwrite: bool = False, progress: bool = True) -> Path:
    """Train a model as ``cfg`` says; returns the run directory."""
    t = cfg.train
    run_dir = _prepare_run_dir(cfg, overwrite)
    save_config(cfg, run_dir / "config.yaml")
    log = MetricsLog(run_dir / "metrics.jsonl")
    seed_everything(t.seed)
    if t.num_threads:
        torch.set_num_threads(t.num_threads)
    device = pick_device(t.device)

    # ---- data and vocabulary -----------------------------------------------------------------
    train_ds = load_split(cfg.data, cfg.data.splits.train)
    valid_ds = load_split(cfg.data, cfg.data.splits.valid)
    if cfg.data.max_sentences:
        train_ds = train_ds.select(range(min(cfg.data.max_sentences, len(train_ds))))
    if t.valid_max_sentences:
        valid_ds = valid_ds.select(range(min(t.valid_max_sentences, len(valid_ds))))
    train_src, train_tgt = train_ds["src"], train_ds["tgt"]
    valid_src, valid_tgt = valid_ds["src"], valid_ds["tgt"]
    src_vocab, tgt_vocab = train_or_load(cfg.vocab, train_src, train_tgt, run_dir / "vocab")
    tr_s, tr_t = _encode_pairs(src_vocab, tgt_vocab, train_src, train_tgt, cfg.data.max_len)
    va_s, va_t = _encode_pairs(src_vocab, tgt_vocab, valid_src, valid_tgt, None)
    if not tr_s:
        raise DataError(
            "no training pairs left after dropping empty ones and those longer than "
            f"data.max_len={cfg.data.max_len} subwords"
        )
    batches = TrainBatches(tr_s, tr_t, t.batch_tokens, t.seed, t.bucket_pool)

    # ---- model -------------------------------------------------------------------------------
    model = build_model(cfg.model, len(src_vocab), len(tgt_vocab)).to(device)
    optimizer = build_optimizer(cfg, model)
    scheduler = build_scheduler(cfg, optimizer)
    n_params = model.num_parameters()
    tqdm.write(
        f"seq2seq: {len(tr_s)} training pairs, vocab {len(src_vocab)}/{len(tgt_vocab)}, "
        f"{n_params:,} parameters, device {device}, run dir {run_dir}"
    )

    def save(name: str, update: int, epoch: int, best: float | None) -> None:
        ckpt.save_atomic(
            {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(),
             "config": cfg.to_dict(), "update": update, "epoch": epoch, "best": best},
            run_dir / f"{name}.pt",
        )

    def validate(update: int, epoch: int) -> dict[str, Any]:
        v0 = time.perf_counter()
        record: dict[str, Any] = {"kind": "valid", "update": update, "epoch": epoch}
        loss = validation_loss(model, va_s, va_t, device, cfg.decode.batch_size)
        record.update(loss=round(loss, 4), ppl=round(math.exp(min(loss, 50)), 2))
        if t.valid_bleu:
            hyps, _ = decode_ids(model, va_s, cfg.decode, device)
            record["bleu"] = round(bleu(tgt_vocab.decode(hyps), valid_tgt), 2)
        record["valid_s"] = round(time.perf_counter() - v0, 1)
        record["train_s"] = round(train_time, 1)
        record["wall_s"] = round(time.perf_counter() - start, 1)
        model.train()
        return record

    def validate_and_save(update: int, epoch: int) -> None:
        """Validate, log, write last.pt, and copy it to best.pt when the score improved."""
        nonlocal best, last_validated
        rec = validate(update, epoch)
        score = rec["bleu"] if t.valid_bleu else -rec["loss"]
        rec["best"] = best is None or score > best
        if rec["best"]:
            best = score
        log.write(rec)
        tqdm.write(
            f"valid update {update}: loss {rec['loss']:.3f} ppl {rec['ppl']:.2f}"
            + (f" bleu {rec['bleu']:.2f}" if "bleu" in rec else "")
            + (" (best)" if rec["best"] else "")
        )
        save("last", update, epoch, best)
        if rec["best"]:
            tmp = run_dir / ".best.pt.tmp"
            shutil.copyfile(run_dir / "last.pt", tmp)
            tmp.replace(run_dir / "best.pt")
        last_validated = update

    # ---- loop --------------------------------------------------------------------------------
    start = time.perf_counter()
    train_time = 0.0
    update, epoch = 0, 0
    best: float | None = None
    last_validated = 0
    window_tokens, window_loss, window_tgt, window_t0 = 0, 0.0, 0, time.perf_counter()
    total_tokens = 0
    bar = tqdm(total=t.max_updates, disable=not progress, dynamic_ncols=True, desc="train")
    model.train()
    done = False
    while not done:
        epoch += 1
        for idx in batches.epoch(epoch):
            t0 = time.perf_counter()
            b = batches.collate(idx).to(device)
            n_tgt = b.n_tgt_tokens
            loss_sum = batch_loss(model, b, t.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            (loss_sum / n_tgt).backward()
            if t.clip_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), t.clip_grad_norm)
            optimizer.step()
            scheduler.step()
            update += 1
            train_time += time.perf_counter() - t0
            n_tok = n_tgt + b.n_src_tokens
            window_tokens += n_tok
            total_tokens += n_tok
            window_tgt += n_tgt
            window_loss += float(loss_sum.detach())

            if update % t.log_every == 0:
                elapsed = time.perf_counter() - window_t0
                rec = {
                    "kind": "train", "update": update, "epoch": epoch,
                    "loss": round(window_loss / max(window_tgt, 1), 4),
                    "lr": optimizer.param_groups[0]["lr"],
                    "tokens_per_s": round(window_tokens / max(elapsed, 1e-9)),
                    "train_s": round(train_time, 1),
                    "wall_s": round(time.perf_counter() - start, 1),
                }
                log.write(rec)
                bar.set_postfix(ep=epoch, loss=f"{rec['loss']:.3f}", tok_s=rec["tokens_per_s"])
                window_tokens, window_loss, window_tgt = 0, 0.0, 0
                window_t0 = time.perf_counter()
            bar.update(1)

            minutes = (time.perf_counter() - start) / 60
            done = (
                update >= t.max_updates
                or (t.max_minutes is not None and minutes >= t.max_minutes)
            )
            if update % t.valid_every == 0 or done:
                validate_and_save(update, epoch)
                window_t0 = time.perf_counter()
            if done:
                break
        if t.max_epochs is not None and epoch >= t.max_epochs:
            done = True
            if last_validated != update:
                validate_and_save(update, epoch)
    bar.close()
    wall = time.perf_counter() - start
    summary = {
        "name": cfg.name, "arch": cfg.model.arch, "attention": cfg.model.attention.score,
        "parameters": n_params, "updates": update, "epochs": epoch,
        "train_s": round(train_time, 1), "wall_s": round(wall, 1),
        "tokens_per_s": round(total_tokens / max(train_time, 1e-9)),
        "best_valid": best, "device": str(device),
    }
    (run_dir / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    tqdm.write(
        f"done: {update} updates in {wall / 60:.1f} min ({summary['tokens_per_s']} tok/s); "
        f"best validation {'BLEU' if t.valid_bleu else '-loss'} {best}"
    )
    return run_dir
