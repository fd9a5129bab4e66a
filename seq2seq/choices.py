"""Every named choice of the configuration, declared once: its name and its constraints.

A *choice* is a value a config key picks from a registry: the architecture, the RNN decoder, the
attention score and window, the length penalty, the optimizer and the learning-rate schedule.
Each is a small class here with its ``name`` and a ``check(section)`` that raises a
:class:`~seq2seq.errors.ConfigError` (key path first) when the config section holding its key
does not suit it. The config calls these checks when it validates itself. The code that
*implements* a choice (an ``nn.Module`` in ``seq2seq/attention.py`` or ``seq2seq/models/``)
binds itself to the choice with ``@REGISTRY.implements(Choice)``, so the name is written once,
here.

This module imports neither torch nor any model code, so the config (and ``seq2seq --help``)
load without them. Choices whose whole behaviour is arithmetic (length penalties, schedules) are
implemented here; an optimizer names its ``torch.optim`` class and arguments.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from seq2seq.errors import ConfigError

if TYPE_CHECKING:
    from seq2seq.config import ModelConfig, TrainConfig


class Choice:
    """One named option of a config key."""

    name: ClassVar[str] = ""

    @classmethod
    def check(cls, section: Any) -> None:
        """Raise ConfigError if the config section that holds this choice's key (``model``,
        ``train``, ...) does not suit the choice; nothing to check by default."""


C = TypeVar("C", bound=type[Choice])


class Registry(Generic[C]):
    """The choices of one config key, by name, and the classes that implement them."""

    def __init__(self, key: str):
        self.key = key  # the dotted config key that picks from this registry
        self._choices: dict[str, C] = {}
        self._implementations: dict[str, Any] = {}

    def register(self, choice: C) -> C:
        """Class decorator: add a choice under its ``name``."""
        if not choice.name or choice.name in self._choices:
            raise ValueError(f"{self.key}: choice name {choice.name!r} is empty or taken")
        self._choices[choice.name] = choice
        return choice

    def get(self, name: str) -> C:
        """The choice called ``name``; an unknown name is a ConfigError listing the allowed ones."""
        if name not in self._choices:
            raise ConfigError(f"{self.key}: {name!r} is not one of {', '.join(self.names())}")
        return self._choices[name]

    def names(self) -> list[str]:
        return sorted(self._choices)

    def __contains__(self, name: object) -> bool:
        return name in self._choices

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def implements(self, choice: C) -> Callable[[Any], Any]:
        """Decorator for the class (or function) that implements ``choice`` in model code."""

        def bind(impl: Any) -> Any:
            self._implementations[choice.name] = impl
            return impl

        return bind

    def implementation(self, name: str) -> Any:
        """The class bound to choice ``name`` (its module must have been imported: a missing
        binding is a programming error, not a user's)."""
        self.get(name)
        if name not in self._implementations:
            raise RuntimeError(f"{self.key}: {name!r} has no implementation bound (is the "
                               "module that implements it imported?)")
        return self._implementations[name]


# ---------------------------------------------------------------------------------------------
# Architectures (model.arch)

ARCHITECTURES: Registry[type[Architecture]] = Registry("model.arch")


class Architecture(Choice):
    has_decoder: ClassVar[bool] = False  # whether model.decoder picks a decoder

    @classmethod
    def describe(cls, m: ModelConfig) -> tuple[str, str]:
        """(model family, attention) in a few words, for reports."""
        raise NotImplementedError


@ARCHITECTURES.register
class RNNArchitecture(Architecture):
    """The recurrent encoder-decoder family; ``model.decoder`` picks the decoder."""

    name = "rnn"
    has_decoder = True

    @classmethod
    def describe(cls, m: ModelConfig) -> tuple[str, str]:
        a = m.attention
        family = f"{m.decoder} {m.cell.upper()}"
        if not SCORES.get(a.score).attends:
            return family, "none"
        attention = a.score + (f", {a.heads} heads" if a.heads > 1 else "")
        if WINDOWS.get(a.window).local or DECODERS.get(m.decoder) is Luong:
            attention += f", {a.window}"
        return family, attention

    @classmethod
    def check(cls, m: ModelConfig) -> None:
        if m.tie_output and m.embed_size != m.hidden_size:
            raise ConfigError(f"model.tie_output: true needs model.embed_size ({m.embed_size}) "
                              f"equal to model.hidden_size ({m.hidden_size})")
        if m.encoder_hidden_size is None and m.bidirectional and m.hidden_size % 2:
            raise ConfigError("model.hidden_size: must be even with a bidirectional encoder")
        DECODERS.get(m.decoder).check(m)


@ARCHITECTURES.register
class TransformerArchitecture(Architecture):
    """Vaswani et al. 2017: scaled dot-product multi-head attention, no recurrence."""

    name = "transformer"

    @classmethod
    def describe(cls, m: ModelConfig) -> tuple[str, str]:
        return (f"Transformer {m.encoder_layers}+{m.decoder_layers}, d {m.embed_size}",
                f"multi-head scaled dot ({m.attention.heads} heads)")

    @classmethod
    def check(cls, m: ModelConfig) -> None:
        a = m.attention
        if SCORES.get(a.score) is not ScaledDot or WINDOWS.get(a.window).local:
            raise ConfigError("model.attention.score: the Transformer uses scaled_dot "
                              "attention with a global window")
        if m.embed_size % a.heads:
            raise ConfigError(f"model.attention.heads: {a.heads} does not divide "
                              f"model.embed_size {m.embed_size}")


# ---------------------------------------------------------------------------------------------
# RNN decoders (model.decoder)

DECODERS: Registry[type[DecoderChoice]] = Registry("model.decoder")


class DecoderChoice(Choice):
    attends: ClassVar[bool] = True  # whether the decoder has an attention model

    @classmethod
    def check(cls, m: ModelConfig) -> None:
        a = m.attention
        score = SCORES.get(a.score)
        if not cls.attends:
            if score.attends:
                raise ConfigError(f"model.attention.score: the {cls.name} decoder has no "
                                  "attention; set it to none")
            return
        if not score.attends:
            raise ConfigError(f"model.attention.score: the {cls.name} decoder needs a score "
                              "(use model.decoder: sutskever or cho for no attention)")
        if m.hidden_size % a.heads:
            raise ConfigError(f"model.attention.heads: {a.heads} does not divide "
                              f"model.hidden_size {m.hidden_size}")
        score.check_sizes(m.hidden_size, m.encoder_output_size, m)


@DECODERS.register
class Sutskever(DecoderChoice):
    """No attention; the decoder starts from the encoder's final state (Sutskever et al. 2014)."""

    name = "sutskever"
    attends = False


@DECODERS.register
class Cho(DecoderChoice):
    """No attention; a fixed context fed to every step and the output (Cho et al. 2014)."""

    name = "cho"
    attends = False


@DECODERS.register
class Bahdanau(DecoderChoice):
    """Attend from the previous state, context into the recurrence (Bahdanau et al. 2014)."""

    name = "bahdanau"


@DECODERS.register
class Luong(DecoderChoice):
    """Attend from the current state; attentional vector ``tanh(W_c [c_t; h_t])`` (Luong 2015)."""

    name = "luong"


# ---------------------------------------------------------------------------------------------
# Attention scores (model.attention.score); the formulas are in seq2seq/attention.py

SCORES: Registry[type[ScoreChoice]] = Registry("model.attention.score")


class ScoreChoice(Choice):
    attends: ClassVar[bool] = True
    multi_head: ClassVar[bool] = False  # may run with model.attention.heads > 1

    @classmethod
    def check_sizes(cls, query_size: int, key_size: int, m: ModelConfig) -> None:
        """Raise ConfigError if the score cannot compare queries and keys of these sizes."""


@SCORES.register
class NoScore(ScoreChoice):
    name = "none"
    attends = False


@SCORES.register
class Additive(ScoreChoice):
    name = "additive"


@SCORES.register
class Concat(ScoreChoice):
    name = "concat"


@SCORES.register
class Dot(ScoreChoice):
    name = "dot"

    @classmethod
    def check_sizes(cls, query_size: int, key_size: int, m: ModelConfig) -> None:
        if query_size != key_size:
            raise ConfigError(f"model.attention.score: dot needs the encoder output size "
                              f"({key_size}) to equal model.hidden_size ({query_size}); use "
                              "general")


@SCORES.register
class General(ScoreChoice):
    name = "general"


@SCORES.register
class Location(ScoreChoice):
    name = "location"


@SCORES.register
class Cosine(ScoreChoice):
    name = "cosine"


@SCORES.register
class ScaledDot(ScoreChoice):
    name = "scaled_dot"
    multi_head = True


# ---------------------------------------------------------------------------------------------
# Attention windows (model.attention.window), Luong et al. 2015, section 3

WINDOWS: Registry[type[WindowChoice]] = Registry("model.attention.window")


class WindowChoice(Choice):
    local: ClassVar[bool] = True  # restricts attention to [p_t - D, p_t + D]


@WINDOWS.register
class Global(WindowChoice):
    name = "global"
    local = False


@WINDOWS.register
class LocalMonotonic(WindowChoice):
    name = "local-m"


@WINDOWS.register
class LocalPredictive(WindowChoice):
    name = "local-p"


# ---------------------------------------------------------------------------------------------
# Length penalties (decode.length_penalty): how finished hypotheses are ranked


LENGTH_PENALTIES: Registry[type[LengthPenaltyChoice]] = Registry("decode.length_penalty")


class LengthPenaltyChoice(Choice):
    uses_alpha: ClassVar[bool] = False  # whether decode.alpha matters
    @staticmethod
    def normalise(log_prob: float, length: int, alpha: float) -> float:
        """The score of a hypothesis of ``length`` tokens (eos included)."""
        raise NotImplementedError


@LENGTH_PENALTIES.register
class GNMT(LengthPenaltyChoice):
    """``log P / lp``, ``lp = ((5 + length) / 6) ** alpha`` (Wu et al. 2016, eq. 14);
    alpha = 0 is the raw log-probability."""

    name = "gnmt"
    uses_alpha = True

    @staticmethod
    def normalise(log_prob: float, length: int, alpha: float) -> float:
        return log_prob / (((5.0 + length) / 6.0) ** alpha)


@LENGTH_PENALTIES.register
class Average(LengthPenaltyChoice):
    """``log P / length``: the mean log-probability per token."""

    name = "average"

    @staticmethod
    def normalise(log_prob: float, length: int, alpha: float) -> float:
        return log_prob / length


@LENGTH_PENALTIES.register
class NoPenalty(LengthPenaltyChoice):
    """``log P``: favours short outputs."""

    name = "none"

    @staticmethod
    def normalise(log_prob: float, length: int, alpha: float) -> float:
        return log_prob


# ---------------------------------------------------------------------------------------------
# Optimizers (train.optimizer)

OPTIMIZERS: Registry[type[OptimizerChoice]] = Registry("train.optimizer")


class OptimizerChoice(Choice):
    torch_class: ClassVar[str] = ""  # the class in torch.optim (seq2seq/optim.py builds it)

    @staticmethod
    def arguments(t: TrainConfig) -> dict[str, Any]:
        """Keyword arguments of the torch optimizer besides the parameters and ``lr``."""
        return {"betas": t.betas, "weight_decay": t.weight_decay}


@OPTIMIZERS.register
class Adam(OptimizerChoice):
    name = "adam"
    torch_class = "Adam"


@OPTIMIZERS.register
class AdamW(OptimizerChoice):
    """Adam with decoupled weight decay (Loshchilov and Hutter 2019)."""

    name = "adamw"
    torch_class = "AdamW"


@OPTIMIZERS.register
class SGD(OptimizerChoice):
    name = "sgd"
    torch_class = "SGD"

    @staticmethod
    def arguments(t: TrainConfig) -> dict[str, Any]:
        return {"momentum": t.momentum, "weight_decay": t.weight_decay}


# ---------------------------------------------------------------------------------------------
# Learning-rate schedules (train.schedule); seq2seq/optim.py applies them

SCHEDULES: Registry[type[ScheduleChoice]] = Registry("train.schedule")


class ScheduleChoice(Choice):
    decays_on_plateau: ClassVar[bool] = False  # decay when validation stops improving
    decays_each_epoch: ClassVar[bool] = False  # decay after every epoch from halve_after_epoch

    @staticmethod
    def shape(n: int, t: TrainConfig) -> float:
        """The schedule's factor at update ``n`` after the warm-up."""
        return 1.0


@SCHEDULES.register
class Constant(ScheduleChoice):
    name = "constant"


@SCHEDULES.register
class InverseSqrt(ScheduleChoice):
    """``sqrt(warmup / n)`` after the warm-up (Vaswani et al. 2017, eq. 3, "Noam")."""

    name = "inverse_sqrt"

    @staticmethod
    def shape(n: int, t: TrainConfig) -> float:
        return math.sqrt(t.warmup_updates / n) if t.warmup_updates else 1.0

    @classmethod
    def check(cls, t: TrainConfig) -> None:
        if not t.warmup_updates:
            raise ConfigError("train.schedule: inverse_sqrt needs train.warmup_updates > 0")


@SCHEDULES.register
class Plateau(ScheduleChoice):
    """Times decay_factor when valid_metric has not improved for plateau_patience validations."""

    name = "plateau"
    decays_on_plateau = True


@SCHEDULES.register
class Halving(ScheduleChoice):
    """Times decay_factor after every epoch from halve_after_epoch on (Luong et al. 2015)."""

    name = "halving"
    decays_each_epoch = True
