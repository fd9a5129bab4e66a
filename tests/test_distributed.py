"""Two gloo processes on the CPU train a few DistributedDataParallel steps."""

import os
import socket

import torch
import torch.multiprocessing as mp
from conftest import write_parallel
from synthetic import toy_pairs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank, world, port, data, run_dir, out, cache):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), SEQ2SEQ_CACHE=cache)
    torch.set_num_threads(1)
    from seq2seq import distributed
    from seq2seq.config import load_config
    from seq2seq.training import Trainer

    cfg = load_config(None, [
        f"data.path={data}", f"run_dir={run_dir}", "vocab.size=60", "model.embed_size=32",
        "model.hidden_size=32", "train.batch_tokens=300", "train.max_updates=4",
        "train.valid_every=2", "train.log_every=1", "decode.max_len_a=1.0", "train.device=cpu",
    ])
    tr = Trainer(cfg, overwrite=True, progress=False)
    tr.run()
    torch.save({k: v.clone() for k, v in tr.model.state_dict().items()}, f"{out}/rank{rank}.pt")
    distributed.shutdown(tr.world)


def test_two_gloo_processes_end_with_equal_parameters(tmp_path, tmp_path_factory):
    data = tmp_path / "data"
    pairs = toy_pairs(300)
    write_parallel(data, "train", pairs)
    write_parallel(data, "val", pairs[:20])
    cache = str(tmp_path_factory.getbasetemp() / "cache")
    mp.spawn(_rank_main, args=(2, _free_port(), str(data), str(tmp_path / "run"),
                               str(tmp_path), cache), nprocs=2, join=True)
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
