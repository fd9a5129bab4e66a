"""The progression's report (``reports/progression.md``), rebuilt from the ``result.json`` of
every finished job (:mod:`seq2seq.reproduce`): one row per step and direction, seeds
aggregated as mean ± standard deviation, and the learning curves of every step against updates
and against training time. Nothing is recomputed; jobs still to run are listed."""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path
from typing import Any

from seq2seq.errors import ConfigError
from seq2seq.progression import ATTENTION_FILE, Job, Progression, read_results
from seq2seq.run import RunDir, write_text_atomic


def _score(results: list[dict[str, Any]], split: str, beam: int, key: str) -> list[float]:
    return [e[key] for r in results for e in r["evaluations"]
            if e["split"] == split and e["beam"] == beam and e.get(key) is not None]


def _done_jobs(prog: Progression, results: dict[str, dict[str, Any]], step: str,
               direction: str) -> list[dict[str, Any]]:
    return [results[j.id] for j in prog.jobs(step) if j.direction == direction and j.id in results]


def _mean_sd(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def noise_level(prog: Progression, results: dict[str, dict[str, Any]]) -> tuple[str, float] | None:
    """(step, standard deviation of its test BLEU with beam 5 over its seeds) for the first
    step with two or more finished seeds: the noise level every row is read against."""
    for step in prog.steps:
        for direction in step.directions:
            done = _done_jobs(prog, results, step.name, direction)
            scores = _score(done, "test", 5, "bleu")
            if len(scores) >= 2:
                return f"{step.name} {direction}", statistics.stdev(scores)
    return None


def steady_speed(reports: Path, result: dict[str, Any]) -> tuple[float, float]:
    """(training minutes, tokens/s) of a job at its steady pace: the median over the windows
    of its training log (``train.log_every`` updates each), so that a pause or another load on
    the machine does not count (the measured totals stay in ``result.json``); the measured
    figures when the log has no windows."""
    rows = RunDir(reports / result["job"]).records("train")
    per_update, rates = [], []
    for a, b in zip(rows, rows[1:]):
        if b["update"] > a["update"] and b["train_s"] > a["train_s"]:
            per_update.append((b["train_s"] - a["train_s"]) / (b["update"] - a["update"]))
            rates.append(b["tokens_per_s"])
    if not per_update:
        return result["train_minutes"], result["tokens_per_s"] or 0.0
    return statistics.median(per_update) * result["updates"] / 60, statistics.median(rates)


def machine_name(result: dict[str, Any]) -> str:
    """Where a result was trained: its GPU, or its CPU's kind and threads."""
    m = result["machine"]
    if str(result.get("device") or "").startswith("cuda") and m["cuda"]:
        return m["cuda"]
    kind = "AVX-512 bf16" if "avx512_bf16" in m["cpu_flags"] else (
        "AVX-512" if "avx512f" in m["cpu_flags"] else "AVX2")
    return f"{kind} CPU, {m['threads']} threads"


def _row(reports: Path, results: list[dict[str, Any]], noise: float | None) -> str:
    r = results[0]
    where = machine_name(r)
    speeds = [steady_speed(reports, x) for x in results]
    cells = [
        r["label"], str(r["year"]), r["paper"], r["attention"] or "–", r["direction"],
        f"{len(results)}", f"{r['parameters']:,}", f"{r['updates']:,}",
        f"{statistics.mean(s[0] for s in speeds):.1f} ({where}, {r['precision']})",
        f"{statistics.mean(s[1] for s in speeds):,.0f}",
        _mean_sd([x["best_valid_bleu"] for x in results if x["best_valid_bleu"] is not None]),
        _mean_sd(_score(results, "test", 1, "bleu")),
        _mean_sd(_score(results, "test", 5, "bleu"))
        + (f" (noise ± {noise:.2f})" if noise is not None and len(results) == 1 else ""),
        _mean_sd(_score(results, "test", 5, "bleu_13a_lc")),
        _mean_sd(_score(results, "test", 5, "chrf")),
    ]
    return "| " + " | ".join(cells) + " |"


HEAD = ("| model | year | paper | attention | direction | seeds | parameters | updates | "
        "training min (machine, precision) | tokens/s | valid BLEU (best) | test BLEU greedy | "
        "test BLEU beam 5 | test BLEU beam 5, 13a lowercased | test chrF beam 5 |")


def table(prog: Progression, results: dict[str, dict[str, Any]]) -> list[str]:
    noise = noise_level(prog, results)
    lines = []
    if noise:
        lines += [f"Noise level: the test BLEU (beam 5) of {noise[0]} varies by ± {noise[1]:.2f} "
                  "(one standard deviation) between seeds; it is quoted beside every "
                  "single-seed row.", ""]
    lines += [HEAD, "|" + "---|" * (HEAD.count("|") - 1)]
    for step in prog.steps:
        for direction in step.directions:
            done = _done_jobs(prog, results, step.name, direction)
            if done:
                lines.append(_row(prog.reports, done, noise[1] if noise else None))
    lines += ["", "Training minutes and tokens/s (source + target) are at each run's steady pace: "
              "the median over the windows of its training log (`train.log_every` updates "
              "each), times its updates, "
              "so that pauses and other load on the machine do not count; validation and "
              "evaluation are not included. The measured totals are in each run's "
              "`result.json`."]
    return lines


def code_versions(results: dict[str, dict[str, Any]]) -> list[str]:
    """Which commits of seq2seq made the results (``result.json``'s ``code``), with counts."""
    counts: dict[str, int] = {}
    for r in results.values():
        code = r.get("code")
        name = "not recorded" if not code else (
            f"`{code['commit']}`" + (" with changes not committed" if code["modified"] else ""))
        counts[name] = counts.get(name, 0) + 1
    return [f"{name} ({n} run{'s' if n > 1 else ''})" for name, n in sorted(counts.items())]


def signatures(results: dict[str, dict[str, Any]]) -> list[str]:
    sigs = sorted({e[k] for r in results.values() for e in r["evaluations"]
                   for k in ("signature", "signature_13a_lc", "chrf_signature")})
    return [f"- `{s}`" for s in sigs]


README_BEGIN = "<!-- progression table: begin -->"
README_END = "<!-- progression table: end -->"


def finished_results(prog: Progression) -> dict[str, dict[str, Any]]:
    """The kept results of the progression's own jobs (a reports directory can be shared by
    several progression files)."""
    ids = {j.id for j in prog.jobs()}
    return {k: v for k, v in read_results(prog).items() if k in ids}


def readme_table(prog: Progression, results: dict[str, dict[str, Any]], base: Path
                 ) -> list[str]:
    """The short form of the table for a README in the directory ``base``: each finished step
    and direction with its config, updates and scores (seeds as mean ± sd), and a line saying
    how many runs are done; links are relative to ``base``."""
    def link(path: Path) -> str:
        return Path(os.path.relpath(path.resolve(), base.resolve())).as_posix()

    lines = ["| model | config | direction | seeds | updates | valid BLEU | test BLEU greedy | "
             "test BLEU beam 5 | chrF beam 5 |", "|---|---|---|---|---|---|---|---|---|"]
    for step in prog.steps:
        for direction in step.directions:
            done = _done_jobs(prog, results, step.name, direction)
            if not done:
                continue
            cells = [f"{step.label} ({step.year})", f"[`{step.config.name}`]({link(step.config)})",
                     direction, str(len(done)), f"{step.updates:,}",
                     _mean_sd([x["best_valid_bleu"] for x in done
                               if x["best_valid_bleu"] is not None]),
                     _mean_sd(_score(done, "test", 1, "bleu")),
                     _mean_sd(_score(done, "test", 5, "bleu")),
                     _mean_sd(_score(done, "test", 5, "chrf"))]
            lines.append("| " + " | ".join(cells) + " |")
    total = len(prog.jobs())
    lines += ["", f"{len(results)} of {total} runs of `{link(prog.path)}` done; the full "
              f"table, with training time, speed, signatures and attention maps, is "
              f"[`{link(prog.report)}`]({link(prog.report)})."]
    return lines


def _readme_block(readme: Path) -> tuple[str, int, int]:
    """The README's text and where its table block starts and ends; a one-line error for a
    missing file or missing markers."""
    if not readme.is_file():
        raise ConfigError(f"--readme {readme}: no such file")
    text = readme.read_text(encoding="utf-8")
    start, end = text.find(README_BEGIN), text.find(README_END)
    if start < 0 or end < start:
        raise ConfigError(f"--readme {readme}: needs the lines {README_BEGIN} and {README_END} "
                          "around the table to replace")
    return text, start, end


def check_readme(readme: Path) -> None:
    """Fail now, before hours of training, if ``readme`` cannot take the table."""
    _readme_block(readme)


def update_readme(prog: Progression, readme: Path) -> None:
    """Replace the block between :data:`README_BEGIN` and :data:`README_END` in ``readme``
    with :func:`readme_table`."""
    text, start, end = _readme_block(readme)
    block = "\n".join([README_BEGIN, *readme_table(prog, finished_results(prog), readme.parent),
                       ""])
    write_text_atomic(readme, text[:start] + block + text[end:])


def write_progression_report(prog: Progression) -> Path:
    """Write ``prog.report`` and its learning curves (``NAME_curves.png`` beside it)."""
    from seq2seq.plotting import learning_curves

    results = finished_results(prog)
    pending = [j for j in prog.jobs() if j.id not in results]
    md = [f"# The progression ({prog.path.name})", "",
          f"{len(results)} of {len(results) + len(pending)} runs done. Seeds are aggregated as "
          "mean ± standard deviation; a step's spread over seeds is the noise level against "
          "which differences between rows are read.", ""]
    if any(r["quick"] for r in results.values()):
        md += ["**`--quick` results: tiny models, data and budgets that test the pipeline; "
               "they say nothing about the models.**", ""]
    md += table(prog, results) + comparison_section(prog, results)
    md += ["", "Scores (sacreBLEU):", ""] + signatures(results)
    if results:
        md += ["", "Code (the git commit of seq2seq that the sweep finishing each result ran): "
               + ", ".join(code_versions(results)) + "."]
    if results:
        # a job's report directory holds the small files of its run: read it as one
        # runs trained on different machines are named with theirs and share a logarithmic
        # time axis, where minutes on a GPU and hours on a CPU both stay readable
        machines = {machine_name(r) for r in results.values()}
        curves = {}
        for job_id, result in results.items():  # time at the run's steady pace, as the table
            per_update = steady_speed(prog.reports, result)[0] * 60 / max(result["updates"], 1)
            name = job_id + (f" ({machine_name(result)})" if len(machines) > 1 else "")
            curves[name] = [{**r, "train_s": r["update"] * per_update}
                            for r in RunDir(prog.reports / job_id).records("valid")]
        png = prog.report.with_name(f"{prog.report.stem}_curves.png")
        png.parent.mkdir(parents=True, exist_ok=True)
        learning_curves(curves, png, log_time=len(machines) > 1)
        where = ("; a logarithmic axis, since the runs were trained on different machines: "
                 + ", ".join(sorted(machines))) if len(machines) > 1 else ""
        md += ["", "Validation BLEU against training time (at each run's steady pace, as in the "
               f"table{where}) and against updates:", "", f"![learning curves]({png.name})"]
    md += attention_section(prog, results)
    md += published_section(prog)
    if pending:
        md += ["", "Still to run (`seq2seq reproduce " + prog.path.as_posix() + "`): "
               + ", ".join(_pending(j) for j in pending)]
    prog.report.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(prog.report, "\n".join(md) + "\n")
    return prog.report


def _pending(job: Job) -> str:
    return f"`{job.id}`"


def attention_section(prog: Progression, results: dict[str, dict[str, Any]]) -> list[str]:
    """One figure per sampled test sentence (``NAME_attention_LINE.png``): the attention of
    every attention step's first finished de-en job that kept them side by side, each over its
    own greedy output."""
    from seq2seq.plotting import attention_panels, plt

    by_line: dict[int, list[tuple[str, list[str], list[str], Any]]] = {}
    for step in prog.steps:
        paths = [prog.reports / j.id / ATTENTION_FILE for j in prog.jobs(step.name)
                 if j.id in results and j.direction == "de-en"]
        path = next((p for p in paths if p.is_file()), None)  # the first seed that has one
        if path is None:
            continue
        for sample in json.loads(path.read_text(encoding="utf-8")):
            title = f"{step.name} ({sample['name']})" if sample["name"] != "attention" \
                else step.name
            by_line.setdefault(sample["line"], []).append(
                (title, sample["source"], sample["output"], sample["weights"]))
    if not by_line:
        return []
    md = ["", "Attention over the same test sentences (test_2016_flickr, greedy; each model "
          "over its own output; the Transformer's last decoder layer, mean of its heads):", ""]
    for line, panels in sorted(by_line.items()):
        png = prog.report.with_name(f"{prog.report.stem}_attention_{line}.png")
        fig = attention_panels(panels, title=f"test sentence {line + 1}")
        fig.savefig(png, dpi=100)
        plt.close(fig)
        md.append(f"![attention, test sentence {line + 1}]({png.name})")
    return md


def comparison_section(prog: Progression, results: dict[str, dict[str, Any]]) -> list[str]:
    """For every step with ``against:``, its scores beside the other step's and the
    difference (other minus this: what the change this step undoes is worth), per direction
    where both have finished; seeds as means."""
    rows = []
    for step in prog.steps:
        if not step.against:
            continue
        other = next(s for s in prog.steps if s.name == step.against)
        for direction in step.directions:
            mine = _done_jobs(prog, results, step.name, direction)
            theirs = _done_jobs(prog, results, other.name, direction)
            if not mine or not theirs:
                continue
            cells = [f"{other.label} / {step.label}", direction]
            for pick in (lambda rs: [x["best_valid_bleu"] for x in rs
                                     if x["best_valid_bleu"] is not None],
                         lambda rs: _score(rs, "test", 1, "bleu"),
                         lambda rs: _score(rs, "test", 5, "bleu")):
                a, b = pick(theirs), pick(mine)
                cells.append(f"{statistics.mean(a):.2f} / {statistics.mean(b):.2f} "
                             f"(**{statistics.mean(a) - statistics.mean(b):+.2f}**)"
                             if a and b else "–")
            rows.append("| " + " | ".join(cells) + " |")
    if not rows:
        return []
    return ["", "Each change against the choice it replaced, at the same budget and seed "
            "(first / second, and the difference first minus second):", "",
            "| pair | direction | valid BLEU (best) | test BLEU greedy | test BLEU beam 5 |",
            "|---|---|---|---|---|", *rows]


def published_section(prog: Progression) -> list[str]:
    """The progression's ``published:`` results, with how each was scored."""
    if not prog.published:
        return []
    md = ["", "Published results of the same families (other data, model sizes and scoring: "
          "not comparable with the rows above, which all share one data set and one "
          "scoring):", "", "| model | paper | data | BLEU | scored as |", "|---|---|---|---|---|"]
    for p in prog.published:
        md.append(f"| {p['model']} | {p['paper']} | {p['data']} | {p['bleu']} | {p['scoring']} |")
    return md
