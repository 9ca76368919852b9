"""``event_loop_blocked``: asyncio slow-callback stalls → a blocking call inside a coroutine.

Opens on a burst of ``loop.slow_callback`` events (or ``loop.stall_ms`` above 100 ms/s when
no warning lines exist). The root is the coroutine and ``file:line`` the warnings name; when
they name only a framework frame (uvicorn's ``RequestResponseCycle.run_asgi()``, asyncio
internals, anything under site-packages), the guilty handler is the HTTP request that was in
flight across the stalls and finished as each stall ended.
"""

from __future__ import annotations

import re

import polars as pl

from analyzer.rules import _http
from analyzer.rules._base import (
    Candidate,
    Context,
    Rule,
    event_evidence,
    grade,
    num,
    segment_evidence,
    tmax,
    tmin,
    worse,
)

CORO_ENTITY = re.compile(r"^coro:(?P<qualname>.+?)@(?P<file>.+):(?P<line>\d+)$")
FRAMEWORK_FILE = re.compile(r"(site-packages|dist-packages|[/\\]lib[/\\]python\d[\d.]*[/\\]|[/\\]asyncio[/\\])")
FRAMEWORK_QUALNAMES = frozenset({
    "RequestResponseCycle.run_asgi", "HttpToolsProtocol.on_response_complete", "Handle._run",
    "Task.__step", "Task.__wakeup", "BaseEventLoop._run_once", "Server.serve", "Server.main_loop",
})
MIN_TOTAL_S = 0.25  # a lone 0.1 s callback at start-up is no incident
MIN_COUNT = 3


def is_framework(entity: str | None) -> bool:
    m = CORO_ENTITY.match(entity or "")
    if not m:
        return True
    return m.group("qualname") in FRAMEWORK_QUALNAMES or bool(FRAMEWORK_FILE.search(m.group("file")))


def find(ctx: Context) -> list[Candidate]:
    out = []
    reqs = _http.requests(ctx.events)
    for burst in ctx.segs(["loop.slow_callback"]).iter_rows(named=True):
        stalls = ctx.events_of(["loop.slow_callback"], burst["start"], burst["end"]).sort("ts")
        cand = _from_stalls(ctx, stalls, reqs)
        if cand is not None:
            out.append(cand)
    if not out:  # only per-second stall metrics: no coroutine to name
        for seg in ctx.segs(["loop.stall_ms"]).iter_rows(named=True):
            if seg["total"] / 1000.0 < MIN_TOTAL_S:
                continue
            severity = grade(seg["peak"], [(300, "medium"), (1000, "high")])
            out.append(Candidate(seg["start"], seg["end"], severity, 0.5,
                                 "loop stall time per second is high, but no warning names the coroutine",
                                 [seg["entity"]], [segment_evidence(seg, unit="ms/s")],
                                 {"http": None, "coro": None, "location": None, "count": seg["samples"],
                                  "total_s": seg["total"] / 1000.0, "max_s": seg["peak"] / 1000.0,
                                  "framework": True, "share": None}))
    return out


def _from_stalls(ctx: Context, stalls: pl.DataFrame, reqs: pl.DataFrame) -> Candidate | None:
    durations = stalls.get_column("value").fill_null(0.0)
    total, longest, count = num(durations.sum()), num(durations.max()), stalls.height
    first, last = tmin(stalls.get_column("ts")), tmax(stalls.get_column("end"))
    if total < MIN_TOTAL_S and count < MIN_COUNT:
        return None
    by_coro = stalls.group_by("entity").agg(
        pl.len().alias("count"), pl.col("value").sum().alias("total_s"), pl.col("value").max().alias("max_s"),
    ).sort(["total_s", "count", "entity"], descending=[True, True, False])
    top = by_coro.row(0, named=True)
    m = CORO_ENTITY.match(top["entity"] or "")
    coro, location = (m.group("qualname"), f"{m.group('file')}:{m.group('line')}") if m else (None, None)
    framework = is_framework(top["entity"])
    ranked = _http.votes(_http.guilty(stalls, reqs))
    http, share, explained = None, None, 0
    if ranked.height:
        best = ranked.row(0, named=True)
        share = best["stall_s"] / total if total else 0.0
        explained = best["stalls"]
        if share >= 0.5:
            http = best["route"]
    evidence = [event_evidence(r, role="stall") for r in stalls.sort("value", descending=True).head(3)
                .iter_rows(named=True)]
    evidence.insert(0, {"role": "summary", "source": stalls.get_column("source").first(),
                        "kind": "loop.slow_callback", "entity": top["entity"], "count": count,
                        "total_s": round(total, 3), "peak": round(longest, 3), "unit": "s",
                        "baseline": 0.0, "by_coroutine": by_coro.head(5).to_dicts()})
    if ranked.height:
        evidence.append({"role": "in_flight_request", "source": ranked.get_column("source").first(),
                         "kind": "http.request", "entity": ranked.get_column("route").first(),
                         "stalls_explained": explained, "stalls": count,
                         "stall_share": round(share or 0.0, 3),
                         "median_fit_s": round(num(ranked.get_column("fit_s").first()), 3),
                         "file": ranked.get_column("file").first(), "line": ranked.get_column("line").first(),
                         "candidates": ranked.head(3).select("route", "stalls", "stall_s").to_dicts()})
    stall_metric = ctx.segs(["loop.stall_ms"], start=first, end=last, pad_s=2)
    evidence += [segment_evidence(r, unit="ms/s") for r in stall_metric.head(2).iter_rows(named=True)]
    timeouts = ctx.events_of(["server.worker_timeout"], first, last, pad_s=30)
    evidence += [event_evidence(r, role="symptom") for r in timeouts.head(3).iter_rows(named=True)]
    severity = worse(grade(longest, [(0.3, "medium"), (1.0, "high")]),
                     grade(total, [(0.5, "medium"), (3.0, "high"), (60.0, "critical")]))
    if not framework:
        confidence, reason = 0.9, "the slow-callback warnings name the coroutine and its line"
    elif http:
        confidence = 0.6 + 0.3 * min(1.0, share or 0.0)
        reason = (f"the warnings name only a framework frame; {http.removeprefix('http:')} was in flight "
                  f"across {explained} of {count} stalls and ended as they ended")
    elif coro:
        confidence, reason = 0.6, "the warnings name only a framework frame and no request explains the stalls"
    else:
        confidence, reason = 0.5, "the warnings name no coroutine"
    entities = ([http] if http else []) + ([top["entity"]] if top["entity"] else [])
    if not framework and http:
        entities = entities[::-1]
    return Candidate(
        first, last, severity, confidence, reason,
        entities, evidence,
        {"http": http.removeprefix("http:") if http else None, "coro": coro, "location": location,
         "count": count, "total_s": total, "max_s": longest, "framework": framework, "share": share})


RULE = Rule(
    key="event_loop_blocked",
    triggers=("loop.slow_callback", "loop.stall_ms"),
    explains=("syn_backlog_overflow", "connection_resets"),
    title=(
        "{% if http and framework %}The {{ http }} handler blocks the asyncio event loop"
        "{% elif coro %}Coroutine {{ coro }} ({{ location }}) blocks the asyncio event loop"
        "{% else %}The asyncio event loop is blocked{% endif %}: "
        "{{ count }} stall{{ 's' if count != 1 }} totalling {{ total_s|num }} s, the longest {{ max_s|num }} s"
        "{% if http and framework and coro %} (asyncio names only the framework frame {{ coro }}){% endif %}"
        "{% if upstream %}, while {{ upstream|human }} was under way{% endif %}."),
    recommendations=(
        "Find the synchronous call in {{ http or coro or 'the coroutine' }} (time.sleep, requests, file or "
        "CPU-heavy work) and move it off the loop: `await asyncio.to_thread(...)` or "
        "`loop.run_in_executor(...)`, or use an async library.",
        "{% if framework %}The warnings only show the framework frame: take a stack sample during a stall "
        "(py-spy dump --pid PID) to see the exact blocking line.{% else %}Open {{ location }}: the blocking "
        "call is in that coroutine's step.{% endif %}",
        "Keep asyncio debug mode and `loop.slow_callback_duration` on in staging so new blocking calls show "
        "up before production.",
    ),
    find=find,
)
