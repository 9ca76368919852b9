"""Fast path of the iostat text engine for the regular case: stretches of reports with one
avg-cpu and one Device header layout, plain numbers, readable ``-t`` times.

A batch of raw bytes is classified with numpy (first bytes of each line: blank, ``Linux``
header, time line, ``avg-cpu:``/``Device`` header, cpu value row, device row); value rows are
gathered, whitespace runs collapsed and read as a space-separated table by polars' CSV reader;
report number, time (forward fill of the time lines, each parsed once, vectorised) and
since-boot state are derived from line indices. The result, the accounting and the carried
state are exactly what ``TextEngine.feed`` gives for the same lines; anything the fast path is
not sure of (odd rows, ``--pretty``/``--human`` cells, ``-``, CR, colours, a second layout,
unreadable times) makes it decline, and the batch — or just the irregular stretch of it — goes
through the general per-batch engine instead.
"""

from __future__ import annotations

import re

import numpy as np
import polars as pl
import pyarrow as pa

from parsers import _sysstat as ss
from parsers._sysstat_iostat import (
    BLANK,
    CPU_HDR,
    DATA,
    DEV_HDR,
    HEADER,
    HEADER_PAT,
    NO_BLOCK,
    SENTINEL,
    STAMP,
    STAMP_PAT,
    SUFFIX_PAT,
    Layout,
    TextEngine,
)
from parsers._sysstat_iostat_frame import arrow_series, long_frame

PRIME_BYTES = 64 << 10  # the general engine sees at least this much first (it decides marker and time format)
PIECE_BYTES = 512 << 10  # a batch the fast path declines is retried in pieces of about this size
STAMPS_TO_DECIDE = 21  # the general engine decides the date order from the first 20 time lines
_CUT_RE = re.compile(rb"\n\n(?=avg-cpu:|Device|Linux )")  # safe cuts: no wrapped row spans them
_STAMP_START_RE = re.compile(rb"(?m)^[0-9]")
_WS, _TAB, _NL, _CR, _ESC, _COMMA, _DOT = 32, 9, 10, 13, 27, 44, 46
_BOOT_MESSAGE = ("first report after the 'Linux' header holds averages since boot (iostat without "
                 "-y), not an interval sample")
_UNTIMED_MESSAGE = ("iostat without -t prints no per-report time: pass --interval GLOB=SECONDS "
                    "(and keep the file's modification time) to place these reports")


def feed(eng: TextEngine, first_line: int, block: bytes | np.ndarray, *, primed: bool,
         ends: np.ndarray | None = None) -> None:
    """Feed one batch (whole lines; bytes, or a uint8 array with its newline positions) to
    ``eng``: fast where regular, general elsewhere. ``primed`` is False for the first batch:
    a prefix goes through the general engine so that it decides what starts a report and the
    time format exactly as it always does."""
    if not primed:
        data = block if isinstance(block, bytes) else block.tobytes()
        if len(data) <= PRIME_BYTES:
            eng.feed(first_line, data.decode("utf-8", "replace"))
            return
        cut = _prime_cut(data)
        if cut is None:
            eng.feed(first_line, data.decode("utf-8", "replace"))
            return
        eng.feed(first_line, data[:cut].decode("utf-8", "replace"))
        first_line += data.count(b"\n", 0, cut)
        block, ends = data[cut:], None
    if try_fast(eng, first_line, block, ends):
        return
    if not isinstance(block, bytes):
        block = block.tobytes()
    if len(block) <= 2 * PIECE_BYTES:
        eng.feed(first_line, block.decode("utf-8", "replace"))
        return
    for piece_first, piece in _pieces(first_line, block):
        if not try_fast(eng, piece_first, piece):
            eng.feed(piece_first, piece.decode("utf-8", "replace"))


def _prime_cut(block: bytes) -> int | None:
    """A safe cut after PRIME_BYTES and after the time lines the engine decides the date order
    from; None when the whole block is needed for that."""
    stamps = 0
    need_at = 0
    for m in _STAMP_START_RE.finditer(block):
        stamps += 1
        if stamps == STAMPS_TO_DECIDE:
            need_at = m.start()
            break
    else:
        if stamps:
            return None  # few time lines: the engine decides from all of them
    m = _CUT_RE.search(block, max(PRIME_BYTES, need_at))
    return m.start() + 2 if m else None


def _pieces(first_line: int, block: bytes):
    pos = 0
    while pos < len(block):
        m = _CUT_RE.search(block, pos + PIECE_BYTES)
        end = m.start() + 2 if m else len(block)
        piece = block[pos:end]
        yield first_line, piece
        first_line += piece.count(b"\n")
        pos = end


class _Decline(Exception):
    """The batch is not regular: leave it to the general engine."""


def try_fast(eng: TextEngine, first_line: int, block: bytes | np.ndarray, ends: np.ndarray | None = None) -> bool:
    """Parse ``block`` on the fast path; False (and nothing changed) if it is not regular."""
    if not len(block) or eng.marker is None:
        return False
    if isinstance(block, bytes):
        if b"\r" in block or b"\x1b" in block:
            return False
        arr, tabs, ends = np.frombuffer(block, np.uint8), b"\t" in block, None
    else:
        arr = block
        tabs = False
        if ends is None or np.count_nonzero(arr < _WS) != len(ends):  # control bytes besides newlines
            if (arr == _CR).any() or (arr == _ESC).any():
                return False
            tabs = bool((arr == _TAB).any())
    if arr[-1] != _NL:
        arr, ends = np.append(arr, np.uint8(_NL)), None  # the unterminated last line (counted the same)
    if ends is None:
        ends = np.flatnonzero(arr == _NL)
    try:
        plan = _plan(eng, arr, ends, tabs)
    except (_Decline, pl.exceptions.PolarsError, pa.ArrowException):
        return False
    _commit(eng, first_line, plan)
    return True


def _plan(eng: TextEngine, arr: np.ndarray, ends: np.ndarray, tabs: bool) -> dict:
    n = len(ends)
    starts = np.empty(n, np.int64)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    lens = ends - starts
    # the first 8 bytes of each line (zeros past the end of the block)
    if len(arr) >= 8:
        words = np.ndarray((len(arr) - 7,), "<u8", arr, 0, (1,))  # the (unaligned) 8 bytes at each offset
        head = words[np.minimum(starts, len(arr) - 8)]
    else:
        head = np.zeros(n, np.uint64)
    for i in np.flatnonzero(starts > len(arr) - 8):
        head[i] = int.from_bytes(arr[starts[i]:].tobytes().ljust(8, b"\0"), "little")

    def prefix(p: bytes) -> np.ndarray:  # no prefix holds a newline or NUL: no length check needed
        mask = int.from_bytes(b"\xff" * len(p) + bytes(8 - len(p)), "little")
        return (head & np.uint64(mask)) == np.uint64(int.from_bytes(p.ljust(8, b"\0"), "little"))

    c0 = (head & np.uint64(0xFF)).astype(np.uint8)
    blank = lens == 0
    cpu_hdr = prefix(b"avg-cpu:")
    dev_hdr = prefix(b"Device")
    linux = prefix(b"Linux ")
    stamp = ~blank & (c0 >= 48) & (c0 <= 57)
    cpu_row = ~blank & ((c0 == _WS) | (c0 == _TAB))
    dev_row = ~(blank | cpu_hdr | dev_hdr | linux | stamp | cpu_row)
    if (lens[stamp] >= 100).any() or ((c0[dev_row] <= _WS) | (c0[dev_row] >= 127)).any():
        raise _Decline  # a long "time", or a row starting with odd whitespace or non-ASCII

    def texts(mask: np.ndarray) -> pl.Series:
        sel_lens = lens[mask]
        offsets = np.zeros(len(sel_lens) + 1, np.int64)
        np.cumsum(sel_lens, out=offsets[1:])
        take = np.repeat(mask, lens + 1)
        take[ends[mask]] = False  # without their newlines
        data = arr[take]
        got = pa.Array.from_buffers(pa.large_utf8(), len(sel_lens), [None, pa.py_buffer(offsets),
                                                                     pa.py_buffer(data)])
        got.validate(full=True)  # UTF-8
        return arrow_series(got)

    # headers: one layout of each kind, and the same one the carried block (if any) has
    cpu_lay = _one_layout(eng, "cpu", arr, starts, lens, cpu_hdr)
    dev_lay = _one_layout(eng, "dev", arr, starts, lens, dev_hdr)
    carry = eng.by_id[eng.blk] if 0 <= eng.blk < len(eng.by_id) else None
    if dev_lay is None and carry is not None and carry.kind == "dev":
        dev_lay = carry
    if dev_lay is not None and dev_lay.device_pos != 0:
        raise _Decline  # --pretty: Device last
    # which block each line is in: the last header/time line before it
    structural = linux | stamp | cpu_hdr | dev_hdr
    idx = np.arange(n)
    last_struct = np.maximum.accumulate(np.where(structural, idx, -1))
    in_dev = np.where(last_struct >= 0, dev_hdr[np.maximum(last_struct, 0)],
                      carry is not None and carry.kind == "dev" and carry is dev_lay)
    if (dev_row & ~in_dev).any():
        raise _Decline
    prev_cpu_hdr = np.empty(n, bool)
    prev_cpu_hdr[0] = eng.last_kind == CPU_HDR
    prev_cpu_hdr[1:] = cpu_hdr[:-1]
    if (cpu_row & ~prev_cpu_hdr).any():
        raise _Decline
    if cpu_row[0]:  # the values of a header at the end of the previous batch
        if carry is None or carry.kind != "cpu" or (cpu_lay is not None and cpu_lay is not carry):
            raise _Decline
        cpu_lay = carry
    # Linux headers
    heads = texts(linux) if linux.any() else pl.Series([], dtype=pl.Utf8)
    if heads.len() and not heads.str.contains(HEADER_PAT).all():
        raise _Decline
    # time lines, parsed vectorised with the format the engine decided
    ts_values = None
    if stamp.any():
        if not eng.fmt_decided or eng.fmt is None:
            raise _Decline
        stamp_texts = _same_shape(arr, starts[stamp], lens[stamp])
        if stamp_texts is None:
            stamp_texts = texts(stamp)
            if not stamp_texts.str.contains(STAMP_PAT).all():
                raise _Decline
        elif not stamp_texts[:1].str.contains(STAMP_PAT).all():
            raise _Decline
        ts_values = stamp_texts.str.strptime(pl.Datetime("us"), eng.fmt, strict=False)
        if ts_values.dtype.time_zone is not None:  # type: ignore[union-attr]
            ts_values = ts_values.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
        if ts_values.null_count():
            raise _Decline
        ts_values = ts_values.cast(pl.Datetime("ns")).to_physical().to_numpy()
    # report numbers: what starts a report, as the engine decided
    kind, text = eng.marker
    if kind == STAMP:
        starts_rep = stamp
    elif kind == CPU_HDR:
        starts_rep = cpu_hdr
    elif kind == DEV_HDR:
        starts_rep = dev_hdr if dev_lay is not None and dev_hdr.any() and dev_lay.text == text \
            else np.zeros(n, bool)
    else:
        raise _Decline
    rep = eng.rep + np.cumsum(starts_rep)
    last_head = np.maximum.accumulate(np.where(linux, idx, -1))
    hrep = np.where(last_head >= 0, rep[np.maximum(last_head, 0)], -1 if eng.hdr_rep is None else eng.hdr_rep)
    boot = (hrep >= 0) & (rep == hrep + 1)
    # row times
    timed = kind == STAMP
    if not timed and stamp.any():
        raise _Decline  # time lines in a file whose reports start otherwise
    row_ts = None
    if timed:
        last_stamp = np.maximum.accumulate(np.where(stamp, idx, -1))
        if ts_values is not None:
            pos = np.cumsum(stamp) - 1
            row_ts = np.where(last_stamp >= 0, ts_values[np.maximum(pos, 0)], 0)
        else:
            row_ts = np.zeros(n, np.int64)
        if (last_stamp < 0).any():
            if eng.ts_carry is None or eng.ts_carry == SENTINEL:
                if ((cpu_row | dev_row) & (last_stamp < 0)).any():
                    raise _Decline  # rows before any (readable) time
            else:
                carry_ns = pl.Series([eng.ts_carry], dtype=pl.Datetime("us")).cast(pl.Datetime("ns"))
                row_ts = np.where(last_stamp >= 0, row_ts, carry_ns.to_physical()[0])
    # value rows: each kind's lines gathered into one contiguous block by arrow (a copy: the
    # batch's buffer is reused by the reader)
    offsets = np.empty(n + 1, np.int64)
    offsets[0] = 0
    offsets[1:] = ends + 1
    lines = pa.Array.from_buffers(pa.large_binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(arr)])
    tables = []
    for lay, mask in ((cpu_lay, cpu_row), (dev_lay, dev_row)):
        if not mask.any():
            continue
        assert lay is not None
        rows = np.flatnonzero(mask)
        # (indices from buffers: pa.array() would import pandas, a fifth of a second)
        values, names = _table(lines.take(pa.Array.from_buffers(pa.int64(), len(rows), [None, pa.py_buffer(rows)])),
                               lay, tabs)
        tables.append((lay, rows, values, names))
    return {"n": n, "blank": int(blank.sum()), "linux": heads, "stamp": stamp, "cpu_hdr": cpu_hdr,
            "dev_hdr": dev_hdr, "rep": rep, "hrep": hrep, "boot": boot, "row_ts": row_ts, "timed": timed,
            "ts_last": None if ts_values is None else int(ts_values[-1]), "tables": tables,
            "structural": structural, "last_struct": last_struct, "cpu_lay": cpu_lay, "dev_lay": dev_lay,
            "last_kind": _last_kind(blank, linux, cpu_hdr, dev_hdr, stamp)}


def _one_layout(eng: TextEngine, kind: str, arr: np.ndarray, starts: np.ndarray, lens: np.ndarray,
                mask: np.ndarray) -> Layout | None:
    """The layout of the header lines in ``mask``, which must be byte-for-byte the same."""
    rows = np.flatnonzero(mask)
    if not len(rows):
        return None
    length = int(lens[rows[0]])
    if (lens[rows] != length).any():
        raise _Decline
    first = int(starts[rows[0]])
    if length and len(rows) > 1:
        same = _cells(arr, starts[rows[1:]], length) == arr[first:first + length]
        if not same.all():
            raise _Decline
    try:
        text = arr[first:first + length].tobytes().decode("utf-8")
    except UnicodeDecodeError:
        raise _Decline from None
    return eng.layout(kind, text.strip())


def _same_shape(arr: np.ndarray, starts: np.ndarray, lens: np.ndarray) -> pl.Series | None:
    """Lines of one length with digits in the same places and the same other bytes (times
    such as ``11/28/26 05:28:10``) as a string series; None if they differ in shape. Such
    lines all match a pattern without digit literals (STAMP_PAT) or all do not."""
    length = int(lens[0])
    if not length or (lens != length).any():
        return None
    cells = _cells(arr, starts, length)
    digit = (cells >= 48) & (cells <= 57)
    other = ~digit[0]
    if not (digit == digit[0]).all() or not (cells[:, other] == cells[0, other]).all():
        return None
    if (cells[0] >= 128).any():
        try:
            cells[0].tobytes().decode("utf-8")
        except UnicodeDecodeError:
            return None
    offsets = np.arange(len(starts) + 1, dtype=np.int64) * length
    got = pa.Array.from_buffers(pa.large_utf8(), len(starts), [None, pa.py_buffer(offsets),
                                                               pa.py_buffer(cells.tobytes())])
    return arrow_series(got)


def _cells(arr: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """The ``length`` bytes at each of ``starts`` as rows of a new array (gathered as one
    ``length``-byte item each: much faster than a sliding window's rows)."""
    items = np.ndarray((len(arr) - length + 1,), f"V{length}", arr, 0, (1,))
    return items[starts].view(np.uint8).reshape(len(starts), length)


def _last_kind(blank, linux, cpu_hdr, dev_hdr, stamp) -> int:
    for mask, code in ((blank, BLANK), (linux, HEADER), (cpu_hdr, CPU_HDR), (dev_hdr, DEV_HDR), (stamp, STAMP)):
        if mask[-1]:
            return code
    return DATA


def _table(rows: pa.LargeBinaryArray, lay: Layout, tabs: bool) -> tuple[list[pl.Series], pl.Series | None]:
    """Value rows (each with its newline) → (one Float64 series per mapped column, device names
    or None)."""
    offsets = np.frombuffer(rows.buffers()[1], np.int64)[rows.offset:rows.offset + len(rows) + 1]  # type: ignore[arg-type]
    lo, hi = int(offsets[0]), int(offsets[-1])
    data = arrow_series(pa.Array.from_buffers(pa.uint8(), hi - lo, [None, rows.buffers()[2]], offset=lo))
    if tabs:
        data = data.replace(_TAB, _WS)
    ws = data == _WS  # whitespace runs → one space (cpu rows keep one leading space: an empty cell)
    sub = data.filter(~(ws & ws.shift(1, fill_value=False))).to_numpy()
    named = lay.kind == "dev"
    # cells per row: as many as the header names (avg-cpu rows: and an empty one before them);
    # fewer show as a null in the last column, which is always read: more show in the count
    # of separators, as only the needed columns are parsed
    width = lay.ncols if named else lay.ncols + 1
    if np.count_nonzero(sub == _WS) != len(rows) * (width - 1):
        raise _Decline
    commas = sub == _COMMA
    has_commas = bool(commas.any())
    if has_commas:  # decimal comma: the engine turns a cell's first ',' into '.' (two never parse)
        sub = sub.copy()
        sub[commas] = _DOT
    shift = 0 if named else 1
    schema = {f"column_{i + 1}": pl.Float64 for i in range(width)}
    schema["column_1"] = pl.Utf8  # the device name, or the empty cell before avg-cpu values
    wanted = sorted({0, width - 1, *(j + shift for j, _m, _f in lay.columns)})
    frame = pl.read_csv(sub.tobytes(), has_header=False, separator=" ", quote_char=None, schema=schema,
                        columns=wanted)
    if frame.height != len(rows) or any(frame.null_count().row(0)[1:]):
        raise _Decline
    first = frame.get_column("column_1")
    if not named and first.null_count() != frame.height:
        raise _Decline
    names = first.rechunk() if named else None
    if names is not None and (names.null_count() or names.str.contains(SUFFIX_PAT).any()
                              or has_commas and names.str.contains(".", literal=True).any()):
        raise _Decline  # --human look-alike, or a name with a comma (now ambiguous)
    return [frame.get_column(f"column_{j + shift + 1}") for j, _m, _f in lay.columns], names


def _commit(eng: TextEngine, first_line: int, plan: dict) -> None:
    acct = eng.acct
    for text in plan["linux"].to_list():
        header = ss.parse_header(text.strip())
        if header is not None:
            eng.header = header
    n_struct = plan["blank"] + plan["linux"].len() + int(plan["stamp"].sum() + plan["cpu_hdr"].sum()
                                                          + plan["dev_hdr"].sum())
    acct.parsed(n_struct)
    rep, boot, row_ts = plan["rep"], plan["boot"], plan["row_ts"]
    timeless_blocked = not plan["timed"] and not eng.timeless_ok
    for lay, rows, values, names in plan["tables"]:
        keep = ~boot[rows]
        n_boot = len(rows) - int(keep.sum())
        if n_boot:
            eng.since_boot_lines += n_boot
            acct.skip("since_boot_sample", first_line + int(rows[~keep][0]), None, _BOOT_MESSAGE, n=n_boot)
        if n_boot:
            rows, keep_s = rows[keep], pl.Series(keep)
            values = [v.filter(keep_s) for v in values]
            names = None if names is None else names.filter(keep_s)
        if not len(rows):
            continue
        if timeless_blocked:
            eng.untimed_rows += len(rows)
            acct.skip("no_timestamp", first_line + int(rows[0]), None, _UNTIMED_MESSAGE, n=len(rows))
            continue
        acct.parsed(len(rows))
        eng.entity_names.update(["cpu:all"] if names is None else ("dev:" + names.unique()).to_list())
        # report numbers are needed later only to place reports without times and to pair
        # --pretty sub-tables (general engine rows); timed rows go without (4 bytes a row)
        need_rep = not plan["timed"] or eng.pretty
        eng.frames.append(long_frame(lay, rows + first_line, rep[rows] if need_rep else None,
                                None if row_ts is None else row_ts[rows],
                                values, names))
    # carried state, as the general engine leaves it
    eng.rep = int(rep[-1])
    if plan["linux"].len():
        eng.hdr_rep = int(plan["hrep"][-1])
    ls = int(plan["last_struct"][-1])
    if ls >= 0:
        eng.blk = plan["cpu_lay"].id if plan["cpu_hdr"][ls] else plan["dev_lay"].id if plan["dev_hdr"][ls] \
            else NO_BLOCK
    if plan["ts_last"] is not None:
        eng.ts_carry = pl.Series([plan["ts_last"]], dtype=pl.Int64).cast(pl.Datetime("ns"))[0]
    eng.last_kind = plan["last_kind"]
