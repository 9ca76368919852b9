"""Home-grown thread-count monitor logs, e.g. the output of

    echo "$(date '+%F %T') - PID: $PID, Threads: $(ps -T -p $PID | wc -l)"

Shapes: ``<ts> <sep> PID: <n>, Threads: <m>`` with ``%F %T``, ISO-8601 with offset or
date(1)'s default for ``<ts>`` and `` - ``, ``,``, ``: `` or a space as ``<sep>``; and the
two-line form ``=== <date> ===`` followed by ``Thread count: <m>``.

Note: ``ps -T -p PID | wc -l`` counts ps's header line, and a vanished PID still prints
the header (``Threads: 1``); such a drop after a real count is an exit, not a collapse.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import BinaryIO

from parsers.base import (
    Accounting,
    ParseContext,
    ParseResult,
    accounted_lines,
    attrs_json,
    event_builder,
    metric_builder,
)
from parsers.lines import head_lines
from parsers.timeutil import parse_loose

NAME = "thread_monitor"
DESCRIPTION = "thread-count monitor logs (`<time> - PID: N, Threads: M`)"
SAMPLES = "thread_monitor"
NAME_HINTS = ("*thread*", "*monitor*")

# "<ts><sep>PID: <pid>, Threads: <count>"; the time part is whatever precedes "PID"
# (matched in two steps: a single regex with a lazy prefix backtracks badly on long lines)
TAIL_RE = re.compile(r"\bPID[:=]\s*(?P<pid>\d+)\s*[,;]?\s*(?:Threads|threads|NLWP|nlwp)[:=]\s*(?P<count>-?\d*)\s*$")
SEPARATORS = " \t-,:|"


class _LineMatch:
    def __init__(self, ts: str, pid: str, count: str) -> None:
        self._groups = {"ts": ts, "pid": pid, "count": count}

    def group(self, name: str) -> str:
        return self._groups[name]

    def __getitem__(self, name: str) -> str:
        return self._groups[name]


def banner_time(text: str) -> str | None:
    """The text between '=== ' and ' ===' of a banner line, or None."""
    stripped = text.strip()
    if len(stripped) < 3 or not (stripped.startswith("=") and stripped.endswith("=")):
        return None
    inner = stripped.strip("=").strip()
    return inner or None


def match_line(text: str) -> _LineMatch | None:
    at = text.rfind("PID")
    if at <= 0:
        return None
    tail = TAIL_RE.match(text, at)
    if tail is None:
        return None
    ts = text[:at].strip().rstrip(SEPARATORS).strip()
    if not ts:
        return None
    return _LineMatch(ts, tail.group("pid"), tail.group("count"))


COUNT_RE = re.compile(r"^\s*(?:Thread count|Threads|thread count)\s*[:=]\s*(?P<count>\d+)\s*$")


def sniff(head: bytes) -> float:
    lines = [ln for ln in head_lines(head, 40) if ln.strip()]
    if not lines:
        return 0.0
    hits = sum(1 for ln in lines if (m := match_line(ln)) and parse_loose(m.group("ts")))
    if hits == 0:
        banners = sum(1 for ln in lines if (b := banner_time(ln)) and parse_loose(b))
        counts = sum(1 for ln in lines if COUNT_RE.match(ln))
        return 0.8 if banners and counts and banners + counts >= len(lines) * 0.8 else 0.0
    return 0.95 if hits >= len(lines) * 0.5 else 0.6


def parse(stream: BinaryIO, *, ctx: ParseContext) -> ParseResult:
    acct = Accounting(ctx.file)
    metrics = metric_builder()
    events = event_builder()
    explicit = naive = 0
    last_count: dict[str, float] = {}
    exited: set[str] = set()
    banner_ts: dt.datetime | None = None
    for number, text in accounted_lines(stream, acct):
        if not text.strip():
            acct.parsed()
            continue
        m = match_line(text)
        entity: str | None = None
        stamp_info = None
        count_text = ""
        if m:
            stamp_info = parse_loose(m.group("ts"))
            if stamp_info is None:
                acct.skip("bad_timestamp", number, text,
                          f"expected a timestamp such as 2026-01-02 10:00:05 before PID:, saw {m['ts']!r}")
                continue
            entity, count_text = f"pid:{m.group('pid')}", m.group("count")
        else:
            b = banner_time(text)
            if b and (parsed := parse_loose(b)):
                banner_ts, _ = parsed
                if banner_ts.tzinfo is not None:
                    banner_ts = banner_ts.astimezone(ctx.tz).replace(tzinfo=None)
                    explicit += 1
                else:
                    naive += 1
                acct.parsed()
                continue
            c = COUNT_RE.match(text)
            if c and banner_ts is not None:
                stamp_info, entity, count_text = (banner_ts, False), "proc:monitored", c.group("count")
            else:
                acct.skip("unparsed_line", number, text,
                          "expected '<time> - PID: <n>, Threads: <m>'")
                continue
        stamp, has_zone = stamp_info
        if stamp.tzinfo is not None:
            # as wall time of the file's zone, so zoned and naive lines localise alike
            stamp = stamp.astimezone(ctx.tz).replace(tzinfo=None)
        if m:
            explicit, naive = (explicit + 1, naive) if has_zone else (explicit, naive + 1)
        if count_text in ("", "-"):
            # ps printed nothing: the process is gone (script used --no-headers)
            events.add(ts=stamp, entity=entity, kind="proc.exited", severity="info",
                       message=f"{entity} no longer listed", attrs=attrs_json({"count": count_text}),
                       line=number)
            last_count.pop(entity, None)
            acct.parsed()
            continue
        count = float(count_text)
        previous = last_count.get(entity)
        if count <= 1 and entity in exited:
            acct.parsed()  # still gone: ps keeps printing its header line only
            continue
        exited.discard(entity)
        if count <= 1 and previous is not None and previous > 2:
            events.add(ts=stamp, entity=entity, kind="proc.exited", severity="info",
                       message=f"{entity} thread count fell from {previous:g} to {count:g}: "
                               f"process exited (ps printed only its header)",
                       attrs=attrs_json({"count": count, "previous": previous}), line=number)
            last_count.pop(entity, None)
            exited.add(entity)
        else:
            metrics.add(ts=stamp, entity=entity, metric="proc.threads", value=count, line=number)
            last_count[entity] = count
        acct.parsed()
    result = ParseResult(metrics=metrics.build(), events=events.build(), accounting=acct,
                         variant=_variant(explicit, naive))
    if explicit and not naive:
        result.tz_reason, result.tz_name = "zone printed in each timestamp", "UTC"
    elif explicit and naive:
        acct.note("tz_mixed", "some timestamps carry a zone and some do not; naive ones are read "
                  f"in the file's zone ({ctx.tz_reason})", level="warning")
    return result


def _variant(explicit: int, naive: int) -> str:
    if explicit and not naive:
        return "timestamps with zone"
    if explicit:
        return "mixed zoned/naive timestamps"
    return "naive local timestamps"
