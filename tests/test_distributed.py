"""Two gloo processes on the CPU train DistributedDataParallel steps over the token cache."""

import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp
from conftest import write_parallel
from synthetic import toy_pairs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank, world, port, data, run_dir, out, cache, updates):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), SEQ2SEQ_CACHE=cache)
    torch.set_num_threads(1)
    from seq2seq import distributed
    from seq2seq.config import load_config
    from seq2seq.training import Trainer

    cfg = load_config(None, [
        f"data.path={data}", f"run_dir={run_dir}", "vocab.size=60", "model.embed_size=32",
        "model.hidden_size=32", "train.batch_tokens=300",
        f"train.max_updates={updates}", "train.valid_every=2", "train.log_every=1",
        "decode.max_len_a=1.0", "train.device=cpu",
    ])
    tr = Trainer(cfg, overwrite=True, progress=False)
    consumed = []  # the training pairs of every batch this rank takes (corpus indices)
    step = tr._step

    def recording(group):
        if tr.state.epoch == 1:
            consumed.extend(sorted(tr.data.keep[idx].tolist()) for idx in group)
        return step(group)

    tr._step = recording
    tr.run()
    torch.save(consumed, f"{out}/consumed{rank}.pt")
    torch.save({k: v.clone() for k, v in tr.model.state_dict().items()}, f"{out}/rank{rank}.pt")
    distributed.shutdown(tr.world)


def _train_two(tmp_path, cache: str, updates: int) -> Path:
    """Two gloo processes train ``updates`` updates on the toy corpus; returns its directory."""
    data = tmp_path / "data"
    pairs = toy_pairs(300)
    write_parallel(data, "train", pairs)
    write_parallel(data, "val", pairs[:20])
    mp.spawn(_rank_main, args=(2, _free_port(), str(data), str(tmp_path / "run"),
                               str(tmp_path), cache, updates), nprocs=2, join=True)
    return data


def test_two_gloo_processes_end_with_equal_parameters(tmp_path, tmp_path_factory):
    _train_two(tmp_path, str(tmp_path_factory.getbasetemp() / "cache"), 4)
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    start = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert start["progress"]["update"] == 4
    for k in a:  # rank 0 wrote the final weights
        assert torch.equal(a[k], start["model"][k]), k
    log = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert sum('"valid"' in line for line in log) == 2  # one writer: no duplicated records


def test_two_processes_take_disjoint_batches_that_cover_the_epoch(tmp_path, tmp_path_factory):
    """Over one epoch of the token cache, the ranks' batches are disjoint and together are
    every batch of the epoch, the last one included when the count is odd."""
    cache = str(tmp_path_factory.getbasetemp() / "cache")
    data = _train_two(tmp_path, cache, 10)  # 15 batches an epoch: 8 updates of 2 ranks
    a = torch.load(tmp_path / "consumed0.pt")
    b = torch.load(tmp_path / "consumed1.pt")
    from seq2seq.config import load_config
    from seq2seq.training import load_training_data

    os.environ["SEQ2SEQ_CACHE"] = cache
    cfg = load_config(None, [f"data.path={data}", "vocab.size=60", "train.batch_tokens=300"])
    d = load_training_data(cfg, progress=False)
    epoch = [sorted(d.keep[idx].tolist()) for idx in d.batches.epoch(1)]
    assert len(epoch) % 2 == 1, "the toy corpus should give an odd number of batches"
    assert a == epoch[0::2] and b == epoch[1::2]  # rank r takes batches r, r + 2, ...
    taken = [i for batch in a + b for i in batch]
    assert sorted(taken) == sorted(d.keep.tolist())  # every pair once
