import math

import pytest

from seq2seq import choices
from seq2seq.config import load_config
from seq2seq.errors import ConfigError


def test_unknown_name_lists_the_registered_ones():
    with pytest.raises(ConfigError, match=r"^train\.schedule: 'noam' is not one of constant, "
                                          r"halving, inverse_sqrt, plateau$"):
        choices.SCHEDULES.get("noam")
    with pytest.raises(ConfigError, match=r"^decode\.length_penalty: 'wu' is not one of "
                                          r"average, gnmt, none$"):
        load_config(None, ["decode.length_penalty=wu"])
    for key, value in (("model.arch", "lstm"), ("model.decoder", "x"), ("train.optimizer", "x"),
                       ("model.attention.window", "local")):
        with pytest.raises(ConfigError, match=rf"^{key}: '{value}' is not one of"):
            load_config(None, [f"{key}={value}"])


def test_a_name_is_registered_once():
    reg = choices.Registry("x.key")

    @reg.register
    class A(choices.Choice):
        name = "a"

    with pytest.raises(ValueError, match="taken"):
        reg.register(type("B", (choices.Choice,), {"name": "a"}))
    assert reg.names() == ["a"] and "a" in reg and reg.get("a") is A
    with pytest.raises(RuntimeError, match="no implementation bound"):
        reg.implementation("a")


def test_every_model_choice_has_an_implementation():
    import seq2seq.models  # noqa: F401  (binds the implementations)

    for registry, skip in ((choices.ARCHITECTURES, set()), (choices.DECODERS, set()),
                           (choices.SCORES, {"none"}), (choices.WINDOWS, {"global"})):
        for name in registry.names():
            if name not in skip:
                assert registry.implementation(name) is not None, (registry.key, name)


def test_length_penalties():
    lp = choices.LENGTH_PENALTIES
    assert lp.get("none").normalise(-2.0, 3, 0.6) == -2.0
    assert lp.get("average").normalise(-2.0, 4, 0.6) == -0.5
    assert lp.get("gnmt").normalise(-2.0, 1, 0.6) == -2.0
    assert lp.get("gnmt").normalise(-2.0, 7, 1.0) == pytest.approx(-1.0)


def test_schedule_shapes_and_their_constraints():
    t = load_config(None, ["train.schedule=inverse_sqrt", "train.warmup_updates=100"]).train
    assert choices.SCHEDULES.get("inverse_sqrt").shape(400, t) == pytest.approx(0.5)
    assert choices.SCHEDULES.get("constant").shape(400, t) == 1.0
    assert choices.SCHEDULES.get("plateau").decays_on_plateau
    assert choices.SCHEDULES.get("halving").decays_each_epoch
    with pytest.raises(ConfigError, match="inverse_sqrt needs train.warmup_updates"):
        load_config(None, ["train.schedule=inverse_sqrt"])
    assert math.isclose(t.lr, 1e-3)


def test_score_and_decoder_constraints_live_with_the_choice():
    # the dot score compares equal sizes: a 2x64 encoder against a 256 decoder does not fit
    with pytest.raises(ConfigError, match=r"dot needs the encoder output size \(128\) to "
                                          r"equal model.hidden_size \(256\)"):
        load_config(None, ["model.decoder=luong", "model.attention.score=dot",
                           "model.encoder_hidden_size=64"])
    load_config(None, ["model.decoder=luong", "model.attention.score=dot"])
    with pytest.raises(ConfigError, match="multi-head attention needs score: scaled_dot"):
        load_config(None, ["model.attention.heads=2"])
    with pytest.raises(ConfigError, match="multi-head attention needs .* window: global"):
        load_config(None, ["model.attention.score=scaled_dot", "model.attention.heads=2",
                           "model.attention.window=local-m", "model.decoder=luong"])


def test_optimizers_name_their_torch_class():
    import torch

    from seq2seq.optim import build_optimizer

    model = torch.nn.Linear(2, 2)
    for name, cls in (("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW),
                      ("sgd", torch.optim.SGD)):
        t = load_config(None, [f"train.optimizer={name}", "train.momentum=0.5"]).train
        opt = build_optimizer(t, model)
        assert type(opt) is cls and opt.param_groups[0]["lr"] == t.lr
    assert build_optimizer(t, model).param_groups[0]["momentum"] == 0.5
