"""``seq2seq eval``: decode a split or a file and score it with sacreBLEU.

Writes an evaluation's files into the run directory (:meth:`seq2seq.run.RunDir.eval_files`),
under a name that tells the data and the search apart (:func:`seq2seq.run.eval_name`:
``test_2016_flickr``, ``test_2016_flickr_beam5``, ``test_2016_flickr_hard``,
``test_2016_flickr_averaged`` for ``--checkpoint averaged.pt``, ...): the full report with scores,
signatures, search settings and checkpoint (JSON), the same as a short Markdown summary, the
1-best translations one a line, and with n_best > 1 the n-best lists as
``LINE<TAB>SCORE<TAB>TEXT``, best first per line.

The search options are one :class:`~seq2seq.config.DecodeConfig`: the translator's ``decode``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from seq2seq.choices import LENGTH_PENALTIES
from seq2seq.config import DecodeConfig
from seq2seq.data import load_split, read_lines, split_name
from seq2seq.errors import DataError, Seq2SeqError
from seq2seq.inference import Translation, Translator
from seq2seq.metrics import corpus_scores
from seq2seq.run import RunDir, eval_name, write_text_atomic


def evaluate(
    run: str | Path, split: str = "test", src_file: Path | None = None,
    ref_file: Path | None = None, checkpoint: str = "best", device: str = "auto",
    lowercase: bool = False, tokenize: str = "13a", decode: DecodeConfig | None = None,
    quantize: str = "none", pack: bool = True, **options: Any,
) -> dict[str, Any]:
    """Load a run's ``checkpoint``, translate and score (:func:`evaluate_translator`). The
    search is the run's ``decode`` section, or ``decode``, with ``options`` on top (e.g.
    ``beam_size=5, n_best=3``: validated as :meth:`DecodeConfig.override` does)."""
    tr = Translator.from_run(run, checkpoint=checkpoint, device=device, decode=decode,
                             quantize=quantize, pack=pack)
    tr.decode = tr.decode.override(**options)
    return evaluate_translator(tr, split=split, src_file=src_file, ref_file=ref_file,
                               lowercase=lowercase, tokenize=tokenize)


def evaluate_translator(
    tr: Translator, split: str = "test", src_file: Path | None = None,
    ref_file: Path | None = None, lowercase: bool = False, tokenize: str = "13a",
) -> dict[str, Any]:
    """Translate a split (or ``src_file``) with ``tr`` and its search options ``tr.decode``,
    score against the references and write the report files into the translator's run
    directory, named after its data, search and checkpoint; returns the report."""
    if tr.run is None:
        raise Seq2SeqError("evaluate needs a translator loaded with Translator.from_run")
    data, src, refs = _test_data(tr, split, src_file, ref_file)
    tr.run.check_writable("seq2seq eval")  # before the decoding that it would lose
    decode = tr.decode
    nbest = tr.translate_nbest(src, where=f"{data} line")
    hyps = [h[0].text if h else "" for h in nbest]
    scores = corpus_scores(hyps, refs, lowercase=lowercase, tokenize=tokenize)
    report = {
        "run": str(tr.run), "checkpoint": str(tr.checkpoint), "data": data,
        "sentences": len(src), "quantize": tr.quantize, "packed": tr.packed,
        "search": {"method": "greedy" if decode.beam_size == 1 else "beam",
                   **dataclasses.asdict(decode)},
        "scoring": {"lowercase": lowercase, "tokenize": tokenize},
        **scores,
    }
    name = eval_name(data, decode.beam_size, decode.hard_attention, tr.checkpoint_name,
                     tr.quantize)
    _write(tr.run, name, report, hyps, nbest if decode.n_best > 1 else None)
    return report


def _test_data(tr: Translator, split: str, src_file: Path | None, ref_file: Path | None
               ) -> tuple[str, list[str], list[str]]:
    """(data name, source lines, reference lines): the two files if both are given, else
    the split of the run's data."""
    if src_file is not None and ref_file is not None:
        src, refs = read_lines(Path(src_file)), read_lines(Path(ref_file))
        if len(src) != len(refs):
            raise DataError(f"{src_file} has {len(src)} lines but {ref_file} has {len(refs)}")
        return Path(src_file).name, src, refs
    data = split_name(tr.config.data, split)
    ds = load_split(tr.config.data, data)
    return data, ds["src"], ds["tgt"]


def _write(run: RunDir, name: str, report: dict[str, Any], hyps: list[str],
           nbest: list[list[Translation]] | None) -> None:
    files = run.eval_files(name)
    write_text_atomic(files.hyps, "\n".join(hyps) + "\n")
    if nbest is not None:
        lines = [f"{i}\t{t.score:.4f}\t{t.text}" for i, hs in enumerate(nbest) for t in hs]
        write_text_atomic(files.nbest, "\n".join(lines) + "\n")
    write_text_atomic(files.report, json.dumps(report, indent=2) + "\n")
    write_text_atomic(files.markdown, markdown(report))


def markdown(report: dict[str, Any]) -> str:
    s = report["search"]
    search = "greedy" if s["beam_size"] == 1 else (
        f"beam {s['beam_size']}, {s['length_penalty']} length penalty"
        + (f" (alpha {s['alpha']})" if LENGTH_PENALTIES.get(s["length_penalty"]).uses_alpha
           else ""))
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
