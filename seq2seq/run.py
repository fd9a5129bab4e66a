"""The run directory: the one place that knows the files of a run and their names.

A run directory holds everything ``eval``, ``translate``, ``average`` and ``report`` need::

    config.yaml                 the resolved configuration
    vocab/joint.model           the SentencePiece model (or vocab/src.model + vocab/tgt.model)
    last.pt                     the latest checkpoint: everything to resume training
    best.pt                     a copy of the checkpoint with the best validation score
    ckpt_UPDATE.pt              per-validation weights kept by train.keep_last / keep_best
    averaged.pt                 their mean, written by ``seq2seq average --run``
    metrics.jsonl               one JSON record per log window ("train") and validation ("valid")
    train_summary.json          what the finished (or stopped) training reports
    eval_NAME.json / .md        an evaluation: scores with signatures, search settings
    hyps_NAME.txt               its 1-best translations, one a line
    nbest_NAME.txt              with n_best > 1: LINE<TAB>SCORE<TAB>TEXT, best first per line

``NAME`` is the data name followed by what differs from the default evaluation (a checkpoint
other than best.pt, beam search, hard attention, quantization), so evaluations never overwrite
each other:
``test_2016_flickr``, ``test_2016_flickr_beam5``, ``test_2016_flickr_averaged_hard``.
Every other module goes through :class:`RunDir` to read or write these files.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seq2seq import checkpoint as ckpt
from seq2seq.config import Config, config_from_dict, config_to_yaml, load_config
from seq2seq.errors import CheckpointError, ConfigError, Seq2SeqError
from seq2seq.vocab import Vocab


@dataclass(frozen=True)
class EvalFiles:
    """The files one evaluation writes."""

    report: Path  # eval_NAME.json
    markdown: Path  # eval_NAME.md
    hyps: Path  # hyps_NAME.txt
    nbest: Path  # nbest_NAME.txt


def eval_name(data: str, beam_size: int = 1, hard_attention: bool = False,
              checkpoint: str = "best", quantize: str = "none") -> str:
    """The NAME of an evaluation's files (see the module docstring)."""
    name = data.replace("/", "_")
    if checkpoint != "best":
        name += "_" + Path(checkpoint).stem
    if beam_size > 1:
        name += f"_beam{beam_size}"
    if hard_attention:
        name += "_hard"
    if quantize != "none":
        name += f"_{quantize}"
    return name


def write_text_atomic(path: Path, text: str) -> None:
    """Replace ``path`` by a file holding ``text``: written beside it, then renamed over it, so
    a reader (or a crash) sees the old file or the new one, never a part."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise ckpt.write_error(path, e) from None


# what a resumed run must keep: its checkpoint and vocabulary depend on these
_FIXED_ON_RESUME = ("vocab.", "model.", "data.src_lang", "data.tgt_lang")
_FREE_ON_RESUME = {"model.dropout", "model.attention_dropout", "model.relu_dropout"}


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}"""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def changed_keys(before: Config, now: Config) -> dict[str, tuple[Any, Any]]:
    """The dotted keys whose values differ between two configs: key -> (before, now)."""
    a, b = _flat(before.to_dict()), _flat(now.to_dict())
    return {k: (a.get(k), b.get(k)) for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise Seq2SeqError(f"{path}: unreadable ({type(e).__name__})") from None


class RunDir:
    """One run directory (it need not exist yet)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @classmethod
    def of(cls, cfg: Config) -> RunDir:
        """Where a config's run goes: ``run_dir``, or ``runs/NAME``."""
        return cls(cfg.run_dir if cfg.run_dir else Path("runs") / cfg.name)

    def __str__(self) -> str:
        return str(self.path)

    def require(self) -> RunDir:
        """This run, which must exist; returns self."""
        if not self.path.is_dir():
            raise CheckpointError(f"run directory not found: {self.path}")
        return self

    # ---- configuration and vocabulary -------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def vocab_dir(self) -> Path:
        return self.path / "vocab"

    def write_config(self, cfg: Config) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.config_path, config_to_yaml(cfg))

    def read_config(self, overrides: list[str] | None = None) -> Config:
        return load_config(self.config_path, overrides)

    def vocabularies(self) -> tuple[Vocab, Vocab]:
        """(source, target) vocabulary; the same object twice for a joint vocabulary."""
        d = self.vocab_dir
        if (d / "joint.model").is_file():
            v = Vocab(d / "joint.model")
            return v, v
        if (d / "src.model").is_file() or (d / "tgt.model").is_file():
            return Vocab(d / "src.model"), Vocab(d / "tgt.model")
        raise CheckpointError(f"{self.path}: no vocabulary (vocab/joint.model, or "
                              "vocab/src.model and vocab/tgt.model); the run directory is "
                              "incomplete")

    def install_vocabularies(self, src: Vocab, tgt: Vocab) -> None:
        """Copy the SentencePiece model(s) into vocab/ (``joint.model`` when ``src`` is
        ``tgt``), replacing the directory as a whole."""
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".vocab.", dir=self.path))
        try:
            files = {"joint": src} if src is tgt else {"src": src, "tgt": tgt}
            for name, vocab in files.items():
                shutil.copyfile(vocab.path, tmp / f"{name}.model")
            tmp.chmod(ckpt.file_mode(directory=True))  # mkdtemp makes 0700
            if self.vocab_dir.exists():
                shutil.rmtree(self.vocab_dir)
            os.replace(tmp, self.vocab_dir)
        except OSError as e:
            raise ckpt.write_error(self.vocab_dir, e) from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def check_writable(self, purpose: str) -> None:
        """Raise a one-line error now, before any work, if ``purpose`` (what a command is
        about to do) could not write into the run directory."""
        probe = self._nearest_directory()
        if not os.access(probe, os.W_OK | os.X_OK):
            raise CheckpointError(f"{probe}: not writable, but {purpose} writes into "
                                  f"{self.path}")

    def check_free_space(self, need: int, what: str) -> None:
        """Raise a one-line error if the run's disk has less than ``need`` bytes free."""
        where = self._nearest_directory()
        free = ckpt.free_bytes(where)
        if free is not None and free < need:
            raise CheckpointError(
                f"{where}: {ckpt.human_size(free)} free, but {what} need about "
                f"{ckpt.human_size(need)}; free some space or choose another --run-dir")

    def _nearest_directory(self) -> Path:
        """The run directory, or its nearest existing parent before it is created."""
        return next((p for p in (self.path, *self.path.parents) if p.is_dir()), Path("."))

    # ---- checkpoints ------------------------------------------------------------------------
    @property
    def last(self) -> Path:
        return self.path / "last.pt"

    @property
    def best(self) -> Path:
        return self.path / "best.pt"

    @property
    def averaged(self) -> Path:
        """Where ``seq2seq average --run`` writes the mean of kept checkpoints."""
        return self.path / "averaged.pt"

    def kept(self, update: int) -> Path:
        """The per-validation weights of ``update`` (train.keep_last / keep_best)."""
        return self.path / f"ckpt_{int(update):07d}.pt"

    def kept_checkpoints(self) -> list[Path]:
        return sorted(self.path.glob("ckpt_*.pt"))

    def has_checkpoints(self) -> bool:
        return self.path.is_dir() and any(self.path.glob("*.pt"))

    def checkpoint(self, which: str = "best") -> Path:
        """``best`` (``last`` while no best.pt exists yet), ``last``, or a path; a relative path
        is looked up in the run unless it exists as given."""
        self.require()
        if which in ("best", "last"):
            path = self.best if which == "best" else self.last
            if not path.is_file() and which == "best" and self.last.is_file():
                path = self.last
            return path
        p = Path(which)
        return p if p.is_absolute() or p.exists() else self.path / p

    def load_checkpoint(self, which: str = "best", map_location: Any = "cpu", mmap: bool = False
                        ) -> tuple[Path, dict[str, Any], Config]:
        """(path, payload, the config stored in it); ``mmap``: see :func:`checkpoint.load`."""
        path = self.checkpoint(which)
        payload = ckpt.load(path, map_location=map_location, mmap=mmap)
        try:
            cfg = config_from_dict(payload["config"])
        except ConfigError as e:
            raise CheckpointError(f"{path}: stored config is invalid ({e})") from None
        return path, payload, cfg

    def save_last(self, payload: dict[str, Any], best: bool) -> None:
        """Write last.pt atomically; with ``best`` write best.pt first and last.pt as a copy of
        it, so that a kill in between leaves an older last.pt (resumed, the same updates are
        done again) and never a best.pt older than last.pt says."""
        if not best:
            ckpt.save_atomic(payload, self.last)
            return
        ckpt.save_atomic(payload, self.best)
        tmp = self.path / ".last.pt.tmp"
        try:
            shutil.copyfile(self.best, tmp)
            tmp.replace(self.last)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise ckpt.write_error(self.last, e) from None

    def keep(self, weights: dict[str, Any], update: int, score: float,
             kept: list[list[float]], keep_last: int, keep_best: int) -> list[list[float]]:
        """Save ``ckpt_UPDATE.pt``, then delete the kept files that are neither among the
        ``keep_last`` latest nor the ``keep_best`` best; returns the new ``[update, score]``
        list of what is kept."""
        ckpt.save_atomic(weights, self.kept(update))
        kept = [*kept, [update, score]]
        keep = {u for u, _ in kept[-keep_last:]} if keep_last else set()
        if keep_best:
            by_score = sorted(kept, key=lambda r: (-r[1], -r[0]))
            keep |= {u for u, _ in by_score[:keep_best]}
        for u, _ in kept:
            if u not in keep:
                self.kept(u).unlink(missing_ok=True)
        return [r for r in kept if r[0] in keep]

    def pick_checkpoints(self, last: int | None = None, best: int | None = None
                         ) -> list[Path]:
        """The ``last`` latest or the ``best`` best-scoring kept checkpoints."""
        if (last is None) == (best is None):
            raise CheckpointError("choose --last N or --best N")
        files = self.kept_checkpoints()
        if not files:
            raise CheckpointError(f"{self.path}: no ckpt_*.pt files (train with "
                                  "train.keep_last or train.keep_best set)")
        n = last or best
        if len(files) < n:
            raise CheckpointError(f"{self.path}: asked for {n} checkpoints but only "
                                  f"{len(files)} are kept")
        if last is not None:
            return files[-n:]
        scores = {p: ckpt.load(p).get("score") for p in files}
        if any(s is None for s in scores.values()):
            raise CheckpointError(f"{self.path}: a ckpt_*.pt file has no validation score")
        return sorted(sorted(files, key=lambda p: -scores[p])[:n])

    # ---- starting a run ---------------------------------------------------------------------
    def check_fresh(self, overwrite: bool) -> None:
        """Refuse to start a new training over checkpoints unless ``overwrite``; and the
        directory must be writable. Changes nothing."""
        if self.has_checkpoints() and not overwrite:
            raise CheckpointError(
                f"run directory {self.path} already holds checkpoints; continue it with "
                f"--resume {self.path}, choose another run_dir (--run-dir), or pass "
                "--overwrite to delete it")
        self.check_writable("training")

    def check_resumable(self, cfg: Config) -> None:
        """Refuse, changing nothing, to resume with a config whose vocabulary or model differs
        from the run's (its checkpoint and vocab/ would not fit); dropout rates may change."""
        if not self.last.is_file():
            raise CheckpointError(f"--resume: no last.pt in {self.path}")
        for key, (old, new) in changed_keys(self.read_config(), cfg).items():
            if key.startswith(_FIXED_ON_RESUME) and key not in _FREE_ON_RESUME:
                raise ConfigError(
                    f"{key}: cannot change when resuming (the run has {old!r}, "
                    f"asked for {new!r}); start a new run to change it")
        self.check_writable("training")

    def prepare_fresh(self, overwrite: bool) -> None:
        """Make the directory ready for a new training (after :meth:`check_fresh` and every
        other check passed): with ``overwrite`` delete an earlier run, start a new log."""
        self.check_fresh(overwrite)
        if self.has_checkpoints():
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.metrics_path.unlink(missing_ok=True)

    # ---- metrics log and summary ------------------------------------------------------------
    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def summary_path(self) -> Path:
        return self.path / "train_summary.json"

    def log(self, record: dict[str, Any]) -> None:
        """Append one record to metrics.jsonl."""
        with self.metrics_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def records(self, kind: str | None = None) -> list[dict[str, Any]]:
        """The metrics log's records (of one ``kind``: train or valid), oldest first."""
        if not self.metrics_path.is_file():
            return []
        rows = []
        for i, line in enumerate(self.metrics_path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise Seq2SeqError(f"{self.metrics_path}:{i}: not a JSON record") from None
        return [r for r in rows if kind is None or r.get("kind") == kind]

    def truncate_log_after(self, update: int) -> None:
        """Drop the records a killed run wrote after its last checkpoint."""
        keep = [r for r in self.records() if r.get("update", 0) <= update]
        write_text_atomic(self.metrics_path, "".join(json.dumps(r) + "\n" for r in keep))

    def read_summary(self) -> dict[str, Any] | None:
        """train_summary.json, or None before training has finished once."""
        return _read_json(self.summary_path) if self.summary_path.is_file() else None

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_text_atomic(self.summary_path, json.dumps(summary, indent=2) + "\n")

    # ---- evaluations ------------------------------------------------------------------------
    def eval_files(self, name: str) -> EvalFiles:
        p = self.path
        return EvalFiles(p / f"eval_{name}.json", p / f"eval_{name}.md", p / f"hyps_{name}.txt",
                         p / f"nbest_{name}.txt")

    def small_files(self) -> list[Path]:
        """The run's files of kilobytes, not megabytes: the resolved config, the metrics log,
        the summary and every evaluation's reports and translations (what a committed record
        of the run keeps; no checkpoint, no vocabulary)."""
        p = self.path
        files = [self.config_path, self.metrics_path, self.summary_path]
        for pattern in ("eval_*.json", "eval_*.md", "hyps_*.txt", "nbest_*.txt"):
            files += sorted(p.glob(pattern))
        return [f for f in files if f.is_file()]

    def evaluation(self, data: str, greedy_only: bool = False) -> dict[str, Any] | None:
        """The evaluation of ``data`` with best.pt: the greedy one if there is one, else (unless
        ``greedy_only``) the best-scoring soft-attention beam search; None if neither exists."""
        plain = self.eval_files(eval_name(data)).report
        if plain.is_file():
            return _read_json(plain)
        if greedy_only:
            return None
        stem = eval_name(data)
        beams = [p for p in self.path.glob(f"eval_{stem}_beam*.json")
                 if p.stem[len(f"eval_{stem}_beam"):].isdigit()]
        reports = [_read_json(p) for p in beams]
        return max(reports, key=lambda r: r["bleu"]["score"]) if reports else None
