import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from seq2seq import forked
from seq2seq.errors import Seq2SeqError
from seq2seq.forked import fork_available, forked_map

pytestmark = pytest.mark.skipif(not fork_available(), reason="worker processes are forked")


def _where(x):
    return x * x, os.getpid(), torch.get_num_threads(), signal.getsignal(signal.SIGINT)


def test_forked_map_runs_in_other_processes_in_order():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the parent's count is not the workers'
    try:
        with forked_map(_where, 2) as run:
            out = list(run(range(7)))
    finally:
        torch.set_num_threads(threads)
    assert [o[0] for o in out] == [x * x for x in range(7)]  # the items' order
    pids = {o[1] for o in out}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2
    assert {o[2] for o in out} == {1}  # each worker on one thread
    assert {o[3] for o in out} == {signal.SIG_IGN}  # Ctrl-C is the parent's to handle
    assert forked._TASK is None  # nothing left behind for a later pool


def test_the_task_sees_what_the_parent_had_in_memory():
    table = torch.arange(10) * 3  # made before the fork, never pickled

    with forked_map(lambda i: int(table[i]), 2) as run:
        assert list(run([2, 9])) == [6, 27]


def _fails(x):
    if x == 3:
        raise IndexError(f"item {x} is out of range")
    return x


def test_an_error_in_a_worker_is_raised_in_the_parent():
    with pytest.raises(IndexError, match="item 3"):
        with forked_map(_fails, 2) as run:
            list(run(range(6)))
    assert forked._TASK is None


def _dies(x):
    if x == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def test_a_worker_that_dies_is_a_one_line_error():
    with pytest.raises(Seq2SeqError, match="decoding worker process ended") as e:
        with forked_map(_dies, 2) as run:
            list(run(range(4)))
    assert "\n" not in str(e.value)


def test_workers_compute_after_the_parent_ran_parallel_regions():
    """GNU OpenMP's pool does not survive fork: a worker that ran torch on two threads after
    the parent had used them would wait for ever. Run in a child process with a time limit,
    so that such a hang fails instead of stopping the suite."""
    code = textwrap.dedent("""
        import torch
        from seq2seq.forked import forked_map
        torch.set_num_threads(2)
        a = torch.randn(256, 256)
        (a @ a).softmax(-1)  # the parent's parallel regions, on two threads
        def task(i):
            b = torch.randn(256, 256) + i
            return float((b @ b).softmax(-1).sum())
        with forked_map(task, 2) as run:
            print(len(list(run(range(4)))))
    """)
    out, err, code = _python(code, timeout=120)
    assert code == 0, err
    assert out.split() == ["4"]


def _python(code: str, timeout: float) -> tuple[str, str, int]:
    """Run ``code`` in a new Python in a session of its own; on the time limit, kill the
    whole session (the process and whatever it forked) and fail."""
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        pytest.fail(f"no answer in {timeout} s")
    return out, err, p.returncode


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (whose reaping is not ours)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_workers_end_when_the_parent_is_killed():
    """A parent killed while its workers wait (SIGKILL: no clean-up of its own) takes them
    with it, instead of leaving them with its memory and its standard output."""
    code = textwrap.dedent("""
        import os, sys, time
        from seq2seq.forked import forked_map
        with forked_map(lambda i: os.getpid(), 2) as run:
            print(*sorted(set(run(range(8)))), flush=True)
            os.kill(os.getpid(), 9)
    """)
    out, err, code = _python(code, timeout=120)
    assert code == -signal.SIGKILL, err
    pids = [int(x) for x in out.split()]
    assert 1 <= len(pids) <= 2
    deadline = time.monotonic() + 20
    while any(map(_alive, pids)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(map(_alive, pids))


def test_workers_forked_right_after_decoding_threads_do_not_hang():
    """Batches decoded on threads, then on forked workers, many times over: a fork while a
    finished thread was still returning its MKL buffers left the child spinning for ever in
    its first product (1 round in 56-207 before inference.decoding_pool waited for its
    threads to be gone; so a failure here is likely, not certain, when that wait is lost)."""
    code = textwrap.dedent("""
        import torch
        from seq2seq.config import load_config
        from seq2seq.inference import search_ids
        from seq2seq.models import build_model
        torch.manual_seed(0)
        cfg = load_config(None, ["model.embed_size=16", "model.hidden_size=16"])
        model = build_model(cfg.model, 30, 30).eval()
        src = [[3 + (i * 7 + j) % 25 for j in range(2 + i % 5)] for i in range(8)]
        decode = cfg.decode.override(batch_size=2, workers=2, max_len_a=0, max_len_b=6)
        torch.set_num_threads(2)
        for _ in range(60):
            a = search_ids(model, src, decode, torch.device("cpu"))
            b = search_ids(model, src, decode, torch.device("cpu"), processes=True)
            assert [h[0].tokens for h in a] == [h[0].tokens for h in b]
        print("ok")
    """)
    out, err, code = _python(code, timeout=240)
    assert code == 0, err
    assert out.split() == ["ok"]
