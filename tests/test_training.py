import json
import math

import pytest
import torch
from conftest import write_parallel
from synthetic import toy_pairs

from seq2seq.config import load_config
from seq2seq.errors import CheckpointError
from seq2seq.models import build_model
from seq2seq.training import build_optimizer, build_scheduler, train


@pytest.fixture
def toy_data(tmp_path):
    data = tmp_path / "data"
    pairs = toy_pairs(300)
    write_parallel(data, "train", pairs)
    write_parallel(data, "val", pairs[:20])
    return data


def tiny_config(data, run_dir, *extra):
    return load_config(None, [
        f"data.path={data}", f"run_dir={run_dir}", "vocab.size=60", "model.embed_size=32",
        "model.hidden_size=32", "train.batch_tokens=400", "train.max_updates=6",
        "train.valid_every=3", "train.log_every=1", "decode.max_len_a=1.0", *extra,
    ])


def losses(run_dir):
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r["kind"] == "train"], rows


def test_same_seed_same_loss_curve(toy_data, tmp_path):
    a, _ = losses(train(tiny_config(toy_data, tmp_path / "a"), progress=False))
    b, _ = losses(train(tiny_config(toy_data, tmp_path / "b"), progress=False))
    c, _ = losses(train(tiny_config(toy_data, tmp_path / "c", "train.seed=7"), progress=False))
    assert len(a) == 6 and a == b
    assert a != c


def test_existing_run_is_never_overwritten_silently(toy_data, tmp_path):
    cfg = tiny_config(toy_data, tmp_path / "run", "train.max_updates=1")
    train(cfg, progress=False)
    with pytest.raises(CheckpointError, match="already holds checkpoints"):
        train(cfg, progress=False)
    train(cfg, overwrite=True, progress=False)


def test_max_epochs_stops_and_validates(toy_data, tmp_path):
    run = train(tiny_config(toy_data, tmp_path / "run", "train.max_updates=100000",
                            "train.max_epochs=2", "train.valid_every=100000"), progress=False)
    _, rows = losses(run)
    valid = [r for r in rows if r["kind"] == "valid"]
    assert len(valid) == 1 and valid[0]["epoch"] == 2
    assert (run / "best.pt").is_file() and (run / "last.pt").is_file()


def test_inverse_sqrt_schedule():
    cfg = load_config(None, ["train.schedule=inverse_sqrt", "train.warmup_updates=4",
                             "train.lr=1.0"])
    model = build_model(cfg.model, 20, 20)
    opt = build_optimizer(cfg, model)
    sched = build_scheduler(cfg, opt)
    seen = []
    for _ in range(8):
        seen.append(opt.param_groups[0]["lr"])  # the rate used by this update
        opt.step()
        sched.step()
    expected = [0.25, 0.5, 0.75, 1.0, math.sqrt(4 / 5), math.sqrt(4 / 6), math.sqrt(4 / 7),
                math.sqrt(4 / 8)]
    assert seen == pytest.approx(expected)


def test_label_smoothing_changes_the_loss_not_the_argmax():
    from seq2seq.loss import cross_entropy_sum

    z = torch.tensor([[4.0, 0.0, 0.0]])
    y = torch.tensor([0])
    assert cross_entropy_sum(z, y, 0.1) > cross_entropy_sum(z, y, 0.0)
