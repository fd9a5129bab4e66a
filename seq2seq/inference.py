"""Loading a trained run and turning text into translations.

:class:`Translator` is what ``seq2seq eval`` and ``seq2seq translate`` use, and what a notebook
uses too::

    tr = Translator.from_run("runs/bahdanau")
    tr.translate(["Ein Hund läuft im Schnee."])
    tr.decode = tr.config.decode.override(beam_size=5, n_best=3)  # other search options
    tr.translate_nbest(["Ein Hund läuft im Schnee."])

The search options are one typed :class:`~seq2seq.config.DecodeConfig`; :func:`search_ids` turns
it into a search strategy (:func:`seq2seq.search.make_search`) and decodes encoded input.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from seq2seq.batching import inference_batches, make_batch
from seq2seq.config import Config, DecodeConfig
from seq2seq.errors import CheckpointError, one_line
from seq2seq.forked import fork_available, forked_map, wait_for_thread_exit
from seq2seq.models import Seq2SeqModel, build_model
from seq2seq.packing import PackedLinear, pack_linears
from seq2seq.quantize import check_quantize, quantize_model
from seq2seq.run import RunDir
from seq2seq.runtime import pick_device, tune_backends
from seq2seq.search import Hypothesis, make_search, max_lengths
from seq2seq.vocab import Vocab


def input_limit(model: Seq2SeqModel, cfg: Config, decode: DecodeConfig | None = None) -> int:
    """The longest source, in subwords, that decoding reads: ``decode.max_input_len`` (by
    default ``data.max_len``, the longest pair the model was trained on), and less than the
    model's position table (the model appends eos). Validation, ``eval`` and ``translate`` all
    cut longer input to this with a warning (:func:`clip_inputs`); the output limit
    ``a * source length + b`` then caps decoding the same way everywhere."""
    decode = decode or cfg.decode
    limit = decode.max_input_len or cfg.data.max_len
    cap = model.max_positions
    return min(limit, cap - 1) if cap else limit


def clip_inputs(ids: list[list[int]], limit: int, name: Callable[[int], str],
                warn: Callable[[str], None] | None = None) -> list[list[int]]:
    """Cut every id list to ``limit``; each cut one is reported through ``warn`` (default: a
    line on standard error) as ``name(i)`` (e.g. ``val line 17``) for its index ``i``."""
    warn = warn or print_warning
    out = []
    for i, seq in enumerate(ids):
        if len(seq) > limit:
            warn(f"{name(i)} has {len(seq)} subwords; only the first {limit} are used "
                 "(decode.max_input_len, by default data.max_len)")
            seq = seq[:limit]
        out.append(seq)
    return out


def print_warning(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def search_ids(
    model: Seq2SeqModel, src_ids: Sequence[Sequence[int]], decode: DecodeConfig,
    device: torch.device, return_attention: bool = False, processes: bool = False,
) -> list[list[Hypothesis]]:
    """Decode encoded source sentences in length-sorted batches with the search ``decode``
    asks for (greedy for ``beam_size`` 1, else beam search); per sentence, in input order, its
    ``n_best`` hypotheses best first. On the CPU, ``decode.workers`` batches are decoded at
    once (:func:`decode_workers`): by threads, or with ``processes`` (where
    :func:`seq2seq.forked.fork_available`, and each worker's share of torch's threads is one:
    :func:`batch_map`) by forked processes, which do not share a GIL
    (``eval`` and ``translate`` ask for them through :attr:`Translator.processes`; what a
    model records while it decodes, such as local-p position statistics, then stays in the
    workers)."""
    model.eval()
    model.set_hard_attention(decode.hard_attention)
    strategy = make_search(decode, return_attention)
    batches = list(inference_batches(src_ids, decode.batch_size))

    # the caller's CPU autocast, which (like grad mode) does not pass into other threads
    autocast = {"enabled": torch.is_autocast_enabled("cpu"),
                "dtype": torch.get_autocast_dtype("cpu")}

    def search(idx: torch.Tensor) -> list[list[Hypothesis]]:
        with torch.no_grad(), torch.autocast("cpu", **autocast):
            batch = make_batch([src_ids[i] for i in idx], index=idx).to(device)
            limit = max_lengths(batch.src_len, decode.max_len_a, decode.max_len_b,
                                cap=model.max_positions)
            return strategy.search(model, batch.src, batch.src_len, limit)

    results: list[list[Hypothesis]] = [[] for _ in src_ids]
    workers = decode_workers(decode.workers, device, len(batches))
    with batch_map(search, workers, processes) as run:
        for idx, out in zip(batches, run(batches)):
            for j, i in enumerate(idx.tolist()):
                results[i] = out[j]
    return results


Search = Callable[[torch.Tensor], list[list[Hypothesis]]]


@contextlib.contextmanager
def batch_map(search: Search, workers: int, processes: bool = False
              ) -> Iterator[Callable[[Sequence[torch.Tensor]], Iterator[list[list[Hypothesis]]]]]:
    """``map(search, batches)`` for ``workers`` batches at once: in this thread for one, else
    by threads (:func:`decoding_pool`, each with :func:`thread_share` torch threads) or, with
    ``processes``, where fork is available and that share is one thread, by forked processes
    (:func:`seq2seq.forked.forked_map`, whose workers cannot run torch on more than one), the
    results in the batches' order either way."""
    if workers <= 1:
        yield lambda batches: map(search, batches)
    elif processes and fork_available() and thread_share(workers) == 1:
        def portable(idx: list[int]) -> list[list[Hypothesis]]:  # runs in a worker
            return [[_attention_as(h, lambda a: a.numpy()) for h in hyps]
                    for hyps in search(torch.tensor(idx))]

        with forked_map(portable, workers) as run:
            yield lambda batches: ([[_attention_as(h, torch.from_numpy) for h in hyps]
                                    for hyps in out]
                                   for out in run([idx.tolist() for idx in batches]))
    else:
        with decoding_pool(workers) as pool:
            yield lambda batches: pool.map(search, batches)


def _attention_as(h: Hypothesis, convert: Callable) -> Hypothesis:
    return h if h.attention is None else dataclasses.replace(h, attention=convert(h.attention))


#: Batches decoded at once by default (``decode.workers: 0``) where torch has 2 threads or
#: more; measured on 2 cores only, so larger machines split their threads between two batches.
DEFAULT_WORKERS = 2


def decode_workers(asked: int, device: torch.device, batches: int) -> int:
    """How many batches to decode at once: ``asked`` (0: :data:`DEFAULT_WORKERS`), at most
    one per torch thread and one per batch, and 1 off the CPU. A decoder step of 64 sentences
    is a series of small operations that two threads share badly: two batches on one thread
    each decode 1.2-1.5x faster than one batch on two (docs/performance.md, Decoding)."""
    if device.type != "cpu":
        return 1
    threads = torch.get_num_threads()  # train.num_threads, OMP_NUM_THREADS or one per core
    return max(1, min(asked or DEFAULT_WORKERS, threads, batches))


def thread_share(workers: int) -> int:
    """Torch threads for each of ``workers`` batches decoded at once: an equal share, one at
    least."""
    return max(1, torch.get_num_threads() // workers)


_POOL_LOCK = threading.Lock()  # torch's thread count is the process's: one pool at a time


@contextlib.contextmanager
def decoding_pool(workers: int) -> Iterator[ThreadPoolExecutor | None]:
    """A pool of ``workers`` threads among which torch's intra-op threads are shared while it
    lives (each gets threads // workers; restored after), or None for one worker. Each operator
    releases the GIL while it computes, so the workers' batches advance side by side. Calls
    from several threads take turns."""
    if workers <= 1:
        yield None
        return
    with _POOL_LOCK:
        threads = torch.get_num_threads()
        torch.set_num_threads(thread_share(workers))
        try:
            tids: list[int] = []
            pool = ThreadPoolExecutor(workers, thread_name_prefix="seq2seq-decode",
                                      initializer=lambda: tids.append(threading.get_native_id()))
            try:
                yield pool
            finally:  # on an error or Ctrl-C only the batches being decoded are finished
                pool.shutdown(wait=True, cancel_futures=True)
                wait_for_thread_exit(tids)  # gone for good: workers may be forked next
        finally:
            torch.set_num_threads(threads)


def decode_ids(model: Seq2SeqModel, src_ids: Sequence[Sequence[int]], decode: DecodeConfig,
               device: torch.device, processes: bool = False) -> list[list[int]]:
    """The 1-best output ids of every sentence (``processes``: as in :func:`search_ids`)."""
    return [h[0].tokens for h in search_ids(model, src_ids, decode, device,
                                            processes=processes)]


@contextlib.contextmanager
def _no_normal_init() -> Iterator[None]:
    """Skip ``nn.init.normal_`` while a model is built on the meta device: there torch runs it
    through a Python reference implementation whose first call imports ``torch._dynamo``
    (2 of the 4.9 s a one-sentence translate took); the weights come from the checkpoint."""
    normal = nn.init.normal_
    nn.init.normal_ = lambda tensor, *args, **kwargs: tensor
    try:
        yield
    finally:
        nn.init.normal_ = normal


def model_from_weights(cfg: Config, n_src: int, n_tgt: int, weights: dict[str, torch.Tensor],
                       path: Path) -> Seq2SeqModel:
    """The model of ``cfg`` holding ``weights`` (from ``path``). It is built on the meta device,
    which allocates and initialises nothing, and then takes the loaded tensors as its own
    (``assign``): loading costs no random initialisation and no copy."""
    with torch.device("meta"), _no_normal_init():
        model = build_model(cfg.model, n_src, n_tgt)
    try:
        model.load_state_dict(weights, assign=True)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit the model ({one_line(e)})") from None
    return model


def load_run_model(run_dir: RunDir, checkpoint: str = "best"
                   ) -> tuple[Path, Config, Seq2SeqModel, Vocab, Vocab]:
    """A run's ``checkpoint`` (best, last or a path) for inference or export: its path, the
    config stored in it, the model holding its weights (on the CPU, read through a memory map:
    the optimizer state a checkpoint also holds is never read) and the two vocabularies."""
    path, payload, cfg = run_dir.load_checkpoint(checkpoint, mmap=True)
    src_vocab, tgt_vocab = run_dir.vocabularies()
    model = model_from_weights(cfg, len(src_vocab), len(tgt_vocab), payload["model"], path)
    return path, cfg, model, src_vocab, tgt_vocab


@dataclass
class Translation:
    text: str  # detokenized output
    score: float  # length-normalised log-probability (see seq2seq.search.normalise)
    tokens: list[int]  # output subword ids, without eos
    src_tokens: list[int]  # source subword ids fed to the model (the model appends eos)
    attention: torch.Tensor | None = None  # (len(tokens) + 1, len(src_tokens) + 1)


@dataclass
class Translator:
    """A trained model with its vocabularies, and the search options (``decode``) that
    :meth:`translate` and :meth:`translate_nbest` use. ``decode`` starts as the run's
    ``config.decode``; replace it with a variant, e.g.
    ``tr.decode = tr.config.decode.override(beam_size=5)``."""

    model: Seq2SeqModel
    config: Config
    src_vocab: Vocab
    tgt_vocab: Vocab
    device: torch.device
    checkpoint: Path  # the file the weights came from
    decode: DecodeConfig  # the search options (a validated copy of the run's or the caller's)
    run: RunDir | None = None  # where the weights came from (None for a model built in memory)
    checkpoint_name: str = "best"  # as asked for: best, last or a path (names eval reports)
    quantize: str = "none"  # how the linear layers compute (seq2seq.quantize)
    # several batches at once in forked worker processes instead of threads (search_ids); the
    # CLI's eval and translate set it. Fork only from a process whose other threads hold no
    # lock a worker takes: not one reading sys.stdin itself (seq2seq.forked)
    processes: bool = False

    @classmethod
    def from_run(cls, run: str | Path, checkpoint: str = "best", device: str = "auto",
                 decode: DecodeConfig | None = None, quantize: str = "none",
                 pack: bool = True) -> Translator:
        """Load ``checkpoint`` (best, last or a path) of a run; ``decode`` (validated) replaces
        the run's search options; ``quantize`` (:data:`seq2seq.quantize.QUANTIZATIONS`) picks
        the CPU arithmetic of the linear layers (``bf16`` packs every one of them in bf16);
        ``pack``: on a CPU without quantization (fp32), weights are packed once for oneDNN
        (:mod:`seq2seq.packing`: every linear layer's on a CPU with AVX-512, the output
        layer's elsewhere; faster, the same results to float rounding)."""
        run_dir = RunDir(run).require()
        dev = pick_device(device)
        tune_backends(dev)
        check_quantize(quantize, dev)
        path, cfg, model, src_vocab, tgt_vocab = load_run_model(run_dir, checkpoint)
        model = quantize_model(model.to(dev).eval(), quantize)
        if pack and dev.type == "cpu" and quantize == "none":  # int8 layers have their own
            pack_linears(model)
        decode = (decode if decode is not None else cfg.decode).override()
        return cls(model, cfg, src_vocab, tgt_vocab, dev, path, decode, run_dir, checkpoint,
                   quantize)

    @property
    def packed(self) -> bool:
        """Whether a layer computes with oneDNN-packed weights (:mod:`seq2seq.packing`)."""
        return any(isinstance(m, PackedLinear) for m in self.model.modules())

    def translate(self, lines: Sequence[str], decode: DecodeConfig | None = None) -> list[str]:
        """Translate detokenized sentences; an empty line gives an empty translation."""
        return [h[0].text if h else "" for h in self.translate_nbest(lines, decode)]

    def translate_nbest(self, lines: Sequence[str], decode: DecodeConfig | None = None,
                        return_attention: bool = False, where: str = "line",
                        first_line: int = 1, warn: Callable[[str], None] | None = None
                        ) -> list[list[Translation]]:
        """Per line, its ``n_best`` translations best first (an empty list for an empty line),
        with their scores, subwords and, on request, attention weights; ``decode`` (default:
        ``self.decode``) sets the search. A line longer than :func:`input_limit` is cut, with
        a warning (through ``warn``, default standard error) naming it as ``where`` and its
        number (``first_line`` for ``lines[0]``)."""
        decode = decode.override() if decode is not None else self.decode
        out: list[list[Translation]] = [[] for _ in lines]
        todo = [i for i, line in enumerate(lines) if line.strip()]
        if not todo:
            return out
        src_ids = self.src_vocab.encode([lines[i].strip() for i in todo])
        src_ids = clip_inputs(src_ids, input_limit(self.model, self.config, decode),
                              lambda k: f"{where} {first_line + todo[k]}", warn)
        hyps = search_ids(self.model, src_ids, decode, self.device, return_attention,
                          processes=self.processes)
        for i, s_ids, nbest in zip(todo, src_ids, hyps):
            texts = self.tgt_vocab.decode([h.tokens for h in nbest])
            out[i] = [Translation(text, h.score, h.tokens, s_ids, h.attention)
                      for text, h in zip(texts, nbest)]
        return out
