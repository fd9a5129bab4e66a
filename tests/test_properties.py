"""Property-based tests (hypothesis) of the two places that read whatever a user hands them.

* The config loader: random YAML trees, random text and bytes as a config file, and random
  ``--set`` strings either give a valid :class:`Config` (which round-trips through a dict and
  through YAML) or raise one :class:`Seq2SeqError` of one non-empty line; never another exception.
* The translate input path: random byte lines (invalid UTF-8, ``\\r``, NUL, long and empty lines)
  streamed through :func:`seq2seq.streaming.translate_stream` give one output line each, in order.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import math
import types
import typing
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from synthetic import toy_pairs

from seq2seq import choices
from seq2seq.config import Config, config_from_dict, config_to_yaml, load_config
from seq2seq.errors import Seq2SeqError

# ---------------------------------------------------------------------------------------------
# The config's own names, read from its dataclasses


def _fields(cls: type, prefix: str = "") -> list[tuple[str, typing.Any]]:
    """(dotted path, type) of every field, sections included, depth first."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        tp, path = hints[f.name], prefix + f.name
        out.append((path, tp))
        if dataclasses.is_dataclass(tp):
            out.extend(_fields(tp, path + "."))
    return out


FIELDS = _fields(Config)
PATHS = [path for path, _ in FIELDS]
NAMES = sorted({path.rsplit(".", 1)[-1] for path in PATHS})
# every name a choice key takes (the registries' and the Literal fields'), and two languages
CHOICES = sorted({name for registry in (choices.ARCHITECTURES, choices.DECODERS, choices.SCORES,
                                        choices.WINDOWS, choices.LENGTH_PENALTIES,
                                        choices.OPTIMIZERS, choices.SCHEDULES)
                  for name in registry.names()}
                 | {arg for _, tp in FIELDS if typing.get_origin(tp) is typing.Literal
                    for arg in typing.get_args(tp)} | {"de", "en"})
# scalars as YAML spells them, tricky ones included
YAML_WORDS = ["no", "yes", "on", "off", "Off", "true", "~", "null", ".nan", ".inf", "-.inf", "1e-3",
              "1.0e+3", "0x1f", "0o17", "1_000", "190:20:30", "2001-12-14", "2001-13-45", "0.5",
              "-1", "0", "1", "2", "64", "8000", "[0.9, 0.98]", "[2, 3]", "{}", "[]", "''", '""',
              "!!int ''", "!!bool maybe", "!!float x", "!!timestamp x", "!!binary AAAA",
              "!!set {a, b}", "!!python/name:os.system", "&a [*a]", "*a", "9" * 5000,
              "0x" + "f" * 5000]

# every example reuses the module's fixtures; big generated trees are the point
QUICK = dict(deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])

# ---------------------------------------------------------------------------------------------
# Strategies

small_ints = st.integers(min_value=-3, max_value=300)
huge_ints = st.integers(min_value=-(2**80), max_value=2**80) | st.sampled_from(
    [2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**31, 10**400])
floats = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, 0.5, 0.98, 1.0])
texts = st.text(max_size=12) | st.sampled_from(CHOICES) | st.sampled_from(YAML_WORDS)
scalars = st.none() | st.booleans() | small_ints | huge_ints | floats | texts
keys = (st.sampled_from(NAMES) | st.text(max_size=10) | st.sampled_from(PATHS) | small_ints
        | st.booleans() | st.none() | st.floats(allow_nan=False))
junk = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(keys, inner, max_size=4), max_leaves=12)


def _plausible(tp: typing.Any) -> st.SearchStrategy:
    """Values near what the field takes, so that valid configs come up too."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        fields = {f.name: _plausible(hints[f.name]) | junk for f in dataclasses.fields(tp)}
        return st.fixed_dictionaries({}, optional=fields)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return st.none() | st.one_of(*(_plausible(a) for a in inner))
    if origin is typing.Literal:
        return st.sampled_from(args)
    if origin is tuple:
        return st.lists(st.floats(min_value=-0.5, max_value=1.5) | scalars, min_size=1,
                        max_size=3)
    if tp is bool:
        return st.booleans()
    if tp is int:
        return small_ints
    if tp is float:
        return st.floats(min_value=-1, max_value=2) | st.sampled_from([0.0, 1e-3, 1.0])
    return st.sampled_from(CHOICES) | st.text(max_size=8)


config_trees = (_plausible(Config)
                | st.dictionaries(st.sampled_from(NAMES) | keys, junk, max_size=5)
                | st.builds(lambda tree, extra: {**tree, **extra}, _plausible(Config),
                            st.dictionaries(keys, junk, max_size=2)))
yaml_fragments = st.lists(
    st.sampled_from(["model:", "train:", "data:", "\n", "\n  ", "  ", ": ", "- ", "? ", "---",
                     "<<: ", "&a ", "*a", "[", "]", "{", "}", ",", "'", '"', "|", ">", "#", "%",
                     "\t", "hidden_size", "lr", "betas", "src_lang", "attention:", "score: "])
    | st.sampled_from(YAML_WORDS) | st.text(max_size=4),
    max_size=30).map("".join)
override_keys = (st.sampled_from(PATHS)
                 | st.builds(lambda a, b: f"{a}.{b}", st.sampled_from(PATHS), texts)
                 | st.lists(st.sampled_from(NAMES) | st.text(max_size=5), max_size=4).map(".".join)
                 | st.text(max_size=10))


def _flow(value: typing.Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).removesuffix(
        "\n...\n").strip()


override_values = (texts | st.text(max_size=20) | yaml_fragments
                   | junk.map(_flow) | floats.map(repr) | huge_ints.map(str))
plausible_overrides = st.sampled_from(
    [(path, tp) for path, tp in FIELDS if not dataclasses.is_dataclass(tp)]
).flatmap(lambda field: _plausible(field[1]).map(lambda v: f"{field[0]}={_flow(v)}"))
overrides = st.lists(
    plausible_overrides
    | st.builds(lambda k, v: f"{k}={v}", override_keys, override_values) | st.text(max_size=30),
    max_size=5)


# ---------------------------------------------------------------------------------------------
# The property of the config loader


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("configs")


_count = itertools.count()


def _file(workdir: Path, data: str | bytes) -> Path:
    path = workdir / f"c{next(_count)}.yaml"
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data, encoding="utf-8")
    return path


def check_load(workdir: Path, path: Path | None, items: list[str] | None = None) -> Config | None:
    """``load_config`` gives a valid config that round-trips, or one Seq2SeqError line."""
    try:
        cfg = load_config(path, items)
    except Seq2SeqError as e:
        message = str(e)
        assert message.strip(), f"an empty message ({type(e).__name__})"
        assert len(message.splitlines()) == 1, f"not one line: {message!r}"
        return None
    assert isinstance(cfg, Config)
    cfg.validate()
    assert config_from_dict(cfg.to_dict()) == cfg
    assert load_config(_file(workdir, config_to_yaml(cfg))) == cfg  # as a run directory keeps it
    torch_accepts(cfg)
    return cfg


def torch_accepts(cfg: Config) -> None:
    """What torch checks only when a training or a search starts, it accepts: the optimizer's
    arguments, the learning rate, dropout rates, the seed, the search and its length limit."""
    from seq2seq.optim import LRSchedule, build_optimizer
    from seq2seq.search import make_search, max_lengths

    t, m = cfg.train, cfg.model
    schedule = LRSchedule(t, build_optimizer(t, torch.nn.Linear(2, 2)))
    assert math.isfinite(schedule.set(1))
    for p in (m.dropout, m.attention_dropout, m.relu_dropout):
        torch.nn.Dropout(p)
    torch.Generator().manual_seed(t.seed)
    make_search(cfg.decode)
    assert bool((max_lengths(torch.tensor([1, 400]), cfg.decode.max_len_a,
                             cfg.decode.max_len_b) >= 1).all())


@settings(max_examples=120, **QUICK)
@given(tree=config_trees, extra=overrides)
def test_config_tree_loads_or_fails_with_one_line(workdir, tree, extra):
    path = _file(workdir, yaml.safe_dump(tree, allow_unicode=True))
    check_load(workdir, path)
    check_load(workdir, path, extra)


@settings(max_examples=250, **QUICK)
@given(data=st.text(max_size=200) | st.binary(max_size=200) | yaml_fragments)
def test_any_file_loads_or_fails_with_one_line(workdir, data):
    check_load(workdir, _file(workdir, data))


@settings(max_examples=300, **QUICK)
@given(items=overrides)
def test_any_overrides_load_or_fail_with_one_line(workdir, items):
    check_load(workdir, None, items)


def test_the_strategies_reach_valid_configs(workdir):
    """The property above is only worth something if random input is sometimes valid."""
    assert check_load(workdir, _file(workdir, yaml.safe_dump({"train": {"lr": 0.01}})))
    assert check_load(workdir, None, ["decode.beam_size=4", "train.betas=[0.5, 0.5]"])


# ---------------------------------------------------------------------------------------------
# The translate input path


@pytest.fixture(scope="module")
def translator(tmp_path_factory):
    """An untrained tiny RNN with a SentencePiece vocabulary trained on a toy corpus (a second):
    the input path does not care what the model learned."""
    from seq2seq.inference import Translator
    from seq2seq.models import build_model
    from seq2seq.vocab import train_or_load

    base = tmp_path_factory.mktemp("translate")
    cfg = load_config(None, ["vocab.size=60", "model.embed_size=16", "model.hidden_size=16",
                             "decode.batch_size=4", "decode.max_len_a=0.5",
                             "decode.max_len_b=3", "decode.max_input_len=64"])
    pairs = toy_pairs(200)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SEQ2SEQ_CACHE", str(base / "cache"))
        src_vocab, tgt_vocab = train_or_load(cfg.vocab, [s for s, _ in pairs],
                                             [t for _, t in pairs])
    torch.manual_seed(0)
    model = build_model(cfg.model, len(src_vocab), len(tgt_vocab)).eval()
    return Translator(model, cfg, src_vocab, tgt_vocab, torch.device("cpu"),
                      base / "untrained.pt", cfg.decode)


byte_lines = st.lists(
    st.one_of(
        st.binary(max_size=40),
        st.sampled_from([b"", b" ", b"\r", b"\t \r", b"\x00", b"\xff\xfe", b"\xc3", b"\xe2\x80\xa8",
                         "Ein Hund läuft.".encode(), b"Eine Frau liest.\r",
                         b"Ein Kind\x00spielt.", b"\x85", "\u3000".encode()]),
        st.text(max_size=30).map(str.encode),
        st.integers(min_value=500, max_value=3000).map(lambda n: (b"Hund Katze " * n)[:n]),
    ).map(lambda line: line.replace(b"\n", b"")),
    min_size=1, max_size=8)


@settings(max_examples=25, **QUICK)
@given(lines=byte_lines, final_newline=st.booleans())
def test_translate_stream_one_output_line_per_input_line(translator, lines, final_newline):
    from seq2seq.streaming import translate_stream

    data = b"\n".join(lines) + (b"\n" if final_newline else b"")
    inputs = [raw.removesuffix(b"\n") for raw in io.BytesIO(data).readlines()]
    out, err = io.StringIO(), io.StringIO()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: a second thread only waits (for a busy core)
    try:
        n = translate_stream(translator, io.BytesIO(data), out, err=err)
        alone = {text: translator.translate([text]) for text in map(_text, inputs)
                 if text.strip()}
    finally:
        torch.set_num_threads(threads)
    got = out.getvalue().split("\n")
    assert got.pop() == ""  # every output line ends with a newline
    assert n == len(got) == len(inputs)
    for raw, line in zip(inputs, got):
        text = _text(raw)
        if not text.strip():
            assert line == ""
        else:  # in order: the line it gets is its own translation (batching changes nothing)
            assert [line] == alone[text]


def _text(raw: bytes) -> str:
    """An input line as the translator reads it: empty when it is not UTF-8."""
    try:
        return raw.decode("utf-8").rstrip("\r")
    except UnicodeDecodeError:
        return ""
