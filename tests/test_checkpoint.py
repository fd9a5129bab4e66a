import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from seq2seq import checkpoint as ckpt
from seq2seq.errors import CheckpointError

ROOT = Path(__file__).resolve().parent.parent


def test_atomic_save_and_load(tmp_path):
    p = tmp_path / "last.pt"
    ckpt.save_atomic({"model": {"w": torch.ones(2)}, "config": {}}, p)
    ckpt.save_atomic({"model": {"w": torch.zeros(2)}, "config": {}}, p)
    assert ckpt.load(p)["model"]["w"].tolist() == [0, 0]
    assert [f.name for f in tmp_path.iterdir()] == ["last.pt"]  # no temporary files left


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    p = tmp_path / "best.pt"
    ckpt.save_atomic({"model": {"w": torch.ones(1000)}, "config": {}}, p)
    p.write_bytes(p.read_bytes()[:500])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        ckpt.load(p)


def test_missing_and_foreign(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        ckpt.load(tmp_path / "x.pt")
    torch.save({"weights": 1}, tmp_path / "y.pt")
    with pytest.raises(CheckpointError, match="not a seq2seq checkpoint"):
        ckpt.load(tmp_path / "y.pt")


WRITER = """
import sys, torch
from seq2seq import checkpoint as ckpt
path = sys.argv[1]
def payload(i):
    return {"model": {"w": torch.full((2_000_000,), float(i))}, "config": {}, "i": i}
ckpt.save_atomic(payload(0), path)
print("ready", flush=True)
i = 0
while True:
    i += 1
    ckpt.save_atomic(payload(i), path)
"""


@pytest.mark.parametrize("delay", [0.05, 0.2, 0.45])
def test_sigkill_while_saving_leaves_a_loadable_last(tmp_path, delay):
    path = tmp_path / "last.pt"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE,
                            cwd=ROOT)
    try:
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(delay)  # the writer saves without pause: the kill lands inside a save
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    payload = ckpt.load(path)
    w = payload["model"]["w"]
    assert torch.equal(w, torch.full_like(w, float(payload["i"])))  # one whole checkpoint
    ckpt.save_atomic({"model": {}, "config": {}}, path)  # the next save clears leftovers
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_average_is_the_elementwise_mean(tmp_path):
    a = {"model": {"w": torch.tensor([1.0, 2.0]), "steps": torch.tensor(3)}, "config": {"x": 1}}
    b = {"model": {"w": torch.tensor([3.0, 6.0]), "steps": torch.tensor(5)}, "config": {"x": 1}}
    ckpt.save_atomic(a, tmp_path / "a.pt")
    ckpt.save_atomic(b, tmp_path / "b.pt")
    out = ckpt.average_checkpoints([tmp_path / "a.pt", tmp_path / "b.pt"], tmp_path / "avg.pt")
    avg = ckpt.load(tmp_path / "avg.pt")["model"]
    assert avg["w"].tolist() == [2.0, 4.0] and avg["w"].dtype == torch.float32
    assert int(avg["steps"]) == 5  # integer buffers come from the last checkpoint
    assert out["config"] == {"x": 1}
    c = {"model": {"w": torch.zeros(3), "steps": torch.tensor(1)}, "config": {}}
    ckpt.save_atomic(c, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="shape"):
        ckpt.average_checkpoints([tmp_path / "a.pt", tmp_path / "c.pt"], tmp_path / "x.pt")
