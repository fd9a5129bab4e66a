import torch
from synthetic import VOCAB, train_task

from seq2seq.config import load_config
from seq2seq.models import build_model


def small_model(*overrides):
    cfg = load_config(None, ["model.embed_size=32", "model.hidden_size=64",
                             "model.tie_output=false", "model.dropout=0.0", *overrides])
    torch.manual_seed(0)
    return build_model(cfg.model, VOCAB, VOCAB)


def test_bahdanau_learns_to_copy():
    acc = train_task(small_model(), "copy", steps=400)
    assert acc >= 0.95, acc


def test_luong_input_feeding_learns_to_copy():
    acc = train_task(small_model("model.decoder=luong", "model.attention.score=general"),
                     "copy", steps=400)
    assert acc >= 0.95, acc


def test_untrained_model_does_not_copy():
    acc = train_task(small_model(), "copy", steps=0)
    assert acc < 0.2, acc


# Reversal of 20-40 tokens: the first output token depends on the last input token, so a fixed
# context vector must carry the whole sequence while attention can look it up.
REVERSAL = {"min_len": 20, "max_len": 40, "steps": 350, "lr": 3e-3}


def reversal_accuracy(*overrides) -> float:
    return train_task(small_model(*overrides), "reverse", **REVERSAL)


def test_reversal_needs_attention():
    bahdanau = reversal_accuracy()
    luong = reversal_accuracy("model.decoder=luong", "model.attention.score=general")
    no_attention = reversal_accuracy("model.decoder=cho", "model.attention.score=none")
    assert bahdanau >= 0.90, bahdanau
    assert luong >= 0.90, luong
    assert no_attention < 0.6, no_attention
