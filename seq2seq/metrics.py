"""Corpus-level scores with sacreBLEU, always with their signatures.

Scores are computed on detokenized, cased text against the raw references, so they compare with
any other toolkit that reports sacreBLEU.
"""

from __future__ import annotations

from collections.abc import Sequence

from sacrebleu.metrics import BLEU, CHRF


def corpus_scores(hyps: Sequence[str], refs: Sequence[str]) -> dict[str, dict]:
    """BLEU and chrF of ``hyps`` against one reference per sentence."""
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")
    out = {}
    for name, metric in (("bleu", BLEU()), ("chrf", CHRF())):
        score = metric.corpus_score(list(hyps), [list(refs)])
        out[name] = {
            "score": round(score.score, 2),
            "signature": str(metric.get_signature()),
            "text": score.format(signature=str(metric.get_signature())),
        }
    return out


def bleu(hyps: Sequence[str], refs: Sequence[str]) -> float:
    return BLEU().corpus_score(list(hyps), [list(refs)]).score
