"""Typed, validated configuration.

A YAML file is read into the dataclasses below. Validation happens once, at load time: an unknown
key, a value of the wrong type or a value outside its allowed set is reported with its full dotted
path, e.g. ``model.attention.score: 'generl' is not one of additive, dot, ...``. Command-line
overrides (``--set model.hidden_size=512``) are applied to the raw mapping first and so pass through
exactly the same checks. Builders take these objects, never raw dicts.
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import math
import reprlib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from seq2seq.choices import (
    ARCHITECTURES,
    DECODERS,
    LENGTH_PENALTIES,
    OPTIMIZERS,
    SCHEDULES,
    SCORES,
    WINDOWS,
)
from seq2seq.errors import ConfigError, one_line

INT64_LIMIT = 2**63  # torch (and numpy) hold integers as int64: |value| must stay below this
INT32_MAX = 2**31 - 1  # SentencePiece's vocabulary size and torch's thread count are C ints
MIN_VOCAB_SIZE = 6  # pad, unk, bos, eos, the word boundary piece and at least one character
MAX_LEN_A, MAX_LEN_B = 1000, 1_000_000  # decode.max_len_a/b: far beyond any translation


def _positive(section: str, **values: int | float | None) -> None:
    """Each value that is set must be > 0."""
    for key, value in values.items():
        if value is not None and value <= 0:
            raise ConfigError(f"{section}.{key}: must be positive, got {value}")


def _at_least(section: str, low: int, **values: int | float | None) -> None:
    """Each value that is set must be >= ``low``."""
    for key, value in values.items():
        if value is not None and value < low:
            raise ConfigError(f"{section}.{key}: must be {low} or more, got {value}")


def _at_most(section: str, high: int, why: str, **values: int | float | None) -> None:
    """Each value that is set must be <= ``high`` (``why`` says whose limit it is)."""
    for key, value in values.items():
        if value is not None and value > high:
            raise ConfigError(f"{section}.{key}: must be at most {high} ({why}), got {value}")


def _fraction(section: str, **values: float) -> None:
    """Each value must be in [0, 1)."""
    for key, value in values.items():
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"{section}.{key}: must be in [0, 1), got {value}")


def _not_empty(section: str, **values: str | None) -> None:
    """Each string that is set must have some text (names of files, columns, directories)."""
    for key, value in values.items():
        if value is not None and not value.strip():
            raise ConfigError(f"{section}.{key}: must not be empty, got {value!r}")


class _ShortRepr(reprlib.Repr):
    """``repr`` cut to a few dozen characters, safe for huge integers and deep or recursive
    containers (error messages quote what the user wrote, on one line)."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel, self.maxstring, self.maxother = 3, 60, 60
        self.maxlist = self.maxtuple = self.maxdict = self.maxset = self.maxfrozenset = 6

    def repr_int(self, x: int, level: int) -> str:
        if abs(x) < 10**30:
            return repr(x)
        # repr() of an integer of more than 4300 digits raises ValueError
        return f"{'-' if x < 0 else ''}an integer of {len(format(abs(x), 'x')) * 4} bits"


def _show(value: Any) -> str:
    """A value as an error message quotes it: its repr, on one line, at most ~80 characters."""
    return _ShortRepr().repr(value)


def _show_key(key: Any) -> str:
    """A mapping key in a dotted path: plain when it is ordinary text, else its short repr."""
    if isinstance(key, str) and key and key.isprintable() and key == key.strip() \
            and len(key) <= 60:
        return key
    return _show(key)


def _join(path: str, key: Any) -> str:
    return f"{path}.{_show_key(key)}" if path else _show_key(key)


@dataclass
class SplitsConfig:
    """Names of the splits in the data source (Multi30k calls its test set test_2016_flickr)."""

    train: str = "train"
    valid: str = "val"
    test: str = "test_2016_flickr"

    def validate(self) -> None:
        _not_empty("data.splits", train=self.train, valid=self.valid, test=self.test)


@dataclass
class DataConfig:
    """Where the parallel text comes from.

    format:
      local  -- a directory of ``{split}.{lang}`` files, plain or gzipped (``.gz``)
      tsv    -- a directory of ``{split}.tsv`` files with a header row naming the language columns
      jsonl  -- a directory of ``{split}.jsonl`` files; each record has a ``translation`` dict or
                one field per language
      hub    -- a Hugging Face dataset name (or a local dataset directory) loaded with
                ``datasets.load_dataset(path, hub_config)``
    """

    format: Literal["local", "tsv", "jsonl", "hub"] = "local"
    path: str = "data/multi30k"
    hub_config: str | None = None
    src_lang: str = "de"
    tgt_lang: str = "en"
    splits: SplitsConfig = field(default_factory=SplitsConfig)
    max_len: int = 100  # training pairs longer than this (in subwords, either side) are dropped
    max_sentences: int | None = None  # keep only the first N training pairs (quick experiments)
    streaming: bool = False  # hub: read the splits as they download, keeping none of them
    token_cache: bool = True  # encode the training split once into memory-mapped arrays
    fetch: Literal["multi30k"] | None = None  # local: fetch this corpus into a missing `path`

    def validate(self) -> None:
        _positive("data", max_len=self.max_len, max_sentences=self.max_sentences)
        _not_empty("data", src_lang=self.src_lang, tgt_lang=self.tgt_lang,
                   hub_config=self.hub_config)
        self.splits.validate()
        if self.src_lang == self.tgt_lang:
            raise ConfigError("data.tgt_lang: must differ from data.src_lang")
        if self.streaming and self.format != "hub":
            raise ConfigError(f"data.streaming: only for data.format hub, not {self.format!r}")


@dataclass
class VocabConfig:
    """SentencePiece subword vocabulary, trained on the training split."""

    type: Literal["unigram", "bpe"] = "unigram"
    size: int = 8000
    joint: bool = True  # one model for both languages (enables shared embeddings)
    character_coverage: float = 1.0  # SentencePiece accepts 0.98 to 1
    max_train_sentences: int = 500_000  # lines sampled to train SentencePiece (more than 100)

    def validate(self) -> None:
        if self.size < MIN_VOCAB_SIZE:
            raise ConfigError(
                f"vocab.size: must be {MIN_VOCAB_SIZE} or more (pad, unk, bos, eos, the word "
                f"boundary and at least one character), got {self.size}")
        _at_most("vocab", INT32_MAX, "SentencePiece's limit", size=self.size)
        if not 0.98 <= self.character_coverage <= 1.0:
            raise ConfigError(f"vocab.character_coverage: must be in [0.98, 1] (SentencePiece's "
                              f"range), got {self.character_coverage}")
        if self.max_train_sentences <= 100:
            raise ConfigError(f"vocab.max_train_sentences: must be more than 100 (SentencePiece "
                              f"samples at least that many), got {self.max_train_sentences}")


@dataclass
class AttentionConfig:
    """The alignment model. See docs/attention.md for every score and its paper."""

    score: str = "additive"  # a name in seq2seq.choices.SCORES (none: no attention)
    window: str = "global"  # global, local-m or local-p (Luong et al. 2015, section 3)
    window_size: int = 10  # D: a local window covers [p_t - D, p_t + D]
    # local-p: "paper" multiplies the window's softmax by the Gaussian (Luong et al. eq. 10, the
    # weights then sum to less than 1); "renormalised" adds its log to the energies instead
    local_p_weighting: Literal["paper", "renormalised"] = "renormalised"
    # local-p: divide the position logit v_p^T tanh(W_p h_t) by sqrt(hidden size) (not in the
    # paper) so that Adam's first updates do not saturate p_t at 0 or S
    local_p_scaled: bool = False
    hidden_size: int | None = None  # additive/concat hidden layer (default: decoder hidden size)
    max_positions: int = 128  # location score: source positions it can address
    beta: float = 5.0  # cosine score: (initial) sharpening
    learn_beta: bool = True  # cosine score: learn the sharpening
    heads: int = 1  # > 1: multi-head scaled dot-product attention (Vaswani et al. 2017)
    # scaled_dot: learned query and key projections, (W_q h_t)^T (W_k h_s) / sqrt(d), as
    # Vaswani et al. always project; false: the states themselves (keys projected only when
    # their size differs)
    projections: bool = False
    input_feeding: bool = True  # Luong decoder: feed the attentional vector to the next step

    def validate(self) -> None:
        score, window = SCORES.get(self.score), WINDOWS.get(self.window)
        _positive("model.attention", window_size=self.window_size,
                  max_positions=self.max_positions, heads=self.heads,
                  hidden_size=self.hidden_size)
        if not 0 < self.beta <= 100:
            raise ConfigError(f"model.attention.beta: must be in (0, 100], got {self.beta}")
        if self.projections and self.score != "scaled_dot":
            raise ConfigError("model.attention.projections: only for score: scaled_dot "
                              f"(not {self.score!r})")
        if self.heads > 1 and score.attends and (not score.multi_head or window.local):
            raise ConfigError("model.attention.heads: multi-head attention needs "
                              "score: scaled_dot and window: global")


@dataclass
class ModelConfig:
    """The network: ``arch: rnn`` (the recurrent family) or ``arch: transformer``."""

    arch: str = "rnn"  # a name in seq2seq.choices.ARCHITECTURES
    # bahdanau: attend from s_{i-1}, context into the recurrence (Bahdanau et al. 2014)
    # luong: attend from h_t, attentional vector tanh(W_c [c_t; h_t]) (Luong et al. 2015)
    # sutskever: no attention, decoder starts from the encoder state (Sutskever et al. 2014)
    # cho: no attention, fixed context fed to every step and the output (Cho et al. 2014)
    decoder: str = "bahdanau"  # a name in seq2seq.choices.DECODERS
    reverse_source: bool = False  # read the source backwards (Sutskever et al. 2014)
    cell: Literal["gru", "lstm"] = "gru"
    embed_size: int = 256
    hidden_size: int = 256  # decoder hidden size; the encoder's per direction is set below
    encoder_hidden_size: int | None = None  # default: hidden_size // 2 if bidirectional
    encoder_layers: int = 1
    decoder_layers: int = 1
    bidirectional: bool = True
    dropout: float = 0.2
    share_embeddings: bool = True  # source and target embeddings (needs a joint vocabulary)
    tie_output: bool = True  # target embedding = output projection (needs equal sizes)
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    # initialisation: xavier (Xavier-uniform matrices, zero biases: every family's default);
    # uniform (every parameter from U(-init_range, init_range): Sutskever et al. 0.08, Luong et
    # al. 0.1); gaussian (matrices from N(0, init_range^2), recurrent matrices orthogonal, zero
    # biases, additive attention's W_a, U_a from N(0, 0.001^2) and v_a zero: Bahdanau et al. and
    # Cho et al. 0.01)
    init: Literal["xavier", "uniform", "gaussian"] = "xavier"
    init_range: float = 0.1
    forget_bias: float = 0.0  # LSTM: the forget gate's initial bias (1.0 is the common choice)
    # the token embeddings under init: uniform/gaussian: as the scheme says (`scheme`), or
    # N(0, d^-1/2) as xavier gives them (`normal`): N(0, 0.01^2) embeddings, shared with the
    # output layer, hold Adam at the unigram plateau (docs/history.md)
    embedding_init: Literal["scheme", "normal"] = "scheme"
    # the RNN decoder's initial state s_0: bridge (tanh(W_s h_final) per layer, the default);
    # final (the encoder's final state itself, both directions concatenated, the LSTM cell too:
    # Sutskever et al. 2014, Luong et al. 2015); backward (tanh(W_s h<-_1) from the backward
    # direction alone: Bahdanau et al. 2015, A.2.2); summary (tanh(V' c) from the fixed context c:
    # Cho et al. 2014)
    decoder_start: Literal["bridge", "final", "backward", "summary"] = "bridge"
    # Transformer only (d_model = embed_size; heads = attention.heads):
    ff_size: int = 1024  # position-wise feed-forward inner size
    norm: Literal["post", "pre"] = "post"  # layer norm after the residual (paper) or before
    positions: Literal["sinusoidal", "learned"] = "sinusoidal"
    max_length: int = 1024  # longest sequence the position table covers
    scale_embeddings: bool = True  # multiply embeddings by sqrt(d_model) (section 3.4)
    attention_dropout: float = 0.1  # dropout on attention weights
    relu_dropout: float = 0.0  # dropout inside the feed-forward sub-layer

    @property
    def encoder_hidden(self) -> int:
        """The RNN encoder's hidden size per direction."""
        if self.encoder_hidden_size:
            return self.encoder_hidden_size
        return self.hidden_size // 2 if self.bidirectional else self.hidden_size

    @property
    def encoder_output_size(self) -> int:
        """The size of the RNN encoder's annotations h_j (both directions concatenated)."""
        return self.encoder_hidden * (2 if self.bidirectional else 1)

    def _check_decoder_start(self) -> None:
        start = self.decoder_start
        if start == "final" and self.encoder_output_size != self.hidden_size:
            raise ConfigError(
                f"model.decoder_start: final needs the encoder's final state "
                f"({self.encoder_output_size}) to be as large as the decoder's hidden_size "
                f"({self.hidden_size}); use bridge")
        if start != "bridge" and self.arch != "rnn":
            raise ConfigError(f"model.decoder_start: {start} is for arch: rnn (the Transformer's "
                              "decoder has no start state)")
        if start == "backward" and not (self.bidirectional and not self.reverse_source):
            raise ConfigError("model.decoder_start: backward needs bidirectional: true and "
                              "reverse_source: false (the backward direction's state at the "
                              "first source word)")
        if start == "summary" and self.decoder != "cho":
            raise ConfigError("model.decoder_start: summary is for decoder: cho (the only one "
                              "with a fixed context)")

    def validate(self) -> None:
        _positive("model", embed_size=self.embed_size, hidden_size=self.hidden_size,
                  encoder_layers=self.encoder_layers, decoder_layers=self.decoder_layers,
                  ff_size=self.ff_size, max_length=self.max_length,
                  encoder_hidden_size=self.encoder_hidden_size)
        _fraction("model", dropout=self.dropout, attention_dropout=self.attention_dropout,
                  relu_dropout=self.relu_dropout)
        DECODERS.get(self.decoder)  # the Transformer has none, but a misspelling is still one
        if not 0 < self.init_range <= 1:
            raise ConfigError(f"model.init_range: must be in (0, 1], got {self.init_range}")
        if self.forget_bias and self.cell != "lstm":
            raise ConfigError("model.forget_bias: only for cell: lstm (a GRU has no forget gate)")
        self._check_decoder_start()
        self.attention.validate()
        ARCHITECTURES.get(self.arch).check(self)


@dataclass
class TrainConfig:
    """Optimisation and the training loop."""

    seed: int = 1234
    batch_tokens: int = 4096  # padded tokens per batch: n_sentences * max(src_len, tgt_len)
    bucket_pool: int = 100  # batches per sorting pool (length bucketing)
    optimizer: str = "adam"  # adam, adamw or sgd (seq2seq.choices.OPTIMIZERS)
    lr: float = 1e-3  # the peak learning rate with a warm-up schedule
    # the learning rate of every update (seq2seq/optim.py gives the formula):
    #   constant; inverse_sqrt: lr * sqrt(warmup / update) after the warm-up ("Noam");
    #   plateau: times decay_factor when valid_metric has not improved for plateau_patience
    #   validations; halving: times decay_factor after every epoch from halve_after_epoch on
    schedule: str = "constant"  # a name in seq2seq.choices.SCHEDULES
    warmup_updates: int = 0  # linear warm-up from 0 to lr (any schedule)
    decay_factor: float = 0.5
    plateau_patience: int = 2
    halve_after_epoch: int = 5
    min_lr: float = 0.0
    momentum: float = 0.0  # sgd
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    clip_grad_norm: float = 5.0  # 0 = no clipping
    # an update whose loss or gradient norm is NaN or infinite is skipped; this many in a row
    # stop training
    max_nonfinite: int = 5
    label_smoothing: float = 0.0
    accumulate: int = 1  # batches whose gradients are summed into one update
    # hand freed activation memory back to the system at once (glibc): peak memory falls by a
    # quarter, but every update then pays page faults for its activations (1.6x slower on a
    # 2-core VM, docs/performance.md); for machines short of memory
    release_memory: bool = False
    # how dropout masks are drawn on a CPU (seq2seq/dropout.py): torch, the masks F.dropout
    # draws, bit for bit (what every reproduction result was trained with, and what a config
    # without this key means); fast: 16 random bits an element, p rounded to a multiple of
    # 2^-16, the Transformer's update about 7% faster (2-core AVX2 CPU). Both are the same on a GPU.
    dropout_masks: Literal["torch", "fast"] = "torch"
    # logits the fused output layer and loss compute at once (seq2seq/loss.py): its products
    # then have loss_chunk_logits / vocabulary rows. 2**21 (262 rows over 8k words) is what
    # every reproduction result was trained with, and what a config without this key means;
    # 2**23 (1,048 rows, a 32 MB buffer) makes the products faster: the Transformer's update
    # 1.5-3%, Bahdanau's 7-10% (2-core AVX2 CPU), with the same sums in another order.
    # Validation losses always use 2**21 chunks, so they compare across settings.
    loss_chunk_logits: int = 1 << 21
    max_updates: int = 1250
    max_epochs: int | None = None
    max_minutes: float | None = None
    valid_every: int = 250
    valid_bleu: bool = True  # greedy-decode the validation set and compute BLEU and chrF
    valid_max_sentences: int | None = None
    valid_metric: Literal["bleu", "chrf", "loss"] = "bleu"  # selects best.pt, early stopping
    patience: int | None = None  # stop after this many validations without improvement
    keep_last: int = 0  # also keep the weights of the last N validations (ckpt_UPDATE.pt)
    keep_best: int = 0  # ... and of the N best ones (for `seq2seq average`)
    log_every: int = 10
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_threads: int | None = None  # torch intra-op threads on CPU (default: all cores)
    # fp32; bf16: autocast to bfloat16 (CPU and CUDA; master weights and the loss stay fp32);
    # fp16: autocast to float16 with a gradient scaler (CUDA only); auto: bf16 where the
    # hardware has bfloat16 arithmetic (a CUDA GPU that supports it, a CPU with AVX-512 BF16 or
    # AMX), else fp32
    precision: Literal["fp32", "bf16", "fp16", "auto"] = "fp32"

    def validate(self) -> None:
        OPTIMIZERS.get(self.optimizer)
        _positive("train", batch_tokens=self.batch_tokens, max_updates=self.max_updates,
                  valid_every=self.valid_every, log_every=self.log_every,
                  num_threads=self.num_threads, valid_max_sentences=self.valid_max_sentences,
                  lr=self.lr, max_minutes=self.max_minutes,
                  loss_chunk_logits=self.loss_chunk_logits)
        _at_most("train", INT32_MAX, "torch's limit", num_threads=self.num_threads)
        # torch.optim rejects negative values; a negative clip_grad_norm would silently not clip
        _at_least("train", 0, min_lr=self.min_lr, momentum=self.momentum,
                  weight_decay=self.weight_decay, clip_grad_norm=self.clip_grad_norm)
        for i, beta in enumerate(self.betas):
            if not 0.0 <= beta < 1.0:
                raise ConfigError(f"train.betas[{i}]: must be in [0, 1), got {beta}")
        _fraction("train", label_smoothing=self.label_smoothing)
        if self.valid_metric != "loss" and not self.valid_bleu:
            raise ConfigError(f"train.valid_metric: {self.valid_metric} needs train.valid_bleu: "
                              "true (or use loss)")
        _at_least("train", 1, accumulate=self.accumulate, plateau_patience=self.plateau_patience,
                  halve_after_epoch=self.halve_after_epoch, patience=self.patience,
                  max_epochs=self.max_epochs, bucket_pool=self.bucket_pool,
                  max_nonfinite=self.max_nonfinite)
        _at_least("train", 0, keep_last=self.keep_last, keep_best=self.keep_best,
                  warmup_updates=self.warmup_updates, seed=self.seed)
        if not 0.0 < self.decay_factor <= 1.0:
            raise ConfigError(f"train.decay_factor: must be in (0, 1], got {self.decay_factor}")
        SCHEDULES.get(self.schedule).check(self)


@dataclass
class DecodeConfig:
    """Search settings used by eval and translate (overridable on the command line)."""

    batch_size: int = 64  # sentences per decoding batch
    beam_size: int = 1  # 1: greedy search; K > 1: beam search with K hypotheses per sentence
    n_best: int = 1  # hypotheses returned per sentence (at most beam_size)
    # ranking of finished hypotheses: gnmt ((5 + |y|) / 6) ** alpha (Wu et al. 2016),
    # average (log-probability per token) or none (raw log-probability)
    length_penalty: str = "gnmt"  # a name in seq2seq.choices.LENGTH_PENALTIES
    alpha: float = 0.6
    hard_attention: bool = False  # attend only to the argmax position (inference only)
    max_len_a: float = 1.5  # output length limit: a * src_len + b (a in [0, 1000])
    max_len_b: int = 10  # (b in [1, 1000000]: the limit counts eos, so every output can end)
    # output tokens (eos not counted) before eos may end a hypothesis; the length limit wins
    # where it is shorter. With max_len_a 0 and max_len_b N+1, every output is N tokens long
    min_len: int = 0
    # source subwords that validation, eval and translate read (default: data.max_len, the
    # longest pair training keeps; always less than the model's position table); longer input
    # is cut with a warning naming the line
    max_input_len: int | None = None
    # batches decoded at once on the CPU, torch's threads shared among them (0: two where
    # torch has 2 threads or more; 1: one batch at a time on all threads). Small decoder steps
    # keep two cores busier as two batches than as one (docs/performance.md); each output is
    # the one a batch decoded alone on that many threads gives
    workers: int = 0

    def validate(self) -> None:
        _positive("decode", batch_size=self.batch_size, beam_size=self.beam_size)
        _at_least("decode", 0, workers=self.workers)
        _at_most("decode", 1024, "threads", workers=self.workers)
        _at_least("decode", 0, max_len_a=self.max_len_a)
        _at_least("decode", 1, max_len_b=self.max_len_b, max_input_len=self.max_input_len)
        _at_least("decode", 0, min_len=self.min_len)
        _at_most("decode", MAX_LEN_B, "output tokens", min_len=self.min_len)
        # the search allocates (sentences, limit) tensors and steps up to the limit
        _at_most("decode", MAX_LEN_A, "output tokens per source token", max_len_a=self.max_len_a)
        _at_most("decode", MAX_LEN_B, "output tokens", max_len_b=self.max_len_b)
        if not 1 <= self.n_best <= self.beam_size:
            raise ConfigError(f"decode.n_best: must be between 1 and decode.beam_size "
                              f"({self.beam_size}), got {self.n_best}")
        LENGTH_PENALTIES.get(self.length_penalty)
        if self.alpha < 0:
            raise ConfigError(f"decode.alpha: must be 0 or more, got {self.alpha}")

    def override(self, **given: Any) -> DecodeConfig:
        """A validated copy with the options that were given (None = keep this config's value),
        e.g. from the command line; the beam is widened to at least ``n_best``."""
        fields = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(given) - fields)
        if unknown:
            raise ConfigError(f"decode.{unknown[0]}: unknown key; allowed keys are "
                              f"{', '.join(sorted(fields))}")
        raw = {**dataclasses.asdict(self), **{k: v for k, v in given.items() if v is not None}}
        if raw["n_best"] > raw["beam_size"]:
            raw["beam_size"] = raw["n_best"]
        decode = _build(DecodeConfig, raw, "decode")
        decode.validate()
        return decode


@dataclass
class Config:
    """The whole run configuration (one YAML file)."""

    name: str = "run"
    run_dir: str | None = None  # default: runs/{name}
    data: DataConfig = field(default_factory=DataConfig)
    vocab: VocabConfig = field(default_factory=VocabConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))

    def validate(self) -> None:
        """Every section checks itself; then the checks that span sections."""
        if not self.name.strip():
            raise ConfigError(f"name: must not be empty (it names runs/NAME), got {self.name!r}")
        for section in (self.data, self.vocab, self.model, self.train, self.decode):
            section.validate()
        if self.model.share_embeddings and not self.vocab.joint:
            raise ConfigError("model.share_embeddings: true needs vocab.joint: true")


# --------------------------------------------------------------------------------------------
# Loading and validation


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML file (or the defaults when ``path`` is None), apply ``key=value`` overrides,
    validate, and return a :class:`Config`. Anything wrong with the file, an override or a value
    is a :class:`ConfigError` of one line."""
    raw: dict[Any, Any] = {}
    spellings: dict[str, str] = {}  # how the YAML spelled each boolean, for hints
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            text = p.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError:
            raise ConfigError(f"{p}: not a text file (not UTF-8)") from None
        except OSError as e:
            raise ConfigError(f"{p}: cannot be read ({e.strerror or type(e).__name__})") from None
        loaded, problem = _safe_load(text)
        if problem is not None:
            raise ConfigError(f"{p}: not valid YAML ({problem})")
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: the top level must be a mapping of sections, got "
                              f"{type(loaded).__name__}")
        raw = loaded
        spellings.update(_bool_spellings(text, ""))
    for item in overrides or []:
        apply_override(raw, item, spellings)
    return config_from_dict(raw, spellings=spellings)


def config_from_dict(raw: dict[str, Any], *, spellings: Mapping[str, str] | None = None
                     ) -> Config:
    """Build and validate a :class:`Config` from a nested mapping (as ``Config.to_dict`` gives
    it); ``spellings`` (dotted path -> the YAML text of a boolean there) only improve messages."""
    cfg = _build(Config, raw, "", spellings)
    cfg.validate()
    return cfg


def override_key(item: str) -> str:
    """The dotted key of a ``KEY=VALUE`` override as :func:`apply_override` reads it, its parts
    stripped (``"train . num_threads=2"`` -> ``"train.num_threads"``)."""
    return ".".join(part.strip() for part in item.partition("=")[0].split("."))


def apply_override(raw: dict[Any, Any], item: str, spellings: dict[str, str] | None = None
                   ) -> None:
    """Apply ``a.b.c=value`` (value parsed as YAML; text that is not YAML is taken as it is) to a
    raw nested mapping in place; ``spellings`` records how the value spelled its booleans."""
    if not isinstance(item, str) or "=" not in item:
        raise ConfigError(f"--set {_show(item)}: expected KEY=VALUE, e.g. model.hidden_size=512")
    key, _, text = item.partition("=")
    parts = override_key(item).split(".")
    if not all(parts):
        raise ConfigError(f"--set {_show(item)}: malformed key {_show(key.strip())}")
    value = None
    if text.strip():
        value, problem = _safe_load(text)
        if problem is not None:
            value = text
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            where = ".".join(_show_key(p) for p in parts[: i + 1])
            raise ConfigError(f"{where}: is a value, not a section (--set {_show(item)})")
        node = child
    node[parts[-1]] = value
    if spellings is not None and value is not text:
        spellings.update(_bool_spellings(text, ".".join(parts)))


def _safe_load(text: str) -> tuple[Any, str | None]:
    """``(yaml.safe_load(text), None)``, or ``(None, what is wrong)`` on one line."""
    try:
        return yaml.safe_load(text), None
    except RecursionError:
        return None, "nested too deeply"
    except yaml.YAMLError as e:
        return None, one_line(e) or type(e).__name__
    except Exception as e:  # PyYAML's constructors raise ValueError, KeyError, IndexError, ...
        # on malformed scalars: !!int "", !!bool maybe, 2001-13-45, an integer of 5000 digits
        return None, f"{type(e).__name__}: {one_line(e)}"


_BOOL_TAG = "tag:yaml.org,2002:bool"


def _bool_spellings(text: str, prefix: str) -> dict[str, str]:
    """Where the YAML ``text`` holds a boolean, how it is spelled (``no``, ``off``, ...), by
    dotted path under ``prefix``: a string field that got one says what to quote."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except Exception:  # the caller has loaded the text; nothing to add if composing fails
        return {}
    found: dict[str, str] = {}

    def walk(node: Any, path: str, depth: int) -> None:
        if isinstance(node, yaml.ScalarNode):
            if node.tag == _BOOL_TAG and path:
                found[path] = node.value
        elif isinstance(node, yaml.MappingNode) and depth < 4:  # aliases may form cycles
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode):
                    walk(v, f"{path}.{k.value}" if path else k.value, depth + 1)

    walk(root, prefix, 0)
    return found


def _unknown_key_hint(key: Any, names: list[str]) -> str:
    if isinstance(key, bool):
        return " (YAML reads yes/no/on/off/true/false as booleans: quote the key)"
    if not isinstance(key, str):
        return ""
    if "." in key:
        return " (write nested keys as indented sections, not dotted)"
    close = difflib.get_close_matches(key, names, n=1) if len(key) <= 100 else []
    return f" (did you mean {close[0]}?)" if close else ""


def _build(cls: type, raw: Any, path: str, spellings: Mapping[str, str] | None = None) -> Any:
    where = path or "config"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in raw if not (isinstance(k, str) and k in fields)]
    if unknown:  # the first in sorted order; keys may be numbers, booleans, None ...
        key = min(unknown, key=lambda k: (not isinstance(k, str), _show_key(k)))
        hint = _unknown_key_hint(key, list(fields))
        raise ConfigError(f"{_join(path, key)}: unknown key{hint}; allowed keys are "
                          f"{', '.join(fields)}")
    kwargs = {}
    for name, value in raw.items():
        kwargs[name] = _coerce(hints[name], value, f"{path}.{name}" if path else name, spellings)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, path: str, spellings: Mapping[str, str] | None = None) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path, spellings)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        errors = []
        for a in inner:
            try:
                return _coerce(a, value, path, spellings)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0])
    if origin is Literal:
        if not isinstance(value, str) or value not in args:
            allowed = ", ".join(str(a) for a in args)
            raise ConfigError(f"{path}: {_show(value)} is not one of {allowed}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple) or len(value) != len(args):
            raise ConfigError(f"{path}: expected a list of {len(args)} values, got "
                              f"{_show(value)}")
        return tuple(_coerce(a, v, f"{path}[{i}]", spellings)
                     for i, (a, v) in enumerate(zip(args, value)))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {_show(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {_show(value)}")
        if not -INT64_LIMIT <= value < INT64_LIMIT:
            raise ConfigError(f"{path}: must be between -2**63 and 2**63 - 1 (torch's int64), "
                              f"got {_show(value)}")
        return value
    if tp is float:
        return _coerce_float(value, path)
    if tp is str:
        return _coerce_str(value, path, spellings)
    raise ConfigError(f"{path}: unsupported type {tp}")  # pragma: no cover


def _coerce_float(value: Any, path: str) -> float:
    number = value
    if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
        try:
            number = float(value)
        except ValueError:
            pass
    if isinstance(number, bool) or not isinstance(number, int | float):
        raise ConfigError(f"{path}: expected a number, got {_show(value)}")
    try:
        number = float(number)
    except OverflowError:  # an integer beyond a float's range
        raise ConfigError(f"{path}: must be a finite number, got {_show(value)}") from None
    if not math.isfinite(number):  # .nan, .inf, 1e999: torch would fail (or train on NaN)
        raise ConfigError(f"{path}: must be a finite number, got {number}")
    return number


def _coerce_str(value: Any, path: str, spellings: Mapping[str, str] | None) -> str:
    if isinstance(value, bool):  # YAML 1.1: no, yes, on, off (any case), true, false
        said = (spellings or {}).get(path) or str(value).lower()
        raise ConfigError(f'{path}: expected a string, got {said} (YAML reads yes/no/on/off/'
                          f'true/false as booleans: quote it, "{said}")')
    if isinstance(value, datetime.date):  # and datetime.datetime
        raise ConfigError(f"{path}: expected a string, got the date {value} (YAML reads dates: "
                          "quote it)")
    if isinstance(value, int) and not -INT64_LIMIT <= value < INT64_LIMIT:
        raise ConfigError(f"{path}: expected a string, got {_show(value)}")
    if isinstance(value, int | float):
        value = str(value)
    if not isinstance(value, str):
        raise ConfigError(f"{path}: expected a string, got {_show(value)}")
    if "\x00" in value:
        raise ConfigError(f"{path}: must not contain a NUL character, got {_show(value)}")
    return value


def _to_plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_to_plain(v) for v in obj]
    return obj


def config_to_yaml(cfg: Config) -> str:
    """The resolved config as YAML text (what a run directory keeps as config.yaml)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
