from pathlib import Path

import pytest
import yaml

from seq2seq.config import Config, load_config, override_key
from seq2seq.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_are_valid():
    cfg = load_config(None)
    assert isinstance(cfg, Config)
    assert cfg.model.attention.score == "additive"


SHIPPED = sorted((ROOT / "configs").rglob("*.yaml"))
# progression files (configs/progression.yaml, fidelity.yaml, ...) list steps; the rest are
# training configs
PROGRESSIONS = [p for p in SHIPPED if "steps" in (yaml.safe_load(p.read_text()) or {})]


@pytest.mark.parametrize("path", [p for p in SHIPPED if p not in PROGRESSIONS],
                         ids=lambda p: p.name)
def test_shipped_configs_load(path):
    load_config(path)


@pytest.mark.parametrize("path", PROGRESSIONS, ids=lambda p: p.name)
def test_shipped_progressions_load(path):
    from seq2seq.progression import load_progression

    prog = load_progression(path)
    for step in prog.steps:
        load_config(step.config, list(step.overrides))
    assert {"progression.yaml", "progression_all.yaml", "fidelity.yaml"} <= {
        p.name for p in PROGRESSIONS}


def test_unknown_key_names_full_path(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model:\n  attention:\n    scroe: dot\n")
    with pytest.raises(ConfigError, match=r"^model\.attention\.scroe: unknown key "
                                          r"\(did you mean score\?\); allowed keys"):
        load_config(p)


def test_bad_choice_lists_allowed_values():
    with pytest.raises(ConfigError, match=r"model\.attention\.score: 'generl' is not one of "
                                          r"additive, concat, cosine, dot, general"):
        load_config(None, ["model.attention.score=generl"])
    with pytest.raises(ConfigError, match=r"model\.cell: 'rnn' is not one of gru, lstm"):
        load_config(None, ["model.cell=rnn"])


def test_bad_types():
    with pytest.raises(ConfigError, match=r"train\.lr: expected a number, got 'fast'"):
        load_config(None, ["train.lr=fast"])
    with pytest.raises(ConfigError, match=r"model\.bidirectional: expected true or false"):
        load_config(None, ["model.bidirectional=3"])
    with pytest.raises(ConfigError, match=r"train\.max_updates: expected an integer"):
        load_config(None, ["train.max_updates=1.5"])


def test_overrides_go_through_validation():
    cfg = load_config(None, ["model.hidden_size=512", "model.embed_size=512", "name=x"])
    assert cfg.model.hidden_size == 512 and cfg.name == "x"
    with pytest.raises(ConfigError, match=r"^model\.hiden_size: unknown key \(did you mean "
                                          r"hidden_size\?\)"):
        load_config(None, ["model.hiden_size=512"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(None, ["model.hidden_size"])
    spaced = "train . num_threads = 3"  # the key as the config reads it, spaces and all
    assert override_key(spaced) == "train.num_threads"
    assert load_config(None, [spaced]).train.num_threads == 3


def test_cross_field_checks():
    with pytest.raises(ConfigError, match="model.tie_output"):
        load_config(None, ["model.embed_size=128"])
    with pytest.raises(ConfigError, match="model.share_embeddings"):
        load_config(None, ["vocab.joint=false"])
    with pytest.raises(ConfigError, match="model.dropout"):
        load_config(None, ["model.dropout=1.5"])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_round_trip_through_dict():
    from seq2seq.config import config_from_dict

    cfg = load_config(None, ["train.betas=[0.9, 0.98]"])
    assert config_from_dict(cfg.to_dict()) == cfg


def test_more_value_checks():
    assert load_config(None, ["train.lr=1e-3"]).train.lr == 0.001  # YAML 1.1 reads it as text
    with pytest.raises(ConfigError, match="train.seed"):
        load_config(None, ["train.seed=-1"])
    with pytest.raises(ConfigError, match="vocab.character_coverage"):
        load_config(None, ["vocab.character_coverage=0"])
    with pytest.raises(ConfigError, match="data.max_sentences"):
        load_config(None, ["data.max_sentences=0"])
    with pytest.raises(ConfigError, match="does not divide"):
        load_config(None, ["model.attention.score=scaled_dot", "model.attention.heads=3"])
    with pytest.raises(ConfigError, match="the sutskever decoder has no attention"):
        load_config(None, ["model.decoder=sutskever"])
    with pytest.raises(ConfigError, match="the luong decoder needs a score"):
        load_config(None, ["model.decoder=luong", "model.attention.score=none"])
    with pytest.raises(ConfigError, match="Transformer uses scaled_dot"):
        load_config(None, ["model.arch=transformer"])


@pytest.mark.parametrize("item, message", [
    ("train.lr=.nan", r"^train\.lr: must be a finite number, got nan$"),
    ("train.lr=-.inf", r"^train\.lr: must be a finite number, got -inf$"),
    ("train.lr=1e999", r"^train\.lr: must be a finite number, got inf$"),
    ("train.betas=[2,3]", r"^train\.betas\[0\]: must be in \[0, 1\), got 2\.0$"),
    ("train.betas=[0.9, 1]", r"^train\.betas\[1\]: must be in \[0, 1\), got 1\.0$"),
    ("train.weight_decay=-1", r"^train\.weight_decay: must be 0 or more, got -1\.0$"),
    ("train.momentum=-0.5", r"^train\.momentum: must be 0 or more, got -0\.5$"),
    ("train.clip_grad_norm=-1", r"^train\.clip_grad_norm: must be 0 or more, got -1\.0$"),
    ("train.min_lr=-1e-5", r"^train\.min_lr: must be 0 or more, got -1e-05$"),
    ("train.lr=0", r"^train\.lr: must be positive, got 0\.0$"),
    ("train.max_epochs=0", r"^train\.max_epochs: must be 1 or more, got 0$"),
    ("train.max_minutes=0", r"^train\.max_minutes: must be positive, got 0\.0$"),
    ("train.bucket_pool=0", r"^train\.bucket_pool: must be 1 or more, got 0$"),
    ("train.max_nonfinite=0", r"^train\.max_nonfinite: must be 1 or more, got 0$"),
    ("train.num_threads=4294967296", r"^train\.num_threads: must be at most 2147483647"),
    ("train.seed=9223372036854775808", r"^train\.seed: must be between -2\*\*63 and"),
    ("decode.max_len_b=-50", r"^decode\.max_len_b: must be 1 or more, got -50$"),
    ("decode.max_len_a=-1", r"^decode\.max_len_a: must be 0 or more, got -1\.0$"),
    ("decode.max_len_a=1e30", r"^decode\.max_len_a: must be at most 1000 "),
    ("decode.max_input_len=0", r"^decode\.max_input_len: must be 1 or more, got 0$"),
    ("decode.beam_size=0", r"^decode\.beam_size: must be positive, got 0$"),
    ("decode.alpha=.nan", r"^decode\.alpha: must be a finite number, got nan$"),
    ("vocab.size=5", r"^vocab\.size: must be 6 or more \(pad, unk, bos, eos, .*\), got 5$"),
    ("vocab.size=2147483648", r"^vocab\.size: must be at most 2147483647"),
    ("vocab.character_coverage=0.9", r"^vocab\.character_coverage: must be in \[0\.98, 1\]"),
    ("vocab.max_train_sentences=100", r"^vocab\.max_train_sentences: must be more than 100"),
    ("model.attention.hidden_size=0", r"^model\.attention\.hidden_size: must be positive, got 0$"),
    ("data.src_lang=' '", r"^data\.src_lang: must not be empty"),
    ("name=''", r"^name: must not be empty"),
    ("data.path='a\0b'", r"^data\.path: must not contain a NUL character"),
])
def test_values_torch_or_sentencepiece_would_reject(item, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [item])


def test_the_edges_that_stay_valid_are_accepted_by_torch():
    import torch

    from seq2seq.optim import build_optimizer

    cfg = load_config(None, [
        "train.betas=[0, 0.999]", "train.weight_decay=0", "train.clip_grad_norm=0",
        "train.max_epochs=1", "train.bucket_pool=1", "train.max_minutes=0.5",
        "decode.max_len_a=0", "decode.max_len_b=1", "vocab.size=6",
        "vocab.character_coverage=0.98", "vocab.max_train_sentences=101",
        "model.attention.hidden_size=1", "train.seed=9223372036854775807"])
    build_optimizer(cfg.train, torch.nn.Linear(2, 2))
    sgd = load_config(None, ["train.optimizer=sgd", "train.momentum=0", "train.weight_decay=0"])
    build_optimizer(sgd.train, torch.nn.Linear(2, 2))


def test_yaml_booleans_in_string_fields_say_to_quote(tmp_path):
    from seq2seq.config import config_from_dict

    p = tmp_path / "c.yaml"
    p.write_text("data:\n  src_lang: no\n")
    with pytest.raises(ConfigError, match=r'^data\.src_lang: expected a string, got no \(YAML '
                                          r'reads yes/no/on/off/true/false as booleans: '
                                          r'quote it, "no"\)$'):
        load_config(p)
    with pytest.raises(ConfigError, match=r'^data\.tgt_lang: expected a string, got Off .*'
                                          r'quote it, "Off"\)$'):
        load_config(None, ["data.tgt_lang=Off"])
    with pytest.raises(ConfigError, match=r'^data\.src_lang: .*got on .*"on"\)$'):
        load_config(None, ["data={src_lang: on}"])
    with pytest.raises(ConfigError, match=r'^data\.src_lang: expected a string, got false '):
        config_from_dict({"data": {"src_lang": False}})  # no YAML text: true/false
    p.write_text("data:\n  src_lang: 'no'\n  tgt_lang: en\n")
    assert load_config(p).data.src_lang == "no"
    assert load_config(None, ["data.src_lang='no'"]).data.src_lang == "no"


@pytest.mark.parametrize("data, message", [
    (b"\x80\x81 not text", r"not a text file"),
    (b"1: a\nname: x\n~: 2\n", r"^1: unknown key; allowed keys are name, "),  # mixed key types
    (b"on: 1\n", r"^True: unknown key \(YAML reads yes/no/on/off/true/false as booleans"),
    (b"model.hidden_size: 3\n", r"^model\.hidden_size: unknown key \(write nested keys as "),
    (b"name: !!int ''\n", r"not valid YAML \(IndexError"),
    (b"name: !!bool maybe\n", r"not valid YAML \(KeyError"),
    (b"name: 2001-13-45\n", r"not valid YAML \(ValueError: month must be in 1\.\.12\)"),
    (b"train:\n  seed: " + b"9" * 5000 + b"\n", r"not valid YAML \(ValueError: Exceeds"),
    (b"train:\n  lr: 0x" + b"f" * 400 + b"\n",
     r"^train\.lr: must be a finite number, got an integer of 1600 bits$"),
    (b"name: 0x" + b"f" * 5000 + b"\n", r"^name: expected a string, got an integer of"),
    (b"[" * 1000, r"not valid YAML \(nested too deeply\)"),
    (b"- a\n", r"the top level must be a mapping of sections, got list$"),
    (b"name: &a [*a]\n", r"^name: expected a string, got \[\[\[\[\.\.\.\]\]\]\]$"),
], ids=["binary", "mixed-keys", "bool-key", "dotted-key", "int-tag", "bool-tag", "bad-date",
        "5000-digits", "huge-float", "huge-string", "deep", "list", "recursive"])
def test_malformed_files_fail_with_one_line(tmp_path, data, message):
    p = tmp_path / "c.yaml"
    p.write_bytes(data)
    with pytest.raises(ConfigError, match=message) as e:
        load_config(p)
    assert len(str(e.value).splitlines()) == 1


@pytest.mark.parametrize("items, message", [
    (["train.betas=[0.9, 0.98]", "train.betas.0=0.5"],
     r"^train\.betas: is a value, not a section \(--set 'train\.betas\.0=0\.5'\)$"),
    (["name=run", "name.x=1"], r"^name: is a value, not a section"),
    (["a\nb=1"], r"^'a\\nb': unknown key; allowed keys are"),
    (["model..x=1"], r"^--set 'model\.\.x=1': malformed key 'model\.\.x'$"),
    (["train.seed=" + "9" * 5000], r"^train\.seed: expected an integer, got '9999"),
], ids=["through-a-list", "through-a-value", "newline", "empty-part", "5000-digits"])
def test_malformed_overrides_fail_with_one_line(items, message):
    with pytest.raises(ConfigError, match=message) as e:
        load_config(None, items)
    assert len(str(e.value).splitlines()) == 1
