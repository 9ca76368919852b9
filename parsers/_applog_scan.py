"""The vectorised first pass over a batch of application-log lines: which lines Python must
look at, which are access lines and which are one-line slow-callback warnings (both handled
column-wise). Cost per batch is two regex passes over the whole batch (one combined literal
alternation, one anchored time test) and numpy on row indices; everything else runs over the
few rows those select."""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

import numpy as np
import polars as pl

from parsers import _logprefix as lp
from parsers._applog_access import ACCESS_RX
from parsers._applog_slow import FAST_RX
from parsers.lines import iter_line_blocks

# lines that may make an event: Python looks at them (unless the column-wise paths take them)
CANDIDATE_RX = (
    r"took |Executing |Long-running callback|Traceback \(most recent call last\)|ERROR|CRITICAL|FATAL|"
    r"exception was never retrieved|destroyed but it is pending|WORKER TIMEOUT|Booting worker|Worker \(pid:|"
    r"Worker exiting|Errno 24|Too many open files|TooManyConnections|ConnectionDoesNotExist|server process|"
    r"Starting gunicorn|Shutting down: Master"
)
_HIT_RX = CANDIDATE_RX + r"| HTTP/"  # one pass finds candidates and access-line suspects
_TB_START = "Traceback (most recent call last)"
TS_SLICE = 48  # characters of a line's head that hold its time (handed on to inheriting lines)


def batches(stream: BinaryIO, batch_bytes: int) -> Iterator[bytes]:
    """Blocks of whole lines (the last one may lack its newline), BOM dropped; the caller
    counts the lines, once."""
    return iter_line_blocks(stream, batch_bytes)


class Scanner:
    """Carries the last time-bearing line across batches, so an unprefixed line at the start
    of a batch inherits the time of the line before it wherever the batch boundary falls."""

    def __init__(self, fast_rx: str = FAST_RX) -> None:
        self.carry_ts: str | None = None
        self.fast_rx = fast_rx  # which warnings take the column-wise path
        self.lines = 0

    def candidates(self, block: bytes) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
        """Rows (i, line, ts, nul) of the lines Python must look at, i 0-based in the block,
        and rows (i, line, ts) of access lines and of one-line slow-callback warnings with
        their own time. ``ts`` is the head of the line whose time the row has or inherits."""
        try:
            frame = pl.read_lines(block)
        except Exception:  # invalid UTF-8: replace, the newlines stay where they were
            frame = pl.read_lines(block.decode("utf-8", "replace").encode())
        self.lines = n = frame.height  # the block's line count (a last line without its newline included)
        line = pl.col("line")
        if n == 0:
            empty = frame.select(pl.lit(0, pl.UInt32).alias("i"), "line", pl.lit(None, pl.Utf8).alias("ts"))
            return empty.with_columns(pl.lit(False).alias("nul")), empty, empty
        flags = frame.select(line.str.contains(_HIT_RX).alias("hit"), line.str.contains(lp.TS_START_RX).alias("tsl"))
        hit = flags.get_column("hit").to_numpy()
        tsl = flags.get_column("tsl").to_numpy()
        # lines without a time at their head: do they start a record at all, a traceback?
        untimed = np.flatnonzero(~tsl)
        odd = (
            frame.select(
                line.gather(untimed).str.contains(lp.PREFIX_RX).alias("pref"),
                line.gather(untimed).str.starts_with(_TB_START).alias("tb"),
            )
            if len(untimed)
            else None
        )
        pref = np.ones(n, dtype=bool)
        tb_next = np.zeros(n, dtype=bool)
        if odd is not None:
            pref[untimed] = odd.get_column("pref").to_numpy()
            tb_rows = untimed[odd.get_column("tb").to_numpy()]
            tb_next[tb_rows[tb_rows > 0] - 1] = True
        rows = np.arange(n, dtype=np.int64)
        own = hit | ~pref | tb_next
        own[n - 1] = True
        sel = np.flatnonzero(own)
        # the row whose time each selected row has or inherits (-1: before any in this batch)
        ts_row = np.maximum.accumulate(np.where(tsl, rows, -1))[sel]
        carried = self.carry_ts
        timed_rows = np.flatnonzero(tsl)
        if len(timed_rows):
            self.carry_ts = frame.get_column("line")[int(timed_rows[-1])][:TS_SLICE]
        lines = frame.get_column("line")
        sel_lines = lines.gather(sel)
        stamps = sel_lines.str.slice(0, TS_SLICE)
        borrowed = np.flatnonzero((ts_row != sel) & (ts_row >= 0))  # time from an earlier line
        if len(borrowed):
            stamps = stamps.scatter(borrowed, lines.gather(ts_row[borrowed]).str.slice(0, TS_SLICE))
        inherited = ts_row >= 0
        if not inherited.all():
            stamps = stamps.scatter(np.flatnonzero(~inherited), carried)
        sub = pl.DataFrame(
            {
                "i": pl.Series(sel, dtype=pl.UInt32),
                "line": sel_lines,
                "ts": stamps,
                "tsl": tsl[sel],
                "strict": (~pref | tb_next)[sel] | (sel == n - 1),
            }
        )
        flagged = (
            sub.lazy()
            .with_columns(
                (pl.col("strict") | line.str.contains(CANDIDATE_RX)).alias("keep"),
                line.str.contains(" HTTP/", literal=True).alias("http"),
                line.str.contains("\x00", literal=True).alias("nul"),
            )
            .filter(pl.col("keep") | pl.col("http"))
            .with_columns(
                (~pl.col("keep") & pl.col("ts").is_not_null() & line.str.contains(ACCESS_RX)).alias("access"),
                (pl.col("keep") & ~pl.col("nul") & pl.col("tsl") & line.str.contains(self.fast_rx)).alias("fast"),
            )
            .collect()
        )
        access = flagged.filter(pl.col("access")).select("i", "line", "ts")
        slow = flagged.filter(pl.col("fast")).select("i", "line", "ts")
        python_rows = flagged.filter((pl.col("keep") | ~pl.col("access")) & ~pl.col("fast")).select(
            "i", "line", "ts", "nul"
        )
        return python_rows, access, slow
