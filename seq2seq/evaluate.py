"""``seq2seq eval``: decode a split or a file and score it with sacreBLEU.

Writes into the run directory, under a name that tells the data and the search apart
(``test_2016_flickr``, ``test_2016_flickr_beam5``, ``test_2016_flickr_hard``,
``test_2016_flickr_averaged`` for ``--checkpoint averaged.pt``, ...):

    eval_NAME.json    the full report: scores with signatures, search settings, checkpoint
    eval_NAME.md      the same as a short Markdown summary
    hyps_NAME.txt     the 1-best translations, one a line
    nbest_NAME.txt    with n_best > 1: ``LINE<TAB>SCORE<TAB>TEXT``, best first per line
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from seq2seq.data import load_split, read_lines, split_name
from seq2seq.errors import DataError
from seq2seq.inference import Translator, with_overrides
from seq2seq.metrics import corpus_scores


def report_name(data: str, beam_size: int, hard_attention: bool, checkpoint: str = "best"
                ) -> str:
    """The suffix of the files an evaluation writes: data name, then what differs from the
    default (a checkpoint other than best.pt, beam search, hard attention), so evaluations
    never overwrite each other."""
    name = data.replace("/", "_")
    if checkpoint != "best":
        name += "_" + Path(checkpoint).stem
    if beam_size > 1:
        name += f"_beam{beam_size}"
    if hard_attention:
        name += "_hard"
    return name


def evaluate(
    run: str | Path, split: str = "test", src_file: Path | None = None,
    ref_file: Path | None = None, checkpoint: str = "best", device: str = "auto",
    lowercase: bool = False, tokenize: str = "13a", **decode_overrides: Any,
) -> dict[str, Any]:
    """Translate and score. ``decode_overrides`` (batch_size, beam_size, n_best, alpha,
    length_penalty, hard_attention; None = the run's config) change the search."""
    run = Path(run)
    tr = Translator.from_run(run, checkpoint=checkpoint, device=device)
    if src_file is not None and ref_file is not None:
        src, refs = read_lines(Path(src_file)), read_lines(Path(ref_file))
        if len(src) != len(refs):
            raise DataError(f"{src_file} has {len(src)} lines but {ref_file} has {len(refs)}")
        data = Path(src_file).name
    else:
        data = split_name(tr.config.data, split)
        ds = load_split(tr.config.data, data)
        src, refs = ds["src"], ds["tgt"]
    decode = with_overrides(tr.config.decode, **decode_overrides)
    tr.config.decode = decode
    tr.config.validate()  # the overrides pass the same checks as the file
    nbest = tr.translate_nbest(src, decode)
    hyps = [h[0].text if h else "" for h in nbest]
    scores = corpus_scores(hyps, refs, lowercase=lowercase, tokenize=tokenize)
    name = report_name(data, decode.beam_size, decode.hard_attention, checkpoint)
    report = {
        "run": str(run), "checkpoint": str(tr.checkpoint), "data": data, "sentences": len(src),
        "search": {"method": "greedy" if decode.beam_size == 1 else "beam",
                   **dataclasses.asdict(decode)},
        "scoring": {"lowercase": lowercase, "tokenize": tokenize},
        **scores,
    }
    (run / f"hyps_{name}.txt").write_text("\n".join(hyps) + "\n", encoding="utf-8")
    if decode.n_best > 1:
        lines = [f"{i}\t{t.score:.4f}\t{t.text}" for i, hs in enumerate(nbest) for t in hs]
        (run / f"nbest_{name}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (run / f"eval_{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (run / f"eval_{name}.md").write_text(markdown(report), encoding="utf-8")
    return report


def markdown(report: dict[str, Any]) -> str:
    s = report["search"]
    search = "greedy" if s["beam_size"] == 1 else (
        f"beam {s['beam_size']}, {s['length_penalty']} length penalty"
        + (f" (alpha {s['alpha']})" if s["length_penalty"] == "gnmt" else ""))
    if s["hard_attention"]:
        search += ", hard attention"
    lines = [
        f"# {Path(report['run']).name} on {report['data']}", "",
        f"- checkpoint: `{report['checkpoint']}`",
        f"- sentences: {report['sentences']}",
        f"- search: {search}", "",
        "| metric | score | signature |", "|---|---|---|",
    ]
    for key in ("bleu", "chrf", "ter"):
        if key in report:
            m = report[key]
            lines.append(f"| {m['signature'].split('|')[0]} | {m['score']:.2f} | "  # BLEU, ...
                         f"`{m['signature']}` |")
    return "\n".join(lines) + "\n"
