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
    acc = train_task(small_model("model.attention.style=luong", "model.attention.score=general"),
                     "copy", steps=400)
    assert acc >= 0.95, acc


def test_untrained_model_does_not_copy():
    acc = train_task(small_model(), "copy", steps=0)
    assert acc < 0.2, acc
