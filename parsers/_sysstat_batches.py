"""Line batches read into one reused buffer, for the vectorised sysstat text engines.

Like ``lines.iter_line_batches`` (whole lines, a UTF-8 BOM dropped, the unterminated last
line yielded last), but without a fresh bytes object per batch and per copy: the stream is
read into a numpy buffer that is reused, and the newline positions found to cut the batch
are handed on, so nobody scans the batch for them again. A line longer than the buffer
makes the buffer grow.

The yielded array is a view into that buffer: use it before asking for the next batch and
keep only copies (every numpy selection, ``tobytes`` or CSV read of it is one).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np

_NL = 10
_BOM = b"\xef\xbb\xbf"


def iter_batches(stream: BinaryIO, batch_bytes: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield ``(first_line_number, block, ends)``: ``block`` a uint8 array of whole lines
    (each ending with ``\\n`` except possibly the very last block's), ``ends`` the positions
    of its newlines (int64)."""
    buf = np.empty(max(batch_bytes, 1 << 12), np.uint8)
    have = 0  # bytes at the front of buf: a partial line carried over
    line_no = 1
    first = True
    while True:
        if have == len(buf):  # one line longer than the buffer
            bigger = np.empty(2 * len(buf), np.uint8)
            bigger[:have] = buf[:have]
            buf = bigger
        got = _fill(stream, buf, have)
        if not got:
            break
        end = have + got
        if first:
            first = False
            if end >= 3 and buf[:3].tobytes() == _BOM:
                buf[: end - 3] = buf[3:end]
                end -= 3
        ends = np.flatnonzero(buf[have:end] == _NL)
        if not len(ends):
            have = end
            continue
        ends += have
        cut = int(ends[-1]) + 1
        yield line_no, buf[:cut], ends
        line_no += len(ends)
        have = end - cut
        if have:
            buf[:have] = buf[cut:end].copy()
    if have:
        yield line_no, buf[:have], np.empty(0, np.int64)


def _fill(stream: BinaryIO, buf: np.ndarray, start: int) -> int:
    """Read into ``buf[start:]`` until it is full or the stream ends; the number of bytes read."""
    view = memoryview(buf)[start:]  # type: ignore[arg-type]
    readinto = getattr(stream, "readinto", None)
    total = 0
    while total < len(view):
        n = None
        if readinto is not None:
            try:
                n = readinto(view[total:]) or 0
            except (NotImplementedError, io.UnsupportedOperation):
                readinto = None  # a stream with only read()
        if readinto is None:
            data = stream.read(len(view) - total)
            n = len(data)
            view[total:total + n] = data
        if not n:
            break
        total += n
    return total
