"""Correlation engine on a 24-hour, 10-source synthetic timeline with millions of metric rows.

Runs as ``python3 tests/benchmarks/bench_correlate.py [--hours 24]`` or
``python3 -m pytest tests/benchmarks/bench_correlate.py -s``. Prints rows, wall and CPU
time (all threads), rows/s and peak RSS of the engine next to a baseline measured in the
same run: one polars pass computing each series' median (the least any per-series
baseline has to do). On a shared machine compare CPU seconds. Never asserts timings.
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

from analyzer.correlate import correlate
from analyzer.timeline import Timeline
from parsers import schema

T0 = dt.datetime(2026, 1, 5, 0, 0, tzinfo=dt.timezone.utc)


def _frame(ts_s: np.ndarray, values: np.ndarray, *, source: str, file: str, entity: str, metric: str) -> pl.DataFrame:
    ts = pl.Series("ts", (T0.timestamp() + ts_s) * 1e9).cast(pl.Int64).cast(pl.Datetime("ns", "UTC"))
    n = ts_s.size
    return pl.DataFrame({"ts": ts, "source": source,
                         "host": "bench", "entity": entity, "metric": metric, "value": values,
                         "file": file, "line": np.arange(1, n + 1)}).cast({"line": pl.Int64})


def build(hours: float, seed: int = 1) -> Timeline:
    """Ten sources over ``hours``; faults: a disk burst, a slow query, a thread climb, stalls."""
    rng = np.random.default_rng(seed)
    n = int(hours * 3600)
    sec = np.arange(1, n + 1, dtype=float)
    day = 1 + 0.3 * np.sin(sec / 86400 * 2 * np.pi)  # diurnal load
    disk_burst = (sec > n * 0.40) & (sec < n * 0.40 + 20)
    frames = []
    for file, devs in (("iostat.txt", ("vda", "vdb")), ("iostat.json", ("vda", "vdb"))):
        for dev in devs:
            burst = disk_burst if dev == "vda" else np.zeros(n, bool)
            for metric, base, peak in (("disk.await_ms", 0.6, 60), ("disk.w_await_ms", 0.7, 70),
                                       ("disk.aqu_sz", 0.02, 12), ("disk.util_pct", 3, 40),
                                       ("disk.write_kbps", 400, 300_000), ("disk.w_per_s", 20, 3000)):
                v = base * day * (1 + 0.3 * rng.random(n)) + np.where(burst, peak, 0.0)
                frames.append(_frame(sec, v, source="iostat", file=file, entity=f"dev:{dev}", metric=metric))
        for metric, base in (("cpu.idle_pct", 70.0), ("cpu.iowait_pct", 0.5), ("cpu.user_pct", 20.0)):
            v = base * (1 + 0.1 * rng.random(n))
            if metric == "cpu.iowait_pct":
                v = v + np.where(disk_burst, 35.0, 0.0)
            frames.append(_frame(sec, v, source="iostat", file=file, entity="cpu:all", metric=metric))
    for pid in range(100, 112):  # pidstat -u -d over 12 busy processes
        for metric, base in (("proc.cpu_pct", 5.0), ("proc.write_kbps", 50.0), ("proc.cswch_per_s", 100.0)):
            v = base * day * rng.random(n)
            frames.append(_frame(sec, v, source="pidstat", file="pidstat.txt", entity=f"pid:{pid}", metric=metric))
    climb = np.clip((sec - n * 0.7) * 20, 0, 120) + 6
    frames.append(_frame(sec, np.round(climb), source="thread_monitor", file="threads.log", entity="pid:100",
                         metric="proc.threads"))
    snaps = sec[::10]
    for q in range(30):  # pg_stat_statements deltas every 10 s
        hot = (q == 7) & (snaps > n * 0.55) & (snaps < n * 0.55 + 30)
        v = 20 * rng.random(snaps.size) + np.where(hot, 3000.0, 0.0)
        frames.append(_frame(snaps, v, source="pg_stat_statements", file="pgss.csv", entity=f"query:{q}",
                             metric="pg.exec_ms_per_s"))
    for metric, base in (("pg.active", 3.0), ("pg.idle", 6.0)):
        frames.append(_frame(sec[::5], base + rng.integers(0, 2, sec[::5].size), source="pg_stat_activity",
                             file="pgsa.csv", entity="host:db", metric=metric))
    for metric, base in (("net.retransmits", 0.0), ("net.rsts", 0.0), ("pg.wire_latency_ms", 1.5)):
        v = base + rng.poisson(0.05, n) if base == 0 else base * (1 + rng.random(n))
        frames.append(_frame(sec, v.astype(float), source="pcap", file="capture.pcap",
                             entity="endpoint:10.0.0.9:5432", metric=metric))
    frames.append(_frame(sec[::60], 60 + 5 * rng.random(sec[::60].size), source="sar", file="sar.txt",
                         entity="cpu:all", metric="cpu.idle_pct"))
    metrics = pl.concat([schema.conform(f, schema.METRIC_COLUMNS) for f in frames]).sort("ts")
    events = _events(n, rng)
    return Timeline(metrics, events, pl.DataFrame(schema=schema.SOURCE_COLUMNS),
                    pl.DataFrame(schema=schema.DIAGNOSTIC_COLUMNS))


def _events(n: int, rng: np.random.Generator) -> pl.DataFrame:
    req_t = np.sort(rng.uniform(0, n, n))  # about one request a second, all day
    stall_t = n * 0.2 + np.arange(12) * 1.5
    rows = {
        "ts": np.r_[req_t - 0.05, stall_t],
        "end": np.r_[req_t, stall_t + 0.8],
        "entity": ["http:GET /api/items/{id}"] * n + ["coro:export@/srv/app.py:10"] * stall_t.size,
        "kind": ["http.request"] * n + ["loop.slow_callback"] * stall_t.size,
        "value": np.r_[np.full(n, 0.05), np.full(stall_t.size, 0.8)],
        "file": ["app.log"] * (n + stall_t.size),
    }
    df = pl.DataFrame(rows).with_columns(
        *[((T0.timestamp() + pl.col(c)) * 1e9).cast(pl.Int64).cast(pl.Datetime("ns", "UTC")).alias(c)
          for c in ("ts", "end")],
        pl.lit("applog").alias("source"), pl.lit("bench").alias("host"), pl.lit("warning").alias("severity"),
        pl.lit("").alias("message"), pl.lit("{}").alias("attrs"), pl.int_range(1, pl.len() + 1).alias("line"))
    return schema.conform(df, schema.EVENT_COLUMNS).sort("ts")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(hours: float = 24.0) -> dict[str, float]:
    t = time.perf_counter()
    tl = build(hours)
    built = time.perf_counter() - t
    rss_built = _rss_mb()
    rows = tl.metrics.height
    t, cpu = time.perf_counter(), time.process_time()
    baseline = tl.metrics.group_by("source", "host", "entity", "metric", "file").agg(pl.col("value").median())
    base_s, base_cpu = time.perf_counter() - t, time.process_time() - cpu
    t, cpu = time.perf_counter(), time.process_time()
    found = correlate(tl)
    engine_s, engine_cpu = time.perf_counter() - t, time.process_time() - cpu
    result = {"hours": hours, "metric_rows": rows, "event_rows": tl.events.height,
              "series": baseline.height, "build_s": round(built, 2),
              "baseline_median_s": round(base_s, 2), "baseline_cpu_s": round(base_cpu, 2),
              "baseline_rows_per_s": round(rows / base_s),
              "engine_s": round(engine_s, 2), "engine_cpu_s": round(engine_cpu, 2),
              "engine_rows_per_s": round(rows / engine_s),
              "rss_after_build_mb": round(rss_built), "peak_rss_mb": round(_rss_mb()),
              "findings": len(found)}
    print(" ".join(f"{k}={v}" for k, v in result.items()))
    for f in found:
        print(f"  {f['severity']:8} {f['key']:22} {f['start']} {f['entities'][:2]}")
    return result


def test_bench_correlate() -> None:
    result = run(24.0)
    assert result["findings"] >= 4  # the injected faults are found; timings are only reported


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hours", type=float, default=24.0)
    run(parser.parse_args().hours)
