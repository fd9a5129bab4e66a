from pathlib import Path

import pytest

from seq2seq.config import Config, load_config
from seq2seq.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_are_valid():
    cfg = load_config(None)
    assert isinstance(cfg, Config)
    assert cfg.model.attention.score == "additive"


@pytest.mark.parametrize("path", sorted((ROOT / "configs").rglob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    load_config(path)


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
