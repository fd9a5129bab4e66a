"""Streaming translation of a byte stream, one sentence a line.

A reader thread puts lines into a bounded queue. The translator blocks for the first line, then
takes every further line that is already waiting (up to the batch size) and translates them as
one batch. From a file or a fast pipe that gives full batches; typed at a terminal it gives a
batch of one that is answered at once. The queue is bounded, so memory stays flat however long
the input is, and output is written and flushed in input order.
"""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Iterator
from typing import BinaryIO, TextIO

from seq2seq.inference import Translation, Translator, decode_workers

_EOF = object()


def _reader(stream: BinaryIO, q: queue.Queue) -> None:
    try:
        for raw in iter(stream.readline, b""):
            q.put(raw)
    finally:
        q.put(_EOF)


def _batches(q: queue.Queue, size: int) -> Iterator[list[bytes]]:
    """Block for one line, then take every further line that is already waiting, up to
    ``size`` lines; until the end of the input."""
    while True:
        item = q.get()
        if item is _EOF:
            return
        raw_lines = [item]
        while len(raw_lines) < size:
            try:
                item = q.get_nowait()
            except queue.Empty:
                break
            if item is _EOF:
                yield raw_lines
                return
            raw_lines.append(item)
        yield raw_lines


def _text(raw: bytes, line_no: int, err: TextIO) -> str:
    try:
        return raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        err.write(f"warning: line {line_no} is not valid UTF-8; writing an empty line\n")
        return ""


def _write(out: TextIO, nbest: list[Translation], n_best: int | None) -> None:
    if n_best:
        rows = [f"{h.score:.4f}\t{h.text}" for h in nbest[:n_best]]
        rows += ["\t"] * (n_best - len(rows))
        out.write("\n".join(rows) + "\n")
    else:
        out.write((nbest[0].text if nbest else "") + "\n")


def translate_stream(tr: Translator, stream: BinaryIO, out: TextIO,
                     err: TextIO | None = None, n_best: int | None = None,
                     plotter=None) -> int:
    """Translate ``stream`` line by line into ``out`` in batches of at most
    ``tr.decode.batch_size`` lines (as many batches at once as ``decode.workers`` asks for,
    where that many lines are waiting); returns the number of lines. With ``n_best``, every
    line gives exactly that many lines ``SCORE<TAB>TEXT``; a ``plotter``
    (:class:`seq2seq.plotting.AttentionPlotter`) draws every sentence's attention."""
    err = err or sys.stderr
    # lines waiting are taken as one call of up to decode.workers batches decoded at once
    size = tr.decode.batch_size * decode_workers(tr.decode.workers, tr.device, sys.maxsize)
    q: queue.Queue = queue.Queue(maxsize=4 * size)
    threading.Thread(target=_reader, args=(stream, q), daemon=True).start()
    line_no = 0
    for raw_lines in _batches(q, size):
        first = line_no + 1
        texts = [_text(raw, first + i, err) for i, raw in enumerate(raw_lines)]
        line_no += len(texts)
        results = tr.translate_nbest(texts, where="input line", first_line=first,
                                     warn=lambda m: err.write(f"warning: {m}\n"))
        for i, nbest in enumerate(results):
            _write(out, nbest, n_best)
            if plotter is not None and nbest:
                plotter.plot(first + i, nbest[0])
        out.flush()
    return line_no
