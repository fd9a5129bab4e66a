"""The training loop: token-count batches, gradient accumulation, mixed precision, validation,
early stopping, checkpoints that resume exactly, and the metrics log.

``train(config)`` is the library entry point that ``seq2seq train`` calls.

Resuming (``seq2seq train --resume RUN``) restores from ``last.pt`` the model, optimizer,
learning-rate schedule state, gradient scaler, the Python/NumPy/torch random states and the
position in the data order (epoch and batches consumed), so a run stopped after a validation and
resumed follows the same path as one that was never stopped (tests check equal parameters).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from seq2seq import checkpoint as ckpt
from seq2seq import distributed
from seq2seq.batching import Batch, TrainBatches, inference_batches, make_batch
from seq2seq.config import Config, save_config
from seq2seq.data import load_split
from seq2seq.errors import CheckpointError, ConfigError, DataError
from seq2seq.inference import decode_ids, pick_device
from seq2seq.loss import cross_entropy_sum
from seq2seq.metrics import corpus_scores
from seq2seq.models import Seq2SeqModel, build_model
from seq2seq.optim import LRSchedule, build_optimizer
from seq2seq.vocab import PAD, Vocab, train_or_load


def seed_everything(seed: int) -> None:
    """One seed for Python, NumPy and torch (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """All random states, in a form ``torch.load(weights_only=True)`` accepts."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos,
                  "has_gauss": has_gauss, "gauss": gauss},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def cpu_has_bf16() -> bool:
    """Whether this CPU computes in bfloat16 natively (Linux flags avx512_bf16 or amx_bf16);
    elsewhere bf16 autocast is emulated and slower than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> bf16 where the hardware has bfloat16 arithmetic, else fp32."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_bf16() else "fp32"


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The forward pass's mixed-precision context: nothing for fp32, ``torch.autocast`` to
    bfloat16 or float16 otherwise (matrix products in low precision, reductions in fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def batch_loss(model: Seq2SeqModel, b: Batch, label_smoothing: float = 0.0) -> torch.Tensor:
    """Summed token cross-entropy of a batch; the output layer runs on non-pad positions only."""
    feats = model.features(b.src, b.src_len, b.tgt_in)  # (B, T, H)
    keep = b.tgt_out != PAD  # (B, T)
    logits = model.project(feats[keep])  # (N, V)
    return cross_entropy_sum(logits, b.tgt_out[keep], label_smoothing)


class LossModule(torch.nn.Module):
    """``batch_loss`` as a module's forward, so that DistributedDataParallel (which
    synchronises gradients through ``forward``) can wrap it."""

    def __init__(self, model: Seq2SeqModel):
        super().__init__()
        self.model = model

    def forward(self, b: Batch, label_smoothing: float) -> torch.Tensor:
        return batch_loss(self.model, b, label_smoothing)


class MetricsLog:
    """Append-only JSON-lines log (``metrics.jsonl``)."""

    def __init__(self, path: Path):
        self.path = path

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def records(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        return [json.loads(x) for x in self.path.read_text(encoding="utf-8").splitlines() if x]

    def truncate_after(self, update: int) -> None:
        """Drop the records a killed run wrote after its last checkpoint."""
        keep = [r for r in self.records() if r.get("update", 0) <= update]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in keep), encoding="utf-8")


def _prepare_run_dir(cfg: Config, overwrite: bool) -> Path:
    run_dir = cfg.resolved_run_dir()
    if run_dir.exists() and any(run_dir.glob("*.pt")):
        if not overwrite:
            raise CheckpointError(
                f"run directory {run_dir} already holds checkpoints; continue it with --resume "
                f"{run_dir}, choose another run_dir (--run-dir), or pass --overwrite to delete it"
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


@dataclass
class Progress:
    """Where training stands; saved in every checkpoint."""

    update: int = 0
    epoch: int = 1  # the epoch being read
    position: int = 0  # batches of this epoch already consumed (by all ranks)
    best: float | None = None  # best validation score so far (higher is better)
    bad_validations: int = 0  # validations since the best one
    last_validated: int = 0
    train_s: float = 0.0
    tokens: int = 0
    kept: list[list[float]] = dataclasses.field(default_factory=list)  # [update, score] saved


class Trainer:
    """One training run. ``run()`` trains until a stopping criterion; ``resume`` continues the
    run in ``cfg.run_dir`` from its ``last.pt``."""

    def __init__(self, cfg: Config, overwrite: bool = False, progress: bool = True,
                 resume: bool = False):
        self.cfg, self.t = cfg, cfg.train
        t = self.t
        if t.num_threads:
            torch.set_num_threads(t.num_threads)
        self.world, self.device = distributed.init(pick_device(t.device))
        self.precision = resolve_precision(t.precision, self.device)
        if self.precision == "fp16" and self.device.type != "cuda":
            raise ConfigError("train.precision: fp16 needs a CUDA device; use bf16 on a CPU")
        self.show_progress = progress and self.world.main
        self.run_dir = cfg.resolved_run_dir()
        if self.world.main:
            if resume:
                if not (self.run_dir / "last.pt").is_file():
                    raise CheckpointError(f"--resume: no last.pt in {self.run_dir}")
            else:
                _prepare_run_dir(cfg, overwrite)
            save_config(cfg, self.run_dir / "config.yaml")
        distributed.barrier(self.world)
        self.log = MetricsLog(self.run_dir / "metrics.jsonl")
        seed_everything(t.seed)
        self._load_data()
        self.model = build_model(cfg.model, len(self.src_vocab), len(self.tgt_vocab))
        self.model.to(self.device)
        self.loss = LossModule(self.model)
        if self.world.distributed:
            self.loss = torch.nn.parallel.DistributedDataParallel(
                self.loss, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.optimizer = build_optimizer(t, self.model)
        self.schedule = LRSchedule(t, self.optimizer)
        # fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.state = Progress()
        # validation BLEU uses greedy search whatever decode.beam_size says: a training signal
        self.valid_decode = dataclasses.replace(cfg.decode, beam_size=1, n_best=1,
                                                hard_attention=False)
        if resume:
            self._restore(self.run_dir / "last.pt")

    # ---- set-up ------------------------------------------------------------------------------
    def _load_data(self) -> None:
        cfg, t = self.cfg, self.t
        train_ds = load_split(cfg.data, cfg.data.splits.train)
        valid_ds = load_split(cfg.data, cfg.data.splits.valid)
        if cfg.data.max_sentences:
            train_ds = train_ds.select(range(min(cfg.data.max_sentences, len(train_ds))))
        if t.valid_max_sentences:
            valid_ds = valid_ds.select(range(min(t.valid_max_sentences, len(valid_ds))))
        train_src, train_tgt = train_ds["src"], train_ds["tgt"]
        self.valid_src, self.valid_tgt = valid_ds["src"], valid_ds["tgt"]
        self.src_vocab, self.tgt_vocab = train_or_load(
            cfg.vocab, train_src, train_tgt, self.run_dir / "vocab", write=self.world.main)
        self.train_src, self.train_tgt = _encode_pairs(self.src_vocab, self.tgt_vocab, train_src,
                                                       train_tgt, cfg.data.max_len)
        self.va_s, self.va_t = _encode_pairs(self.src_vocab, self.tgt_vocab, self.valid_src,
                                             self.valid_tgt, None)
        if not self.train_src:
            raise DataError(
                "no training pairs left after dropping empty ones and those longer than "
                f"data.max_len={cfg.data.max_len} subwords"
            )
        self.batches = TrainBatches(self.train_src, self.train_tgt, t.batch_tokens, t.seed,
                                    t.bucket_pool)

    def _restore(self, path: Path) -> None:
        payload = ckpt.load(path, map_location=self.device)
        missing = [k for k in ("optimizer", "progress", "rng", "schedule") if k not in payload]
        if missing:
            raise CheckpointError(f"{path}: cannot resume from it (no {', '.join(missing)})")
        try:
            self.model.load_state_dict(payload["model"])
            self.optimizer.load_state_dict(payload["optimizer"])
        except (RuntimeError, ValueError) as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise CheckpointError(f"{path}: does not fit this config ({first})") from None
        self.schedule.load_state_dict(payload["schedule"])
        if "scaler" in payload and payload["scaler"]:
            self.scaler.load_state_dict(payload["scaler"])
        self.state = Progress(**payload["progress"])
        set_rng_state(payload["rng"])
        if self.world.main:
            self.log.truncate_after(self.state.update)

    # ---- checkpoints -------------------------------------------------------------------------
    def _payload(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(), "scaler": self.scaler.state_dict(),
            "config": self.cfg.to_dict(), "progress": dataclasses.asdict(self.state),
            "rng": rng_state(),
            # kept for readers of older runs and for humans
            "update": self.state.update, "epoch": self.state.epoch, "best": self.state.best,
        }

    def _save(self, score: float, improved: bool) -> None:
        """last.pt (everything to resume), best.pt (a copy when improved), and the per-
        validation weights that keep_last/keep_best ask for."""
        s = self.state
        ckpt.save_atomic(self._payload(), self.run_dir / "last.pt")
        if improved:
            tmp = self.run_dir / ".best.pt.tmp"
            shutil.copyfile(self.run_dir / "last.pt", tmp)
            tmp.replace(self.run_dir / "best.pt")
        if not (self.t.keep_last or self.t.keep_best):
            return
        ckpt.save_atomic({"model": self.model.state_dict(), "config": self.cfg.to_dict(),
                          "update": s.update, "epoch": s.epoch, "score": score},
                         self.run_dir / f"ckpt_{s.update:07d}.pt")
        s.kept.append([s.update, score])
        keep = {u for u, _ in s.kept[-self.t.keep_last:]} if self.t.keep_last else set()
        if self.t.keep_best:
            by_score = sorted(s.kept, key=lambda r: (-r[1], -r[0]))
            keep |= {u for u, _ in by_score[: self.t.keep_best]}
        for u, _ in s.kept:
            if u not in keep:
                (self.run_dir / f"ckpt_{int(u):07d}.pt").unlink(missing_ok=True)
        s.kept = [r for r in s.kept if r[0] in keep]

    # ---- validation --------------------------------------------------------------------------
    def validate(self) -> dict[str, Any]:
        v0 = time.perf_counter()
        s, t = self.state, self.t
        record: dict[str, Any] = {"kind": "valid", "update": s.update, "epoch": s.epoch}
        loss = validation_loss(self.model, self.va_s, self.va_t, self.device,
                               self.cfg.decode.batch_size)
        record.update(loss=round(loss, 4), ppl=round(math.exp(min(loss, 50)), 2))
        if t.valid_bleu:
            hyps, _ = decode_ids(self.model, self.va_s, self.valid_decode, self.device)
            scores = corpus_scores(self.tgt_vocab.decode(hyps), self.valid_tgt, ter=False)
            record.update(bleu=scores["bleu"]["score"], chrf=scores["chrf"]["score"])
        record["lr"] = self.optimizer.param_groups[0]["lr"]
        record["valid_s"] = round(time.perf_counter() - v0, 1)
        record["train_s"] = round(s.train_s, 1)
        record["wall_s"] = round(time.perf_counter() - self.start + self.wall_before, 1)
        self.model.train()
        return record

    def validate_and_save(self) -> bool:
        """Validate (rank 0), log, checkpoint; returns True when early stopping says stop."""
        s, t = self.state, self.t
        stop = False
        if self.world.main:
            rec = self.validate()
            score = -rec["loss"] if t.valid_metric == "loss" else rec[t.valid_metric]
            improved = s.best is None or score > s.best
            if improved:
                s.best, s.bad_validations = score, 0
            else:
                s.bad_validations += 1
            self.schedule.after_validation(improved)
            stop = t.patience is not None and s.bad_validations >= t.patience
            rec["best"] = improved
            if stop:
                rec["early_stop"] = True
            s.last_validated = s.update
            self.log.write(rec)
            metrics = "".join(f" {k} {rec[k]:.2f}" for k in ("bleu", "chrf") if k in rec)
            tqdm.write(
                f"valid update {s.update} epoch {s.epoch}: loss {rec['loss']:.3f} "
                f"ppl {rec['ppl']:.2f}{metrics}" + (" (best)" if improved else
                f" ({s.bad_validations} without improvement)")
                + (" -> early stop" if stop else "")
            )
            self._save(score, improved)
        else:
            s.last_validated = s.update
        distributed.barrier(self.world)
        return distributed.broadcast_flag(stop, self.world, self.device)

    # ---- the loop ----------------------------------------------------------------------------
    def _step(self, group: list[np.ndarray]) -> tuple[float, int, int]:
        """One update from the batches of this rank (summed gradients, accumulation)."""
        t = self.t
        parts = [self.batches.collate(idx).to(self.device) for idx in group]
        n_tgt = sum(b.n_tgt_tokens for b in parts)
        # every rank divides by the tokens of all ranks; DDP's mean is then the global mean
        total_tgt = distributed.all_sum(float(n_tgt), self.world, self.device)
        scale = self.world.size / max(total_tgt, 1.0)
        self.optimizer.zero_grad(set_to_none=True)
        loss_total = 0.0
        for i, b in enumerate(parts):
            sync = i == len(parts) - 1
            ctx = (self.loss.no_sync() if self.world.distributed and not sync
                   else contextlib.nullcontext())
            with ctx:
                with autocast(self.precision, self.device):
                    loss_sum = self.loss(b, t.label_smoothing)
                self.scaler.scale(loss_sum * scale).backward()
            loss_total += float(loss_sum.detach())
        if t.clip_grad_norm > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss_total, n_tgt, n_tgt + sum(b.n_src_tokens for b in parts)

    def _done(self) -> bool:
        t, s = self.t, self.state
        minutes = (time.perf_counter() - self.start + self.wall_before) / 60
        return s.update >= t.max_updates or (t.max_minutes is not None
                                             and minutes >= t.max_minutes)

    def run(self) -> Path:
        t, s = self.t, self.state
        if self.world.main:
            tqdm.write(
                f"seq2seq: {len(self.train_src)} training pairs, vocab {len(self.src_vocab)}/"
                f"{len(self.tgt_vocab)}, {self.model.num_parameters():,} parameters, device "
                f"{self.device}" + (f" x {self.world.size} processes" if self.world.distributed
                                    else "")
                + f", {self.precision}, run dir {self.run_dir}"
                + (f", resuming at update {s.update}" if s.update else "")
            )
        summary_path = self.run_dir / "train_summary.json"
        self.wall_before = 0.0
        if s.update and summary_path.is_file():
            self.wall_before = json.loads(summary_path.read_text()).get("wall_s", 0.0)
        self.start = time.perf_counter()
        window = {"tokens": 0, "loss": 0.0, "tgt": 0, "t0": time.perf_counter()}
        bar = tqdm(total=t.max_updates, initial=s.update, disable=not self.show_progress,
                   dynamic_ncols=True, desc="train")
        per_update = self.world.size * t.accumulate  # batches consumed by one update
        self.model.train()
        done = self._done()
        while not done:
            order = self.batches.epoch(s.epoch)
            while not done and s.position + self.world.size <= len(order):
                group = order[s.position : s.position + per_update]
                group = group[self.world.rank :: self.world.size]
                if not group:
                    break
                t0 = time.perf_counter()
                lr = self.schedule.set(s.update + 1)
                loss_sum, n_tgt, n_tok = self._step(group)
                s.update += 1
                s.position += per_update
                s.train_s += time.perf_counter() - t0
                n_tok = int(distributed.all_sum(n_tok, self.world, self.device))
                s.tokens += n_tok
                window["tokens"] += n_tok
                window["tgt"] += n_tgt
                window["loss"] += loss_sum
                if s.update % t.log_every == 0 and self.world.main:
                    elapsed = time.perf_counter() - window["t0"]
                    rec = {
                        "kind": "train", "update": s.update, "epoch": s.epoch,
                        "loss": round(window["loss"] / max(window["tgt"], 1), 4), "lr": lr,
                        "tokens_per_s": round(window["tokens"] / max(elapsed, 1e-9)),
                        "train_s": round(s.train_s, 1),
                        "wall_s": round(time.perf_counter() - self.start + self.wall_before, 1),
                    }
                    self.log.write(rec)
                    bar.set_postfix(ep=s.epoch, loss=f"{rec['loss']:.3f}", lr=f"{lr:.2e}",
                                    tok_s=rec["tokens_per_s"])
                    window.update(tokens=0, loss=0.0, tgt=0, t0=time.perf_counter())
                bar.update(1)
                done = distributed.broadcast_flag(self._done(), self.world, self.device)
                if s.update % t.valid_every == 0 or done:
                    done = self.validate_and_save() or done
                    window["t0"] = time.perf_counter()
            if done:
                break
            # the epoch is over
            self.schedule.after_epoch(s.epoch)
            if t.max_epochs is not None and s.epoch >= t.max_epochs:
                done = True
                if s.last_validated != s.update:
                    self.validate_and_save()
                break
            s.epoch, s.position = s.epoch + 1, 0
        bar.close()
        if self.world.main:
            self._write_summary(summary_path)
        distributed.barrier(self.world)
        return self.run_dir

    def _write_summary(self, path: Path) -> None:
        s, cfg = self.state, self.cfg
        wall = time.perf_counter() - self.start + self.wall_before
        summary = {
            "name": cfg.name, "arch": cfg.model.arch, "decoder": cfg.model.decoder,
            "attention": cfg.model.attention.score, "window": cfg.model.attention.window,
            "heads": cfg.model.attention.heads, "parameters": self.model.num_parameters(),
            "updates": s.update, "epochs": s.epoch, "train_s": round(s.train_s, 1),
            "wall_s": round(wall, 1), "tokens_per_s": round(s.tokens / max(s.train_s, 1e-9)),
            "best_valid": s.best, "valid_metric": self.t.valid_metric,
            "device": str(self.device), "processes": self.world.size,
            "precision": self.precision,
        }
        path.write_text(json.dumps(summary, indent=2) + "\n")
        tqdm.write(
            f"done: {s.update} updates in {wall / 60:.1f} min ({summary['tokens_per_s']} tok/s); "
            f"best validation {self.t.valid_metric} "
            f"{-s.best if self.t.valid_metric == 'loss' and s.best is not None else s.best}"
        )


def train(cfg: Config, overwrite: bool = False, progress: bool = True, resume: bool = False
          ) -> Path:
    """Train a model as ``cfg`` says (or continue the run in ``cfg.run_dir`` with ``resume``);
    returns the run directory."""
    trainer = Trainer(cfg, overwrite=overwrite, progress=progress, resume=resume)
    try:
        return trainer.run()
    finally:
        distributed.shutdown(trainer.world)
