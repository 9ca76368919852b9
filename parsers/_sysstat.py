"""Shared sysstat mechanics for ``iostat`` and ``pidstat``: the ``Linux ...`` header, locale
dates and clocks, translated ``Average:`` labels, and number cells (decimal commas, ``%``
signs, ``--human`` unit suffixes, ``-1.00``/``-`` placeholders).

Format knowledge lives in ../shared FORMATS.md §2–3; everything here is locale-agnostic by
construction (shapes, not word lists) wherever that is possible.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from parsers.timeutil import ParsedDate, parse_clock, parse_date, parse_iso

# `Linux 6.1.0 (host) \t11/28/26 \t_x86_64_\t(2 CPU)`; the date may contain spaces in some locales
HEADER_RE = re.compile(
    r"^\s*(?P<sys>Linux) (?P<kernel>\S+) \((?P<host>[^)]*)\)\s+(?P<date>\S.*?)"
    r"(?:\s+(?P<arch>_\S+_))?(?:\s+\((?P<ncpu>\d+) CPU\))?\s*$")

# A clock as sysstat prints it in any locale: 05:31:03, 05:31:03 AM, 05时31分07秒, 午後 1:02:03
CLOCK_RE = re.compile(
    r"(?:(?P<pre>午前|午後|上午|下午|오전|오후)\s*)?"
    r"(?P<clock>\d{1,2}(?::|时|時)\d{2}(?::|分)\d{2}(?:[.,]\d+)?秒?)"
    r"(?:\s*(?P<ampm>[AaPp]\.?\s?[Mm]\.?))?")

# "Average:" in 39 translations (sysstat nls/*.po) plus sar's "Summary:": a leading label
# without digits that ends in a colon, e.g. "Moyenne :", "Durchschn.:", "平均时间:".
SUMMARY_RE = re.compile(r"^\s*(?P<label>[^\d\s:：][^\d:：]{0,24}?)\s?[:：](?=\s|$)")

# --human suffixes relative to the column's base unit (kB): sysstat prints B, k, M, G, T, P
_INF = float("inf")
HUMAN_FACTORS = {"B": 1 / 1024, "k": 1.0, "K": 1.0, "M": 1024.0, "G": 1024.0 ** 2,
                 "T": 1024.0 ** 3, "P": 1024.0 ** 4}
_NUM_RE = re.compile(r"^(?P<num>[+-]?(?:\d+(?:[.,]\d*)?|[.,]\d+)(?:[eE][+-]?\d+)?)(?P<suffix>[BkKMGTP%]?)$")


@dataclass
class Header:
    system: str
    kernel: str
    host: str
    date_text: str
    date: ParsedDate | None
    arch: str
    ncpu: int


def parse_header(text: str) -> Header | None:
    m = HEADER_RE.match(text)
    if not m:
        return None
    date_text = m.group("date").strip()
    return Header(m.group("sys"), m.group("kernel"), m.group("host"), date_text,
                  parse_date(date_text), m.group("arch") or "", int(m.group("ncpu") or 0))


def is_summary_label(text: str) -> bool:
    """True for rows that start with a translated ``Average:`` (or ``Summary:``) label."""
    m = SUMMARY_RE.match(text)
    return bool(m) and not m.group("label").strip().lower().startswith(("linux", "device", "avg-cpu"))


def to_number(token: str, *, decimal_comma: bool = False) -> float | None:
    """One cell → float. ``-`` and negative sentinels (``-1.00``) → None (not available);
    ``0,33`` with a decimal comma; ``2.0%``; ``617.4M`` (``--human``, relative to kB)."""
    try:  # fast path: plain numbers are nearly all cells
        value = float(token)
    except ValueError:
        pass
    else:
        if value != value or value in (_INF, -_INF) or "_" in token:
            return None
        return value if value >= 0 else None
    m = _NUM_RE.match(token)
    if not m:
        return None
    num = m.group("num")
    if "," in num:
        if not decimal_comma and "." in num:
            return None
        num = num.replace(",", ".")
    try:
        value = float(num)
    except ValueError:
        return None
    if value < 0:
        return None  # pidstat's -1.00 "not available" sentinel; no sysstat rate is negative
    suffix = m.group("suffix")
    if suffix and suffix != "%":
        value *= HUMAN_FACTORS[suffix]
    return value


def clock_of(text: str) -> tuple[dt.time | None, str]:
    """The first locale clock in ``text`` → (time, text after the clock)."""
    m = CLOCK_RE.search(text)
    if not m:
        return None, text
    clock_text = m.group("clock")
    ampm = m.group("ampm") or ""
    pre = m.group("pre")
    if pre:
        ampm = "PM" if pre in ("午後", "下午", "오후") else "AM"
    t = parse_clock(f"{clock_text} {ampm}".strip())
    return t, text[m.end():]


@dataclass
class Stamp:
    """A parsed report/row time: a full datetime (naive local or aware), or only a clock."""

    when: dt.datetime | None
    clock: dt.time | None
    aware: bool = False


def parse_stamp(text: str, *, prefer: str = "mdy") -> Stamp | None:
    """iostat ``-t`` lines and pidstat time cells in every form FORMATS.md lists:
    ``11/28/26 05:28:10``, ``11/28/2026 05:31:03 AM``, ``2026-11-28 05:31:07 AM``,
    ``2026-11-28T05:28:10+0000``, ``28.11.2026 05:33:10``, ``2026年11月28日 05时33分14秒``,
    ``Time: 07:55:39 AM``, ``05:28:11``, ``01:09:06  IST``, epoch seconds ``1795844023``."""
    text = text.strip()
    if text.startswith("Time:"):
        text = text[5:].strip()
    if not text:
        return None
    if text.isdigit() and len(text) >= 9:
        return Stamp(dt.datetime.fromtimestamp(int(text), dt.timezone.utc), None, True)
    if "T" in text and text[:4].isdigit():
        iso = parse_iso(text)
        if iso is not None:
            return Stamp(iso, None, iso.tzinfo is not None)
    m = CLOCK_RE.search(text)
    if not m:
        return None
    clock, _rest = clock_of(text)
    if clock is None:
        return None
    date_part = text[: m.start()].strip()
    if not date_part:
        return Stamp(None, clock)
    date = parse_date(date_part, prefer=prefer)
    if date is None:
        return None
    return Stamp(dt.datetime.combine(date.date, clock), clock)


def date_order(samples: list[str], header_date: str = "", twelve_hour: bool = False) -> str:
    """``mdy`` or ``dmy`` for slash dates: decided by a day > 12 in any sample, else by the
    locale shape (2-digit year = C locale = mdy; 4-digit year with a 24-hour clock is the
    European ``%x``; with AM/PM the US one)."""
    four_digit = False
    for text in [header_date, *samples]:
        m = re.match(r"^\s*(\d{1,2})/(\d{1,2})/(\d{2,4})", text)
        if not m:
            continue
        first, second = int(m.group(1)), int(m.group(2))
        if first > 12:
            return "dmy"
        if second > 12:
            return "mdy"
        four_digit = four_digit or len(m.group(3)) == 4
    return "dmy" if four_digit and not twelve_hour else "mdy"


def has_decimal_comma(text: str) -> bool:
    """A value row such as ``17,42    0,00    6,35`` (and no dot decimals)."""
    return bool(re.search(r"\d,\d", text)) and not re.search(r"\d\.\d", text)
