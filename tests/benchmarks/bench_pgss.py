"""Benchmark: pg_stat_statements deltas for 1,000 snapshots x 5,000 queries, and dump parsing.

Built from a real PG 15 snapshot (samples/pg_stat_statements/pgss_copy_header_per_snapshot.csv):
its rows are cloned into 5,000 entries (new queryids), then 1,000 snapshots 10 s apart advance
every entry's counters by a random number of calls at its real mean time (``--active`` is the
share of entries that run in an interval). Reports seconds, rows/s and peak RSS for

1. the delta engine fed in chunks of 20 snapshots + long metric rows (the parser's hot path),
   next to a baseline in the same run: a bare polars ``diff().over(key)`` of one counter;
2. parsing a COPY CSV dump of ``--parse-snapshots`` of those snapshots end to end, next to
   ``wc -l`` of the same file.

Run: ``python3 tests/benchmarks/bench_pgss.py`` or ``python3 -m pytest tests/benchmarks/bench_pgss.py -s``.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from parsers import _pgss_delta as delta  # noqa: E402
from parsers import pg_stat_statements  # noqa: E402
from parsers.base import ParseContext  # noqa: E402

SOURCE = ROOT / "samples" / "pg_stat_statements" / "pgss_copy_header_per_snapshot.csv"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def real_rows() -> list[dict[str, str]]:
    rows, header = [], None
    for row in csv.reader(io.StringIO(SOURCE.read_text())):
        if row[0] == "snapshot_time":
            header = row
            continue
        rows.append(dict(zip(header, row, strict=False)))
    last = rows[-1]["snapshot_time"]
    return [r for r in rows if r["snapshot_time"] == last]


class Workload:
    """Snapshots of ``queries`` entries, produced one chunk at a time (memory stays flat)."""

    def __init__(self, queries: int, active: float, seed: int = 1) -> None:
        base = real_rows()
        self.rng = np.random.default_rng(seed)
        pick = np.arange(queries) % len(base)
        self.header = list(base[0])
        self.template = [base[i] for i in pick]
        self.queryid = np.array([int(base[i]["queryid"]) for i in pick], dtype=np.int64) + \
            np.arange(queries, dtype=np.int64) * 7919
        self.mean = np.array([max(float(base[i]["mean_exec_time"]), 0.001) for i in pick])
        self.calls = np.array([float(base[i]["calls"]) for i in pick])
        self.total = np.array([float(base[i]["total_exec_time"]) for i in pick])
        self.sq = np.array([(float(base[i]["stddev_exec_time"]) ** 2 + float(base[i]["mean_exec_time"]) ** 2)
                            * float(base[i]["calls"]) for i in pick])
        self.rows = np.array([float(base[i]["rows"]) for i in pick])
        self.read = np.array([float(base[i]["shared_blks_read"]) for i in pick])
        self.hit = np.array([float(base[i]["shared_blks_hit"]) for i in pick])
        self.active = active
        self.queries = queries
        self.start = dt.datetime(2026, 11, 28, 0, 0, 0)
        self.snap = 0

    def advance(self) -> None:
        running = self.rng.random(self.queries) < self.active
        calls = self.rng.poisson(20, self.queries) * running
        times = calls * self.mean * self.rng.uniform(0.5, 1.5, self.queries)
        self.calls += calls
        self.total += times
        self.sq += calls * (times / np.maximum(calls, 1)) ** 2
        self.rows += calls
        self.read += calls * 2
        self.hit += calls * 30

    def frame(self, snapshots: int) -> pl.DataFrame:
        parts = []
        for _ in range(snapshots):
            self.advance()
            mean = self.total / np.maximum(self.calls, 1)
            sd = np.sqrt(np.maximum(self.sq / np.maximum(self.calls, 1) - mean ** 2, 0))
            parts.append(pl.DataFrame({
                "snap": np.full(self.queries, self.snap, dtype=np.int64),
                "ts": [self.start + dt.timedelta(seconds=10 * self.snap)] * self.queries,
                "userid": ["10"] * self.queries, "dbid": ["16384"] * self.queries, "toplevel": ["t"] * self.queries,
                "queryid": self.queryid.astype(str), "query": [r["query"] for r in self.template],
                "calls": self.calls.copy(), "total_exec_time": self.total.copy(), "mean_exec_time": mean,
                "stddev_exec_time": sd, "rows": self.rows.copy(), "shared_blks_hit": self.hit.copy(),
                "shared_blks_read": self.read.copy(), "temp_blks_written": np.zeros(self.queries),
                "shared_blk_read_time": self.read * 0.01, "line": np.arange(self.queries, dtype=np.int64)}))
            self.snap += 1
        return pl.concat(parts)


def bench_deltas(snapshots: int, queries: int, active: float, chunk: int = 20) -> dict[str, float]:
    work = Workload(queries, active)
    engine = delta.DeltaEngine()
    build = build_cpu = 0.0
    t0, c0 = time.perf_counter(), time.process_time()
    for start in range(0, snapshots, chunk):
        b0, bc0 = time.perf_counter(), time.process_time()
        frame = work.frame(min(chunk, snapshots - start))
        build += time.perf_counter() - b0
        build_cpu += time.process_time() - bc0
        engine.push(frame)
    result = engine.finish()
    metrics, _left_out = delta.to_metrics(result, engine.present)
    elapsed = time.perf_counter() - t0 - build
    cpu = time.process_time() - c0 - build_cpu
    # baseline: the bare minimum in polars — one counter's diff per key over the same data
    base_work = Workload(queries, active)
    base_frame = base_work.frame(min(snapshots, 200))
    b0, bc0 = time.perf_counter(), time.process_time()
    base = base_frame.sort("queryid", "snap").with_columns(pl.col("calls").diff().over("queryid").alias("d"))
    scale = snapshots / min(snapshots, 200)
    base_s, base_cpu = (time.perf_counter() - b0) * scale, (time.process_time() - bc0) * scale
    return {"rows": snapshots * queries, "seconds": elapsed, "cpu_s": cpu, "baseline_cpu_s": base_cpu, "rows_per_s": snapshots * queries / elapsed,
            "build_s": build, "delta_rows": result.deltas.height, "metric_rows": metrics.height,
            "baseline_s": base_s, "baseline_rows": base.height, "peak_rss_mb": peak_rss_mb()}


def bench_parse(snapshots: int, queries: int, active: float) -> dict[str, float]:
    work = Workload(queries, active)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pgss.csv"
        with path.open("w") as fh:
            for _ in range(snapshots):
                frame = work.frame(1)
                out = frame.select(pl.col("ts").dt.strftime("%Y-%m-%d %H:%M:%S%.6f+00").alias("snapshot_time"),
                                   pl.exclude("snap", "ts", "line"))
                fh.write(out.write_csv(include_header=True))
        size = path.stat().st_size
        w0 = time.perf_counter()
        lines = int(subprocess.run(["wc", "-l", str(path)], capture_output=True, text=True).stdout.split()[0])
        wc_s = time.perf_counter() - w0
        t0, c0 = time.perf_counter(), time.process_time()
        with path.open("rb") as fh:
            result = pg_stat_statements.parse(fh, ctx=ParseContext(file="pgss.csv"))
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert result.accounting.total == lines
    return {"mb": size / 1e6, "lines": lines, "seconds": elapsed, "cpu_s": cpu, "mb_per_s": size / 1e6 / elapsed,
            "wc_l_s": wc_s, "metric_rows": result.metrics.height, "peak_rss_mb": peak_rss_mb()}


def report(args: argparse.Namespace) -> None:
    d = bench_deltas(args.snapshots, args.queries, args.active)
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"deltas: {args.snapshots} snapshots x {args.queries} queries = {d['rows']:,} rows, active share "
          f"{args.active:g}: {d['seconds']:.2f} s wall, {d['cpu_s']:.2f} s CPU ({d['rows_per_s']:,.0f} rows/s), "
          f"{d['delta_rows']:,} per-query delta rows kept, {d['metric_rows']:,} metric rows; baseline polars "
          f"diff().over(): {d['baseline_s']:.2f} s wall, {d['baseline_cpu_s']:.2f} s CPU "
          f"(extrapolated from 200 snapshots); input generation {d['build_s']:.2f} s (not counted); "
          f"peak RSS {d['peak_rss_mb']:.0f} MB")
    p = bench_parse(args.parse_snapshots, args.queries, args.active)
    print(f"parse: CSV dump of {args.parse_snapshots} snapshots x {args.queries} queries, {p['mb']:.1f} MB, "
          f"{p['lines']:,} lines: {p['seconds']:.2f} s wall, {p['cpu_s']:.2f} s CPU ({p['mb_per_s']:.1f} MB/s), {p['metric_rows']:,} metric "
          f"rows; baseline wc -l {p['wc_l_s']:.3f} s; peak RSS {p['peak_rss_mb']:.0f} MB")


def test_bench_pgss() -> None:
    report(argparse.Namespace(snapshots=int(os.environ.get("PGSS_SNAPSHOTS", 1000)),
                              queries=int(os.environ.get("PGSS_QUERIES", 5000)),
                              active=float(os.environ.get("PGSS_ACTIVE", 1.0)),
                              parse_snapshots=int(os.environ.get("PGSS_PARSE_SNAPSHOTS", 40))))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--snapshots", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=5000)
    parser.add_argument("--active", type=float, default=1.0)
    parser.add_argument("--parse-snapshots", type=int, default=40)
    report(parser.parse_args())
