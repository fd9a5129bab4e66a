import pytest
import torch

from seq2seq import checkpoint as ckpt
from seq2seq.errors import CheckpointError


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
    with pytest.raises(CheckpointError, match="run directory not found"):
        ckpt.resolve(tmp_path / "no-run")
