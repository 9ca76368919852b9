"""Python logging line prefixes (FORMATS.md §4.3): find the record time, level, logger,
pid and message of one log line, whatever common formatter wrote it.

The regex strings ``*_RX`` are written in the syntax shared by Python ``re`` and Rust
``regex`` (polars), so the vectorised pre-filter and the per-line parser agree.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass

from parsers.timeutil import UTC, parse_iso

LEVELS = "DEBUG|INFO|WARNING|WARN|ERROR|CRITICAL|FATAL|EXCEPTION|TRACE|NOTICE"
# a line that begins a log record: a level word, a timestamp (optionally in [..]), or JSON
PREFIX_RX = r"^(?:\x1b\[[0-9;]*m)*(?:\.*\[?(?:" + LEVELS + r")\b|\[?\d{4}-\d\d-\d\d[T ]\d\d:\d\d|\{\s*\")"
# a line whose time can be inherited by the unprefixed lines after it
TS_START_RX = r"^(?:\x1b\[[0-9;]*m)*\[?\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d"

_TS = r"(?P<ts>\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d{1,9})?(?: ?(?:Z|[+-]\d\d:?\d\d)\b)?)"
_GUNICORN_RE = re.compile(r"^\[" + _TS + r"\] \[(?P<pid>\d+)\] \[(?P<level>[A-Z]+)\] (?P<msg>.*)$")
_TS_FIRST_RE = re.compile(r"^\[?" + _TS + r"\]?")
_LEVEL_FIRST_RE = re.compile(
    r"^\.*\[?(?P<level>" + LEVELS + r")\]?(?::(?P<name>[\w.\-<>]*):|:\s+|\s+)(?P<msg>.*)$"
)
# what follows a timestamp, in the orders people configure
_AFTER_TS = [
    re.compile(
        r"^(?P<level>" + LEVELS + r"):(?P<name>[\w.\-<>]*):(?P<msg>.*)$"
    ),  # asctime%(levelname)s:%(name)s:
    re.compile(r"^\[?(?P<level>" + LEVELS + r")\]?\s+\[?(?P<name>[\w.\-<>]+)\]?:\s(?P<msg>.*)$"),
    re.compile(r"^(?P<name>[\w.\-<>]+)\s+-\s+(?P<level>" + LEVELS + r")\s+-\s+(?P<msg>.*)$"),
    re.compile(r"^\[?(?P<level>" + LEVELS + r")\]?\s*(?:-|:|\|)?\s*(?P<msg>.*)$"),
    re.compile(
        r"^(?P<name>[\w.\-<>]+)\s*(?:-|:|\|)\s*\[?(?P<level>" + LEVELS + r")\]?\s*(?:-|:|\|)?\s*(?P<msg>.*)$"
    ),
]
_PID_RE = re.compile(r"^\[(?P<pid>\d+)\]\s*")
_TS_KEYS = ("time", "timestamp", "asctime", "ts", "@timestamp", "datetime", "date")
_MSG_KEYS = ("message", "msg", "event", "text")
_LEVEL_KEYS = ("levelname", "level", "severity", "log.level", "loglevel")
_NAME_KEYS = ("name", "logger", "logger_name", "log.logger")
_EXC_KEYS = ("exc_info", "exception", "exc_text", "stack_trace", "traceback", "stack_info")


@dataclass
class Prefix:
    kind: str  # gunicorn | asctime | basic | level | json | none
    ts_text: str = ""
    level: str = ""
    logger: str = ""
    pid: str = ""
    message: str = ""
    extra_lines: tuple[str, ...] = ()  # JSON exc_info split into lines
    epoch: float | None = None  # JSON numeric time

    @property
    def has_prefix(self) -> bool:
        return self.kind != "none"


def split(text: str) -> Prefix:
    """``text`` is one cleaned line (no ANSI, no CR)."""
    if not text:
        return Prefix("none")
    first = text[0]
    if first == "{":
        return _json(text)
    if first == "[":
        m = _GUNICORN_RE.match(text)
        if m:
            return Prefix(
                "gunicorn", m.group("ts"), _norm_level(m.group("level")), "", m.group("pid"), m.group("msg")
            )
    if first.isdigit() or first == "[":
        m = _TS_FIRST_RE.match(text)
        if m:
            rest = text[m.end() :].lstrip(" \t-|,")
            pid = ""
            pm = _PID_RE.match(rest)
            if pm:
                pid, rest = pm.group("pid"), rest[pm.end() :]
            for rx in _AFTER_TS:
                lm = rx.match(rest)
                if lm:
                    groups = lm.groupdict()
                    return Prefix(
                        "asctime",
                        m.group("ts"),
                        _norm_level(groups["level"]),
                        groups.get("name") or "",
                        pid,
                        groups["msg"],
                    )
            return Prefix("asctime", m.group("ts"), "", "", pid, rest)
    if first.isupper() or first in ".[":
        m = _LEVEL_FIRST_RE.match(text)
        if m:
            kind = "basic" if m.group("name") is not None else "level"
            return Prefix(kind, "", _norm_level(m.group("level")), m.group("name") or "", "", m.group("msg"))
    return Prefix("none", message=text)


def _norm_level(level: str) -> str:
    level = level.upper()
    return {"WARN": "WARNING", "FATAL": "CRITICAL", "EXCEPTION": "ERROR"}.get(level, level)


def _json(text: str) -> Prefix:
    try:
        doc = json.loads(text)
    except ValueError:
        return Prefix("none", message=text)
    if not isinstance(doc, dict):
        return Prefix("none", message=text)

    def pick(keys: tuple[str, ...]) -> object:
        for key in keys:
            if key in doc and doc[key] not in (None, ""):
                return doc[key]
        return None

    stamp = pick(_TS_KEYS)
    epoch = float(stamp) if isinstance(stamp, (int, float)) and not isinstance(stamp, bool) else None
    msg = pick(_MSG_KEYS)
    exc = pick(_EXC_KEYS)
    extra: tuple[str, ...] = ()
    if isinstance(exc, str):
        extra = tuple(exc.split("\n"))
    elif isinstance(exc, list):
        extra = tuple(str(x) for x in exc)
    level = pick(_LEVEL_KEYS)
    pid = pick(("process", "pid"))
    return Prefix(
        "json",
        str(stamp) if isinstance(stamp, str) else "",
        _norm_level(str(level or "")),
        str(pick(_NAME_KEYS) or ""),
        str(pid) if isinstance(pid, int) else "",
        str(msg) if msg is not None else text,
        extra,
        epoch,
    )


_STAMP_CACHE: dict[str, dt.datetime | None] = {}


def to_datetime(prefix: Prefix) -> dt.datetime | None:
    """The record time: naive (local wall clock) or aware when the text carried a zone."""
    if prefix.epoch is not None:
        value = prefix.epoch / 1000.0 if prefix.epoch > 1e11 else prefix.epoch
        try:
            return dt.datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    return parse_stamp(prefix.ts_text) if prefix.ts_text else None


def parse_stamp(text: str) -> dt.datetime | None:
    cached = _STAMP_CACHE.get(text)
    if cached is not None or text in _STAMP_CACHE:
        return cached
    norm = text.strip().replace(",", ".")
    if len(norm) > 19 and norm[19] == " ":  # gunicorn: "2026-01-02 10:00:05 +0000"
        norm = norm[:19] + norm[20:]
    elif " " in norm[19:]:
        norm = norm[:19] + norm[19:].replace(" ", "")
    stamp = parse_iso(norm)
    if len(_STAMP_CACHE) > 4096:
        _STAMP_CACHE.clear()
    _STAMP_CACHE[text] = stamp
    return stamp


def ts_text_of(line: str) -> str:
    """The timestamp text at the start of a line (for lines inherited by their followers)."""
    m = _TS_FIRST_RE.match(line)
    return m.group("ts") if m else ""
