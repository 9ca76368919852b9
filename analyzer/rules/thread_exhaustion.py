"""``thread_exhaustion``: a process's thread count climbs steeply and flattens at a plateau
(an executor reaching ``max_workers``, a thread-per-request server at its limit).

Opens on an upward level shift of ``proc.threads`` that at least doubles the count and adds
16 or more threads. Evidence: the climb and plateau, the threads' context switches (pidstat
``-w -t``) and CPU, and the HTTP route whose requests were slow while the pool was full.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl

from analyzer.rules import _http
from analyzer.rules._base import Candidate, Context, Rule, grade, iso, num, segment_evidence, tmax, tmin

MIN_RISE = 16


def find(ctx: Context) -> list[Candidate]:
    out = []
    ups = ctx.changes.filter((pl.col("metric") == "proc.threads") & (pl.col("shift") >= MIN_RISE)
                             & (pl.col("after") >= 2 * pl.col("before")))
    for cp in ups.iter_rows(named=True):
        cand = _climb(ctx, cp)
        if cand is not None:
            out.append(cand)
    return out


def _climb(ctx: Context, cp: dict[str, Any]) -> Candidate | None:
    at, before = cp["ts"], cp["before"]
    series = ctx.samples("proc.threads", entity=cp["entity"], start=at - dt.timedelta(seconds=120),
                         end=at + dt.timedelta(seconds=600)).filter(pl.col("source") == cp["source"])
    after = series.filter(pl.col("ts") >= at)
    peak = num(after.filter(pl.col("ts") <= at + dt.timedelta(seconds=120)).get_column("value").max())
    rise = peak - before
    if rise < MIN_RISE:
        return None
    low = series.filter((pl.col("ts") <= at) & (pl.col("value") <= before + 0.1 * rise))
    start = tmax(low.get_column("ts")) if low.height else at
    reached = after.filter(pl.col("value") >= before + 0.9 * rise)
    ramp_end = tmin(reached.get_column("ts")) if reached.height else at
    fallen = after.filter((pl.col("ts") > ramp_end) & (pl.col("value") < before + 0.5 * rise))
    plateau_end = tmin(fallen.get_column("ts")) if fallen.height else tmax(series.get_column("ts"))
    plateau = after.filter(pl.col("ts").is_between(ramp_end, plateau_end))
    flat = plateau.height >= 5 and num(plateau.get_column("value").quantile(0.9)) - \
        num(plateau.get_column("value").quantile(0.1)) <= max(2.0, 0.02 * peak)
    busy_end = _busy_end(ctx, cp["entity"], start, plateau_end)
    end = max(ramp_end, busy_end) if busy_end else ramp_end
    pid = cp["entity"]
    evidence = [{"role": "climb", "source": cp["source"], "metric": "proc.threads", "entity": pid,
                 "baseline": before, "peak": peak, "unit": "threads", "start": iso(start), "end": iso(ramp_end),
                 "plateau_until": iso(plateau_end), "flat_plateau": flat, "file": cp["file"], "line": cp["line"]}]
    for metric, unit in (("proc.cswch_per_s", "/s"), ("proc.cpu_pct", "%")):
        evidence += [segment_evidence(r, unit=unit, role="activity")
                     for r in ctx.segs([metric], start=start, end=end, pad_s=5)
                     .filter(pl.col("entity") == pid).head(1).iter_rows(named=True)]
    route = _slow_route(ctx, start, end)
    if route:
        evidence.append({"role": "waiting_requests", "kind": "http.request", "entity": route[0],
                         "count": route[1], "source": route[2]})
    severity = grade(rise, [(MIN_RISE, "medium"), (64, "high")])
    if not flat:
        severity = "medium" if severity == "high" else severity
    label = ctx.label(pid)
    confidence = 0.85 if flat else 0.65
    reason = ("the count climbed steeply and then held flat, as a pool at its size limit does" if flat
              else "the count climbed steeply but did not settle on a flat limit")
    entities = [pid] + ([route[0]] if route else [])
    return Candidate(start, end, severity, confidence, reason, entities, evidence,
                     {"pid": pid.removeprefix("pid:"), "command": label or None, "before": before,
                      "peak": peak, "added": rise, "flat": flat, "ramp_s": (ramp_end - start).total_seconds(),
                      "http": route[0].removeprefix("http:") if route else None})


def _busy_end(ctx: Context, pid: str, start: dt.datetime, until: dt.datetime) -> dt.datetime | None:
    """When the process's threads stopped switching (summed per-thread cswch back to baseline)."""
    number = pid.removeprefix("pid:")
    tids = ctx.metrics.filter((pl.col("metric") == "proc.cswch_per_s")
                              & pl.col("entity").str.starts_with(f"tid:{number}/")
                              & (pl.col("entity") != f"tid:{number}/{number}"))
    if tids.height == 0:
        return None
    per_ts = tids.group_by("ts").agg(pl.col("value").sum()).sort("ts")
    quiet = num(per_ts.filter(pl.col("ts") < start).get_column("value").median())
    active = per_ts.filter(pl.col("ts").is_between(start, until) & (pl.col("value") > 3 * quiet + 5))
    if active.height == 0:
        return None
    # the first run of activity (gaps under 5 s) — later faults may wake the threads again
    gap = pl.col("ts").diff().dt.total_seconds().fill_null(0) > 5
    runs = active.with_columns(gap.cum_sum().alias("run"))
    return tmax(runs.filter(pl.col("run") == 0).get_column("ts"))


def _slow_route(ctx: Context, start: dt.datetime, end: dt.datetime) -> tuple[str, int, str] | None:
    """The route with most requests of a second or more in the window (they waited for a thread)."""
    reqs = _http.requests(ctx.events_of(["http.request"], start, end, pad_s=5)) \
        .filter(pl.col("value") >= 1.0)
    if reqs.height == 0:
        return None
    top = reqs.group_by("route").agg(pl.len().alias("n"), pl.col("source").first()) \
        .sort(["n", "route"], descending=[True, False])
    best = top.row(0, named=True)
    return (best["route"], best["n"], best["source"]) if best["n"] >= 0.5 * reqs.height else None


RULE = Rule(
    key="thread_exhaustion",
    triggers=("proc.threads",),
    # ThreadPoolExecutor starts each new worker from the submitting (loop) thread and waits
    # for it to run: a pool growing under load stalls the loop
    explains=("cpu_saturation", "event_loop_blocked"),
    title=(
        "Process {{ pid }}{% if command %} ({{ command }}){% endif %} went from {{ before|num }} to "
        "{{ peak|num }} threads in {{ ramp_s|num(2) }} s"
        "{% if flat %} and held flat there: a thread pool at its size limit (about {{ added|num }} workers)"
        "{% else %}: its threads are piling up{% endif %}"
        "{% if http %}; {{ http }} requests queued for a worker{% endif %}."),
    recommendations=(
        "Bound the blocking work: size the executor for the expected concurrency and put a semaphore or a "
        "queue limit in front of it{% if http %} in {{ http }}{% endif %}, so callers fail fast instead of "
        "queueing.",
        "Replace long blocking calls in worker threads with async I/O or shorten them (timeouts on "
        "downstream calls).",
        "Watch the thread count against its limit (ulimit -u, max_workers) and alert on a steep climb.",
    ),
    find=find,
)
