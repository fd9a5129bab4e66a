"""Corpus-level scores with sacreBLEU, always with their signatures.

Scores are computed on detokenized, cased text against the raw references, so they compare with
any other toolkit that reports sacreBLEU. ``lowercase`` and ``tokenize`` are passed to sacreBLEU
and so appear in the signatures (``case:lc``, ``tok:intl``). TER keeps sacreBLEU's own defaults
(case-insensitive), which its signature states.
"""

from __future__ import annotations

from collections.abc import Sequence

from sacrebleu.metrics import BLEU, CHRF, TER

from seq2seq.errors import ConfigError

# sacreBLEU's BLEU tokenizers that need no extra package (ja-mecab, ko-mecab and spm do)
TOKENIZERS = ("13a", "intl", "char", "none", "zh", "flores101", "flores200", "spm",
              "ja-mecab", "ko-mecab")


def corpus_scores(hyps: Sequence[str], refs: Sequence[str], lowercase: bool = False,
                  tokenize: str = "13a", ter: bool = True) -> dict[str, dict]:
    """BLEU, chrF and (unless ``ter`` is False) TER of ``hyps`` against one reference per
    sentence: ``{"bleu": {"score", "signature", "text"}, ...}``."""
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")
    if tokenize not in TOKENIZERS:
        raise ConfigError(f"tokenize: {tokenize!r} is not one of {', '.join(TOKENIZERS)}")
    try:
        bleu_metric = BLEU(lowercase=lowercase, tokenize=tokenize)
    except Exception as e:  # an optional tokenizer package missing, or a download refused
        raise ConfigError(f"tokenize: sacreBLEU cannot use {tokenize!r} here ({e})") from None
    metrics = [("bleu", bleu_metric),
               ("chrf", CHRF(lowercase=lowercase))]
    if ter:
        metrics.append(("ter", TER()))
    out = {}
    for name, metric in metrics:
        score = metric.corpus_score(list(hyps), [list(refs)])
        text = score.format(signature=str(metric.get_signature()))
        # "BLEU|nrefs:1|case:mixed|...|version:2.6.0", the metric's name included
        out[name] = {"score": round(score.score, 2), "signature": text.split(" = ")[0],
                     "text": text}
    return out

