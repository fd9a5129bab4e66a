"""Loading a trained run and turning text into translations.

:class:`Translator` is what ``seq2seq eval`` and ``seq2seq translate`` use, and what a notebook
uses too::

    tr = Translator.from_run("runs/bahdanau")
    tr.translate(["Ein Hund läuft im Schnee."])
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from seq2seq import checkpoint as ckpt
from seq2seq.batching import inference_batches, make_batch
from seq2seq.config import Config, DecodeConfig, config_from_dict
from seq2seq.errors import CheckpointError, ConfigError, Seq2SeqError
from seq2seq.models import Seq2SeqModel, build_model
from seq2seq.search import Hypothesis, beam_search, greedy, max_lengths
from seq2seq.vocab import Vocab, load_from_run


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` (CUDA when present), ``cpu`` or ``cuda``."""
    if name not in ("auto", "cpu", "cuda"):
        raise Seq2SeqError(f"device: {name!r} is not one of auto, cpu, cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise Seq2SeqError("device: cuda was asked for, but torch sees no CUDA device")
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def with_overrides(decode: DecodeConfig, **overrides) -> DecodeConfig:
    """A copy of ``decode`` with the command line's options that were given (not None); the
    beam is widened to at least ``n_best``."""
    decode = dataclasses.replace(decode, **{k: v for k, v in overrides.items() if v is not None})
    if decode.n_best > decode.beam_size:
        decode = dataclasses.replace(decode, beam_size=decode.n_best)
    return decode


@torch.no_grad()
def search_ids(
    model: Seq2SeqModel, src_ids: Sequence[Sequence[int]], decode: DecodeConfig,
    device: torch.device, return_attention: bool = False,
) -> list[list[Hypothesis]]:
    """Decode encoded source sentences in length-sorted batches with greedy search
    (``beam_size`` 1) or beam search; per sentence, in input order, its ``n_best``
    hypotheses best first."""
    model.eval()
    model.set_hard_attention(decode.hard_attention)
    results: list[list[Hypothesis]] = [[] for _ in src_ids]
    for idx in inference_batches(src_ids, decode.batch_size):
        batch = make_batch([src_ids[i] for i in idx], index=idx).to(device)
        limit = max_lengths(batch.src_len, decode.max_len_a, decode.max_len_b,
                            cap=getattr(model, "max_positions", None))
        if decode.beam_size == 1:
            out = greedy(model, batch.src, batch.src_len, limit, return_attention,
                         decode.length_penalty, decode.alpha)
        else:
            out = beam_search(model, batch.src, batch.src_len, limit, decode.beam_size,
                              decode.n_best, decode.length_penalty, decode.alpha,
                              return_attention)
        for j, i in enumerate(idx.tolist()):
            results[i] = out[j]
    return results


def decode_ids(
    model: Seq2SeqModel, src_ids: Sequence[Sequence[int]], decode: DecodeConfig,
    device: torch.device, return_attention: bool = False,
) -> tuple[list[list[int]], list[torch.Tensor] | None]:
    """The 1-best output ids of every sentence (and its attention on request)."""
    best = [h[0] for h in search_ids(model, src_ids, decode, device, return_attention)]
    attn = [h.attention for h in best] if return_attention else None
    return [h.tokens for h in best], attn


@dataclass
class Translation:
    text: str  # detokenized output
    score: float  # length-normalised log-probability (see seq2seq.search.normalise)
    tokens: list[int]  # output subword ids, without eos
    src_tokens: list[int]  # source subword ids fed to the model (the model appends eos)
    attention: torch.Tensor | None = None  # (len(tokens) + 1, len(src_tokens) + 1)


@dataclass
class Translator:
    model: Seq2SeqModel
    config: Config
    src_vocab: Vocab
    tgt_vocab: Vocab
    device: torch.device
    checkpoint: Path

    @classmethod
    def from_run(cls, run: str | Path, checkpoint: str = "best", device: str = "auto"
                 ) -> Translator:
        run = Path(run)
        path = ckpt.resolve(run, checkpoint)
        dev = pick_device(device)
        payload = ckpt.load(path, map_location=dev)
        try:
            cfg = config_from_dict(payload["config"])
        except ConfigError as e:
            raise CheckpointError(f"{path}: stored config is invalid ({e})") from None
        src_vocab, tgt_vocab = load_from_run(run)
        model = build_model(cfg.model, len(src_vocab), len(tgt_vocab))
        try:
            model.load_state_dict(payload["model"])
        except RuntimeError as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise CheckpointError(f"{path}: weights do not fit the model ({first})") from None
        model.to(dev).eval()
        return cls(model, cfg, src_vocab, tgt_vocab, dev, path)

    def translate(self, lines: Sequence[str], decode: DecodeConfig | None = None) -> list[str]:
        """Translate detokenized sentences; an empty line gives an empty translation."""
        return [h[0].text if h else "" for h in self.translate_nbest(lines, decode)]

    def translate_nbest(self, lines: Sequence[str], decode: DecodeConfig | None = None,
                        return_attention: bool = False) -> list[list[Translation]]:
        """Per line, its ``decode.n_best`` translations best first (an empty list for an empty
        line), with their scores, subwords and, on request, attention weights."""
        decode = decode or self.config.decode
        out: list[list[Translation]] = [[] for _ in lines]
        todo = [i for i, line in enumerate(lines) if line.strip()]
        if not todo:
            return out
        src_ids = self.src_vocab.encode([lines[i].strip() for i in todo])
        src_ids = [s[: self.max_src_len()] for s in src_ids]
        hyps = search_ids(self.model, src_ids, decode, self.device, return_attention)
        for i, s_ids, nbest in zip(todo, src_ids, hyps):
            texts = self.tgt_vocab.decode([h.tokens for h in nbest])
            out[i] = [Translation(text, h.score, h.tokens, s_ids, h.attention)
                      for text, h in zip(texts, nbest)]
        return out

    def max_src_len(self) -> int:
        """Longest source (in subwords, eos included) fed to the model; longer input is cut."""
        limit = 4 * self.config.data.max_len
        cap = getattr(self.model, "max_positions", None)
        return min(limit, cap - 1) if cap else limit
