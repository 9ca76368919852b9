"""Time helpers of the report: one UTC origin, relative milliseconds, and the display zone's
offset transitions so the browser can show bundle-local wall time without ever using its own
zone (each instant is shifted by the offset in force at that instant, so DST inside the
window is right).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from parsers.timeutil import ZoneError, resolve_zone, zone_label

UTC = dt.timezone.utc
_STEP = dt.timedelta(hours=6)  # zones never change offset twice within six hours


def as_utc(value: Any) -> dt.datetime | None:
    """A datetime (naive = UTC) or ISO string → aware UTC datetime, else None."""
    if value is None:
        return None
    if isinstance(value, str):
        from parsers.timeutil import parse_iso

        parsed = parse_iso(value)
        if parsed is None:
            return None
        value = parsed
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
    return None


def iso(value: Any) -> str | None:
    """ISO-8601 UTC with ``Z`` (milliseconds), or None."""
    moment = as_utc(value)
    if moment is None:
        return None if value is None else str(value)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class DisplayZone:
    """The bundle's local zone and its offsets over the analysed window."""

    name: str  # as given (IANA name or offset)
    label: str  # what the header says, e.g. "Europe/Berlin (CET/CEST)"
    transitions: list[tuple[int, int, str]]  # (utc epoch ms from, offset ms, abbreviation)
    valid: bool  # False when the name could not be resolved (display falls back to UTC)

    @property
    def is_utc(self) -> bool:
        return all(offset == 0 for _t, offset, _a in self.transitions)


def display_zone(name: str | None, start: dt.datetime | None, end: dt.datetime | None) -> DisplayZone:
    """Offsets of zone ``name`` between ``start`` and ``end`` (UTC)."""
    name = (name or "UTC").strip() or "UTC"
    try:
        zone = resolve_zone(name)
        valid = True
    except ZoneError:
        zone, valid = UTC, False
    start = start or dt.datetime(1970, 1, 1, tzinfo=UTC)
    end = max(end or start, start)
    transitions = [(_ms(start), _offset_ms(zone, start), _abbr(zone, start))]
    probe = start
    while probe < end:
        nxt = min(probe + _STEP, end)
        if _offset_ms(zone, nxt) != _offset_ms(zone, probe):
            lo, hi = probe, nxt  # offset(lo) != offset(hi): bisect to the second
            while hi - lo > dt.timedelta(seconds=1):
                mid = lo + (hi - lo) / 2
                if _offset_ms(zone, mid) == _offset_ms(zone, lo):
                    lo = mid
                else:
                    hi = mid
            hi = hi.replace(microsecond=0)
            transitions.append((_ms(hi), _offset_ms(zone, hi), _abbr(zone, hi)))
        probe = nxt
    abbrs = "/".join(dict.fromkeys(a for _t, _o, a in transitions if a))
    label = zone_label(zone) if valid else "UTC"
    if abbrs and abbrs != label and label != "UTC":
        label = f"{label} ({abbrs})"
    return DisplayZone(name=name if valid else "UTC", label=label, transitions=transitions, valid=valid)


def _ms(moment: dt.datetime) -> int:
    return int(moment.timestamp() * 1000)


def _offset_ms(zone: dt.tzinfo, moment: dt.datetime) -> int:
    offset = moment.astimezone(zone).utcoffset()
    return int(offset.total_seconds() * 1000) if offset is not None else 0


def _abbr(zone: dt.tzinfo, moment: dt.datetime) -> str:
    text = moment.astimezone(zone).tzname() or ""
    if text.startswith(("+", "-")) or text.startswith("UTC") and len(text) > 3:
        return ""  # numeric "abbreviations" add nothing to the label
    return text


def local_text(value: Any, zone: DisplayZone) -> str:
    """``value`` as wall time of ``zone`` with its abbreviation (for static text and tests)."""
    moment = as_utc(value)
    if moment is None:
        return ""
    ms = _ms(moment)
    offset, abbr = zone.transitions[0][1], zone.transitions[0][2]
    for start, off, ab in zone.transitions:
        if ms >= start:
            offset, abbr = off, ab
    wall = moment + dt.timedelta(milliseconds=offset)
    return wall.strftime("%Y-%m-%d %H:%M:%S") + " " + (abbr or zone.name)
