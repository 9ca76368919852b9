"""``db_pool_exhaustion``: requests wait for a database connection that the pool cannot give.

Opens on bursts of ``db.pool_error`` / ``db.timeout`` events, or on sessions waiting for
locks (``pg.waiting`` on ``wait:Lock…``) while an application's pool has no idle connection
left (``pg.idle`` of its ``pool:`` at 0). Names the pool (``pool:<name>``; when the errors
don't name it, the database whose backends were all busy or idle in a transaction) and,
when visible, who held the connections: a slow query or idle-in-transaction sessions.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from analyzer.rules._base import Candidate, Context, Rule, event_evidence, grade, segment_evidence


def find(ctx: Context) -> list[Candidate]:
    out = []
    for burst in ctx.segs(["db.pool_error", "db.timeout"]).iter_rows(named=True):
        events = ctx.events_of([burst["metric"]], burst["start"], burst["end"])
        pools = events.filter(pl.col("entity").str.starts_with("pool:")).get_column("entity")
        pool = pools.mode().sort().first() if pools.len() else _busiest_pool(ctx, burst["start"], burst["end"])
        out.append(_candidate(ctx, burst, events, pool))
    # without the application's own errors: sessions stuck on locks while a pool has no idle
    # connection left (pg_stat_activity per application_name)
    for seg in ctx.segs(["pg.waiting"], prefix="wait:Lock").iter_rows(named=True):
        idle = ctx.samples("pg.idle", prefix="pool:", start=seg["start"], end=seg["end"]) \
            .filter(~pl.col("entity").is_in(["pool:all", "pool:total"]))
        dry = idle.group_by("entity").agg(pl.col("value").max()).filter(pl.col("value") == 0.0) \
            .get_column("entity").sort()
        if dry.len():
            out.append(_candidate(ctx, seg, None, str(dry.first())))
    return out


def _busiest_pool(ctx: Context, start, end) -> str | None:
    """The application's errors rarely name the pool; the server's view does: the database
    (``pool:<datname>`` from pg_stat_activity) whose connections were all busy or idle in a
    transaction during the burst."""
    pad = dt.timedelta(seconds=10)
    held = pl.concat([ctx.samples(m, prefix="pool:", start=start - pad, end=end + pad)
                      for m in ("pg.active", "pg.idle_in_tx")], how="vertical_relaxed")
    held = held.filter(~pl.col("entity").is_in(["pool:all", "pool:total"]))
    if held.is_empty():
        return None
    per = held.group_by("entity", "ts").agg(pl.col("value").sum()).group_by("entity") \
        .agg(pl.col("value").max()).sort(["value", "entity"], descending=[True, False])
    return str(per.get_column("entity").first()) if per.get_column("value").first() > 0 else None


def _candidate(ctx: Context, seg: dict, events: pl.DataFrame | None, pool: str | None) -> Candidate:
    start, end = seg["start"], seg["end"]
    evidence = [segment_evidence(seg, unit="" if events is not None else "backends", role="waiting")]
    if events is not None:
        evidence += [event_evidence(r) for r in events.head(3).iter_rows(named=True)]
    holders = []
    for metric, role in (("pg.exec_ms_per_s", "holder"), ("pg.idle_in_tx", "holder")):
        rows = ctx.segs([metric], start=start, end=end, pad_s=30).sort("peak", descending=True).head(1)
        for r in rows.iter_rows(named=True):
            evidence.append(segment_evidence(r, role=role, unit="ms/s" if metric.endswith("per_s") else "backends"))
            if r["entity"].startswith("query:"):
                holders.append(r["entity"])
    count = seg["samples"]
    severity = grade(count, [(1, "medium"), (10, "high")]) if events is not None else "medium"
    confidence = 0.85 if events is not None else 0.6
    reason = ("the application logged pool errors or timeouts" if events is not None
              else "backends waited while no connection was idle")
    entities = ([pool] if pool else []) + holders
    if not entities:
        entities = [seg["entity"]]
    return Candidate(start, end, severity, confidence, reason, entities, evidence,
                     {"pool": pool.removeprefix("pool:") if pool else None, "count": count,
                      "holder": holders[0].removeprefix("query:") if holders else None,
                      "from_events": events is not None})


RULE = Rule(
    key="db_pool_exhaustion",
    triggers=("db.pool_error", "db.timeout", "pg.waiting"),
    explains=("thread_exhaustion",),
    title=(
        "{% if pool %}Database pool {{ pool }}{% else %}The database connection pool{% endif %} ran dry"
        "{% if from_events %}: {{ count }} request{{ 's' if count != 1 }} failed or timed out waiting for a "
        "connection{% else %}: backends waited while none was idle{% endif %}"
        "{% if holder %}; query {{ holder }} held the connections{% endif %}"
        "{% if upstream %}, while {{ upstream|human }} was under way{% endif %}."),
    recommendations=(
        "Find what holds connections{% if holder %} (query {{ holder }}){% endif %}: long transactions, "
        "slow statements, connections kept across awaits of other I/O.",
        "Set an acquire timeout and statement_timeout, and size the pool against PostgreSQL's "
        "max_connections for all app instances.",
    ),
    find=find,
)
