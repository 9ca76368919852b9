"""Python application logs: asyncio debug-mode slow callbacks as stall intervals,
destroyed pending tasks, never-retrieved exceptions, uvicorn/gunicorn server and access
lines, EMFILE, database pool errors and ERROR records (traceback collapsed).

Framing (FORMATS.md §4.3): no prefix (lastResort), ``WARNING:asyncio:`` (basicConfig, also
glued after test-runner dots), ``%(asctime)s`` with any separator (none included) and any
level/name order, ISO-8601 with offsets (aware times), uvicorn's ``INFO:     ``, gunicorn's
``[2026-01-02 10:00:05 +0000] [1234] [INFO]``, JSON lines, ANSI colours.

Output:
- ``loop.slow_callback`` events spanning [t - took, t] (asyncio logs after the callback
  returned), value = took s, entity ``coro:<qualname>@<file>:<line>`` (else the callback,
  else the lane ``loop:<pid>`` / ``loop:main``), attrs from the repr.
- ``loop.stall_ms`` (stall time inside each second, ts = END of the second) and
  ``loop.slow_callbacks`` (warnings finishing in that second) per lane. Only seconds with a
  stall have rows: a missing second means 0.
- ``asyncio.task_destroyed``, ``asyncio.exception_never_retrieved``, ``http.request``,
  ``server.*``, ``os.too_many_open_files``, ``db.pool_error``, ``db.timeout``, ``log.error``.

Lines without a time inherit the last one seen. Records before any time (or in a file with
none at all) cannot be placed on the timeline: they go to the ``applog_untimed`` table and a
``no_timestamp`` diagnostic asks for a log format with ``%(asctime)s``.

Every line is counted as parsed (ordinary INFO/DEBUG lines just count), except lines with NUL
bytes (``decode_error``). Speed: each batch of lines is filtered by polars first; only
candidate lines (warnings, errors, tracebacks, access lines, unprefixed lines) reach Python.
The column-wise part of a batch (scan, access lines, one-line slow callbacks) runs in one of
``WORKERS`` threads ahead of the in-order Python part; what a batch inherits from the ones
before it (the last time seen, line numbers) is applied in order, so the output does not
depend on the threads.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import BinaryIO

import numpy as np
import polars as pl

from parsers import _logprefix as lp
from parsers._applog_access import access_frame, finish
from parsers._applog_events import Emitter, Record
from parsers._applog_scan import Scan, resolve_carry, scan_block
from parsers._applog_slow import FAST_RX, slow_frame, stall_metrics
from parsers._asyncio_repr import SLOW_RE, WRAP_START_RE
from parsers.base import Accounting, ParseContext, ParseResult
from parsers.lines import ANSI_RE, head_lines, is_binary, iter_line_blocks
from parsers.timeutil import UTC

NAME = "applog"
DESCRIPTION = "Python application logs: asyncio slow callbacks, task/exception records, uvicorn/gunicorn"
SAMPLES = "applogs"
NAME_HINTS = ("*.log", "*app*", "*uvicorn*", "*gunicorn*", "*stderr*")

CONT_RE = re.compile(
    r"^(?:[ \t]|Traceback \(most recent call last\)|During handling of the above exception|"
    r"The above exception was the direct cause|[A-Za-z_][\w.]*(?::|$)|$)"
)
MAX_LINE = 200_000
BATCH_BYTES = 8 << 20  # lines handed to polars at a time (memory stays flat in file size)
# batches scanned column-wise in parallel, ahead of the in-order Python part (each one in
# flight holds a batch and its frames: a few tens of MB)
WORKERS = max(1, min(4, os.cpu_count() or 1))
MAX_WRAP_LINES = 40

# -- sniffing ------------------------------------------------------------------------------
_ASYNCIO_MARK = re.compile(
    r"Executing .* took \d+\.\d+ seconds|Task was destroyed but it is pending!|"
    r"exception was never retrieved|Long-running callback:? .+ took \d"
)
_PY_LOGGING = re.compile(
    r"^(?:\.*(?:DEBUG|INFO|WARNING|ERROR|CRITICAL):[\w.<>-]*:"  # basicConfig
    r"|\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d,\d{3}\s*(?:-\s*)?(?:\[\d+\]\s*)?[\w.<>-]*\s*(?:-\s*)?"
    r"\[?(?:DEBUG|INFO|WARNING|ERROR|CRITICAL)\b"  # asctime (comma millis is logging's default)
    r"|\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?\s+(?:\[\d+\]\s+)?"
    r"(?:DEBUG|INFO|WARNING|ERROR|CRITICAL)\s+[\w.<>-]+:\s"
    r"|\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}\] \[\d+\] \[(?:DEBUG|INFO|WARNING|ERROR|CRITICAL)\]"
    r"|(?:INFO|WARNING|ERROR|CRITICAL|DEBUG):\s{1,6}\S"  # uvicorn levelprefix
    r")"
)
_JSON_LOG = re.compile(
    r'^\{.*"(?:levelname|level)"\s*:\s*"(?:DEBUG|INFO|WARNING|ERROR|CRITICAL|debug|info|'
    r'warning|error|critical)".*"(?:message|msg|event)"\s*:'
)
_TRACEBACK = re.compile(r'^Traceback \(most recent call last\):$|^  File ".+", line \d+, in ')


def sniff(head: bytes) -> float:
    if not head or is_binary(head):
        return 0.0
    lines = [lp_clean(ln) for ln in head_lines(head, 400) if ln.strip()]
    if not lines:
        return 0.0
    if any(_ASYNCIO_MARK.search(ln) for ln in lines):
        return 0.9
    logging_lines = sum(1 for ln in lines if _PY_LOGGING.match(ln) or _JSON_LOG.match(ln))
    tracebacks = sum(1 for ln in lines if _TRACEBACK.match(ln))
    if logging_lines >= max(2, len(lines) * 0.3):
        return 0.8
    if tracebacks >= 2:
        return 0.7
    if logging_lines and logging_lines + tracebacks >= len(lines) * 0.2:
        return 0.6
    return 0.0


def lp_clean(text: str) -> str:
    return ANSI_RE.sub("", text) if "\x1b" in text else text


# -- parsing -------------------------------------------------------------------------------


class _State:
    def __init__(self, ctx: ParseContext) -> None:
        self.ctx = ctx
        self.acct = Accounting(ctx.file)
        self.out = Emitter()
        self.open: Record | None = None
        self.last_ts: dt.datetime | None = None
        self.kinds: dict[str, int] = {}
        self.mode = ""  # "aware" | "naive": decided by the first timestamp, later ones follow it
        self.mixed = 0
        self.timed = 0
        # column-wise built events (access lines, slow callbacks): (first line of the batch, frame)
        self.frames: list[tuple[int, pl.DataFrame]] = []
        self.prev_line = 0  # the last line Python looked at

    def normalise(self, stamp: dt.datetime) -> dt.datetime:
        aware = stamp.tzinfo is not None
        if not self.mode:
            self.mode = "aware" if aware else "naive"
        if aware:
            if self.mode == "aware":
                return stamp.astimezone(UTC)
            self.mixed += 1
            return stamp.astimezone(self.ctx.tz).replace(tzinfo=None)
        if self.mode == "naive":
            return stamp
        self.mixed += 1
        return stamp.replace(tzinfo=self.ctx.tz).astimezone(UTC)


def parse(stream: BinaryIO, *, ctx: ParseContext) -> ParseResult:
    st = _State(ctx)
    total = 0
    carried: str | None = None  # head of the last line with a time, for lines that inherit it
    ahead = 0  # lines of batches scanned ahead and not consumed (counted when abandoning)
    vector = partial(_vector_pass, facts={}, lock=threading.Lock())
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        inflight: deque = deque()
        for block in iter_line_blocks(stream, BATCH_BYTES):
            inflight.append(pool.submit(vector, block))
            if len(inflight) > WORKERS:
                total, carried = _consume(st, inflight.popleft().result(), total, carried)
                if st.acct.should_abandon:
                    break
        while inflight:
            done = inflight.popleft().result()
            if st.acct.should_abandon:
                ahead += done[0].lines
                continue
            total, carried = _consume(st, done, total, carried)
    _close(st)
    rest = ahead + sum(1 for _ in stream) if st.acct.should_abandon else 0
    st.acct.total = total + rest
    st.acct.parsed(st.acct.total - st.acct.skipped_count - st.acct.parsed_count - rest)
    if rest:
        st.acct.abandon(total, rest)
    return _result(st)


def _vector_pass(block: bytes, *, facts: dict, lock: threading.Lock) -> tuple[Scan, list[pl.DataFrame]]:
    """The column-wise part of one batch (runs in a worker; line numbers 0-based in the batch)."""
    scan = scan_block(block, FAST_RX)
    pieces = [access_frame(scan.access, 0)] if scan.access.height else []
    if scan.slow.height:
        pieces.append(slow_frame(scan.slow, 0, facts, lock))
    return scan, pieces


def _consume(
    st: _State, done: tuple[Scan, list[pl.DataFrame]], total: int, carried: str | None
) -> tuple[int, str | None]:
    """One batch, in file order: its column-wise events kept, its Python rows parsed."""
    scan, pieces = done
    first = total + 1
    rows, moved = resolve_carry(scan, carried)
    if moved is not None:
        pieces = [*pieces, access_frame(moved, 0)]
    if pieces:  # one frame per batch: its rows interleave with this batch's Python events
        frame = pieces[0] if len(pieces) == 1 else pl.concat(pieces).sort("line")
        st.frames.append((first, frame))
    for i, text, ts_text, nul in rows.iter_rows():
        number = first + i
        if not nul or number != st.prev_line + 1:
            # lines are counted as parsed in bulk at the end: a parsed line here (or one
            # between the last line Python saw and this one) ends a run of failed lines
            st.acct.parsed(0)
        st.prev_line = number
        if nul:
            _close(st)
            st.acct.skip(
                "decode_error", number, text, f"{st.ctx.file}:{number}: expected text, saw NUL bytes"
            )
            continue
        _line(st, number, text, ts_text)
    return total + scan.lines, scan.last_ts if scan.last_ts is not None else carried


def _line(st: _State, number: int, text: str, ts_text: str | None) -> None:
    if len(text) > MAX_LINE:
        text = text[: MAX_LINE // 2] + " … " + text[-MAX_LINE // 2 :]
    if "\x1b" in text:
        text = ANSI_RE.sub("", text)
    if text.startswith("\ufeff"):
        text = text[1:]
    prefix = lp.split(text)
    rec = st.open
    if rec is not None and number == rec.last_line + 1 and not prefix.has_prefix:
        if rec.wrap:
            rec.cont.append(text)
            rec.last_line = number
            if SLOW_RE.search(text) or len(rec.cont) >= MAX_WRAP_LINES:
                _close(st)
            return
        if CONT_RE.match(text) and not (text.startswith("Executing ") or WRAP_START_RE.search(text[:40])):
            rec.cont.append(text)
            rec.last_line = number
            return
    _close(st)
    st.kinds[prefix.kind] = st.kinds.get(prefix.kind, 0) + 1
    stamp = lp.to_datetime(prefix)
    if stamp is None and ts_text:
        stamp = lp.parse_stamp(lp.ts_text_of(lp_clean(ts_text)))
    if stamp is not None:
        stamp = st.last_ts = st.normalise(stamp)
    else:
        stamp = st.last_ts
    rec = Record(line=number, ts=stamp, prefix=prefix, last_line=number)
    if prefix.extra_lines:
        rec.cont.extend(prefix.extra_lines)
    msg = prefix.message
    if "Executing " in msg and WRAP_START_RE.search(msg) and not SLOW_RE.search(msg):
        rec.wrap = True
    st.open = rec


def _close(st: _State) -> None:
    rec = st.open
    if rec is None:
        return
    st.open = None
    if rec.ts is not None:
        st.timed += 1
    st.out.record(rec)


def _result(st: _State) -> ParseResult:
    out, acct = st.out, st.acct
    events = _same_time_dtype(out.events.build())
    vectorised, st.mode = finish(st.frames, st.mode, st.ctx.tz)
    if vectorised:
        if vectorised[0].schema["ts"] != events.schema["ts"]:  # no Python-path times to set the dtype
            events = events.with_columns(pl.col("ts", "end").cast(vectorised[0].schema["ts"]))
        for piece in vectorised:
            for kind, fmt, n in piece.group_by("kind", "fmt").len().iter_rows():
                out.kinds[kind] += n
                if fmt:  # each of these lines is a record of its own, in this format
                    st.kinds[fmt] = st.kinds.get(fmt, 0) + n
        events = _interleave(events, vectorised)
    metrics = stall_metrics(events)
    result = ParseResult(metrics=metrics, events=events, accounting=acct, variant=_variant(st.kinds))
    if st.mode == "aware":
        result.tz_reason, result.tz_name = "zone offset printed in the timestamps", "UTC"
    if st.mixed:
        acct.note(
            "tz_mixed",
            f"{st.mixed} timestamps differ from the first one in carrying a zone or not; "
            f"naive ones are read in the file's zone ({st.ctx.tz_reason})",
            level="warning",
        )
    if len(out.untimed):
        untimed = out.untimed.build().drop("ts", "end")
        result.tables["applog_untimed"] = untimed
        where = (
            "the file carries no timestamps at all" if not st.mode else "they come before the first timestamp"
        )
        acct.note(
            "no_timestamp",
            f"{untimed.height} records (of them "
            f"{untimed.filter(pl.col('kind') == 'loop.slow_callback').height} slow callbacks) "
            f"cannot be placed on the timeline: {where}; see the applog_untimed table, or log with a "
            "format that has %(asctime)s",
            level="warning",
        )
    result.hints["applog_event_kinds"] = dict(sorted(out.kinds.items()))
    return result


def _interleave(events: pl.DataFrame, pieces: list[pl.DataFrame]) -> pl.DataFrame:
    """``events`` (Python path, in line order) and the column-wise pieces (one per batch, in
    batch order) merged in line order, the Python event first on a tie. Sorted piece by piece
    and concatenated without copying: a log of millions of access lines is held once."""
    casts = [pl.col(c).cast(events.schema[c]) for c in events.columns]
    py_lines = events.get_column("line").to_numpy()
    if len(py_lines) > 1 and (np.diff(py_lines) < 0).any():  # not expected; the plain way then
        return pl.concat([events, *(p.select(casts) for p in pieces)]).sort("line", maintain_order=True)
    merged, start = [], 0
    while pieces:
        piece = pieces.pop(0).select(casts)
        stop = (
            int(np.searchsorted(py_lines, piece.get_column("line").max(), side="right"))
            if piece.height
            else start
        )
        part = pl.concat([events.slice(start, stop - start), piece])
        merged.append(part.sort("line", maintain_order=True) if stop > start else part)
        start = stop
    merged.append(events.slice(start))
    return pl.concat(merged, rechunk=False)


def _same_time_dtype(events: pl.DataFrame) -> pl.DataFrame:
    """The builder types ``end`` by its own first value; with no spans it is naive even when
    the times are UTC. Give it the dtype of ``ts`` (both come from the same normalised clock)."""
    ts_type, end_type = events.schema["ts"], events.schema["end"]
    if ts_type == end_type:
        return events
    zone = getattr(ts_type, "time_zone", None)
    end = pl.col("end").dt.replace_time_zone(zone) if zone else pl.col("end").dt.replace_time_zone(None)
    return events.with_columns(end.cast(ts_type))


_VARIANTS = {
    "gunicorn": "gunicorn",
    "asctime": "logging with %(asctime)s",
    "basic": "basicConfig LEVEL:name:",
    "level": "level prefix (uvicorn)",
    "json": "JSON lines",
    "none": "no prefix (lastResort)",
}


def _variant(kinds: dict[str, int]) -> str:
    ranked = sorted(kinds.items(), key=lambda kv: -kv[1])
    return " + ".join(_VARIANTS.get(k, k) for k, n in ranked if n) or "empty"
