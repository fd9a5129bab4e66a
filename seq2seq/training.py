"""The training loop: token-count batches, gradient accumulation, mixed precision, validation,
early stopping and checkpoints that resume exactly.

``train(config)`` is the library entry point that ``seq2seq train`` calls. The files a run
writes (config, vocabulary, checkpoints, metrics log, summary) are named and written by
:class:`seq2seq.run.RunDir`; device, precision and random states come from
:mod:`seq2seq.runtime`.

Resuming (``seq2seq train --resume RUN``) restores from ``last.pt`` the model, optimizer,
learning-rate schedule state, gradient scaler, the Python/NumPy/torch random states and the
position in the data order (epoch and batches consumed), so a run stopped after a validation and
resumed follows the same path as one that was never stopped (tests check equal parameters).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from seq2seq import checkpoint as ckpt
from seq2seq import distributed, dropout
from seq2seq.attention import LocalPredictiveWindow
from seq2seq.batching import Batch, TrainBatches, inference_batches, make_batch
from seq2seq.choices import ARCHITECTURES
from seq2seq.config import Config
from seq2seq.data import load_split, side_lines, split_files
from seq2seq.errors import CheckpointError, ConfigError, DataError, Interrupted, TrainingError
from seq2seq.inference import clip_inputs, decode_ids, input_limit, print_warning
from seq2seq.interrupts import StopSignals
from seq2seq.loss import CHUNK_LOGITS, ChunkBuffer, linear_cross_entropy_sum
from seq2seq.metrics import corpus_scores
from seq2seq.models import Seq2SeqModel, build_model
from seq2seq.optim import LRSchedule, build_optimizer
from seq2seq.run import RunDir
from seq2seq.runtime import (
    autocast,
    bound_onednn_cache,
    pick_device,
    resolve_precision,
    return_freed_memory,
    rng_state,
    seed_everything,
    set_rng_state,
    tune_backends,
)
from seq2seq.special import PAD
from seq2seq.token_cache import EncodedSplit, encoded_split, fingerprint
from seq2seq.vocab import Vocab, train_or_load_stream


def batch_loss(model: Seq2SeqModel, b: Batch, label_smoothing: float = 0.0,
               chunk_logits: int = CHUNK_LOGITS, buffer: ChunkBuffer | None = None
               ) -> torch.Tensor:
    """Summed token cross-entropy of a batch."""
    return output_loss(model, model.features(b.src, b.src_len, b.tgt_in), b, label_smoothing,
                       chunk_logits, buffer)


def output_loss(model: Seq2SeqModel, feats: torch.Tensor, b: Batch,
                label_smoothing: float = 0.0, chunk_logits: int = CHUNK_LOGITS,
                buffer: ChunkBuffer | None = None) -> torch.Tensor:
    """Summed cross-entropy of the output layer on the decoder's features (B, T, H); the layer
    runs on the non-pad positions only, fused with the loss (seq2seq.loss), ``chunk_logits``
    logits at a time (``train.loss_chunk_logits``) in ``buffer``."""
    keep = b.tgt_out != PAD  # (B, T)
    return linear_cross_entropy_sum(feats[keep], model.generator, b.tgt_out[keep],
                                    label_smoothing, chunk_logits, buffer)


class LossModule(torch.nn.Module):
    """``batch_loss`` as a module's forward, so that DistributedDataParallel (which
    synchronises gradients through ``forward``) can wrap it; ``chunk_logits`` is
    ``train.loss_chunk_logits``, and the chunks' buffer is kept from batch to batch."""

    def __init__(self, model: Seq2SeqModel, chunk_logits: int = CHUNK_LOGITS):
        super().__init__()
        self.model, self.chunk_logits = model, chunk_logits
        self.buffer = ChunkBuffer()

    def forward(self, b: Batch, label_smoothing: float) -> torch.Tensor:
        return batch_loss(self.model, b, label_smoothing, self.chunk_logits, self.buffer)


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
class TrainingData:
    """The encoded training and validation sets and their vocabularies."""

    src_vocab: Vocab
    tgt_vocab: Vocab
    train: EncodedSplit  # every pair of the training split (mapped from the token cache)
    keep: np.ndarray  # the pairs trained on: none empty, none longer than data.max_len
    valid_src: list[str]  # validation text (the references for BLEU)
    valid_tgt: list[str]
    valid_src_ids: list[list[int]]
    valid_tgt_ids: list[list[int]]
    batches: TrainBatches


def load_training_data(cfg: Config, vocabs: tuple[Vocab, Vocab] | None = None,
                       progress: bool = True) -> TrainingData:
    """The training split encoded with ``vocabs`` (a resumed run's) or with a vocabulary trained
    on it (or taken from the cache; nothing is written into the run yet), through the token
    cache; the validation split in memory. Training pairs that are empty or longer than
    ``data.max_len`` are not trained on."""
    t, d = cfg.train, cfg.data
    if d.format != "hub":  # a missing file is reported before a long encoding, not after
        for name in (d.splits.train, d.splits.valid):
            split_files(d, name)
    valid_ds, n = load_split(d, d.splits.valid), t.valid_max_sentences  # None: every sentence
    valid_src, valid_tgt = valid_ds.src[:n], valid_ds.tgt[:n]
    split, limit = d.splits.train, d.max_sentences
    data_key = f"{fingerprint(d, split)}:{limit}"
    src_vocab, tgt_vocab = vocabs or train_or_load_stream(
        cfg.vocab, lambda side: side_lines(d, split, side, limit), data_key)
    train = encoded_split(d, split, src_vocab, tgt_vocab, limit, data_key, progress)
    if len(train) == 0:
        raise DataError(f"split {split!r} of {d.path} is empty")
    src_lens, tgt_lens = train.lengths()
    keep = np.flatnonzero((src_lens > 0) & (src_lens <= d.max_len)
                          & (tgt_lens > 0) & (tgt_lens <= d.max_len))
    if len(train) < 2**31:  # half the memory for an index a pair
        keep = keep.astype(np.int32)
    if keep.size == 0:
        raise DataError(
            "no training pairs left after dropping empty ones and those longer than "
            f"data.max_len={d.max_len} subwords"
        )
    va_s, va_t = src_vocab.encode(valid_src), tgt_vocab.encode(valid_tgt)
    batches = TrainBatches(src_lens[keep], tgt_lens[keep], t.batch_tokens, t.seed,
                           t.bucket_pool, fetch=lambda idx: train.pairs(keep[idx]))
    return TrainingData(src_vocab, tgt_vocab, train, keep, valid_src, valid_tgt, va_s, va_t,
                        batches)


def _position_record(windows: list) -> dict[str, float]:
    """Mean and standard deviation of the local-p positions ``p_t / S`` over every step of the
    greedy validation decoding (0: the first source word, 1: past the last); the collection
    is switched off again."""
    calls = sorted(c for w in windows for c in w.position_stats)  # in an order threads don't set
    total, squares, n = (sum(c[i] for c in calls) for i in range(3))
    for w in windows:
        w.position_stats = None
    if not n:
        return {}
    mean = total / n
    return {"p_rel_mean": round(mean, 4),
            "p_rel_sd": round(math.sqrt(max(squares / n - mean * mean, 0.0)), 4)}


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
    nonfinite: int = 0  # updates skipped in a row for a non-finite loss or gradient


class WallClock:
    """Wall time of a run in seconds, including the time before a resume."""

    def __init__(self, before: float = 0.0):
        self.before = before
        self.start = time.perf_counter()

    def seconds(self) -> float:
        return time.perf_counter() - self.start + self.before


@dataclass
class LogWindow:
    """What the updates since the last ``train`` record of metrics.jsonl processed."""

    tokens: int = 0  # source + target tokens, all ranks
    tgt: int = 0  # target tokens of this rank
    tgt_all: int = 0  # target tokens, all ranks
    loss: float = 0.0  # summed loss of this rank
    t0: float = dataclasses.field(default_factory=time.perf_counter)


class Trainer:
    """One training run. ``run()`` trains until a stopping criterion; ``resume`` continues the
    run in ``cfg.run_dir`` from its ``last.pt``."""

    def __init__(self, cfg: Config, overwrite: bool = False, progress: bool = True,
                 resume: bool = False):
        self.cfg, self.t = cfg, cfg.train
        if self.t.release_memory:
            return_freed_memory()
        if self.t.num_threads:
            torch.set_num_threads(self.t.num_threads)
        self.world, self.device = distributed.init(pick_device(self.t.device))
        tune_backends(self.device)
        self.precision = resolve_precision(self.t.precision, self.device)
        if self.device.type == "cpu" and self.precision == "bf16":
            bound_onednn_cache()  # before the model exists: no oneDNN operation has run yet
        if self.precision == "fp16" and self.device.type != "cuda":
            raise ConfigError("train.precision: fp16 needs a CUDA device; use bf16 on a CPU")
        self.show_progress = progress and self.world.main
        self.run_dir = RunDir.of(cfg)
        # Every check comes before the run directory changes: a refused --resume or a failed
        # start leaves it as it was.
        if resume:
            self.run_dir.check_resumable(cfg)
        else:
            self.run_dir.check_fresh(overwrite)
        seed_everything(self.t.seed)
        self.data = load_training_data(cfg, self.run_dir.vocabularies() if resume else None,
                                       progress=self.show_progress)
        self._build_model()
        self.state = Progress()
        # validation BLEU uses greedy search whatever decode.beam_size says: a training signal
        self.valid_decode = cfg.decode.override(beam_size=1, n_best=1, hard_attention=False)
        self._clip_validation()
        if resume:
            self._restore(self.run_dir.last)
        if self.world.main:
            self._check_disk_space()
            self._commit_run_dir(resume, overwrite)
        distributed.barrier(self.world)
        summary = self.run_dir.read_summary() if self.state.update else None
        self.clock = WallClock(summary.get("wall_s", 0.0) if summary else 0.0)
        self.signals = StopSignals()

    # ---- set-up ------------------------------------------------------------------------------
    def _commit_run_dir(self, resume: bool, overwrite: bool) -> None:
        """Write the run directory once every check has passed (whole files, atomically)."""
        if resume:
            self.run_dir.truncate_log_after(self.state.update)
        else:
            self.run_dir.prepare_fresh(overwrite)
            self.run_dir.install_vocabularies(self.data.src_vocab, self.data.tgt_vocab)
        self.run_dir.write_config(self.cfg)

    def _check_disk_space(self) -> None:
        """Refuse to start when the run's disk cannot hold its checkpoints: last.pt and best.pt
        with the optimizer state (about 3x the weights with Adam), plus the kept weights."""
        weights = sum(p.numel() * p.element_size() for p in self.model.parameters())
        need = 2 * 3 * weights + (self.t.keep_last + self.t.keep_best) * weights
        self.run_dir.check_free_space(need, "this run's checkpoints")

    def _clip_validation(self) -> None:
        """Validation reads no more than decoding would (see inference.input_limit): longer
        validation sentences are cut on both sides, with a warning naming their line."""
        d = self.data
        limit = input_limit(self.model, self.cfg)
        split = self.cfg.data.splits.valid
        warn = print_warning if self.world.main else (lambda message: None)
        d.valid_src_ids = clip_inputs(d.valid_src_ids, limit,
                                      lambda i: f"{split} line {i + 1} (source)", warn)
        d.valid_tgt_ids = clip_inputs(d.valid_tgt_ids, limit,
                                      lambda i: f"{split} line {i + 1} (target)", warn)

    def _build_model(self) -> None:
        d = self.data
        self.model = build_model(self.cfg.model, len(d.src_vocab), len(d.tgt_vocab))
        self.model.to(self.device)
        self.loss = LossModule(self.model, self.t.loss_chunk_logits)
        if self.world.distributed:
            self.loss = torch.nn.parallel.DistributedDataParallel(
                self.loss, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.optimizer = build_optimizer(self.t, self.model)
        self.schedule = LRSchedule(self.t, self.optimizer)
        # fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

    def _restore(self, path: Path) -> None:
        # on the CPU: the random states must be CPU tensors, and load_state_dict moves the
        # weights and the optimizer state to the device of the parameters
        payload = ckpt.load(path, map_location="cpu")
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
        s, t = self.state, self.t
        self.run_dir.save_last(self._payload(), best=improved)
        if t.keep_last or t.keep_best:
            weights = {"model": self.model.state_dict(), "config": self.cfg.to_dict(),
                       "update": s.update, "epoch": s.epoch, "score": score}
            s.kept = self.run_dir.keep(weights, s.update, score, s.kept, t.keep_last,
                                       t.keep_best)

    # ---- validation --------------------------------------------------------------------------
    def validate(self) -> dict[str, Any]:
        """Validation loss (and greedy BLEU/chrF) as a metrics record."""
        v0 = time.perf_counter()
        s, d = self.state, self.data
        record: dict[str, Any] = {"kind": "valid", "update": s.update, "epoch": s.epoch}
        loss = validation_loss(self.model, d.valid_src_ids, d.valid_tgt_ids, self.device,
                               self.cfg.decode.batch_size)
        record.update(loss=round(loss, 4), ppl=round(math.exp(min(loss, 50)), 2))
        if self.t.valid_bleu:
            windows = [m for m in self.model.modules() if isinstance(m, LocalPredictiveWindow)]
            for w in windows:  # local-p: where the predicted positions p_t / S lie
                w.position_stats = []
            hyps = decode_ids(self.model, d.valid_src_ids, self.valid_decode, self.device)
            scores = corpus_scores(d.tgt_vocab.decode(hyps), d.valid_tgt, ter=False)
            record.update(bleu=scores["bleu"]["score"], chrf=scores["chrf"]["score"])
            record.update(_position_record(windows))
        record["lr"] = self.optimizer.param_groups[0]["lr"]
        record["valid_s"] = round(time.perf_counter() - v0, 1)
        record["train_s"] = round(s.train_s, 1)
        record["wall_s"] = round(self.clock.seconds(), 1)
        self.model.train()
        return record

    def validate_and_save(self) -> bool:
        """Validate (rank 0), log, checkpoint; returns True when early stopping says stop."""
        stop = self._validate_and_save_main() if self.world.main else False
        self.state.last_validated = self.state.update
        distributed.barrier(self.world)
        return distributed.broadcast_flag(stop, self.world, self.device)

    def _validate_and_save_main(self) -> bool:
        s, t = self.state, self.t
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
        self.run_dir.log(rec)
        metrics = "".join(f" {k} {rec[k]:.2f}" for k in ("bleu", "chrf") if k in rec)
        tqdm.write(
            f"valid update {s.update} epoch {s.epoch}: loss {rec['loss']:.3f} "
            f"ppl {rec['ppl']:.2f}{metrics}" + (" (best)" if improved else
            f" ({s.bad_validations} without improvement)")
            + (" -> early stop" if stop else "")
        )
        self._save(score, improved)
        return stop

    # ---- the loop ----------------------------------------------------------------------------
    def _step(self, group: list[np.ndarray]) -> tuple[float, int, int, bool]:
        """One update from the batches of this rank (summed gradients, accumulation); returns
        (summed loss, target tokens, tokens, whether the step was taken: a non-finite loss or
        gradient norm on any rank skips it)."""
        t = self.t
        parts = [self.data.batches.collate(idx).to(self.device) for idx in group]
        n_tgt = sum(b.n_tgt_tokens for b in parts)
        # every rank divides by the tokens of all ranks; DDP's mean is then the global mean
        total_tgt = distributed.all_sum(float(n_tgt), self.world, self.device)
        scale = self.world.size / max(total_tgt, 1.0)
        if not parts:  # past the epoch's last batch (DDP): join the gradient sum with zeros
            parts, scale = [self.data.batches.collate(np.zeros(1, np.int64)).to(self.device)], 0.0
        # Gradients are zeroed in place, not freed: each parameter's gradient keeps the block
        # of memory the first backward pass gave it. Freed at every update, they would be
        # allocated again among the activations of the next backward pass, each one a
        # long-lived block in the middle of the heap that later batches of other shapes must
        # fit around: 100 MiB more peak memory for the default Transformer
        # (docs/performance.md, Memory). 0 + g = g, so the sums are the same.
        self.optimizer.zero_grad(set_to_none=False)
        loss_total = 0.0
        for i, b in enumerate(parts):
            sync = i == len(parts) - 1
            ctx = (self.loss.no_sync() if self.world.distributed and not sync
                   else contextlib.nullcontext())
            with ctx:
                with autocast(self.precision, self.device):
                    loss_sum = self.loss(b, t.label_smoothing)
                self.scaler.scale(loss_sum * scale).backward()
            loss_total += float(loss_sum.detach()) if scale else 0.0
        n_tok = n_tgt + sum(b.n_src_tokens for b in parts) if scale else 0
        finite = math.isfinite(loss_total)
        if t.clip_grad_norm > 0:
            self.scaler.unscale_(self.optimizer)
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.clip_grad_norm)
            if self.precision != "fp16":  # fp16's gradient scaler skips inf gradients itself
                finite = finite and bool(torch.isfinite(norm))
        if self.world.distributed:  # every rank takes the step or none does
            finite = distributed.all_sum(float(not finite), self.world, self.device) == 0
        if not finite:
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler.is_enabled():
                self.scaler.update()
            return loss_total, n_tgt, n_tok, False
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss_total, n_tgt, n_tok, True

    def _done(self) -> bool:
        t, s = self.t, self.state
        minutes = self.clock.seconds() / 60
        return s.update >= t.max_updates or (t.max_minutes is not None
                                             and minutes >= t.max_minutes)

    def _update(self, group: list[np.ndarray], per_update: int, window: LogWindow
                ) -> float | None:
        """One update and its bookkeeping; returns its learning rate, or None when the update
        was skipped (its batches are consumed all the same)."""
        s = self.state
        t0 = time.perf_counter()
        lr = self.schedule.set(s.update + 1)
        loss_sum, n_tgt, n_tok, taken = self._step(group)
        s.position += per_update
        s.train_s += time.perf_counter() - t0
        if not taken:
            self._skipped(loss_sum)
            return None
        s.nonfinite = 0
        s.update += 1
        n_tok = int(distributed.all_sum(n_tok, self.world, self.device))
        s.tokens += n_tok
        window.tokens += n_tok
        window.tgt += n_tgt
        window.tgt_all += int(distributed.all_sum(n_tgt, self.world, self.device))
        window.loss += loss_sum
        return lr

    def _skipped(self, loss: float) -> None:
        """Log an update skipped for a non-finite loss or gradient; too many in a row stop the
        run (last.pt, from the last validation, is untouched)."""
        s, t = self.state, self.t
        s.nonfinite += 1
        if self.world.main:
            self.run_dir.log({"kind": "skip", "update": s.update, "epoch": s.epoch,
                              "position": s.position, "loss": repr(loss)})
            tqdm.write(f"warning: update {s.update + 1} skipped: non-finite loss or gradient "
                       f"(loss {loss}); {s.nonfinite} in a row")
        if s.nonfinite >= t.max_nonfinite:
            raise TrainingError(
                f"training stopped: {s.nonfinite} updates in a row had a non-finite loss or "
                f"gradient (after update {s.update}, epoch {s.epoch}); {self.run_dir.last} "
                f"keeps the last validated state. Lower train.lr or raise "
                f"train.warmup_updates, then --resume {self.run_dir} or start again")

    def _stop_requested(self) -> bool:
        """Whether a SIGINT/SIGTERM reached this process (or any rank)."""
        got = self.signals.received is not None
        if self.world.distributed:
            got = distributed.all_sum(float(got), self.world, self.device) > 0
        return got

    def _stop_on_signal(self) -> None:
        """Save a resumable last.pt where training stands and end with the resume command."""
        s = self.state
        name, signum = self.signals.name or "SIGINT", self.signals.received or signal.SIGINT
        if self.world.main:
            self.run_dir.save_last(self._payload(), best=False)
            self._write_summary(stopped=name)
        distributed.barrier(self.world)
        cmd = f"seq2seq train --resume {self.run_dir}"
        if self.world.distributed:
            cmd += f" --nproc {self.world.size}"
        raise Interrupted(f"{name}: stopped after update {s.update} (epoch {s.epoch}) and saved "
                          f"{self.run_dir.last}; continue with: {cmd}", signum)

    def _log_window(self, window: LogWindow, lr: float, bar: tqdm) -> LogWindow:
        """Write a ``train`` record for the updates of ``window``; returns a new window."""
        s = self.state
        elapsed = time.perf_counter() - window.t0
        rec = {
            "kind": "train", "update": s.update, "epoch": s.epoch,
            "loss": round(window.loss / max(window.tgt, 1), 4), "lr": lr,
            "tokens_per_s": round(window.tokens / max(elapsed, 1e-9)),
            "tgt_tokens_per_s": round(window.tgt_all / max(elapsed, 1e-9)),
            "train_s": round(s.train_s, 1), "wall_s": round(self.clock.seconds(), 1),
        }
        self.run_dir.log(rec)
        bar.set_postfix(ep=s.epoch, loss=f"{rec['loss']:.3f}", lr=f"{lr:.2e}",
                        tok_s=rec["tokens_per_s"])
        return LogWindow()

    def _train_epoch(self, bar: tqdm, window: LogWindow) -> tuple[bool, LogWindow]:
        """Updates from the current position to the end of the epoch or a stop; returns
        (done, the open log window)."""
        t, s = self.t, self.state
        per_update = self.world.size * t.accumulate  # batches consumed by one update
        order = self.data.batches.epoch(s.epoch)
        done = False
        # every batch once: at the end of an epoch a rank may get fewer batches than the others,
        # or none (it then adds zero gradients, see _step)
        while not done and s.position < len(order):
            group = order[s.position : s.position + per_update][self.world.rank :: self.world.size]
            lr = self._update(group, per_update, window)
            if self._stop_requested():
                self._stop_on_signal()
            if lr is None:  # skipped
                continue
            if s.update % t.log_every == 0 and self.world.main:
                window = self._log_window(window, lr, bar)
            bar.update(1)
            done = distributed.broadcast_flag(self._done(), self.world, self.device)
            if s.update % t.valid_every == 0 or done:
                done = self.validate_and_save() or done
                window.t0 = time.perf_counter()
        return done, window

    def _end_epoch(self) -> bool:
        """The epoch is over: schedule, max_epochs; returns True when training is done."""
        s = self.state
        self.schedule.after_epoch(s.epoch)
        if self.t.max_epochs is not None and s.epoch >= self.t.max_epochs:
            if s.last_validated != s.update:
                self.validate_and_save()
            return True
        s.epoch, s.position = s.epoch + 1, 0
        return False

    def run(self) -> Path:
        """Train until a stopping criterion; returns the run directory."""
        if self.world.main:
            tqdm.write(self._banner())
        self.clock = WallClock(self.clock.before)
        bar = tqdm(total=self.t.max_updates, initial=self.state.update,
                   disable=not self.show_progress, dynamic_ncols=True, desc="train")
        self.model.train()
        done, window = self._done(), LogWindow()
        with self.signals, dropout.masks(self.t.dropout_masks):
            try:
                if self._validate_if_missed(done):
                    done = True  # early stopping said so
                window = LogWindow()  # the validation is not training time
                while not done:
                    done, window = self._train_epoch(bar, window)
                    done = done or self._end_epoch()
            finally:
                bar.close()
        if self.world.main:
            self._write_summary()
        distributed.barrier(self.world)
        if self.signals.received is not None:  # it came during the last validation
            raise Interrupted(f"{self.signals.name}: training had finished (update "
                              f"{self.state.update}); stopped before anything else",
                              self.signals.received)
        return self.run_dir.path

    def _validate_if_missed(self, done: bool) -> bool:
        """A run stopped by a signal right after an update that was due a validation (every
        ``valid_every``, or the last) validates it first when resumed, as a run never stopped
        would have; returns early stopping's verdict."""
        s = self.state
        if s.update == 0 or s.last_validated == s.update:
            return False
        if s.update % self.t.valid_every == 0 or done:
            return self.validate_and_save()
        return False

    def _banner(self) -> str:
        d, s = self.data, self.state
        return (
            f"seq2seq: {len(d.keep):,} training pairs, vocab {len(d.src_vocab)}/"
            f"{len(d.tgt_vocab)}, {self.model.num_parameters():,} parameters, device "
            f"{self.device}" + (f" x {self.world.size} processes" if self.world.distributed
                                else "")
            + f", {self.precision}, run dir {self.run_dir}"
            + (f", resuming at update {s.update}" if s.update else "")
        )

    def _write_summary(self, stopped: str | None = None) -> None:
        """train_summary.json; ``stopped`` names the signal that interrupted the run."""
        s, cfg, m = self.state, self.cfg, self.cfg.model
        wall = self.clock.seconds()
        has_decoder = ARCHITECTURES.get(m.arch).has_decoder
        summary = {
            "name": cfg.name, "arch": m.arch, "decoder": m.decoder if has_decoder else None,
            "attention": m.attention.score, "window": m.attention.window,
            "heads": m.attention.heads, "parameters": self.model.num_parameters(),
            "updates": s.update, "epochs": s.epoch, "train_s": round(s.train_s, 1),
            "wall_s": round(wall, 1), "tokens_per_s": round(s.tokens / max(s.train_s, 1e-9)),
            "best_valid": s.best, "valid_metric": self.t.valid_metric,
            "device": str(self.device), "processes": self.world.size,
            "precision": self.precision,
        }
        if stopped:
            summary["stopped_by"] = stopped
        self.run_dir.write_summary(summary)
        if stopped:
            return
        best = -s.best if self.t.valid_metric == "loss" and s.best is not None else s.best
        tqdm.write(
            f"done: {s.update} updates in {wall / 60:.1f} min ({summary['tokens_per_s']} tok/s); "
            f"best validation {self.t.valid_metric} {best}"
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
