"""A progression: the steps of the history of attention (``configs/progression.yaml``) and the
jobs they make.

A progression file lists the steps: a config, a label, the year and paper, a budget in updates
(the same result on every machine: no time limit), the seeds and the directions (``de-en``).
Every (step, direction, seed) is a *job*, ``NAME.SRC-TGT.sSEED``, trained into ``RUNS/JOB``
(checkpoints, not committed) with its small results in ``REPORTS/JOB/`` (committed):
:mod:`seq2seq.reproduce` runs them, :mod:`seq2seq.progression_report` writes ``REPORTS.md``.
"""

from __future__ import annotations

import dataclasses
import gzip
import itertools
import json
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from seq2seq.config import Config, load_config
from seq2seq.download import fetch_missing
from seq2seq.errors import ConfigError, DataError, one_line

MAX_UPDATES = 3000
QUICK_UPDATES = 2
QUICK_LINES = {"train": 300, "valid": 16, "test": 16}
ATTENTION_FILE = "attention.json"  # a job's attention samples, beside its result.json
QUICK_OVERRIDES = [
    "model.embed_size=16", "model.hidden_size=16", "model.ff_size=32", "vocab.size=400",
    "train.batch_tokens=500", "train.valid_every=1000", "train.valid_max_sentences=4",
    "decode.max_len_a=0", "decode.max_len_b=6", "decode.batch_size=16", "train.device=cpu",
]


@dataclass(frozen=True)
class Step:
    """One step of the history: a config and how it is run and labelled."""

    name: str
    config: Path
    label: str
    year: int
    paper: str
    updates: int
    attention: str = ""
    seeds: tuple[int, ...] = (1234,)
    directions: tuple[str, ...] = ("de-en",)
    overrides: tuple[str, ...] = ()  # `set:` in the file: KEY=VALUE over the config, as --set
    against: str = ""  # another step whose scores the report sets beside this one's (ablation)


@dataclass(frozen=True)
class Job:
    step: Step
    direction: str
    seed: int

    @property
    def id(self) -> str:
        return f"{self.step.name}.{self.direction}.s{self.seed}"

    @property
    def langs(self) -> tuple[str, str]:
        src, tgt = self.direction.split("-")
        return src, tgt


@dataclass
class Progression:
    path: Path
    steps: list[Step]
    runs: Path  # checkpoints (not committed)
    reports: Path  # the small results of every job (committed)
    report: Path  # the Markdown report, rebuilt from the results
    published: list[dict[str, str]] = dataclasses.field(default_factory=list)  # from papers

    def jobs(self, only: str | None = None, flag: str = "--only") -> list[Job]:
        if only is not None and only not in {s.name for s in self.steps}:
            raise ConfigError(f"{flag} {only}: no such step in {self.path} "
                              f"(steps: {', '.join(s.name for s in self.steps)})")
        return [Job(s, d, seed) for s in self.steps if only in (None, s.name)
                for d in s.directions for seed in s.seeds]


def load_progression(path: Path, out: Path | None = None) -> Progression:
    """Read and check a progression file; ``out`` puts runs and reports under one directory."""
    path = Path(path)
    raw = _read_yaml(path)
    if not isinstance(raw.get("steps"), list) or not raw["steps"]:
        raise ConfigError(f"{path}: needs a list of steps under 'steps:'")
    unknown = set(raw) - {"steps", "runs", "reports", "report", "published"}
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(sorted(unknown))} "
                          "(known: steps, runs, reports, report, published)")
    steps = [_step(entry, path, i) for i, entry in enumerate(raw["steps"], 1)]
    names = [s.name for s in steps]
    if len(set(names)) < len(names):
        raise ConfigError(f"{path}: step names must be unique ({', '.join(names)})")
    for s in steps:
        if s.against and (s.against == s.name or s.against not in names):
            raise ConfigError(f"{path} ({s.name}): against: {s.against!r} is not another step "
                              f"(known: {', '.join(n for n in names if n != s.name)})")
    runs = Path(raw.get("runs", "runs/progression"))
    reports = Path(raw.get("reports", "reports/progression"))
    report = Path(raw.get("report", reports.with_suffix(".md")))
    if out is not None:
        runs, reports = Path(out) / "runs", Path(out) / "progression"
        report = Path(out) / "progression.md"
    return Progression(path, steps, runs, reports, report, _published(raw, path))


PUBLISHED_KEYS = ("model", "paper", "data", "bleu", "scoring")


def _published(raw: dict[str, Any], path: Path) -> list[dict[str, str]]:
    """``published:``: results from the papers, each with every key of PUBLISHED_KEYS, or the
    name of another progression file whose list to take."""
    entries = raw.get("published") or []
    if isinstance(entries, str):
        other = path.parent / entries
        if other.resolve() == path.resolve():
            raise ConfigError(f"{path}: published: names this file itself")
        other_raw = _read_yaml(other)
        if isinstance(other_raw.get("published"), str):
            raise ConfigError(f"{path}: published: {entries} must list the results itself")
        return _published(other_raw, other)
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: published: must be a list, or another progression file")
    for i, e in enumerate(entries, 1):
        if not isinstance(e, dict) or set(e) != set(PUBLISHED_KEYS):
            raise ConfigError(f"{path}: published entry {i} needs exactly the keys "
                              f"{', '.join(PUBLISHED_KEYS)}")
    return [{k: str(e[k]) for k in PUBLISHED_KEYS} for e in entries]


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot read the progression ({one_line(e)})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: needs a list of steps under 'steps:'")
    return raw


def _step(entry: Any, path: Path, i: int) -> Step:
    where = f"{path}: step {i}"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: must be a mapping (name, config, label, ...)")
    entry = dict(entry)
    if "overrides" in entry:
        raise ConfigError(f"{where} ({entry.get('name', '?')}): unknown key(s) overrides "
                          "(config values go under 'set:')")
    if not isinstance(entry.get("set", []), list):
        raise ConfigError(f"{where} ({entry.get('name', '?')}): 'set' must be a list of "
                          "KEY=VALUE strings")
    if "set" in entry:
        entry["overrides"] = tuple(str(kv) for kv in entry.pop("set"))
    fields = {f.name: f for f in dataclasses.fields(Step)}
    unknown = set(entry) - set(fields)
    missing = {n for n, f in fields.items() if f.default is dataclasses.MISSING} - set(entry)
    if unknown or missing:
        what = [f"unknown key(s) {', '.join(sorted(unknown))}"] if unknown else []
        what += [f"missing {', '.join(sorted(missing))}"] if missing else []
        raise ConfigError(f"{where} ({entry.get('name', '?')}): {'; '.join(what)}")
    step = Step(**{**entry, "config": (path.parent / entry["config"]).resolve(),
                   "seeds": tuple(entry.get("seeds", (1234,))),
                   "directions": tuple(entry.get("directions", ("de-en",)))})
    if not step.config.is_file():
        raise ConfigError(f"{where} ({step.name}): config not found: {step.config}")
    if not isinstance(step.updates, int) or not 1 <= step.updates <= MAX_UPDATES:
        raise ConfigError(f"{where} ({step.name}): updates must be 1..{MAX_UPDATES}, "
                          f"got {step.updates!r}")
    for what, values in (("seeds", step.seeds), ("directions", step.directions)):
        if len(set(values)) != len(values):
            raise ConfigError(f"{where} ({step.name}): {what} repeat: {list(values)}")
    for d in step.directions:
        if d.count("-") != 1 or len(set(d.split("-"))) != 2:
            raise ConfigError(f"{where} ({step.name}): direction {d!r} is not SRC-TGT")
    if step.overrides:  # a misspelled key fails here, not hours into a sweep
        try:
            load_config(step.config, list(step.overrides))
        except ConfigError as e:
            raise ConfigError(f"{where} ({step.name}): set: {e}") from None
    return step


def job_config(prog: Progression, job: Job, quick: bool, extra: list[str] | None = None
               ) -> Config:
    """The job's config: the step's file in fp32 (``precision: auto`` would train in bf16 on
    some machines and not on others, and a sweep spans machines) and decoding one batch at a
    time on all threads (as every result of the sweep was decoded before ``decode.workers``
    existed: another share of threads can move a score in its last bits) and drawing dropout
    masks as torch does (as every result of the sweep was trained: the model configs' ``fast``
    masks are another random stream, so other weights) and the loss in chunks of 2**21 logits
    (the configs' larger chunks add the same gradients in another order), with the step's
    ``set:`` lines, the budget, seed and direction (and, quick, the tiny settings), then
    ``extra`` (``--set``, which may ask for another precision)."""
    src, tgt = job.langs
    overrides = [
        "train.precision=fp32", "decode.workers=1", "train.dropout_masks=torch",
        "train.loss_chunk_logits=2097152",
        *job.step.overrides,
        f"train.max_updates={QUICK_UPDATES if quick else job.step.updates}",
        "train.max_minutes=null", f"train.seed={job.seed}",
        f"data.src_lang={src}", f"data.tgt_lang={tgt}", f"run_dir={prog.runs / job.id}",
    ]
    if quick:
        overrides += QUICK_OVERRIDES
    extra = list(extra or [])
    if quick:  # after the user's --set: the quick data replaces the data they name
        extra += [f"data.path={quick_data(prog, extra)}", "data.fetch=null"]
    return load_config(job.step.config, overrides + extra)


def quick_data(prog: Progression, extra: list[str]) -> Path:
    """A few lines of every split of the steps' data, every language of the progression, for
    ``--quick`` (from the first step's data source)."""
    from seq2seq.data import split_name

    out = prog.runs / "quick-data"
    if (out / "done").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    data = load_config(prog.steps[0].config, extra).data
    if data.format == "local":
        fetch_missing(data.path, data.fetch)  # Multi30k into data/multi30k, as training would
    langs = {lang for job in prog.jobs() for lang in job.langs}
    for which, n in QUICK_LINES.items():
        split = split_name(data, which)
        for lang in sorted(langs):
            matches = sorted(Path(data.path).glob(f"{split}.{lang}*"))
            if not matches:
                raise DataError(f"--quick: no {split}.{lang}[.gz] in {data.path}")
            _head(matches[0], out / f"{split}.{lang}.gz", n)
    (out / "done").write_text("")
    return out


def _head(source: Path, target: Path, n: int) -> None:
    """The first ``n`` lines of ``source`` (plain or gzipped) into ``target`` (gzipped)."""
    from seq2seq.data import numbered_lines

    with closing(numbered_lines(source)) as lines:
        head = [line + "\n" for _, line in itertools.islice(lines, n)]
    with gzip.open(target, "wt", encoding="utf-8") as f:
        f.writelines(head)


def read_results(prog: Progression) -> dict[str, dict[str, Any]]:
    """``result.json`` of every finished job, by job id."""
    results = {}
    for path in sorted(prog.reports.glob("*/result.json")):
        try:
            results[path.parent.name] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise DataError(f"{path}: unreadable ({one_line(e)}); delete it to redo the job"
                            ) from None
    return results


