"""Typed, validated configuration.

A YAML file is read into the dataclasses below. Validation happens once, at load time: an unknown
key, a value of the wrong type or a value outside its allowed set is reported with its full dotted
path, e.g. ``model.attention.score: 'generl' is not one of additive, dot, ...``. Command-line
overrides (``--set model.hidden_size=512``) are applied to the raw mapping first and so pass through
exactly the same checks. Builders take these objects, never raw dicts.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
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


def _positive(section: str, **values: int | float | None) -> None:
    """Each value that is set must be > 0."""
    for key, value in values.items():
        if value is not None and value <= 0:
            raise ConfigError(f"{section}.{key}: must be positive, got {value}")


def _at_least(section: str, low: int, **values: int | None) -> None:
    for key, value in values.items():
        if value is not None and value < low:
            raise ConfigError(f"{section}.{key}: must be {low} or more, got {value}")


def _fraction(section: str, **values: float) -> None:
    """Each value must be in [0, 1)."""
    for key, value in values.items():
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"{section}.{key}: must be in [0, 1), got {value}")


@dataclass
class SplitsConfig:
    """Names of the splits in the data source (Multi30k calls its test set test_2016_flickr)."""

    train: str = "train"
    valid: str = "val"
    test: str = "test_2016_flickr"


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

    def validate(self) -> None:
        _positive("data", max_len=self.max_len, max_sentences=self.max_sentences)
        if self.src_lang == self.tgt_lang:
            raise ConfigError("data.tgt_lang: must differ from data.src_lang")


@dataclass
class VocabConfig:
    """SentencePiece subword vocabulary, trained on the training split."""

    type: Literal["unigram", "bpe"] = "unigram"
    size: int = 8000
    joint: bool = True  # one model for both languages (enables shared embeddings)
    character_coverage: float = 1.0
    max_train_sentences: int = 2_000_000  # SentencePiece input_sentence_size

    def validate(self) -> None:
        _positive("vocab", size=self.size)
        if not 0.0 < self.character_coverage <= 1.0:
            raise ConfigError(
                f"vocab.character_coverage: must be in (0, 1], got {self.character_coverage}")


@dataclass
class AttentionConfig:
    """The alignment model. See docs/attention.md for every score and its paper."""

    score: str = "additive"  # a name in seq2seq.choices.SCORES (none: no attention)
    window: str = "global"  # global, local-m or local-p (Luong et al. 2015, section 3)
    window_size: int = 10  # D: a local window covers [p_t - D, p_t + D]
    hidden_size: int | None = None  # additive/concat hidden layer (default: decoder hidden size)
    max_positions: int = 128  # location score: source positions it can address
    beta: float = 5.0  # cosine score: (initial) sharpening
    learn_beta: bool = True  # cosine score: learn the sharpening
    heads: int = 1  # > 1: multi-head scaled dot-product attention (Vaswani et al. 2017)
    input_feeding: bool = True  # Luong decoder: feed the attentional vector to the next step

    def validate(self) -> None:
        score, window = SCORES.get(self.score), WINDOWS.get(self.window)
        _positive("model.attention", window_size=self.window_size,
                  max_positions=self.max_positions, heads=self.heads)
        if not 0 < self.beta <= 100:
            raise ConfigError(f"model.attention.beta: must be in (0, 100], got {self.beta}")
        if self.heads > 1 and (not score.multi_head or window.local):
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

    def validate(self) -> None:
        _positive("model", embed_size=self.embed_size, hidden_size=self.hidden_size,
                  encoder_layers=self.encoder_layers, decoder_layers=self.decoder_layers,
                  ff_size=self.ff_size, max_length=self.max_length,
                  encoder_hidden_size=self.encoder_hidden_size)
        _fraction("model", dropout=self.dropout, attention_dropout=self.attention_dropout,
                  relu_dropout=self.relu_dropout)
        DECODERS.get(self.decoder)  # the Transformer has none, but a misspelling is still one
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
    label_smoothing: float = 0.0
    accumulate: int = 1  # batches whose gradients are summed into one update
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
                  num_threads=self.num_threads, valid_max_sentences=self.valid_max_sentences)
        _fraction("train", label_smoothing=self.label_smoothing)
        if self.valid_metric != "loss" and not self.valid_bleu:
            raise ConfigError(f"train.valid_metric: {self.valid_metric} needs train.valid_bleu: "
                              "true (or use loss)")
        _at_least("train", 1, accumulate=self.accumulate, plateau_patience=self.plateau_patience,
                  halve_after_epoch=self.halve_after_epoch, patience=self.patience)
        _at_least("train", 0, keep_last=self.keep_last, keep_best=self.keep_best,
                  warmup_updates=self.warmup_updates, seed=self.seed)
        if not 0.0 < self.decay_factor <= 1.0:
            raise ConfigError(f"train.decay_factor: must be in (0, 1], got {self.decay_factor}")
        if self.lr <= 0 or self.min_lr < 0:
            raise ConfigError("train.lr: must be positive (and train.min_lr 0 or more)")
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
    max_len_a: float = 1.5  # output length limit: a * src_len + b
    max_len_b: int = 10

    def validate(self) -> None:
        _positive("decode", batch_size=self.batch_size)
        if self.beam_size < 1 or not 1 <= self.n_best <= self.beam_size:
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
        for section in (self.data, self.vocab, self.model, self.train, self.decode):
            section.validate()
        if self.model.share_embeddings and not self.vocab.joint:
            raise ConfigError("model.share_embeddings: true needs vocab.joint: true")


# --------------------------------------------------------------------------------------------
# Loading and validation


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML file (or the defaults when ``path`` is None), apply ``key=value`` overrides,
    validate, and return a :class:`Config`."""
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML ({one_line(e)})") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: the top level must be a mapping of sections")
        raw = loaded
    for item in overrides or []:
        apply_override(raw, item)
    return config_from_dict(raw)


def config_from_dict(raw: dict[str, Any]) -> Config:
    cfg = _build(Config, raw, "")
    cfg.validate()
    return cfg


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply ``a.b.c=value`` (value parsed as YAML) to a raw nested mapping in place."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. model.hidden_size=512")
    key, _, text = item.partition("=")
    key = key.strip()
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    parts = key.split(".")
    if not all(parts):
        raise ConfigError(f"--set {item!r}: malformed key {key!r}")
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{'.'.join(parts[: i + 1])}: is a value, not a section")
        node = child
    node[parts[-1]] = value


def _build(cls: type, raw: Any, path: str) -> Any:
    where = path or "config"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        key = unknown[0]
        full = f"{path}.{key}" if path else str(key)
        close = difflib.get_close_matches(str(key), list(fields), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(f"{full}: unknown key{hint}; allowed keys are {', '.join(fields)}")
    kwargs = {}
    for name, value in raw.items():
        kwargs[name] = _coerce(hints[name], value, f"{path}.{name}" if path else name)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        errors = []
        for a in inner:
            try:
                return _coerce(a, value, path)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0])
    if origin is Literal:
        if value not in args:
            allowed = ", ".join(str(a) for a in args)
            raise ConfigError(f"{path}: {value!r} is not one of {allowed}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple) or len(value) != len(args):
            raise ConfigError(f"{path}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return str(value)
    raise ConfigError(f"{path}: unsupported type {tp}")  # pragma: no cover


def _to_plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_to_plain(v) for v in obj]
    return obj


def config_to_yaml(cfg: Config) -> str:
    """The resolved config as YAML text (what a run directory keeps as config.yaml)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
