"""A synthetic multi-source timeline for report tests and the report benchmark.

Built directly with the schema (no parser involved), so the report can be exercised on every
lane, table and finding shape before — and independently of — the parsers that will produce
such data from real artifacts. ``payload`` is put into every artifact-derived string.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import numpy as np
import polars as pl

from analyzer.timeline import Timeline
from parsers import schema

UTC = dt.timezone.utc
# 00:30 UTC on the day Europe/Berlin switches to summer time (01:00 UTC): a window that
# crosses the change shows whether local display shifts each instant by its own offset
DST_START = dt.datetime(2026, 3, 29, 0, 30, tzinfo=UTC)


def _frame(ts: np.ndarray, values: np.ndarray, *, source: str, entity: str, metric: str, file: str,
           host: str = "db-host-1") -> pl.DataFrame:
    n = len(ts)
    return pl.DataFrame({
        "ts": pl.Series(ts.astype("datetime64[ns]")).dt.replace_time_zone("UTC"),
        "source": [source] * n, "host": [host] * n, "entity": [entity] * n, "metric": [metric] * n,
        "value": values.astype(float), "file": [file] * n, "line": np.arange(2, n + 2, dtype=np.int64)})


def synthetic_timeline(*, hours: float = 0.25, start: dt.datetime = DST_START, tz: str = "Europe/Berlin",
                       payload: str = "", seed: int = 5) -> Timeline:
    rng = np.random.default_rng(seed)
    n = int(hours * 3600)
    base = np.datetime64(start.replace(tzinfo=None), "ns")
    t1 = base + np.arange(1, n + 1) * np.timedelta64(1, "s")
    incident = slice(int(n * 0.4), int(n * 0.4) + max(5, n // 40))
    stall = slice(int(n * 0.6), int(n * 0.6) + max(5, n // 60))
    p = payload
    iostat, pidstat, app, pgss, cap, tm = (f"{p}iostat.txt", f"{p}pidstat.txt", f"{p}app.log",
                                           f"{p}pgss.csv", f"{p}capture.pcap", f"{p}threads.log")
    frames = []
    # iostat: cpu + two devices, with a 2-minute collection gap
    keep = np.ones(n, bool)
    keep[int(n * 0.2): int(n * 0.2) + 120] = False
    ti = t1[keep]

    def io(values: np.ndarray) -> np.ndarray:
        return values[keep]
    iowait = rng.gamma(2, 1.5, n)
    iowait[incident] += 35
    busy = np.clip(20 + rng.normal(0, 5, n) + iowait, 0, 100)
    for metric, vals in (("cpu.busy_pct", busy), ("cpu.iowait_pct", iowait), ("cpu.user_pct", busy * 0.6),
                         ("cpu.system_pct", busy * 0.2), ("cpu.idle_pct", 100 - busy)):
        frames.append(_frame(ti, io(vals), source="iostat", entity="cpu:all", metric=metric, file=iostat))
    for dev, level in (("sda", 30.0), (f"nvme0n1{p}", 8.0)):
        util = np.clip(level + rng.normal(0, 4, n), 0, 100)
        await_ms = np.abs(rng.normal(2, 0.5, n))
        if dev == "sda":
            util[incident] = 99.5
            await_ms[incident] = 180 + rng.normal(0, 20, incident.stop - incident.start)
        for metric, vals in (("disk.util_pct", util), ("disk.await_ms", await_ms), ("disk.aqu_sz", util / 20),
                             ("disk.write_kbps", util * 900)):
            frames.append(_frame(ti, io(vals), source="iostat", entity=f"dev:{dev}", metric=metric, file=iostat))
    # pidstat: per-thread CPU and a metric no lane claims
    for k in range(6):
        frames.append(_frame(t1, np.abs(rng.normal(5 + 10 * k, 3, n)), source="pidstat",
                             entity=f"tid:4242/{4242 + k}", metric="proc.cpu_pct", file=pidstat))
    frames.append(_frame(t1, np.abs(rng.normal(50, 30, n)), source="pidstat", entity="pid:4242",
                         metric="proc.minflt_per_s", file=pidstat))
    # thread monitor
    threads = np.full(n, 12.0)
    threads[incident.start:] = 140.0
    frames.append(_frame(t1, threads, source="thread_monitor", entity="pid:4242", metric="proc.threads", file=tm))
    # loop stalls (per second) + slow-callback spans
    stall_ms = np.zeros(n)
    stall_ms[stall] = rng.uniform(300, 950, stall.stop - stall.start)
    frames.append(_frame(t1, stall_ms, source="applog", entity="loop:main", metric="loop.stall_ms", file=app))
    # network
    rtx = rng.poisson(0.2, n).astype(float)
    rtx[incident] += 25
    for metric, vals in (("net.retransmits", rtx), ("net.rsts", rng.poisson(0.05, n).astype(float)),
                         ("net.ack_rtt_ms", np.abs(rng.normal(0.3, 0.1, n))),
                         ("pg.wire_latency_ms", np.abs(rng.normal(1.5, 0.4, n)))):
        frames.append(_frame(t1, vals, source="pcap", entity="endpoint:127.0.0.1:5432", metric=metric, file=cap))
    # pg_stat_statements every 10 s
    t10 = t1[9::10]
    for qid, level in (("111", 40.0), ("222", 5.0), ("333", 1.0)):
        exec_ms = np.abs(rng.normal(level, level / 5, len(t10)))
        if qid == "111":
            exec_ms[len(t10) // 2: len(t10) // 2 + 3] = 900.0
        frames.append(_frame(t10, exec_ms, source="pg_stat_statements", entity=f"query:{qid}",
                             metric="pg.exec_ms_per_s", file=pgss))
        frames.append(_frame(t10, exec_ms / 4, source="pg_stat_statements", entity=f"query:{qid}",
                             metric="pg.calls_per_s", file=pgss))
    metrics = schema.conform(pl.concat(frames), schema.METRIC_COLUMNS).sort("ts")

    ev = []
    for i in range(stall.start, stall.stop):
        took = float(stall_ms[i]) / 1000
        end = start + dt.timedelta(seconds=i + 1)
        ev.append({"ts": end - dt.timedelta(seconds=took), "end": end, "source": "applog", "host": "",
                   "entity": f"coro:export_handler{p}@/srv/app/{p}api.py:88", "kind": "loop.slow_callback",
                   "severity": "medium", "value": took,
                   "message": f"Executing <Task pending name='Task-{i}' coro=<export_handler{p}()>> took "
                              f"{took:.3f} seconds", "attrs": json.dumps({"task": f"{p}Task-{i}"}),
                   "file": app, "line": 1000 + i})
    for i in range(incident.start, incident.stop, 2):
        when = start + dt.timedelta(seconds=i + 0.5)
        ev.append({"ts": when, "end": None, "source": "applog", "host": "", "entity": "http:POST /api/export",
                   "kind": "log.error", "severity": "high", "value": None,
                   "message": f"request failed: {p} timeout talking to db", "attrs": "{}", "file": app,
                   "line": 3000 + i})
        ev.append({"ts": when, "end": None, "source": "pcap", "host": "", "entity": "endpoint:127.0.0.1:8000",
                   "kind": "tcp.rst", "severity": "low", "value": None, "message": "RST from client",
                   "attrs": "{}", "file": cap, "line": 50 + i})
    ev.append({"ts": start + dt.timedelta(seconds=n // 2), "end": None, "source": "applog", "host": "",
               "entity": "coro:worker", "kind": "asyncio.task_destroyed", "severity": "high", "value": None,
               "message": f"Task was destroyed but it is pending! {p}", "attrs": "{}", "file": app, "line": 77})
    events = schema.conform(pl.DataFrame(ev, infer_schema_length=None), schema.EVENT_COLUMNS).sort("ts")

    entities = schema.conform(pl.DataFrame([
        {"source": "pg_stat_statements", "host": "", "entity": "query:111", "label": f"SELECT … LIKE {p}",
         "attrs": json.dumps({"query": f"SELECT count(*) FROM items WHERE note LIKE $1 {p}"}), "file": pgss},
        {"source": "pg_stat_statements", "host": "", "entity": "query:222", "label": "SELECT items by id",
         "attrs": json.dumps({"query": "SELECT * FROM items WHERE id = $1"}), "file": pgss},
        {"source": "pidstat", "host": "", "entity": "pid:4242", "label": f"python3{p}", "attrs": "{}",
         "file": pidstat},
    ]), schema.ENTITY_COLUMNS)
    flows = pl.DataFrame({"flow": [f"flow:127.0.0.1:{40000 + i}>127.0.0.1:5432" for i in range(30)],
                          "packets": list(range(300, 0, -10)), "retransmits": [i % 7 for i in range(30)],
                          "rtt_max_ms": [0.5 + i / 10 for i in range(30)], "note": [p] * 30})
    end_ts = start + dt.timedelta(seconds=n)
    counts = {iostat: int(keep.sum()) * 13 + 5, pidstat: n * 7, app: len(ev) + 40, pgss: len(t10) * 3,
              cap: n * 20, tm: n}
    rows = []
    for file, parser in ((iostat, "iostat"), (pidstat, "pidstat"), (app, "applog"), (pgss, "pg_stat_statements"),
                         (cap, "pcap"), (tm, "thread_monitor")):
        skipped = {"since_boot_sample": 5} if parser == "iostat" else {}
        if parser == "applog":
            skipped = {"unparsed_line": 2, "not_applicable": 38}
        rows.append({"file": file, "parser": parser, "variant": f"synthetic {p}", "host": "db-host-1",
                     "tz": "UTC" if parser == "pcap" else tz,
                     "tz_reason": "epoch timestamps" if parser == "pcap" else f"bundle metadata {p}",
                     "clock_offset_s": 0.0, "start": start, "end": end_ts, "records_total": counts[file],
                     "records_parsed": counts[file] - sum(skipped.values()),
                     "records_skipped": sum(skipped.values()), "skipped_by_reason": json.dumps(skipped),
                     "size_bytes": counts[file] * 80, "duplicate_of": None, "status": "ok"})
    rows.append({"file": f"notes/{p}readme.txt", "parser": None, "status": "unrecognised", "records_total": 3,
                 "skipped_by_reason": "{}", "size_bytes": 120})
    rows.append({"file": f"../{p}evil", "parser": None, "status": "refused", "records_total": 0,
                 "skipped_by_reason": json.dumps({"unsafe_path": 1})})
    sources = schema.conform(pl.DataFrame(rows, infer_schema_length=None), schema.SOURCE_COLUMNS)
    diagnostics = schema.conform(pl.DataFrame([
        {"code": "unparsed_line", "level": "warning", "file": app, "line": 17, "excerpt": f"garbage {p}",
         "message": f"{app}:17: expected a log record {p}", "count": 2},
        {"code": "unsafe_path", "level": "error", "file": f"../{p}evil", "line": None,
         "excerpt": "", "message": "member path leaves the bundle", "count": 1},
    ]), schema.DIAGNOSTIC_COLUMNS)
    return Timeline(metrics=metrics, events=events, sources=sources, diagnostics=diagnostics, entities=entities,
                    tables={"flows": flows}, inputs=[f"/cases/{p}synthetic-bundle.tar.gz"], display_tz=tz)


def synthetic_findings(tl: Timeline, payload: str = "") -> list[dict[str, Any]]:
    """Hand-built findings in the documented shape, plus a minimal and an odd one."""
    start, end = tl.window
    span = (end - start).total_seconds()
    at = lambda frac: start + dt.timedelta(seconds=span * frac)  # noqa: E731
    p = payload
    return [
        {"id": "disk-1", "key": "disk_saturation", "title": f"Disk sda saturated {p}", "start": at(0.4),
         "end": at(0.425), "severity": "high", "confidence": 0.85, "entities": ["dev:sda"],
         "confidence_reason": [f"%util ≥ 99 for the whole window {p}", "await 90× its baseline"],
         "evidence": [{"metric": "disk.util_pct", "entity": "dev:sda", "file": f"{p}iostat.txt", "line": 1234,
                       "excerpt": f"sda 0.00 812.00 99.50 {p}", "summary": f"%util 99.5 {p}", "ts": at(0.41)},
                      {"metric": "cpu.iowait_pct", "entity": "cpu:all", "value": 38.2}],
         "recommendations": [f"Move the write-heavy job off sda {p}", {"text": "Check the RAID cache"}]},
        {"id": "loop-1", "key": "event_loop_blocked", "title": "Event loop blocked", "start": at(0.6).isoformat(),
         "end": at(0.62).isoformat(), "severity": "critical", "confidence": "high",
         "entities": [f"coro:export_handler{p}@/srv/app/{p}api.py:88"],
         "evidence": [f"plain string evidence {p}",
                      {"kind": "loop.slow_callback", "file": f"{p}app.log", "line": 1500,
                       "excerpt": f"Executing <Task ...> took 0.9 seconds {p}", "took_s": 0.9}]},
        {"title": f"Minimal finding with only a title {p}"},
    ]
