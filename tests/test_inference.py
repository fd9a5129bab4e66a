import pytest
import torch

from seq2seq import checkpoint as ckpt
from seq2seq.batching import make_batch
from seq2seq.config import load_config
from seq2seq.errors import CheckpointError
from seq2seq.inference import model_from_weights
from seq2seq.models import build_model

ARCHS = {
    "rnn": ["model.embed_size=16", "model.hidden_size=16"],
    "transformer": ["model.arch=transformer", "model.attention.score=scaled_dot",
                    "model.attention.heads=2", "model.embed_size=16", "model.ff_size=32"],
    "learned": ["model.arch=transformer", "model.attention.score=scaled_dot",
                "model.attention.heads=2", "model.embed_size=16", "model.ff_size=32",
                "model.positions=learned", "model.norm=pre"],
}


@pytest.mark.parametrize("arch", ARCHS)
def test_weights_load_into_a_model_built_without_memory(arch, tmp_path):
    cfg = load_config(None, ARCHS[arch])
    torch.manual_seed(0)
    trained = build_model(cfg.model, 30, 30).eval()
    opt = torch.optim.Adam(trained.parameters())
    path = tmp_path / "best.pt"
    ckpt.save_atomic({"model": trained.state_dict(), "config": cfg.to_dict(),
                      "optimizer": opt.state_dict()}, path)
    payload = ckpt.load(path, mmap=True)  # the optimizer state is mapped, never read
    loaded = model_from_weights(cfg, 30, 30, payload["model"], path).eval()
    assert not any(t.is_meta for t in [*loaded.parameters(), *loaded.buffers()])
    b = make_batch([[5, 6, 7], [8]], [[9, 10], [11, 12, 13]])
    with torch.no_grad():
        assert torch.equal(trained(b.src, b.src_len, b.tgt_in), loaded(b.src, b.src_len, b.tgt_in))
    wrong = load_config(None, [*ARCHS[arch], "model.embed_size=8", "model.hidden_size=8"])
    with pytest.raises(CheckpointError, match="do not fit"):
        model_from_weights(wrong, 30, 30, payload["model"], path)
