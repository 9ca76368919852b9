"""Tables as PostgreSQL tools print them, read line by line into ``Table`` chunks.

Forms: ``COPY ... CSV [HEADER]`` / ``\\copy`` (RFC-4180 quoting, quoted multi-line values),
``COPY`` text format with a header (tab-separated, ``\\N`` for NULL), psql unaligned (``-A``,
``|``-separated), psql aligned (border 0/1/2: column boundaries come from the ``---+---``
separator because values contain ``|``; multi-line cells end with ``+`` at the cell's right
edge; ``(N rows)`` footers), psql expanded (``-[ RECORD n ]---+---``) and JSON (JSON lines,
``json_agg`` documents, pretty-printed JSON, or such JSON inside a one-column psql table).

Every physical line is accounted: structural lines (headers, separators, footers, blank
lines, psql chatter, ``now()`` tables, timestamp lines) here; data rows by the caller, who gets
each row's first line and its number of physical lines. A one-row, one-column table holding a
timestamp (``SELECT now()``) or a bare timestamp line (``\\echo``, ``date``) becomes the
``time_hint`` of the tables that follow.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from parsers.base import Accounting
from parsers.lines import iter_lines
from parsers.timeutil import UTC, parse_loose, resolve_zone

CHUNK_ROWS = 20_000
MAX_RECORD_LINES = 5_000
MAX_RECORD_CHARS = 8 << 20

IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")
ALIGNED_SEP_RE = re.compile(r"^\+?-+(?:[+ ]-+)*\+?$")
RECORD_RE = re.compile(r"^\+?-\[ RECORD (\d+) \]-*(?:\+-*)?\+?$|^\* Record (\d+)$")
BORDER2_RE = re.compile(r"^\+-[-+]*\+$")
FOOTER_RE = re.compile(r"^\((\d+) rows?\)$")
CHATTER_RE = re.compile(
    r"^(?:SET|BEGIN|COMMIT|ROLLBACK|RESET|DISCARD ALL|CHECKPOINT|LISTEN|NOTIFY|DO|"
    r"CREATE \w+|DROP \w+|ALTER \w+|GRANT|REVOKE|VACUUM|ANALYZE|"
    r"(?:SELECT|COPY|UPDATE|DELETE|MOVE|FETCH) \d+|INSERT \d+ \d+|"
    r"Timing is (?:on|off)\.|Time: [\d.,]+ ms.*|Expanded display is (?:on|off|used automatically)\.|"
    r"Output format is \w+\.|Null display is .*|Pager usage is .*|Border style is \d+\.|"
    r"Tuples only is (?:on|off)\.|Field separator is .*|Record separator is .*|Title is .*|"
    r"Default footer is (?:on|off)\.|You are now connected to .*|psql \(\d.*\)|"
    r"Type \"help\" for help\.|\(\d+ rows?\))$")
COMMENT_RE = re.compile(r"^\s*(?:--|#|==|\*\*|//|>>|<<|\[|snapshot\b|Snapshot\b|SNAPSHOT\b)")
TS_IN_LINE_RE = re.compile(
    r"(\d{4}-\d{2}-\d{2}[ T]\d{1,2}:\d{2}:\d{2}(?:[.,]\d+)?(?:\s?(?:Z|[+-]\d{2}(?::?\d{2})?|UTC|GMT))?)")
PG_TS_RE = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[ T](\d{1,2}:\d{2}:\d{2})(?:[.,](\d{1,9}))?\s?(Z|UTC|GMT|[+-]\d{2}(?::?\d{2}(?::?\d{2})?)?)?$")
POSTGRES_STYLE_RE = re.compile(  # DateStyle 'Postgres': Sat Nov 28 05:40:01.123456 2026 UTC
    r"^[A-Z][a-z]{2} ([A-Z][a-z]{2}) (\d{1,2}) (\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))? (\d{4})(?: (\S+))?$")


@dataclass
class Table:
    """A chunk of one table: rows as lists of text (None = NULL), aligned with ``columns``."""

    form: str  # csv | tsv | unaligned | aligned | expanded | json
    seq: int  # table number in the file; chunks of one table share it
    columns: list[str]
    rows: list[list[str | None]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)  # first physical line of each row
    spans: list[int] = field(default_factory=list)  # physical lines of each row (0: shares a line)
    time_hint: tuple[dt.datetime, int] | None = None  # (time, line) printed before the table
    final: bool = True  # last chunk of this table

    def add(self, values: list[str | None], line: int, span: int) -> None:
        self.rows.append(values)
        self.lines.append(line)
        self.spans.append(span)


def _is_separator(text: str) -> bool:
    stripped = text.strip()
    return len(stripped) >= 3 and ALIGNED_SEP_RE.match(stripped) is not None


# -- timestamps --------------------------------------------------------------------------

_MONTHS = {m: i + 1 for i, m in enumerate(
    ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"])}


def parse_pg_time(text: str | None) -> dt.datetime | None:
    """PostgreSQL/ISO timestamp text → datetime (aware when an offset or UTC is printed).

    ``2026-11-28 05:40:01.123456+00``, ``2026-11-28T05:40:01.1+05:30``, ``... 05:40:01 UTC``,
    DateStyle Postgres ``Sat Nov 28 05:40:01.123456 2026 UTC``; else ``parse_loose`` forms.
    """
    if not text:
        return None
    text = text.strip()
    m = PG_TS_RE.match(text)
    if m:
        frac = (m.group(3) or "")[:6].ljust(6, "0")
        try:
            stamp = dt.datetime.fromisoformat(f"{m.group(1)} {m.group(2).zfill(8)}.{frac}")
        except ValueError:
            return None
        return _with_zone(stamp, m.group(4))
    m = POSTGRES_STYLE_RE.match(text)
    if m:
        frac = (m.group(4) or "")[:6].ljust(6, "0")
        try:
            stamp = dt.datetime(int(m.group(5)), _MONTHS.get(m.group(1), 0), int(m.group(2)),
                                *map(int, m.group(3).split(":")), int(frac))
        except ValueError:
            return None
        return _with_zone(stamp, m.group(6))
    loose = parse_loose(text)
    return loose[0] if loose else None


def _with_zone(stamp: dt.datetime, zone: str | None) -> dt.datetime | None:
    if not zone:
        return stamp
    if zone in ("Z", "UTC", "GMT"):
        return stamp.replace(tzinfo=UTC)
    if zone[0] in "+-":
        parts = zone[1:].replace(":", "")
        hours, minutes = int(parts[:2]), int(parts[2:4] or 0)
        if hours > 18 or minutes > 59:
            return None
        sign = -1 if zone[0] == "-" else 1
        return stamp.replace(tzinfo=dt.timezone(sign * dt.timedelta(hours=hours, minutes=minutes)))
    try:
        return stamp.replace(tzinfo=resolve_zone(zone))
    except ValueError:
        return stamp  # an abbreviation such as CET: wall time, zone left to the policy


# date(1)'s %Z for zones whose abbreviation names one offset (others stay wall time)
ZONE_ABBREVIATIONS = {
    "EST": -5, "EDT": -4, "CST": -6, "CDT": -5, "MST": -7, "MDT": -6, "PST": -8, "PDT": -7,
    "AKST": -9, "AKDT": -8, "HST": -10, "CET": 1, "CEST": 2, "EET": 2, "EEST": 3, "WET": 0, "WEST": 1,
    "MSK": 3, "JST": 9, "KST": 9, "AEST": 10, "AEDT": 11, "NZST": 12, "NZDT": 13,
}
ABBREV_TS_RE = re.compile(r"^(\d{4}-\d{2}-\d{2}[ T]\d{1,2}:\d{2}:\d{2}(?:[.,]\d+)?)\s*([A-Z]{2,5})$")


def timestamp_line(text: str) -> dt.datetime | None:
    """A short line that is (mostly) one timestamp: ``2026-11-28 05:40:01+00``,
    ``=== 2026-11-28 05:40:01 UTC ===``, ``Fri Nov 28 05:40:01 UTC 2026``."""
    stripped = text.strip().strip("=#*-[]<> ").strip()
    if not stripped or len(stripped) > 80:
        return None
    whole = parse_pg_time(stripped)
    if whole is not None:
        return whole
    m = ABBREV_TS_RE.match(stripped)
    if m:
        stamp = parse_pg_time(m.group(1))
        hours = ZONE_ABBREVIATIONS.get(m.group(2))
        if stamp is not None and hours is not None:
            return stamp.replace(tzinfo=dt.timezone(dt.timedelta(hours=hours)))
        return stamp
    m = TS_IN_LINE_RE.search(stripped)
    if m and len(stripped) - len(m.group(1)) <= 30:
        return parse_pg_time(m.group(1))
    return None


# -- display width (psql pads by display columns, not characters) ------------------------

def _char_width(ch: str) -> int:
    if unicodedata.combining(ch):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def _display_index(text: str) -> list[int]:
    """For each display column, the character index that starts at or covers it (+ end)."""
    index: list[int] = []
    for i, ch in enumerate(text):
        index.extend([i] * _char_width(ch))
    index.append(len(text))
    return index


def _slice(text: str, index: list[int] | None, start: int, end: int | None) -> str:
    if index is None:
        return text[start:end]
    size = len(index) - 1
    a = index[min(start, size)]
    b = len(text) if end is None else index[min(end, size)]
    return text[a:b]


def _at(text: str, index: list[int] | None, pos: int) -> str:
    if index is None:
        return text[pos] if 0 <= pos < len(text) else ""
    if 0 <= pos < len(index) - 1:
        return text[index[pos]]
    return ""


def _width(text: str) -> int:
    return len(text) if text.isascii() else len(_display_index(text)) - 1


# -- value helpers ---------------------------------------------------------------------

def json_text(value: Any) -> str | None:
    if value is None:
        return None
    if value is True:
        return "t"
    if value is False:
        return "f"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _tsv_value(text: str) -> str | None:
    if text == "\\N":
        return None
    if "\\" not in text:
        return text
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f",
                                        "v": "\v"}.get(m.group(1), m.group(1)), text)


def _csv_header(text: str) -> tuple[list[str], str] | None:
    for delim in (",", "\t", "|"):
        if delim not in text:
            continue
        names = [n.strip().strip('"') for n in text.split(delim)]
        if len(names) >= 2 and all(IDENT_RE.match(n) for n in names):
            return names, delim
    return None


# -- the reader ------------------------------------------------------------------------

class TableReader:
    """Feeds lines through a small state machine; ``tables`` collects finished chunks.

    ``text_columns``: names of free-text columns (``query``) used to re-join ``|`` inside
    values of psql's unaligned output.
    """

    def __init__(self, acct: Accounting, *, text_columns: tuple[str, ...] = ("query",),
                 chunk_rows: int = CHUNK_ROWS) -> None:
        self.acct = acct
        self.text_columns = text_columns
        self.chunk_rows = chunk_rows
        self.tables: list[Table] = []
        self.hint: tuple[dt.datetime, int] | None = None
        self.seq = 0
        self.mode = "idle"
        self.pending: tuple[int, str] | None = None
        self.table: Table | None = None
        self.forms: set[str] = set()
        # csv / tsv / unaligned
        self.delim = ","
        self.header_text = ""
        self.record: list[str] = []
        self.record_start = 0
        # aligned
        self.bounds: list[tuple[int, int]] = []
        self.border = 1
        self.row: list[str] | None = None
        self.row_start = 0
        self.row_span = 0
        self.markers: list[str] = []
        # expanded
        self.name_end = 0
        self.value_width = 0
        self.fields: dict[str, str] = {}
        self.last_field = ""
        self.last_marker = ""
        # json
        self.json_buf: list[str] = []
        self.json_start = 0

    # public ---------------------------------------------------------------------------
    def feed(self, number: int, text: str) -> None:
        if len(text) > MAX_RECORD_CHARS:
            text = text[:MAX_RECORD_CHARS]
        handler = getattr(self, f"_in_{self.mode}")
        handler(number, text)

    def close(self, last_line: int) -> None:
        if self.mode == "csv" and self.record:
            self._csv_fail(f"expected the closing quote of a CSV value opened on line {self.record_start}")
        elif self.mode == "json":
            self._json_fail()
        elif self.mode == "aligned":
            self._aligned_flush()
        elif self.mode == "expanded":
            self._expanded_flush()
        if self.pending is not None:
            self._resolve_pending(None)
        self._end_table()

    def drain(self) -> list[Table]:
        out, self.tables = self.tables, []
        return out

    # table bookkeeping ------------------------------------------------------------------
    def _start_table(self, form: str, columns: list[str]) -> None:
        self._end_table()
        self.seq += 1
        self.forms.add(form)
        self.table = Table(form=form, seq=self.seq, columns=columns, time_hint=self.hint)

    def _end_table(self) -> None:
        table = self.table
        self.table = None
        self.mode = "idle"
        if table is None:
            return
        table.final = True
        if self._is_time_table(table):
            return
        if len(table.columns) == 1 and table.rows and table.form in ("aligned", "expanded"):
            table = self._json_cells(table)
        if table.rows or table.final:
            self.tables.append(table)

    def _maybe_chunk(self) -> None:
        table = self.table
        if table is not None and len(table.rows) >= self.chunk_rows:
            table.final = False
            self.tables.append(table)
            self.table = Table(form=table.form, seq=table.seq, columns=table.columns,
                               time_hint=table.time_hint)

    def _is_time_table(self, table: Table) -> bool:
        if len(table.columns) != 1 or len(table.rows) != 1 or table.seq != self.seq:
            return False
        stamp = parse_pg_time(table.rows[0][0])
        if stamp is None:
            return False
        self.hint = (stamp, table.lines[0])
        self.acct.parsed(table.spans[0])
        return True

    def _json_cells(self, table: Table) -> Table:
        """A one-column psql table whose cells hold JSON → the JSON's rows."""
        first = (table.rows[0][0] or "").lstrip()
        if not first.startswith(("[", "{")):
            return table
        out = Table(form="json", seq=table.seq, columns=[], time_hint=table.time_hint)
        fallback = 0
        for cell, line, span in zip(table.rows, table.lines, table.spans, strict=False):
            objects = _json_objects(cell[0] or "", line, span)
            if objects is None:  # pretty-printed JSON: one document over the cell's lines
                try:
                    value = json.loads(cell[0] or "")
                except ValueError:
                    fallback += span
                    continue
                items = [v for v in (value if isinstance(value, list) else [value]) if isinstance(v, dict)]
                objects = [(obj, line, span if k == 0 else 0) for k, obj in enumerate(items)]
                if not objects:
                    self.acct.parsed(span)
            for obj, obj_line, obj_span in objects:
                _add_json_row(out, obj, obj_line, obj_span)
        if fallback:
            self.acct.skip("unparsed_line", table.lines[0], table.rows[0][0],
                           f"{self.acct.file}:{table.lines[0]}: expected JSON objects in the "
                           f"{table.columns[0]!r} column", n=fallback)
        return out

    # idle -------------------------------------------------------------------------------
    def _in_idle(self, number: int, text: str) -> None:
        if self.pending is not None:
            pn, pt = self.pending
            if _is_separator(text) and pt.strip() and not FOOTER_RE.match(pt.strip()):
                self.pending = None
                self.acct.parsed(2)
                self._start_aligned(pt, text)
                return
            self._resolve_pending(number)
            if self.mode != "idle":
                self.feed(number, text)
                return
        stripped = text.strip()
        if not stripped:
            self.acct.parsed()
            return
        if RECORD_RE.match(stripped):
            self._start_expanded(number, text)
            return
        if BORDER2_RE.match(stripped):  # the top frame line of \pset border 2
            self.acct.parsed()
            return
        self.pending = (number, text)

    def _resolve_pending(self, next_number: int | None) -> None:
        assert self.pending is not None
        number, text = self.pending
        self.pending = None
        stripped = text.strip()
        header = _csv_header(stripped)
        if header is not None and not (header[1] == "|" and " | " in text):
            names, delim = header
            self.acct.parsed()
            self._start_table({",": "csv", "\t": "tsv", "|": "unaligned"}[delim], names)
            self.mode, self.delim, self.header_text = "csv", delim, stripped
            return
        if stripped.startswith(("[", "{")):
            self._start_json(number, text)
            return
        if CHATTER_RE.match(stripped):
            self.acct.parsed()
            return
        stamp = timestamp_line(stripped)
        if stamp is not None:
            self.hint = (stamp, number)
            self.acct.parsed()
            return
        if COMMENT_RE.match(stripped):
            self.acct.skip("comment", number, text, f"{self.acct.file}:{number}: a comment or banner line")
            return
        self.acct.skip("unparsed_line", number, text,
                       f"{self.acct.file}:{number}: expected a psql table, a CSV/TSV header, JSON, "
                       "or a timestamp line")

    # csv / tsv / unaligned ---------------------------------------------------------------
    def _in_csv(self, number: int, text: str) -> None:
        table = self.table
        assert table is not None
        if self.record:
            if text.strip() == self.header_text:
                self._csv_fail(f"expected the closing quote of a CSV value opened on line {self.record_start}")
            else:
                self.record.append(text)
                if self._csv_complete():
                    self._csv_emit()
                elif len(self.record) > MAX_RECORD_LINES:
                    self._csv_fail("expected the closing quote within "
                                   f"{MAX_RECORD_LINES} lines of line {self.record_start}")
                return
        stripped = text.strip()
        if not stripped:
            self.acct.parsed()
            self._end_table()
            return
        if stripped == self.header_text:  # a header per snapshot
            self.acct.parsed()
            columns = table.columns
            form = table.form
            self._start_table(form, columns)
            self.mode = "csv"
            return
        if self.delim != "|" or not FOOTER_RE.match(stripped):
            header = _csv_header(stripped)
            if header is not None and header[1] == self.delim and header[0] != table.columns:
                self.acct.parsed()
                self._start_table(table.form, header[0])
                self.mode, self.header_text = "csv", stripped
                return
        if FOOTER_RE.match(stripped) or CHATTER_RE.match(stripped):
            self.acct.parsed()
            if self.delim == "|":
                self._end_table()
            return
        if self.delim not in text:
            stamp = timestamp_line(stripped)
            if stamp is not None:  # a timestamp between headerless snapshots
                self.hint = (stamp, number)
                self.acct.parsed()
                columns, form, header_text = table.columns, table.form, self.header_text
                self._start_table(form, columns)
                self.mode, self.header_text = "csv", header_text
                return
        self.record, self.record_start = [text], number
        if self._csv_complete():
            self._csv_emit()

    def _csv_complete(self) -> bool:
        if self.delim != ",":
            return True
        return sum(part.count('"') for part in self.record) % 2 == 0

    def _csv_emit(self) -> None:
        table = self.table
        assert table is not None
        lines, start = self.record, self.record_start
        self.record = []
        n = len(table.columns)
        if self.delim == ",":
            try:
                fields = next(csv.reader(["\n".join(lines)], strict=False), [])
            except csv.Error:
                fields = []
            values: list[str | None] = [f if f != "" else None for f in fields]
        elif self.delim == "\t":
            values = [_tsv_value(f) for f in "\n".join(lines).split("\t")]
        else:
            values = self._split_unaligned("\n".join(lines), n)
        if len(values) != n:
            if self.delim == "|" and len(values) < n and table.rows and self._unaligned_continue(lines[0]):
                self.acct.parsed(len(lines))
                return
            self.acct.skip("unparsed_line", start, lines[0],
                           f"{self.acct.file}:{start}: expected {n} {table.form} fields as in the header, "
                           f"saw {len(values)}", n=len(lines))
            return
        table.add(values, start, len(lines))
        self._maybe_chunk()

    def _split_unaligned(self, text: str, n: int) -> list[str | None]:
        parts: list[str | None] = list(text.split("|"))
        table = self.table
        assert table is not None
        extra = len(parts) - n
        if extra > 0:
            where = next((i for i, c in enumerate(table.columns) if c in self.text_columns), n - 1)
            merged = "|".join(p or "" for p in parts[where: where + extra + 1])
            parts = parts[:where] + [merged] + parts[where + extra + 1:]
        return parts

    def _unaligned_continue(self, text: str) -> bool:
        """A line of a multi-line value in unaligned output: append it to the last row."""
        table = self.table
        assert table is not None
        where = next((i for i, c in enumerate(table.columns) if c in self.text_columns), None)
        if where != len(table.columns) - 1:
            return False
        row = table.rows[-1]
        row[where] = (row[where] or "") + "\n" + text
        table.spans[-1] += 1
        return True

    def _csv_fail(self, message: str) -> None:
        lines, start = self.record, self.record_start
        self.record = []
        self.acct.skip("unparsed_line", start, lines[0] if lines else "",
                       f"{self.acct.file}:{start}: {message}", n=len(lines))

    # aligned ----------------------------------------------------------------------------
    def _start_aligned(self, header: str, separator: str) -> None:
        sep = separator.rstrip()
        lead = len(separator) - len(separator.lstrip())
        if sep.lstrip().startswith("+"):
            self.border = 2
            plus = [i for i, ch in enumerate(sep) if ch == "+"]
            bounds = [(plus[i] + 1, plus[i + 1]) for i in range(len(plus) - 1)]
        elif "+" in sep:
            self.border = 1
            plus = [i for i, ch in enumerate(sep) if ch == "+"]
            edges = [lead - 1, *plus, len(sep)]
            bounds = [(edges[i] + 1, edges[i + 1]) for i in range(len(edges) - 1)]
        else:
            self.border = 0 if " " in sep.strip() else 1
            if self.border == 0:
                runs = [(m.start(), m.end()) for m in re.finditer(r"-+", sep)]
                bounds = runs
            else:
                bounds = [(lead, len(sep))]
        self.bounds = bounds
        index = None if header.isascii() else _display_index(header)
        names = [self._cell(header, index, i)[0].strip() for i in range(len(bounds))]
        names = [n or f"column{i + 1}" for i, n in enumerate(names)]
        self._start_table("aligned", names)
        self.mode = "aligned"
        self.row = None

    def _cell(self, text: str, index: list[int] | None, i: int) -> tuple[str, str]:
        """(content, marker) of column ``i`` in one printed line."""
        a, b = self.bounds[i]
        if self.border == 0:
            return _slice(text, index, a, b).rstrip(), _at(text, index, b)
        content = _slice(text, index, a + 1, b - 1)
        marker = _at(text, index, b - 1)
        return content.rstrip(), marker

    def _is_data_line(self, text: str, index: list[int] | None) -> bool:
        if self.border == 0:
            return True
        for _a, b in self.bounds[:-1]:
            if _at(text, index, b) != "|":
                return False
        if self.border == 2:
            return text.lstrip().startswith("|")
        return True

    def _in_aligned(self, number: int, text: str) -> None:
        stripped = text.strip()
        if self.row is not None and "+" not in self.markers and "." not in self.markers:
            self._aligned_flush()
        if not stripped or FOOTER_RE.match(stripped) or ALIGNED_SEP_RE.match(stripped) and self.border == 2:
            if self.row is not None:
                self._aligned_flush()
            self.acct.parsed()
            if not stripped or FOOTER_RE.match(stripped):
                self._end_table()
            return
        index = None if text.isascii() else _display_index(text)
        if not self._is_data_line(text, index):
            if self.row is not None:
                self._aligned_flush()
            self._end_table()
            self._in_idle(number, text)
            return
        cells = [self._cell(text, index, i) for i in range(len(self.bounds))]
        if self.row is None:
            self.row = [c for c, _m in cells]
            self.row_start, self.row_span = number, 1
        else:
            for i, (content, _m) in enumerate(cells):
                if self.markers[i] == "+":
                    self.row[i] += "\n" + content
                elif self.markers[i] == ".":
                    self.row[i] += content
            self.row_span += 1
        self.markers = [m for _c, m in cells]
        # the last column is only padded when it carries a marker
        last_a, last_b = self.bounds[-1]
        if self.border == 1 and _width(text) != last_b:
            self.markers[-1] = " "

    def _aligned_flush(self) -> None:
        if self.row is None or self.table is None:
            self.row = None
            return
        values: list[str | None] = list(self.row)
        self.table.add(values, self.row_start, self.row_span)
        self.row = None
        self.markers = []
        self._maybe_chunk()

    # expanded ---------------------------------------------------------------------------
    def _start_expanded(self, number: int, text: str) -> None:
        stripped = text.rstrip()
        if self.mode != "expanded":
            self._start_table("expanded", [])
            self.mode = "expanded"
        else:
            self._expanded_flush()
        plus = stripped.find("+", 2)
        self.name_end = plus if plus > 0 else -1
        self.value_width = _width(stripped)
        self.fields = {}
        self.last_field = ""
        self.last_marker = ""
        self.row_start, self.row_span = number, 1

    def _in_expanded(self, number: int, text: str) -> None:
        stripped = text.strip()
        if RECORD_RE.match(stripped):
            self._start_expanded(number, text)
            return
        if not stripped or FOOTER_RE.match(stripped):
            self._expanded_flush()
            self.acct.parsed()
            self._end_table()
            return
        if self.border_line(stripped):
            self.row_span += 1
            return
        name, sep, value = self._split_field(text)
        if not sep:
            self._expanded_flush()
            self._end_table()
            self._in_idle(number, text)
            return
        marker = ""
        if value.endswith("+") and _width(text.rstrip("|").rstrip()) >= self.value_width + 1:
            value, marker = value[:-1], "+"
        value = value.rstrip()
        if not name and self.last_marker == "+" and self.last_field:
            self.fields[self.last_field] += "\n" + value
        elif name:
            self.fields[name] = value
            self.last_field = name
        self.last_marker = marker
        self.row_span += 1

    @staticmethod
    def border_line(stripped: str) -> bool:
        return stripped.startswith("+-") and set(stripped) <= {"+", "-"}

    def _split_field(self, text: str) -> tuple[str, str, str]:
        body = text[1:] if text.startswith("|") else text  # border 2
        if body.endswith("|") and text.startswith("|"):
            body = body[:-1]
        pos = self.name_end - (1 if text.startswith("|") else 0)
        if 0 < pos < len(body) and body[pos] == "|":
            name, value = body[:pos], body[pos + 1:]
        else:
            name, sep, value = body.partition("|")
            if not sep:
                return "", "", ""
        return name.strip(), "|", value[1:] if value.startswith(" ") else value

    def _expanded_flush(self) -> None:
        if not self.fields or self.table is None:
            if self.row_span and self.table is not None and self.row_start:
                self.acct.parsed(self.row_span)  # an empty record header
            self.fields, self.row_span, self.row_start = {}, 0, 0
            return
        table = self.table
        for name in self.fields:
            if name not in table.columns:
                table.columns.append(name)
                for row in table.rows:
                    row.append(None)
        values: list[str | None] = [self.fields.get(c) for c in table.columns]
        table.add(values, self.row_start, self.row_span)
        self.fields, self.row_span, self.row_start = {}, 0, 0
        self._maybe_chunk()

    # json -------------------------------------------------------------------------------
    def _start_json(self, number: int, text: str) -> None:
        if self.table is None or self.table.form != "json":
            self._start_table("json", [])
        self.mode = "json"
        self.json_buf, self.json_start = [], number
        self._in_json(number, text)

    def _in_json(self, number: int, text: str) -> None:
        table = self.table
        assert table is not None
        if not self.json_buf:
            stripped = text.strip()
            if not stripped:
                self.acct.parsed()
                self._end_table()
                return
            if not stripped.startswith(("[", "{", "]", ",")):
                self._end_table()
                self._in_idle(number, text)
                return
            objects = _json_objects(text, number, 1)
            if objects is not None:
                for obj, line, span in objects:
                    _add_json_row(table, obj, line, span)
                if not objects:
                    self.acct.parsed()
                self._maybe_chunk()
                return
            self.json_start = number
        self.json_buf.append(text)
        if sum(len(t) for t in self.json_buf) > MAX_RECORD_CHARS or len(self.json_buf) > MAX_RECORD_LINES * 20:
            self._json_fail()
            return
        doc = "\n".join(self.json_buf)
        if _balanced(doc):
            try:
                value = json.loads(doc)
            except ValueError:
                self._json_fail()
                return
            span = len(self.json_buf)
            self.json_buf = []
            items = value if isinstance(value, list) else [value]
            dicts = [v for v in items if isinstance(v, dict)]
            if not dicts:
                self.acct.parsed(span)
            for k, obj in enumerate(dicts):
                _add_json_row(table, obj, self.json_start, span if k == 0 else 0)

    def _json_fail(self) -> None:
        if self.json_buf:
            self.acct.skip("unparsed_line", self.json_start, self.json_buf[0],
                           f"{self.acct.file}:{self.json_start}: expected a complete JSON document",
                           n=len(self.json_buf))
        self.json_buf = []
        self._end_table()


def _add_json_row(table: Table, obj: dict[str, Any], line: int, span: int) -> None:
    for name in obj:
        if name not in table.columns:
            table.columns.append(name)
            for row in table.rows:
                row.append(None)
    table.add([json_text(obj.get(c)) for c in table.columns], line, span)


def _json_objects(text: str, line: int, span: int) -> list[tuple[dict[str, Any], int, int]] | None:
    """Objects of a JSON text that is complete on its own lines (JSON lines, one ``json_agg``
    document per line, or one element per line as in ``[{..}, +`` cells); None if incomplete."""
    parts = text.split("\n")
    out: list[tuple[dict[str, Any], int, int]] = []
    for k, part in enumerate(parts):
        piece = part.strip()
        if not piece:
            continue
        try:
            value = json.loads(piece)
        except ValueError:
            piece = piece.lstrip("[").rstrip("]").rstrip().rstrip(",").strip()
            if not piece:
                continue
            try:
                value = json.loads(piece)
            except ValueError:
                return None
        items = value if isinstance(value, list) else [value]
        first = True
        for item in items:
            if isinstance(item, dict):
                out.append((item, line + k, (span if len(parts) == 1 else 1) if first else 0))
                first = False
        if first:
            return None if not items else out
    return out


def _balanced(doc: str) -> bool:
    """True when brackets outside JSON strings balance (a complete document)."""
    depth = 0
    in_string = escape = False
    for ch in doc:
        if in_string:
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
    return depth <= 0


def read_tables(stream: BinaryIO, acct: Accounting, *, text_columns: tuple[str, ...] = ("query",),
                chunk_rows: int = CHUNK_ROWS,
                on_chunk: Callable[[Table], None] | None = None) -> Iterator[Table]:
    """Yield table chunks of ``stream`` in order while accounting structural lines."""
    reader = TableReader(acct, text_columns=text_columns, chunk_rows=chunk_rows)
    last = 0
    for number, text in iter_lines(stream):
        last = number
        acct.total = number
        if acct.should_abandon:
            rest = sum(1 for _ in stream)
            acct.total += rest
            acct.abandon(number, rest + 1)
            reader.pending = None
            reader.record = []
            reader.json_buf = []
            reader.row = None
            reader.fields = {}
            break
        reader.feed(number, text)
        if reader.tables:
            yield from reader.drain()
    reader.close(last)
    yield from reader.drain()
    acct.forms = sorted(reader.forms)  # type: ignore[attr-defined]


JSON_KEY_RE = re.compile(r'"([A-Za-z_][A-Za-z0-9_]*)"\s*:')


def head_columns(lines: list[str]) -> list[list[str]]:
    """Column-name lists visible in a sniffing head: CSV/TSV/unaligned headers, aligned
    headers (the line before a ``---+---`` separator), expanded records, JSON keys."""
    found: list[list[str]] = []
    expanded: list[str] = []
    in_record = False
    for i, line in enumerate(lines):
        stripped = line.strip()
        if RECORD_RE.match(stripped):
            in_record = True
            continue
        if in_record:
            name, sep, _value = stripped.partition("|")
            if sep and IDENT_RE.match(name.strip()):
                expanded.append(name.strip())
                continue
            if sep and not name.strip():
                continue
            in_record = False
        header = _csv_header(stripped)
        if header is not None:
            found.append(header[0])
            continue
        if i + 1 < len(lines) and _is_separator(lines[i + 1]) and "|" in stripped:
            names = [n.strip() for n in stripped.split("|")]
            if all(IDENT_RE.match(n) for n in names if n):
                found.append([n for n in names if n])
    if expanded:
        found.append(expanded)
    keys = JSON_KEY_RE.findall("\n".join(lines[:40]))
    if keys:
        found.append(list(dict.fromkeys(keys)))
    return found


class SnapshotClock:
    """Snapshot-time texts → naive datetimes on one axis for the whole file.

    The first parsed time decides: with an offset (timestamptz), everything becomes naive UTC
    (times without an offset are read in ``tz``); without one, everything becomes wall time
    of ``tz`` (times with an offset are converted to it) and the time-zone policy applies.
    """

    def __init__(self, tz: dt.tzinfo) -> None:
        self.tz = tz
        self.mode: str | None = None  # "utc" | "local"
        self.kinds: set[str] = set()
        self.cache: dict[str, dt.datetime | None] = {}

    def to_ts(self, text: str | None) -> dt.datetime | None:
        if text is None:
            return None
        if text not in self.cache:
            self.cache[text] = parse_pg_time(text)
        stamp = self.cache[text]
        if stamp is None:
            return None
        self.kinds.add("aware" if stamp.tzinfo else "naive")
        if self.mode is None:
            self.mode = "utc" if stamp.tzinfo else "local"
        if self.mode == "utc":
            if stamp.tzinfo is None:
                stamp = stamp.replace(tzinfo=self.tz)
            return stamp.astimezone(UTC).replace(tzinfo=None)
        if stamp.tzinfo is not None:
            return stamp.astimezone(self.tz).replace(tzinfo=None)
        return stamp

    def finish(self, result: Any, acct: Accounting, tz_reason: str) -> None:
        """Mark ``result``'s ts/end columns UTC when the file carried its own offsets."""
        import polars as pl

        if self.mode != "utc":
            return
        for name in ("metrics", "events"):
            frame = getattr(result, name)
            cols = [pl.col(c).dt.replace_time_zone("UTC") for c in ("ts", "end") if c in frame.columns]
            setattr(result, name, frame.with_columns(cols))
        result.tz_reason = "snapshot times carry a UTC offset (timestamptz)"
        result.tz_name = "UTC"
        if "naive" in self.kinds:
            acct.note("tz_mixed", "some snapshot times carry an offset and some do not; those without "
                      f"were read in the file's zone ({tz_reason})", level="warning")
