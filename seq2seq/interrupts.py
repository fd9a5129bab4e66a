"""Stopping a training cleanly on SIGINT (Ctrl-C) or SIGTERM.

While :class:`StopSignals` is active, the first signal only sets a flag: the training loop
finishes the update it is in, saves a resumable ``last.pt`` atomically and ends with
:class:`~seq2seq.errors.Interrupted`, whose one-line message says where it stopped and the exact
``--resume`` command. A second signal stops at once (``KeyboardInterrupt``); a checkpoint being
written then is abandoned and the previous one stays whole (``checkpoint.save_atomic``).
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType
from typing import Any

HANDLED = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """A context manager that turns the first SIGINT/SIGTERM into a request to stop."""

    def __init__(self) -> None:
        self.received: int | None = None  # the first signal's number
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():  # signals need the main one
            for sig in HANDLED:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received is not None else ""

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:
            raise KeyboardInterrupt  # the second signal: stop now
        self.received = signum
        print(f"\n{signal.Signals(signum).name}: saving a checkpoint after this update "
              "(send it again to stop at once)", file=sys.stderr, flush=True)
