"""Decoding batches side by side in forked worker processes (CPU, Linux).

Several batches decoded at once by threads of one process share its GIL: a decoder step is
some three hundred small operators, and between any two of them a thread runs Python, which
the other thread then waits for. Measured on 2 cores (docs/performance.md, Two batches at
once): a tiny Transformer, whose steps are nothing but that overhead, made 728 steps/s on one
thread and 367 with two threads together, against 1,456 in two processes; the default
Transformer decoding int8 at batch 64, 12.0-13.0 thousand tokens/s with two threads against
16.2 thousand in two processes.

:func:`forked_map` runs a task over items in ``workers`` processes forked from this one, so
each starts with the model and the data already in memory (copy-on-write: nothing is copied
or pickled but the items and the results). Each worker runs torch on one thread: GNU OpenMP,
which torch's CPU build uses, keeps its thread pool across ``fork`` but not its threads, so a
forked child that starts a parallel region of two threads or more waits for ever (seen here
with a matrix product and a softmax alike, whatever thread count the parent had used).
Results come back pickled; a task returns plain data (lists, numbers, numpy arrays), not
tensors, which torch would pass through shared memory, one file descriptor each.

Only where ``fork`` is the platform's own start method (Linux); elsewhere, and for decoding
inside training (whose process has an optimizer, signal handlers and the autograd engine's
threads), the workers are threads (:func:`seq2seq.inference.decoding_pool`).
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import torch

from seq2seq.errors import Seq2SeqError, one_line

_TASK: Callable[[Any], Any] | None = None  # the task of the pool being forked: the children's
_LOCK = threading.Lock()  # one forked pool at a time (the task is the process's)
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def fork_available() -> bool:
    """Whether worker processes can be forked here: on Linux, where fork is a start method
    (asked for by name: Python 3.14 made another the default) and safe for torch's CPU
    operators run on one thread each."""
    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


def wait_for_thread_exit(native_ids: Iterable[int], limit_s: float = 2.0) -> None:
    """Return once the threads ``native_ids`` have left the process (Linux; at most
    ``limit_s`` in all). ``Thread.join`` returns before a thread's C-level teardown is over,
    and in that teardown MKL returns the thread's buffers to its allocator under a lock. A
    fork at that moment leaves the lock taken in the child, whose first matrix product then
    spins for ever: seen here in 1 of 56 to 1 of 207 rounds of decoding on threads and then
    on forked workers, and in none of 500 with this wait."""
    deadline = time.monotonic() + limit_s
    for tid in native_ids:
        while os.path.exists(f"/proc/self/task/{tid}") and time.monotonic() < deadline:
            time.sleep(0.0005)


def _start_worker(parent: int) -> None:
    # Ctrl-C reaches the whole process group: the parent handles it, and the batches being
    # decoded finish (as with threads); a SIGTERM ends a worker as it would any process,
    # without the parent's handlers (which save a training run's checkpoint)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _end_with_parent(parent)
    torch.set_num_threads(1)  # one thread: no OpenMP parallel region (module docstring)


def _end_with_parent(parent: int) -> None:
    """Have the kernel kill this worker when the thread that forked it ends (the parent
    killed): a worker waiting for its next batch would otherwise live on, holding the
    parent's memory and its standard output. The parent may have died before this ran."""
    with contextlib.suppress(OSError, AttributeError):  # prctl is Linux's
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)


def _run(item: Any) -> Any:
    if _TASK is None:  # pragma: no cover - only a process not forked by forked_map gets here
        raise RuntimeError("seq2seq.forked: a worker without a task")
    return _TASK(item)


@contextlib.contextmanager
def forked_map(task: Callable[[Any], Any], workers: int
               ) -> Iterator[Callable[[Iterable[Any]], Iterator[Any]]]:
    """A ``map(items)`` that runs ``task`` on each item in one of ``workers`` forked processes
    with one torch thread each, and yields the results in the items' order. The processes
    are forked at the first map and end on exit, after the items they have started (an error
    or Ctrl-C in the parent cancels the others); they die with the thread that forked them.
    A worker that dies (killed, out of memory) is a one-line :class:`Seq2SeqError`.

    A forked child has only the forking thread: a lock another thread of the parent held at
    that moment stays held in the child. multiprocessing's children close ``sys.stdin`` and
    flush ``sys.stdout`` and ``sys.stderr``, so no other thread may be inside those objects
    while a pool forks (``seq2seq translate`` reads stdin through a file of its own), and no
    thread that ran torch may be ending (:func:`wait_for_thread_exit`)."""
    global _TASK
    with _LOCK:
        _TASK = task
        try:
            pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                       initializer=_start_worker, initargs=(os.getpid(),))
            try:
                yield lambda items: _results(pool, items)
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
        finally:
            _TASK = None


def _results(pool: ProcessPoolExecutor, items: Iterable[Any]) -> Iterator[Any]:
    try:
        yield from pool.map(_run, items)  # submits every item at once, then yields in order
    except BrokenProcessPool as e:
        cause = f" ({one_line(e.__cause__)})" if e.__cause__ is not None else ""
        raise Seq2SeqError("a decoding worker process ended before its batch was done "
                           f"(killed, or out of memory?){cause}; decode.workers=1 decodes in "
                           "this process") from e
