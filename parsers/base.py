"""The parser contract: what a parser receives (``ParseContext``), what it returns
(``ParseResult``), and the shared bookkeeping (``Accounting``, row builders).

A parser module declares::

    NAME = "iostat"                # unique, lower-case
    DESCRIPTION = "sysstat iostat text and JSON reports"
    SAMPLES = "iostat"             # folder under samples/ with its real samples
    def sniff(head: bytes) -> float: ...          # 0.0 (not mine) .. 1.0 (certainly mine)
    def parse(stream: BinaryIO, *, ctx: ParseContext) -> ParseResult: ...

``parse`` returns times either as naive datetimes (the artifact's local wall clock;
the framework localises them with ``ctx.tz``) or as UTC-aware datetimes (the artifact
carried its own zone or epoch; set ``tz_reason`` on the result to say so).
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO
from zoneinfo import ZoneInfo

import polars as pl

from parsers import schema
from parsers.lines import iter_lines

EXCERPT_CHARS = 120
DETAILED_DIAGNOSTICS_PER_CODE = 20  # further occurrences of a code are only counted
CONSECUTIVE_FAILURE_CAP = 2000  # a file that fails this many lines in a row is abandoned


def excerpt(text: str | bytes | None) -> str:
    """At most EXCERPT_CHARS characters of offending input, printable."""
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = text.rstrip("\r\n")
    if len(text) > EXCERPT_CHARS:
        text = text[: EXCERPT_CHARS - 1] + "…"
    return text


@dataclass
class Diagnostic:
    code: str
    message: str
    file: str = ""
    line: int | None = None
    offset: int | None = None
    excerpt: str = ""
    level: str = "warning"
    count: int = 1

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
        elif self.offset is not None:
            where += f"@{self.offset}"
        text = f"{where}: {self.message}" if where else self.message
        if self.count > 1:
            text += f" (x{self.count})"
        return text


@dataclass
class ParseContext:
    """What the framework tells a parser about the file it is parsing."""

    file: str = "<stream>"  # path inside the bundle, for provenance
    tz: dt.tzinfo = dt.timezone.utc  # zone for naive wall-clock times
    tz_reason: str = "assumed UTC: no zone given or found"
    interval_s: float | None = None  # sampling interval for artifacts without per-sample time
    pg_port: int | None = None
    reference_date: dt.date | None = None  # a date from bundle metadata for time-only artifacts
    file_mtime: dt.datetime | None = None  # UTC, last-resort time hint
    options: dict[str, Any] = field(default_factory=dict)


class Accounting:
    """Counts every record of one file as parsed or skipped-with-a-reason, and keeps
    diagnostics (the first few per code in detail, the rest counted)."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.total = 0
        self.parsed_count = 0
        self.skipped: Counter[str] = Counter()
        self.diagnostics: list[Diagnostic] = []
        self._detail_by_code: Counter[str] = Counter()
        self._overflow: Counter[str] = Counter()
        self._consecutive_failures = 0
        self.abandoned = False

    # -- records --------------------------------------------------------------------
    def parsed(self, n: int = 1) -> None:
        self.parsed_count += n
        self._consecutive_failures = 0

    def skip(self, code: str, line: int | None = None, text: str | bytes | None = None,
             message: str | None = None, n: int = 1, offset: int | None = None) -> None:
        """Count ``n`` records skipped for ``code``; describe the first of them."""
        self.skipped[code] += n
        level = "warning" if schema.is_failure(code) else "info"
        if schema.is_failure(code):
            self._consecutive_failures += n
        else:
            self._consecutive_failures = 0
        self.note(code, message or _DEFAULT_MESSAGES.get(code, code.replace("_", " ")),
                  line=line, text=text, level=level, count=n, offset=offset)

    def note(self, code: str, message: str, *, line: int | None = None,
             text: str | bytes | None = None, level: str = "info", count: int = 1,
             offset: int | None = None) -> None:
        """A diagnostic that is not itself a skipped record (e.g. ``tz_assumed``)."""
        if self._detail_by_code[code] < DETAILED_DIAGNOSTICS_PER_CODE:
            self._detail_by_code[code] += 1
            self.diagnostics.append(Diagnostic(code=code, message=message, file=self.file,
                                               line=line, offset=offset, excerpt=excerpt(text),
                                               level=level, count=count))
        else:
            self._overflow[code] += count

    @property
    def should_abandon(self) -> bool:
        return self._consecutive_failures >= CONSECUTIVE_FAILURE_CAP

    def abandon(self, line: int, remaining: int) -> None:
        """Stop a hopeless file: the remaining records are counted, not parsed."""
        self.abandoned = True
        if remaining > 0:
            self.skipped["abandoned"] += remaining
        self.note("abandoned", f"gave up after {CONSECUTIVE_FAILURE_CAP} consecutive lines nobody "
                  f"understood; {remaining} remaining lines counted as skipped", line=line,
                  level="error")

    @property
    def skipped_count(self) -> int:
        return sum(self.skipped.values())

    def all_diagnostics(self) -> list[Diagnostic]:
        extra = [Diagnostic(code=c, message=f"{n} more occurrences of {c} not listed", file=self.file,
                            level="info", count=n) for c, n in self._overflow.items()]
        return self.diagnostics + extra


_DEFAULT_MESSAGES = {
    "unparsed_line": "expected a record of this format",
    "since_boot_sample": "first report holds averages since boot, not an interval sample",
    "summary_row": "summary (Average) row, not a sample",
    "truncated_record": "record cut short",
    "bad_timestamp": "expected a timestamp",
    "bad_value": "expected a number",
}


@dataclass
class ParseResult:
    """One parsed artifact. Frames follow ``parsers.schema``; a parser may leave the
    ``source``/``host``/``file`` columns out (the framework fills them)."""

    metrics: pl.DataFrame
    events: pl.DataFrame
    accounting: Accounting
    variant: str = ""
    host: str = ""
    tz_reason: str | None = None  # set when the artifact carried its own zone/epoch
    tz_name: str | None = None
    entities: pl.DataFrame | None = None
    tables: dict[str, pl.DataFrame] = field(default_factory=dict)
    hints: dict[str, Any] = field(default_factory=dict)  # e.g. {"tz": "Europe/Berlin"} from host facts


class RowBuilder:
    """Column-wise accumulation of rows; cheap for the modest row counts of
    non-vectorised parsers. ``build()`` returns a DataFrame with the given schema."""

    def __init__(self, columns: Mapping[str, pl.DataType]) -> None:
        self.columns = columns
        self.data: dict[str, list[Any]] = {name: [] for name in columns}

    def add(self, **row: Any) -> None:
        for name, values in self.data.items():
            values.append(row.get(name))

    def __len__(self) -> int:
        return len(next(iter(self.data.values()))) if self.data else 0

    def build(self) -> pl.DataFrame:
        frame = {}
        for name, dtype in self.columns.items():
            values = self.data[name]
            if name in ("ts", "end") and isinstance(dtype, pl.Datetime):
                frame[name] = _datetime_series(name, values)
            else:
                frame[name] = pl.Series(name, values, dtype=dtype, strict=False)
        return pl.DataFrame(frame)


def _datetime_series(name: str, values: list[Any]) -> pl.Series:
    """Datetimes may be naive (artifact-local) or aware; keep naive as naive, convert aware to UTC."""
    sample = next((v for v in values if v is not None), None)
    if sample is not None and sample.tzinfo is not None:
        utc = [v.astimezone(dt.timezone.utc).replace(tzinfo=None) if v is not None else None
               for v in values]
        return pl.Series(name, utc, dtype=pl.Datetime("ns")).dt.replace_time_zone("UTC")
    return pl.Series(name, values, dtype=pl.Datetime("ns"))


# Builder schemas: what parsers fill (the framework adds source/host/file).
METRIC_ROW: dict[str, pl.DataType] = {"ts": pl.Datetime("ns"), "entity": pl.Utf8(), "metric": pl.Utf8(),
              "value": pl.Float64(), "line": pl.Int64()}
EVENT_ROW: dict[str, pl.DataType] = {"ts": pl.Datetime("ns"), "end": pl.Datetime("ns"), "entity": pl.Utf8(), "kind": pl.Utf8(),
             "severity": pl.Utf8(), "value": pl.Float64(), "message": pl.Utf8(), "attrs": pl.Utf8(),
             "line": pl.Int64()}
ENTITY_ROW: dict[str, pl.DataType] = {"entity": pl.Utf8(), "label": pl.Utf8(), "attrs": pl.Utf8()}


def metric_builder() -> RowBuilder:
    return RowBuilder(METRIC_ROW)


def event_builder() -> RowBuilder:
    return RowBuilder(EVENT_ROW)


def entity_builder() -> RowBuilder:
    return RowBuilder(ENTITY_ROW)


def attrs_json(attrs: dict[str, Any]) -> str:
    """Attributes as compact JSON, dropping empty values."""
    return json.dumps({k: v for k, v in attrs.items() if v not in (None, "", [], {})},
                      ensure_ascii=False, default=str, separators=(",", ":"))


def zone_name(tz: dt.tzinfo) -> str:
    if isinstance(tz, ZoneInfo):
        return tz.key
    if tz is dt.timezone.utc:
        return "UTC"
    return str(tz)


def accounted_lines(stream: BinaryIO, acct: Accounting) -> Iterator[tuple[int, str]]:
    """``lines.iter_lines`` that keeps ``acct.total`` current and stops a hopeless file:
    once ``acct.should_abandon``, the remaining lines are counted as ``abandoned``."""
    for number, text in iter_lines(stream):
        acct.total = number
        if acct.should_abandon:
            remaining = sum(1 for _ in stream)
            acct.total += remaining
            acct.abandon(number, remaining + 1)
            return
        yield number, text
