"""Shared mechanics of the thread-snapshot parsers (``ps_threads``, ``top``, ``proc_status``):
time lines that collectors print before a snapshot, the file-mtime fallback, numbers with
unit suffixes or decimal commas, display-column table splitting, and the ``undated_metrics``
table that keeps samples whose time nobody can tell (instead of inventing one).
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from typing import Any

import polars as pl

from parsers.base import Accounting, ParseContext
from parsers.timeutil import parse_loose

UNDATED_TABLE = "undated_metrics"
UNDATED_SCHEMA = {"snapshot": pl.Int64(), "clock": pl.Utf8(), "entity": pl.Utf8(), "metric": pl.Utf8(),
                  "value": pl.Float64(), "line": pl.Int64()}

_DECOR_RE = re.compile(r"^[\s#=*\-\[]*(.*?)[\s=*\-\]]*$")
_EPOCH_RE = re.compile(r"^(\d{10})(?:\.(\d{1,9}))?$")
_STAMP_HINT_RE = re.compile(r"\d{1,2}:\d{2}:\d{2}|^\d{10}(?:\.\d+)?$")


def time_line(text: str, ctx: ParseContext) -> dt.datetime | None:
    """A line holding only a timestamp, as collector loops print before each snapshot:
    ``date`` output, ``date '+%F %T'``, ``date -Is``, ``date +%s``, possibly decorated as
    ``# ...``, ``=== ... ===`` or ``--- ... ---``. Returns naive wall time of ``ctx.tz``."""
    if len(text) > 80 or not _STAMP_HINT_RE.search(text):
        return None
    m = _DECOR_RE.match(text)
    core = m.group(1) if m else text.strip()
    epoch = _EPOCH_RE.match(core)
    if epoch:
        seconds = int(epoch.group(1)) + float("0." + (epoch.group(2) or "0"))
        if not 946684800 <= seconds < 4102444800:  # 2000..2100: anything else is a number, not a time
            return None
        stamp = dt.datetime.fromtimestamp(seconds, tz=dt.timezone.utc)
        return stamp.astimezone(ctx.tz).replace(tzinfo=None)
    parsed = parse_loose(core)
    if parsed is None:
        return None
    stamp, _ = parsed
    if stamp.tzinfo is not None:
        stamp = stamp.astimezone(ctx.tz).replace(tzinfo=None)
    return stamp


_PROMPT_RE = re.compile(r"^\s*(?:[\w.@~:/\-\[\] ]{0,60}?[$#%>]\s*)(?:sudo\s+)?"
                        r"(?:ps|top|cat|head|tail|grep|date|echo|for|while|watch|awk)\b")


def is_prompt(text: str) -> bool:
    """A shell prompt with the command that produced the listing (``$ ps -eLf``), as pasted
    into tickets and documentation."""
    return _PROMPT_RE.match(text) is not None


def mtime_local(ctx: ParseContext) -> dt.datetime | None:
    """The file's modification time as naive wall time of ``ctx.tz``."""
    if ctx.file_mtime is None:
        return None
    stamp = ctx.file_mtime
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.timezone.utc)
    return stamp.astimezone(ctx.tz).replace(tzinfo=None)


_SUFFIX = {"k": 1.0, "m": 1024.0, "g": 1024.0 ** 2, "t": 1024.0 ** 3, "p": 1024.0 ** 4, "e": 1024.0 ** 5}


def number(text: str | None) -> float | None:
    """``12.5``, ``12,5`` (decimal comma), ``-3``; ``-``/``?``/empty → None."""
    if not text:
        return None
    text = text.strip().rstrip("%")
    if "," in text and "." not in text:
        text = text.replace(",", ".")
    try:
        return float(text)
    except ValueError:
        return None


def kib(text: str | None) -> float | None:
    """A memory amount in KiB: plain numbers are KiB, ``21.4g``/``11,8m``/``512k`` scale."""
    if not text:
        return None
    suffix = text[-1].lower()
    if suffix in _SUFFIX:
        value = number(text[:-1])
        return None if value is None else value * _SUFFIX[suffix]
    return number(text)


_TOKEN_RE = re.compile(r"\S+")


def display_width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def spans(text: str) -> list[tuple[int, int, str]]:
    """Whitespace-separated tokens with their display-column spans ``[start, end)``."""
    if text.isascii() and "\t" not in text:
        return [(m.start(), m.end(), m.group()) for m in _TOKEN_RE.finditer(text)]
    out = []
    col = 0
    token_start = -1
    token_chars: list[str] = []
    for ch in text:
        width = 2 if unicodedata.east_asian_width(ch) in "WF" else 1
        if ch.isspace():
            if token_chars:
                out.append((token_start, col, "".join(token_chars)))
                token_chars = []
            col += 1 if ch != "\t" else 8 - col % 8
            continue
        if not token_chars:
            token_start = col
        token_chars.append(ch)
        col += width
    if token_chars:
        out.append((token_start, col, "".join(token_chars)))
    return out


def assign_by_position(header: list[tuple[int, int, str]], row: list[tuple[int, int, str]],
                       last_is_text: bool) -> list[str | None]:
    """Row tokens → header columns by display-column overlap (right-aligned numbers end under
    their header's end, left-aligned text starts under its header's start). A token under no
    header is dropped; tokens to the right of the last header join the last column when that
    column is free text. Several tokens under one header are joined with a space."""
    values: list[list[str]] = [[] for _ in header]
    last = len(header) - 1
    for start, end, token in row:
        best, best_overlap = -1, 0
        for j, (h_start, h_end, _) in enumerate(header):
            overlap = min(end, h_end) - max(start, h_start)
            if overlap > best_overlap:
                best, best_overlap = j, overlap
        if best < 0 and last_is_text and start >= header[last][0]:
            best = last
        if best >= 0:
            values[best].append(token)
    return [" ".join(v) if v else None for v in values]


class MetricColumns:
    """Metric rows kept column-wise (like ``base.metric_builder`` but without per-row dict
    handling: top and ps files of long captures hold millions of samples)."""

    def __init__(self) -> None:
        self.ts: list[dt.datetime] = []
        self.entity: list[str] = []
        self.metric: list[str] = []
        self.value: list[float] = []
        self.line: list[int] = []

    def add(self, ts: dt.datetime, entity: str, metric: str, value: float, line: int) -> None:
        self.ts.append(ts)
        self.entity.append(entity)
        self.metric.append(metric)
        self.value.append(value)
        self.line.append(line)

    def __len__(self) -> int:
        return len(self.ts)

    def build(self) -> pl.DataFrame:
        return pl.DataFrame({"ts": pl.Series("ts", self.ts, dtype=pl.Datetime("ns")),
                             "entity": pl.Series("entity", self.entity, dtype=pl.Utf8),
                             "metric": pl.Series("metric", self.metric, dtype=pl.Utf8),
                             "value": pl.Series("value", self.value, dtype=pl.Float64),
                             "line": pl.Series("line", self.line, dtype=pl.Int64)})


class UndatedRows:
    """Metric rows of snapshots whose time cannot be told: kept as a table, not on the timeline."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, snapshot: int, clock: str | None, entity: str, metric: str, value: float,
            line: int) -> None:
        self.rows.append({"snapshot": snapshot, "clock": clock, "entity": entity, "metric": metric,
                          "value": value, "line": line})

    def frame(self) -> pl.DataFrame:
        return pl.DataFrame(self.rows, schema=UNDATED_SCHEMA)


def note_mtime(acct: Accounting, line: int, what: str) -> None:
    acct.note("time_from_mtime", f"{what} prints no time of its own and no time line precedes it: "
              "using the file's modification time (when the collector wrote the file)", line=line,
              level="warning")


def note_undated(acct: Accounting, line: int, what: str) -> None:
    acct.note("time_unknown", f"{what} has no time of its own, no time line and no file time: its "
              f"samples are kept in the '{UNDATED_TABLE}' table, not on the timeline", line=line,
              level="warning")
