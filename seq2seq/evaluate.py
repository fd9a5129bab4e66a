"""``seq2seq eval``: decode a split or a file and score it with sacreBLEU."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from seq2seq.data import load_split, read_lines, split_name
from seq2seq.errors import DataError
from seq2seq.inference import Translator, with_overrides
from seq2seq.metrics import corpus_scores


def evaluate(
    run: str | Path, split: str = "test", src_file: Path | None = None,
    ref_file: Path | None = None, checkpoint: str = "best", batch_size: int | None = None,
    hard_attention: bool | None = None, device: str = "auto",
) -> dict[str, Any]:
    """Translate and score; writes ``eval_{name}.json`` and ``hyps_{name}.txt`` into the run
    (``eval_{name}_hard.json`` with hard attention, so both can be compared)."""
    run = Path(run)
    tr = Translator.from_run(run, checkpoint=checkpoint, device=device)
    if src_file is not None and ref_file is not None:
        src, refs = read_lines(Path(src_file)), read_lines(Path(ref_file))
        if len(src) != len(refs):
            raise DataError(f"{src_file} has {len(src)} lines but {ref_file} has {len(refs)}")
        name = Path(src_file).name
    else:
        name = split_name(tr.config.data, split)
        ds = load_split(tr.config.data, name)
        src, refs = ds["src"], ds["tgt"]
    decode = with_overrides(tr.config.decode, batch_size=batch_size,
                            hard_attention=hard_attention)
    hyps = tr.translate(src, decode)
    scores = corpus_scores(hyps, refs)
    report = {
        "run": str(run), "checkpoint": str(tr.checkpoint), "data": name, "sentences": len(src),
        "search": {"method": "greedy", **dataclasses.asdict(decode)},
        **scores,
    }
    safe = name.replace("/", "_") + ("_hard" if decode.hard_attention else "")
    (run / f"hyps_{safe}.txt").write_text("\n".join(hyps) + "\n", encoding="utf-8")
    (run / f"eval_{safe}.json").write_text(json.dumps(report, indent=2) + "\n")
    return report

