"""The vectorised first pass over a batch of application-log lines: which lines Python must
look at, which are access lines and which are one-line slow-callback warnings (both handled
column-wise). Cost per batch is two regex passes over the whole batch (one combined literal
alternation, one anchored time test) and numpy on row indices; everything else runs over the
few rows those select, in one polars call. A batch is scanned on its own (``scan_block``);
the time it inherits from earlier batches is applied afterwards (``resolve_carry``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from parsers import _logprefix as lp
from parsers._applog_access import ACCESS_RX
from parsers._applog_slow import FAST_RX, collect_all

# lines that may make an event: Python looks at them (unless the column-wise paths take them)
CANDIDATE_RX = (
    r"took |Executing |Long-running callback|Traceback \(most recent call last\)|ERROR|CRITICAL|FATAL|"
    r"exception was never retrieved|destroyed but it is pending|WORKER TIMEOUT|Booting worker|Worker \(pid:|"
    r"Worker exiting|Errno 24|Too many open files|TooManyConnections|ConnectionDoesNotExist|server process|"
    r"Starting gunicorn|Shutting down: Master"
)
# one pass finds candidates, access-line suspects and lines with NUL bytes (skipped as decode_error)
_HIT_RX = CANDIDATE_RX + r"| HTTP/|\x00"
_TB_START = "Traceback (most recent call last)"
TS_SLICE = 48  # characters of a line's head that hold its time (handed on to inheriting lines)


@dataclass
class Scan:
    """One batch after the vectorised pass. Rows before the batch's first time are marked
    ``carry`` (their time is the previous batches' last one, applied by ``resolve_carry``), so
    batches can be scanned in any order and in parallel."""

    lines: int  # the batch's line count (a last line without its newline included)
    last_ts: str | None  # head of the batch's last line with a time (what later lines inherit)
    python_rows: pl.DataFrame  # i, line, ts, nul, carry, could_access: lines Python must look at
    access: pl.DataFrame  # i, line, ts: access lines with a time
    slow: pl.DataFrame  # i, line, ts: one-line slow-callback warnings with their own time


def scan_block(block: bytes, fast_rx: str = FAST_RX) -> Scan:
    """Which lines of ``block`` Python must look at, which are access lines and which are
    one-line slow-callback warnings (both handled column-wise). ``i`` is 0-based in the block;
    ``ts`` is the head of the line whose time the row has or inherits within the block."""
    try:
        frame = pl.read_lines(block)
    except Exception:  # invalid UTF-8: replace, the newlines stay where they were
        frame = pl.read_lines(block.decode("utf-8", "replace").encode())
    n = frame.height
    line = pl.col("line")
    if n == 0:
        empty = frame.select(pl.lit(0, pl.UInt32).alias("i"), "line", pl.lit(None, pl.Utf8).alias("ts"))
        python_rows = empty.with_columns(pl.lit(False).alias(c) for c in ("nul", "carry", "could_access"))
        return Scan(0, None, python_rows, empty, empty)
    flags = frame.select(
        line.str.contains(_HIT_RX).alias("hit"), line.str.contains(lp.TS_START_RX).alias("tsl")
    )
    hit = flags.get_column("hit").to_numpy()
    tsl = flags.get_column("tsl").to_numpy()
    # lines without a time at their head: do they start a record at all, a traceback?
    untimed = np.flatnonzero(~tsl)
    pref = np.ones(n, dtype=bool)
    tb_next = np.zeros(n, dtype=bool)
    if len(untimed):
        odd = frame.select(
            line.gather(untimed).str.contains(lp.PREFIX_RX).alias("pref"),
            line.gather(untimed).str.starts_with(_TB_START).alias("tb"),
        )
        pref[untimed] = odd.get_column("pref").to_numpy()
        tb_rows = untimed[odd.get_column("tb").to_numpy()]
        tb_next[tb_rows[tb_rows > 0] - 1] = True
    own = hit | ~pref | tb_next
    own[n - 1] = True
    sel = np.flatnonzero(own)
    # the row whose time each selected row has or inherits (-1: before any in this batch)
    ts_row = np.maximum.accumulate(np.where(tsl, np.arange(n, dtype=np.int64), -1))[sel]
    timed_rows = np.flatnonzero(tsl)
    last_ts = frame.get_column("line")[int(timed_rows[-1])][:TS_SLICE] if len(timed_rows) else None
    carry = ts_row < 0
    # a null index (row -1: no time yet in this batch) gathers a null
    stamps = line.gather(pl.Series(ts_row).cast(pl.UInt32, strict=False)).str.slice(0, TS_SLICE)
    # one plan over the selected rows, three outputs (the shared part runs once)
    flagged = (
        frame.lazy()
        .select(
            pl.lit(pl.Series("i", sel, dtype=pl.UInt32)),
            line.gather(pl.Series(sel, dtype=pl.UInt32)),
            stamps.alias("ts"),
            pl.lit(pl.Series("tsl", tsl[sel])),
            pl.lit(pl.Series("strict", (~pref | tb_next)[sel] | (sel == n - 1))),
            pl.lit(pl.Series("carry", carry)),
        )
        .with_columns(
            (pl.col("strict") | line.str.contains(CANDIDATE_RX)).alias("keep"),
            line.str.contains(" HTTP/", literal=True).alias("http"),
            line.str.contains("\x00", literal=True).alias("nul"),
        )
        .filter(pl.col("keep") | pl.col("http") | pl.col("nul"))
        .with_columns(
            (~pl.col("keep") & ~pl.col("nul") & line.str.contains(ACCESS_RX)).alias("could_access"),
            (pl.col("keep") & ~pl.col("nul") & pl.col("tsl") & line.str.contains(fast_rx)).alias("fast"),
        )
        .with_columns((pl.col("could_access") & pl.col("ts").is_not_null()).alias("access"))
    )
    access, slow, python_rows = collect_all(
        [
            flagged.filter(pl.col("access")).select("i", "line", "ts"),
            flagged.filter(pl.col("fast")).select("i", "line", "ts"),
            flagged.filter((pl.col("keep") | ~pl.col("access")) & ~pl.col("fast")).select(
                "i", "line", "ts", "nul", "carry", "could_access"
            ),
        ]
    )
    return Scan(n, last_ts, python_rows, access, slow)


def resolve_carry(scan: Scan, carried: str | None) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """The batch's Python rows (i, line, ts, nul) with the rows before its first time given
    ``carried`` (the previous batches' last time head), and the access lines that only this
    time makes (None when there are none)."""
    rows = scan.python_rows
    if carried is None or not rows.get_column("carry").any():
        return rows.select("i", "line", "ts", "nul"), None
    carry = pl.col("carry")
    rows = rows.with_columns(pl.when(carry).then(pl.lit(carried, pl.Utf8)).otherwise("ts").alias("ts"))
    moved = carry & pl.col("could_access")
    access = rows.filter(moved).select("i", "line", "ts")
    return rows.filter(~moved).select("i", "line", "ts", "nul"), (access if access.height else None)
