"""Small numpy helpers shared by the capture engine's hot paths."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def byte_rows(buf: np.ndarray, pos: np.ndarray, width: int) -> np.ndarray:
    """The ``width`` bytes at each of ``pos`` as an (n, width) uint8 array: one gather of
    ``width``-byte items from a byte-strided void view (no (n, width) index array is built;
    about three times faster than indexing rows of a sliding-window view)."""
    if len(buf) < width or not buf.flags.c_contiguous:
        return sliding_window_view(buf, width)[pos]
    items = np.ndarray(shape=(len(buf) - width + 1,), dtype=f"V{width}", buffer=buf, strides=(1,))
    return items[pos].view(np.uint8).reshape(-1, width)


def unaligned(buf: np.ndarray, fmt: str) -> np.ndarray:
    """A view of ``buf`` with one ``fmt`` item (e.g. ">u4") starting at every byte offset."""
    dt = np.dtype(fmt)
    return np.ndarray(shape=(max(len(buf) - dt.itemsize + 1, 0),), dtype=dt, buffer=buf, strides=(1,))


def stable_argsort(keys: np.ndarray) -> np.ndarray:
    """``np.argsort(keys, kind="stable")`` for integer keys; when they span fewer than 65536
    values they are sorted as uint16, for which numpy's stable sort is a linear radix sort."""
    if len(keys) > 64:
        lo, hi = int(keys.min()), int(keys.max())
        if hi - lo < 1 << 16:
            return np.argsort((keys - lo).astype(np.uint16), kind="stable")
    return np.argsort(keys, kind="stable")


def gather_u32(buf: np.ndarray, pos: np.ndarray, order: str) -> np.ndarray:
    """Unaligned 32-bit fields (byte order ``order``: "<" or ">") at ``pos`` as int64."""
    if not buf.flags.c_contiguous:
        return byte_rows(buf, pos, 4).view(order + "u4").reshape(-1).astype(np.int64)
    return unaligned(buf, order + "u4")[pos].astype(np.int64)


def gather_u16(buf: np.ndarray, pos: np.ndarray, order: str) -> np.ndarray:
    if not buf.flags.c_contiguous:
        return byte_rows(buf, pos, 2).view(order + "u2").reshape(-1).astype(np.int64)
    return unaligned(buf, order + "u2")[pos].astype(np.int64)
