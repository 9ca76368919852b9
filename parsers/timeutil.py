"""Time parsing and the time-zone policy — the one place where zones are decided.

Policy, per source: explicit ``--tz-for GLOB=ZONE`` > explicit ``--tz ZONE`` > zone found
in the bundle's metadata (timedatectl, /etc/timezone, ``date`` output, TZ file) > UTC with a
``tz_assumed`` diagnostic. Artifacts that carry their own zone (ISO offsets, epoch seconds,
pcap timestamps) are not subject to the policy; their parser says so.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import re
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import polars as pl

UTC = dt.timezone.utc

_OFFSET_RE = re.compile(r"^(?:UTC|GMT)?\s*([+-])(\d{1,2}):?(\d{2})?$", re.I)


class ZoneError(ValueError):
    """An unknown time-zone name."""


def resolve_zone(name: str) -> dt.tzinfo:
    """``Europe/Berlin``, ``UTC``, ``Z``, ``+02:00``, ``-0500``, ``UTC+2`` → tzinfo."""
    text = name.strip()
    if text.upper() in ("UTC", "Z", "GMT", "ETC/UTC", "UNIVERSAL", "ZULU"):
        return UTC
    m = _OFFSET_RE.match(text)
    if m:
        sign = -1 if m.group(1) == "-" else 1
        minutes = int(m.group(2)) * 60 + int(m.group(3) or 0)
        if minutes > 18 * 60:
            raise ZoneError(f"unknown time zone {name!r}: offset out of range")
        return dt.timezone(sign * dt.timedelta(minutes=minutes))
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError, IsADirectoryError) as exc:
        raise ZoneError(f"unknown time zone {name!r}: expected an IANA name such as "
                        f"Europe/Berlin, UTC, or an offset such as +02:00") from exc


def zone_label(tz: dt.tzinfo) -> str:
    if isinstance(tz, ZoneInfo):
        return tz.key
    if tz is UTC:
        return "UTC"
    offset = tz.utcoffset(None)
    if offset is None:
        return str(tz)
    total = int(offset.total_seconds() // 60)
    sign = "-" if total < 0 else "+"
    return f"{sign}{abs(total) // 60:02d}:{abs(total) % 60:02d}"


@dataclass
class TzDecision:
    tz: dt.tzinfo
    reason: str
    assumed: bool  # True when nothing told us: a tz_assumed diagnostic is due


@dataclass
class TimePolicy:
    """Explicit options and bundle metadata → a zone decision and clock offset per file."""

    tz: str | None = None
    tz_for: list[tuple[str, str]] = field(default_factory=list)
    offsets: list[tuple[str, float]] = field(default_factory=list)
    bundle_tz: str | None = None
    bundle_tz_source: str = ""

    def decide(self, file: str) -> TzDecision:
        for glob, zone in self.tz_for:
            if _glob_match(file, glob):
                return TzDecision(resolve_zone(zone), f"--tz-for {glob}={zone}", False)
        if self.tz:
            return TzDecision(resolve_zone(self.tz), f"--tz {self.tz}", False)
        if self.bundle_tz:
            return TzDecision(resolve_zone(self.bundle_tz),
                              f"bundle metadata ({self.bundle_tz_source})", False)
        return TzDecision(UTC, "assumed UTC: no --tz given and no zone found in the bundle", True)

    def offset_for(self, file: str) -> float:
        for glob, seconds in self.offsets:
            if _glob_match(file, glob):
                return seconds
        return 0.0


def _glob_match(file: str, glob: str) -> bool:
    base = file.rsplit("/", 1)[-1]
    return fnmatch.fnmatchcase(file, glob) or fnmatch.fnmatchcase(base, glob) \
        or fnmatch.fnmatchcase(file, f"*/{glob}")


def localize(df: pl.DataFrame, tz: dt.tzinfo, columns: tuple[str, ...] = ("ts", "end")) -> pl.DataFrame:
    """Naive wall-clock columns → UTC. DST folds take the earlier instant; times in a
    DST gap become null (the caller counts them)."""
    exprs = []
    for name in columns:
        if name not in df.columns:
            continue
        dtype = df.schema[name]
        if not isinstance(dtype, pl.Datetime):
            continue
        col = pl.col(name)
        if dtype.time_zone is None:
            if tz is UTC:
                expr = col.dt.replace_time_zone("UTC")
            elif isinstance(tz, ZoneInfo):
                expr = col.dt.replace_time_zone(tz.key, ambiguous="earliest",
                                                non_existent="null").dt.convert_time_zone("UTC")
            else:  # fixed offset
                offset = tz.utcoffset(None) or dt.timedelta(0)
                expr = (col - offset).dt.replace_time_zone("UTC")
        else:
            expr = col.dt.convert_time_zone("UTC")
        exprs.append(expr.cast(pl.Datetime("ns", "UTC")).alias(name))
    return df.with_columns(exprs) if exprs else df


def shift(df: pl.DataFrame, seconds: float, columns: tuple[str, ...] = ("ts", "end")) -> pl.DataFrame:
    if not seconds:
        return df
    delta = dt.timedelta(seconds=seconds)
    return df.with_columns([pl.col(c) + delta for c in columns if c in df.columns])


# -- parsing helpers ----------------------------------------------------------------------

_CLOCK_RE = re.compile(
    r"^(?P<h>\d{1,2})(?::|时|時)(?P<m>\d{2})(?::|分)(?P<s>\d{2})(?:[.,](?P<f>\d{1,9}))?(?:秒)?"
    r"(?:\s*(?P<ampm>[AaPp]\.?\s?[Mm]\.?|午前|午後|上午|下午|오전|오후))?$")
_PM = ("p", "午後", "下午", "오후")


def parse_clock(text: str) -> dt.time | None:
    """``10:00:05``, ``10:00:05 PM``, ``10:00:05.123``, ``01时54分25秒``, ``午後 1:02:03``
    (prefix forms are normalised by the caller) → time, or None."""
    m = _CLOCK_RE.match(text.strip())
    if not m:
        return None
    hour, minute, second = int(m.group("h")), int(m.group("m")), int(m.group("s"))
    ampm = m.group("ampm")
    if ampm:
        if hour < 1 or hour > 12:
            return None
        is_pm = ampm.lower().startswith(_PM) or ampm in _PM
        hour = hour % 12 + (12 if is_pm else 0)
    if hour > 23 or minute > 59 or second > 60:
        return None
    frac = m.group("f") or ""
    micro = int((frac + "000000")[:6]) if frac else 0
    return dt.time(hour, minute, min(second, 59), micro)


_DATE_PATTERNS = [
    (re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})$"), "ymd"),
    (re.compile(r"^(\d{4})/(\d{1,2})/(\d{1,2})$"), "ymd"),
    (re.compile(r"^(\d{4})年(\d{1,2})月(\d{1,2})日$"), "ymd"),
    (re.compile(r"^(\d{4})\. ?(\d{1,2})\. ?(\d{1,2})\.?$"), "ymd"),
    (re.compile(r"^(\d{1,2})\.(\d{1,2})\.(\d{2,4})$"), "dmy"),
    (re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{2,4})$"), "mdy?"),
    (re.compile(r"^(\d{1,2})-(\d{1,2})-(\d{2,4})$"), "dmy"),
]
_MONTHS = {m: i + 1 for i, m in enumerate(
    ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"])}


def _year(text: str) -> int:
    y = int(text)
    if y < 100:  # POSIX %y: 69-99 → 19xx, 00-68 → 20xx
        y += 1900 if y >= 69 else 2000
    return y


@dataclass
class ParsedDate:
    date: dt.date
    ambiguous: bool  # day and month could be swapped
    order: str


def parse_date(text: str, prefer: str = "mdy") -> ParsedDate | None:
    """Locale ``%x`` dates: ``01/01/70``, ``11/30/2021``, ``2024-07-27``, ``22.1.2017``,
    ``2020年04月11日``, ``Thursday 04 September 2014``, ``04 Sep 2014``."""
    text = text.strip()
    for pattern, order in _DATE_PATTERNS:
        m = pattern.match(text)
        if not m:
            continue
        a, b, c = m.groups()
        try:
            if order == "ymd":
                return ParsedDate(dt.date(int(a), int(b), int(c)), False, "ymd")
            if order == "dmy":
                return ParsedDate(dt.date(_year(c), int(b), int(a)), False, "dmy")
            first, second = int(a), int(b)
            if first > 12:
                return ParsedDate(dt.date(_year(c), second, first), False, "dmy")
            if second > 12:
                return ParsedDate(dt.date(_year(c), first, second), False, "mdy")
            if prefer == "dmy":
                return ParsedDate(dt.date(_year(c), second, first), first != second, "dmy")
            return ParsedDate(dt.date(_year(c), first, second), first != second, "mdy")
        except ValueError:
            return None
    words = re.findall(r"[A-Za-z]+|\d+", text)
    nums = [w for w in words if w.isdigit()]
    months = [_MONTHS[w[:3].lower()] for w in words if w[:3].lower() in _MONTHS]
    if months and len(nums) == 2:
        day, year = (int(nums[0]), nums[1]) if len(nums[0]) <= 2 else (int(nums[1]), nums[0])
        try:
            return ParsedDate(dt.date(_year(year), months[0], day), False, "text")
        except ValueError:
            return None
    return None


def parse_iso(text: str) -> dt.datetime | None:
    """ISO-8601 with optional fraction and offset (``Z``, ``+0000``, ``+00:00``)."""
    text = text.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    m = re.match(r"^(.*[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?)([+-]\d{2})(\d{2})$", text)
    if m:
        text = f"{m.group(1)}{m.group(2)}:{m.group(3)}"
    text = text.replace(",", ".")
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        return None


class DayRoller:
    """Turns a sequence of clock times (date known only from a header) into datetimes,
    advancing the date when the clock jumps backwards by more than 12 hours (midnight)."""

    def __init__(self, start: dt.date) -> None:
        self.date = start
        self.last: dt.time | None = None

    def at(self, clock: dt.time) -> dt.datetime:
        if self.last is not None:
            back = _seconds(self.last) - _seconds(clock)
            if back > 12 * 3600:
                self.date += dt.timedelta(days=1)
        self.last = clock
        return dt.datetime.combine(self.date, clock)


def _seconds(t: dt.time) -> float:
    return t.hour * 3600 + t.minute * 60 + t.second + t.microsecond / 1e6


# -- zone hints found in bundle metadata ---------------------------------------------

_TIMEDATECTL_RE = re.compile(r"^\s*Time zone:\s*([A-Za-z0-9_+\-/]+)", re.M)
_TZ_VAR_RE = re.compile(r"^\s*(?:export\s+)?TZ=['\"]?:?([A-Za-z0-9_+\-/]+)", re.M)
_DATE_CMD_RE = re.compile(
    r"^[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d{2}:\d{2}:\d{2} (?P<abbr>[A-Z]{2,5}|[+-]\d{2,4}) \d{4}$", re.M)
_DATE_OFFSET_RE = re.compile(r"^\s*([+-]\d{4})\s*$", re.M)
_IANA_RE = re.compile(r"^\s*([A-Z][A-Za-z_]+(?:/[A-Za-z0-9_+\-]+){1,2}|UTC|Etc/UTC)\s*$")


# How much a zone hint is worth: a named zone knows DST, a bare offset does not.
HINT_RANK = {"timedatectl 'Time zone:'": 5, "TZ variable": 4, "/etc/timezone-style zone name": 4,
             "date output shows UTC": 2, "date +%z output": 1, "date output offset": 1}


def zone_hint(text: str) -> tuple[str, str] | None:
    """A (zone, how-found) pair from host-facts text, or None. See HINT_RANK for precedence."""
    m = _TIMEDATECTL_RE.search(text)
    if m:
        return m.group(1), "timedatectl 'Time zone:'"
    m = _TZ_VAR_RE.search(text)
    if m:
        return m.group(1), "TZ variable"
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    if len(lines) == 1 and _IANA_RE.match(lines[0]):
        try:
            resolve_zone(lines[0].strip())
            return lines[0].strip(), "/etc/timezone-style zone name"
        except ZoneError:
            pass
    m = _DATE_OFFSET_RE.search(text)
    if m:
        return m.group(1), "date +%z output"
    m = _DATE_CMD_RE.search(text)
    if m and m.group("abbr") in ("UTC", "GMT"):
        return "UTC", "date output shows UTC"
    if m and m.group("abbr")[0] in "+-":
        return m.group("abbr"), "date output offset"
    return None


def is_date_output(text: str) -> bool:
    """True for date(1)'s default output (any zone abbreviation)."""
    return bool(_DATE_CMD_RE.search(text))


_LOOSE_RE = re.compile(
    r"^(?:(?P<wd>[A-Za-z]{3,9}),?\s+)?"
    r"(?:(?P<mon1>[A-Za-z]{3,9})\s+(?P<day1>\d{1,2})|(?P<day2>\d{1,2})\s+(?P<mon2>[A-Za-z]{3,9})(?:\s+(?P<year2>\d{4}))?)"
    r"\s+(?P<clock>\d{1,2}:\d{2}:\d{2}(?:[.,]\d+)?(?:\s*[AaPp][Mm])?)"
    r"(?:\s+(?P<zone>[A-Z]{1,5}|[+-]\d{2}:?\d{2}))?"
    r"(?:\s+(?P<year1>\d{4}))?$")


def parse_loose(text: str) -> tuple[dt.datetime, bool] | None:
    """A timestamp as people's scripts print it: ISO-ish (``2026-01-02 10:00:05``,
    ``2026-01-02T10:00:05+0000``) or date(1)'s default (``Fri Jan  2 10:00:05 UTC 2026``,
    ``Fri 02 Jan 2026 10:00:05 AM UTC``). Returns (datetime, zone_was_explicit); the datetime
    is aware when the zone was UTC/GMT or a numeric offset, naive otherwise."""
    text = text.strip()
    iso = parse_iso(text)
    if iso is not None:
        return iso, iso.tzinfo is not None
    m = _LOOSE_RE.match(text)
    if not m:
        return None
    month_name = (m.group("mon1") or m.group("mon2") or "")[:3].lower()
    if month_name not in _MONTHS:
        return None
    day = int(m.group("day1") or m.group("day2"))
    year_text = m.group("year1") or m.group("year2")
    clock = parse_clock(m.group("clock"))
    if clock is None or year_text is None:
        return None
    try:
        stamp = dt.datetime.combine(dt.date(int(year_text), _MONTHS[month_name], day), clock)
    except ValueError:
        return None
    zone = m.group("zone")
    if zone in ("UTC", "GMT", "Z"):
        return stamp.replace(tzinfo=UTC), True
    if zone and zone[0] in "+-":
        return stamp.replace(tzinfo=resolve_zone(zone)), True
    return stamp, False
