"""Long metric frames of the iostat fast path, built without copies or per-page faults, and
Arrow arrays handed to polars without pyarrow's slow first-use imports."""

from __future__ import annotations

import mmap
import struct

import numpy as np
import polars as pl
import pyarrow as pa

from parsers._sysstat_iostat import Layout

_VIEW = 16  # bytes of an Arrow string view
_POPULATE = getattr(mmap, "MAP_POPULATE", 0)  # Linux
_MAPPED_BYTES = 1 << 20  # result blocks at least this large are mappings of their own, populated at once


def long_frame(lay: Layout, lines: np.ndarray, rep: np.ndarray | None, ts: np.ndarray | None, values: list[pl.Series],
          names: pl.Series | None) -> pl.DataFrame:
    """Rows × columns → long metric rows, column after column (like an unpivot).

    Every column is written once, at its final type, into one new block (see ``_fresh``) that
    polars then holds without a copy; the string columns are Arrow string views (16 bytes a
    row) copied from a small table of the few distinct strings."""
    metrics = [m for _j, m, _f in lay.columns]
    factors = [f for _j, _m, f in lay.columns]
    derive = lay.kind == "dev" and "disk.await_ms" not in metrics and {
        "disk.r_per_s", "disk.w_per_s", "disk.r_await_ms", "disk.w_await_ms"} <= set(metrics)
    if derive:
        metrics = [*metrics, "disk.await_ms"]
    m, k = len(lines), len(metrics)
    size = m * k
    nbytes = size * (_VIEW + _VIEW + 8 + 8 + (0 if ts is None else 8)) + (0 if rep is None else 4 * size)
    block = _fresh(nbytes)
    pos = 0

    def part(dtype: str, width: int) -> np.ndarray:
        nonlocal pos
        got = block[pos:pos + size * width].view(dtype)
        pos += size * width
        return got

    entity_views, metric_views = part("V16", _VIEW).reshape(k, m), part("V16", _VIEW).reshape(k, m)
    line_col, value_col = part("<i8", 8).reshape(k, m), part("<f8", 8).reshape(k, m)
    if names is None:
        entity_table, entity_data = _views(("cpu:all",))
        entity_views[:] = entity_table[0]
    else:
        distinct = names.unique(maintain_order=True)
        entity_table, entity_data = _views(["dev:" + name for name in distinct.to_list()])
        if len(distinct) == 1:
            entity_views[:] = entity_table[0]
        else:
            entity_views[:] = entity_table[names.cast(pl.Enum(distinct)).to_physical().to_numpy()]
    metric_table, metric_data = _views(metrics)
    metric_views[:] = metric_table[:, None]
    line_col[:] = lines
    for j, (v, f) in enumerate(zip(values, factors, strict=True)):
        if f != 1.0:
            np.multiply(v.to_numpy(), f, out=value_col[j])
        else:
            value_col[j] = v.to_numpy()
    if derive:
        r, w, ra, wa = (value_col[metrics.index(name)] for name in
                        ("disk.r_per_s", "disk.w_per_s", "disk.r_await_ms", "disk.w_await_ms"))
        total = r + w
        with np.errstate(divide="ignore", invalid="ignore"):
            value_col[k - 1] = np.where(total > 0, (r * ra + w * wa) / total, 0.0)
    if ts is None:
        ts_col = pl.repeat(None, size, dtype=pl.Datetime("ns"), eager=True)
    else:
        ts_block = part("<i8", 8).reshape(k, m)
        ts_block[:] = ts
        ts_col = pl.Series(ts_block.reshape(-1)).cast(pl.Datetime("ns"))
    columns = {"line": pl.Series(line_col.reshape(-1)), "ts": ts_col}
    if rep is not None:
        rep_col = part("<i4", 4).reshape(k, m)
        rep_col[:] = rep
        columns["rep"] = pl.Series(rep_col.reshape(-1))
    return pl.DataFrame({**columns, "entity": _strings(entity_views, entity_data),
                         "metric": _strings(metric_views, metric_data), "value": pl.Series(value_col.reshape(-1))})


def _fresh(nbytes: int) -> np.ndarray:
    """A new block of ``nbytes`` for result columns. A large one is an anonymous mapping of its
    own with all its pages populated by one call: far cheaper than faulting its 4 kB pages in
    one at a time as they are first written (the result is most of what the parser allocates)."""
    if not _POPULATE or nbytes < _MAPPED_BYTES:
        return np.empty(nbytes, np.uint8)
    return np.frombuffer(mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _POPULATE), np.uint8)


def _views(strings) -> tuple[np.ndarray, bytes]:
    """Arrow string views of ``strings`` (16-byte items: the length and up to 12 bytes inline, or
    the length, the first 4 bytes, buffer 0 and an offset) and the buffer the long ones are in."""
    out, data = [], bytearray()
    for text in strings:
        raw = text.encode()
        if len(raw) <= 12:
            out.append(struct.pack("<I12s", len(raw), raw))
        else:
            out.append(struct.pack("<I4sII", len(raw), raw[:4], 0, len(data)))
            data += raw
    return np.frombuffer(b"".join(out), "V16"), bytes(data) or b"\0"


def _strings(views: np.ndarray, data: bytes) -> pl.Series:
    """A String series over a block of views (no copy: polars holds the block)."""
    flat = views.reshape(-1).view(np.uint8)
    got = pa.Array.from_buffers(pa.string_view(), len(flat) // _VIEW, [None, pa.py_buffer(flat), pa.py_buffer(data)])
    return arrow_series(got)


class _ArrowArray:
    """An Arrow array handed to polars through the Arrow C data interface, directly: polars'
    own path for pyarrow objects imports pyarrow.compute, and ``pl.from_arrow`` pandas (a fifth
    of a second the first time in a process), for nothing these arrays need."""

    __slots__ = ("array",)

    def __init__(self, array: pa.Array) -> None:
        self.array = array

    def __arrow_c_array__(self, requested_schema=None):
        return self.array.__arrow_c_array__(requested_schema)


def arrow_series(array: pa.Array) -> pl.Series:
    return pl.Series(_ArrowArray(array))
