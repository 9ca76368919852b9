"""Host facts collected beside the artifacts: ``uname -a``, ``date``, ``date +%z``,
``timedatectl``, ``/etc/timezone``, a ``TZ=`` environment file. They carry no samples,
but they tell the bundle's time zone and host name, which the time policy uses for every
other file (``hints``)."""

from __future__ import annotations

import re
from typing import BinaryIO

from parsers.base import Accounting, ParseContext, ParseResult, event_builder, metric_builder
from parsers.lines import head_lines, is_binary, iter_lines
from parsers.timeutil import HINT_RANK, ZoneError, is_date_output, parse_loose, resolve_zone, zone_hint

NAME = "host_facts"
DESCRIPTION = "host facts: uname -a, date, timedatectl, /etc/timezone, TZ files"
SAMPLES = "host_facts"
NAME_HINTS = ("uname*", "date*", "timedatectl*", "timezone*", "*tz*", "hostname*")

HOSTNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$")
# uname -a: "Linux vm 6.1.0-18-amd64 #1 SMP PREEMPT_DYNAMIC Debian ... x86_64 GNU/Linux" (the build
# "#N" field tells it from sysstat's "Linux <release> (<host>) <date> _x86_64_ (N CPU)" header)
UNAME_RE = re.compile(r"^(Linux|Darwin|FreeBSD) (\S+) (\S+) (?:#\S+|Darwin Kernel|FreeBSD).*$")
TIMEDATECTL_KEYS = ("Local time:", "Universal time:", "Time zone:", "RTC time:",
                    "System clock synchronized:", "NTP service:", "RTC in local TZ:")


def _facts(lines: list[str]) -> dict[str, str]:
    text = "\n".join(lines)
    facts: dict[str, str] = {}
    hint = zone_hint(text)
    if hint:
        try:
            resolve_zone(hint[0])
            facts["tz"], facts["tz_source"] = hint
        except ZoneError:
            pass
    for line in lines:
        m = UNAME_RE.match(line)
        if m:
            facts["host"], facts["kernel"] = m.group(2), m.group(3)
    if len(lines) == 1 and HOSTNAME_RE.match(lines[0].strip()) and not hint:
        facts["host"] = lines[0].strip()
    for line in lines:
        stamp = parse_loose(line) if is_date_output(line) else None
        if stamp is not None:
            facts["date"] = stamp[0].date().isoformat()  # a reference date for time-only artifacts
            break
    if "tz" in facts:
        facts["tz_rank"] = str(HINT_RANK.get(facts["tz_source"], 0))
    return facts


def sniff(head: bytes) -> float:
    if is_binary(head) or len(head) > 16384:
        return 0.0
    lines = [ln for ln in head_lines(head, 40) if ln.strip()]
    if not lines or len(lines) > 30:
        return 0.0
    if any(UNAME_RE.match(ln) for ln in lines) and len(lines) <= 3:
        return 0.9
    if sum(ln.strip().startswith(TIMEDATECTL_KEYS) for ln in lines) >= 2:
        return 0.95
    if len(lines) <= 3 and (zone_hint("\n".join(lines)) or is_date_output("\n".join(lines))):
        return 0.85
    if len(lines) == 1 and HOSTNAME_RE.match(lines[0]):
        return 0.46  # a bare host name: only a file called hostname* tips it over (NAME_HINTS)
    return 0.0


def parse(stream: BinaryIO, *, ctx: ParseContext) -> ParseResult:
    acct = Accounting(ctx.file)
    lines = []
    for number, text in iter_lines(stream):
        acct.total = number
        lines.append(text)
        acct.parsed()
    facts = _facts(lines)
    variant = "timedatectl" if any(ln.strip().startswith("Time zone:") for ln in lines) else \
        "uname" if "kernel" in facts else "zone" if "tz" in facts else \
        "date" if is_date_output("\n".join(lines)) else "hostname"
    result = ParseResult(metrics=metric_builder().build(), events=event_builder().build(),
                         accounting=acct, variant=variant, host=facts.get("host", ""))
    result.hints.update(facts)
    result.tz_name = facts.get("tz") or "n/a"
    result.tz_reason = (f"no timestamps; names the bundle zone via {facts['tz_source']}" if "tz" in facts
                        else "no timestamps")
    return result
