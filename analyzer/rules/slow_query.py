"""``slow_query``: one statement gains database execution time per second far above its
baseline (pg_stat_statements snapshot deltas), corroborated by PostgreSQL latency on the wire.

The root is ``query:<queryid>`` with its text from the timeline's entities; the window is
narrowed to the wire-latency anomaly when a capture saw it (snapshots are coarse).
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from analyzer.rules._base import (
    Candidate,
    Context,
    Rule,
    grade,
    iso,
    merge_intervals,
    num,
    segment_evidence,
    tmax,
    tmin,
)

MIN_PEAK_MS_PER_S = 100.0  # a tenth of a backend busy with it
AGGREGATES = ("query:all", "query:total", "query:other")  # sums over statements, not one statement
WIRE = ("pg.wire_latency_ms", "pg.wire_latency_p99_ms", "pg.wire_latency_max_ms")


def find(ctx: Context) -> list[Candidate]:
    segs = ctx.segs(["pg.exec_ms_per_s"], prefix="query:").filter(
        (pl.col("peak") >= MIN_PEAK_MS_PER_S) & ~pl.col("entity").is_in(list(AGGREGATES)))
    out = []
    for query in segs.get_column("entity").unique().sort().to_list():
        rows = segs.filter(pl.col("entity") == query).sort("start")
        spans = merge_intervals([(r["start"], r["end"]) for r in rows.iter_rows(named=True)], gap_s=15.0)
        for start, end in spans:
            part = rows.filter((pl.col("start") <= end) & (pl.col("end") >= start))
            out.append(_candidate(ctx, query, part, start, end))
    return out


def _candidate(ctx: Context, query: str, part: pl.DataFrame, start: dt.datetime, end: dt.datetime) -> Candidate:
    top = part.sort("peak", descending=True).row(0, named=True)
    text = ctx.attrs(query).get("query") or ctx.label(query) or ""
    evidence = [segment_evidence(top, unit="ms/s", role="exec_time", query=text[:500])]
    for metric, unit in (("pg.mean_exec_ms", "ms"), ("pg.calls_per_s", "/s")):
        values = ctx.samples(metric, entity=query, start=start, end=end + dt.timedelta(seconds=1))
        if values.height:
            evidence.append({"role": "detail", "source": values.get_column("source").first(), "metric": metric,
                             "entity": query, "peak": round(num(values.get_column("value").max()), 3),
                             "unit": unit, "file": values.get_column("file").first(),
                             "line": values.get_column("line").first()})
    precision = (top["end"] - top["start"]).total_seconds() / max(top["samples"], 1)  # snapshot interval
    wire = ctx.segs(WIRE, start=start, end=end, pad_s=2)
    if wire.height:
        w = wire.sort("z_max", descending=True).row(0, named=True)
        evidence.append(segment_evidence(w, unit="ms", role="wire_latency"))
        # a capture times the slowdown to the second; snapshots only to their interval
        start = max(start, tmin(wire.get_column("start")))
        end = min(end, tmax(wire.get_column("end")))
    active = ctx.segs(["pg.active"], start=start, end=end, pad_s=5)
    evidence += [segment_evidence(r, unit="backends", role="backends") for r in active.head(1).iter_rows(named=True)]
    severity = grade(top["peak"], [(300, "medium"), (1000, "high"), (4000, "critical")])
    confidence = 0.9 if wire.height else 0.75
    reason = (f"execution time per second rose {top['peak'] / max(top['base'] or 0.0, 1.0):.0f}-fold over its "
              f"baseline" + ("; PostgreSQL latency on the wire rose with it" if wire.height
                             else "; snapshot intervals bound the window"))
    return Candidate(start, end, severity, confidence, reason, [query], evidence,
                     {"queryid": query.removeprefix("query:"), "query": " ".join(text.split()),
                      "peak": top["peak"], "base": top["base"] or 0.0, "wire": bool(wire.height),
                      "peak_at": iso(top["peak_ts"])}, precision_s=1.0 if wire.height else precision)


RULE = Rule(
    key="slow_query",
    triggers=("pg.exec_ms_per_s",),
    explains=("db_pool_exhaustion", "cpu_saturation", "thread_exhaustion"),
    merge_gap_s=15.0,
    title=(
        "Query {{ queryid }}{% if query %} ({{ query|short(90) }}){% endif %} took {{ peak|num }} ms of "
        "database time per second (baseline {{ base|num }} ms/s)"
        "{% if wire %}, and PostgreSQL answered slower on the wire{% endif %}"
        "{% if upstream %}, while {{ upstream|human }} was under way{% endif %}."),
    recommendations=(
        "EXPLAIN (ANALYZE, BUFFERS) query {{ queryid }}: look for sequential scans, unindexed filters "
        "(LIKE '%…%' needs a trigram index) and sorts spilling to disk.",
        "Limit how many callers can run it at once (a semaphore or a separate small pool) and cache or "
        "precompute its result if it backs a report.",
        "Set statement_timeout for the calling role so one slow statement cannot hold connections for long.",
    ),
    find=find,
)
