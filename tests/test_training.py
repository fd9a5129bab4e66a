import json
import math
import os

import numpy as np
import pytest
import torch

from seq2seq.config import load_config
from seq2seq.errors import CheckpointError, ConfigError
from seq2seq.models import build_model
from seq2seq.optim import LRSchedule, build_optimizer
from seq2seq.runtime import ONEDNN_CACHE_CAPACITY, ONEDNN_CACHES
from seq2seq.training import train


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


def test_dropout_masks_setting_draws_another_reproducible_stream(toy_data, tmp_path):
    from seq2seq.dropout import mask_kind

    fast = [losses(train(tiny_config(toy_data, tmp_path / f"f{i}", "train.max_updates=3",
                                     "train.dropout_masks=fast"), progress=False))[0]
            for i in range(2)]
    torch_masks, _ = losses(train(tiny_config(toy_data, tmp_path / "t", "train.max_updates=3"),
                                  progress=False))
    assert fast[0] == fast[1] and fast[0] != torch_masks
    assert mask_kind() == "torch"  # the setting held for the training only


def test_loss_chunk_setting_reaches_the_loss(toy_data, tmp_path, monkeypatch):
    """train.loss_chunk_logits is the chunk the Trainer's loss runs with; another chunk adds
    the same gradients in another order, so the losses agree to float32's precision."""
    import seq2seq.loss as loss_mod

    seen = []
    forward = loss_mod._LinearCrossEntropy.forward

    def spy(ctx, h, weight, bias, target, eps, chunk_logits, buffer):
        seen.append((chunk_logits, buffer))
        return forward(ctx, h, weight, bias, target, eps, chunk_logits, buffer)

    monkeypatch.setattr(loss_mod._LinearCrossEntropy, "forward", staticmethod(spy))
    small, _ = losses(train(tiny_config(toy_data, tmp_path / "s", "train.max_updates=3",
                                        "train.loss_chunk_logits=600"), progress=False))
    assert {c for c, _ in seen} == {600} and len({id(b) for _, b in seen}) == 1  # one buffer
    seen.clear()
    default, _ = losses(train(tiny_config(toy_data, tmp_path / "d", "train.max_updates=3"),
                              progress=False))
    assert {c for c, _ in seen} == {1 << 21}
    assert small == pytest.approx(default, rel=1e-4)
    with pytest.raises(ConfigError, match="loss_chunk_logits: must be positive"):
        tiny_config(toy_data, tmp_path / "x", "train.loss_chunk_logits=0")


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
    opt = build_optimizer(cfg.train, model)
    sched = LRSchedule(cfg.train, opt)
    seen = []
    for n in range(1, 9):
        sched.set(n)
        seen.append(opt.param_groups[0]["lr"])  # the rate used by update n
    expected = [0.25, 0.5, 0.75, 1.0, math.sqrt(4 / 5), math.sqrt(4 / 6), math.sqrt(4 / 7),
                math.sqrt(4 / 8)]
    assert seen == pytest.approx(expected)


def params(run_dir, name="last.pt"):
    return torch.load(run_dir / name, weights_only=True)["model"]


def test_resume_gives_the_same_run_as_no_stop(toy_data, tmp_path):
    straight = train(tiny_config(toy_data, tmp_path / "a"), progress=False)
    half = tiny_config(toy_data, tmp_path / "b", "train.max_updates=3")
    train(half, progress=False)
    (tmp_path / "b" / "metrics.jsonl").open("a").write(  # a record written after the kill
        json.dumps({"kind": "train", "update": 4, "loss": 0.0}) + "\n")
    resumed = tiny_config(toy_data, tmp_path / "b", "train.max_updates=6")
    train(resumed, progress=False, resume=True)
    a, b = params(straight), params(tmp_path / "b")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert losses(straight)[0] == losses(tmp_path / "b")[0]  # the same loss curve, once


def test_resume_needs_a_checkpoint(toy_data, tmp_path):
    with pytest.raises(CheckpointError, match="no last.pt"):
        train(tiny_config(toy_data, tmp_path / "none"), progress=False, resume=True)


def test_early_stopping_after_patience_validations(toy_data, tmp_path, monkeypatch):
    from seq2seq.training import Trainer

    def flat_validation(self):  # the score never improves after the first validation
        s = self.state
        return {"kind": "valid", "update": s.update, "epoch": s.epoch, "loss": 1.0,
                "ppl": 2.7, "bleu": 5.0, "chrf": 20.0, "train_s": 0.0, "wall_s": 0.0}

    monkeypatch.setattr(Trainer, "validate", flat_validation)
    run = train(tiny_config(toy_data, tmp_path / "run", "train.valid_every=1",
                            "train.max_updates=50", "train.patience=2"), progress=False)
    _, rows = losses(run)
    valid = [r for r in rows if r["kind"] == "valid"]
    assert [r["update"] for r in valid] == [1, 2, 3]
    assert [r["best"] for r in valid] == [True, False, False]
    assert valid[-1].get("early_stop") is True
    assert json.loads((run / "train_summary.json").read_text())["updates"] == 3


def test_keep_last_and_best_checkpoints(toy_data, tmp_path, monkeypatch):
    from seq2seq.training import Trainer

    scores = iter([3.0, 9.0, 1.0, 2.0, 4.0, 0.5])

    def scripted(self):
        s = self.state
        return {"kind": "valid", "update": s.update, "epoch": s.epoch, "loss": 1.0,
                "ppl": 2.7, "bleu": next(scores), "chrf": 1.0, "train_s": 0.0, "wall_s": 0.0}

    monkeypatch.setattr(Trainer, "validate", scripted)
    run = train(tiny_config(toy_data, tmp_path / "run", "train.valid_every=1",
                            "train.keep_last=2", "train.keep_best=1"), progress=False)
    kept = sorted(p.name for p in run.glob("ckpt_*.pt"))
    # the last two (updates 5, 6) and the best (update 2, BLEU 9)
    assert kept == ["ckpt_0000002.pt", "ckpt_0000005.pt", "ckpt_0000006.pt"]
    assert torch.load(run / "best.pt", weights_only=True)["update"] == 2


def test_gradient_accumulation_equals_one_big_batch(toy_data, tmp_path):
    from seq2seq.training import Trainer

    def grads(group, *extra):
        cfg = tiny_config(toy_data, tmp_path / f"g{len(group)}", "model.dropout=0.0",
                          "train.clip_grad_norm=0", *extra)
        tr = Trainer(cfg, overwrite=True, progress=False)
        tr.optimizer.step = lambda *a, **k: None  # keep the weights; look at the gradients
        tr._step(group)
        return {n: p.grad.clone() for n, p in tr.model.named_parameters()}, tr

    _, tr = grads([np.arange(4)])
    a, b = tr.data.batches.epoch(1)[:2]
    two, _ = grads([a, b], "train.accumulate=2")
    one, _ = grads([np.concatenate([a, b])])
    for name in one:
        torch.testing.assert_close(two[name], one[name], atol=1e-6, rtol=1e-4)


def test_schedules_plateau_and_halving():
    model = build_model(load_config(None).model, 20, 20)
    cfg = load_config(None, ["train.schedule=plateau", "train.plateau_patience=2",
                             "train.lr=1.0"])
    sched = LRSchedule(cfg.train, build_optimizer(cfg.train, model))
    for improved in (True, False, False, True, False):
        sched.after_validation(improved)
    assert sched.set(10) == 0.5  # halved once, after the second validation without gain
    cfg = load_config(None, ["train.schedule=halving", "train.halve_after_epoch=2",
                             "train.lr=1.0", "train.warmup_updates=4"])
    sched = LRSchedule(cfg.train, build_optimizer(cfg.train, model))
    assert sched.set(1) == 0.25  # the warm-up applies to every schedule
    for epoch in (1, 2, 3):
        sched.after_epoch(epoch)
    assert sched.set(10) == 0.25  # epochs 2 and 3 each halved it
    state = sched.state_dict()
    other = LRSchedule(cfg.train, build_optimizer(cfg.train, model))
    other.load_state_dict(state)
    assert other.set(10) == 0.25


def test_bf16_training_runs_on_cpu_and_fp16_needs_cuda(toy_data, tmp_path, monkeypatch):
    for name in ONEDNN_CACHES:  # the Trainer bounds oneDNN's caches on a CPU (seq2seq.runtime)
        monkeypatch.setenv(name, "0")  # set, then deleted: monkeypatch restores what was there
        monkeypatch.delenv(name)
    run = train(tiny_config(toy_data, tmp_path / "bf16", "train.precision=bf16",
                            "train.max_updates=2", "train.valid_every=2"), progress=False)
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["precision"] == "bf16" and summary["updates"] == 2
    if summary["device"] == "cpu":
        assert all(os.environ.get(name) == str(ONEDNN_CACHE_CAPACITY) for name in ONEDNN_CACHES)
    assert all(v.dtype == torch.float32 for v in params(run).values()
               if v.is_floating_point())  # master weights stay fp32
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
            train(tiny_config(toy_data, tmp_path / "fp16", "train.precision=fp16"),
                  progress=False)


def test_local_p_positions_are_logged_at_validation(toy_data, tmp_path):
    cfg = tiny_config(toy_data, tmp_path / "run", "model.decoder=luong",
                      "model.attention.score=general", "model.attention.window=local-p",
                      "model.attention.local_p_scaled=true")
    _, rows = losses(train(cfg, progress=False))
    valid = [r for r in rows if r["kind"] == "valid"]
    assert valid and all(0 < r["p_rel_mean"] < 1 and 0 <= r["p_rel_sd"] < 0.5 for r in valid)
    _, plain = losses(train(tiny_config(toy_data, tmp_path / "global"), progress=False))
    assert all("p_rel_mean" not in r for r in plain)


def test_gradients_stay_in_their_memory_between_updates(toy_data, tmp_path):
    """Zeroed in place, not freed: a freed gradient would be allocated again amid the next
    backward pass's activations and fragment the heap (docs/performance.md, Memory)."""
    from seq2seq.training import Trainer

    tr = Trainer(tiny_config(toy_data, tmp_path / "r", "train.accumulate=2"), overwrite=True,
                 progress=False)
    order = tr.data.batches.epoch(1)
    tr._step(order[:2])
    where = {n: p.grad.data_ptr() for n, p in tr.model.named_parameters()}
    before = {n: p.detach().clone() for n, p in tr.model.named_parameters()}
    tr._step(order[2:4])
    assert {n: p.grad.data_ptr() for n, p in tr.model.named_parameters()} == where
    assert any(not torch.equal(p, before[n]) for n, p in tr.model.named_parameters())
