"""PostgreSQL wire latency throughput on a >= 500 MB capture in which every packet is
PostgreSQL traffic, next to tshark's pgsql dissector and cat on the same file.

    python3 tests/benchmarks/bench_pgwire.py [CAPTURE [PG_PORT]]
    (or: STALLSCOPE_PGWIRE_CAPTURE=... pytest tests/benchmarks/bench_pgwire.py -s)

Without CAPTURE, uses /tmp/pg_big.pcap, made by
``python3 samples/generate/pcap_app_samples.py --big /tmp/pg_big.pcap --mb 560`` (pgbench with the
simple, extended and prepared protocols and reconnect-per-transaction over loopback on port
54359 while tcpdump writes). Each contender runs in its own process under ``/usr/bin/time`` so
its peak RSS is its own. Reported: packets/s, MB/s, peak RSS, the query count, and tshark's
ReadyForQuery and startup counts (whose difference the query count must equal on a loss-free
capture). Timings are reported, never asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = Path(os.environ.get("STALLSCOPE_PGWIRE_CAPTURE", "/tmp/pg_big.pcap"))

FAST = """
import json, sys, time
from parsers import pcap
from parsers.base import ParseContext
path, port = sys.argv[1], int(sys.argv[2])
t = time.perf_counter()
cpu = time.process_time()
with open(path, "rb") as fh:
    result = pcap.parse(fh, ctx=ParseContext(file=path, pg_port=port))
took, cpu = time.perf_counter() - t, time.process_time() - cpu
summary = {d.code: json.loads(d.message) for d in result.accounting.diagnostics if d.code == "pg_wire_summary"}
print(json.dumps({"seconds": took, "cpu_seconds": cpu, "packets": result.accounting.total,
                  "queries": summary["pg_wire_summary"]["queries"], "summary": summary}))
"""


def timed(cmd: list[str], **kw) -> tuple[float, int, str, float]:
    """(wall seconds, peak RSS MiB, stdout, CPU seconds) of one process."""
    with tempfile.NamedTemporaryFile(mode="r", suffix=".time") as tf:
        t = time.perf_counter()
        out = subprocess.run(["/usr/bin/time", "-f", "%M %U %S", "-o", tf.name, *cmd], capture_output=True,
                             text=True, **kw)
        wall = time.perf_counter() - t
        rss_kb, user, system = Path(tf.name).read_text().split()[-3:]
    return wall, int(rss_kb) // 1024, out.stdout, float(user) + float(system)


def tshark_counts(path: Path, port: int) -> tuple[float, int, dict[str, int], float]:
    wall, rss, out, cpu = timed(["tshark", "-r", str(path), "-n", "-d", f"tcp.port=={port},pgsql", "-T", "fields",
                            "-E", "occurrence=a", "-E", "aggregator=|", "-e", "pgsql.type"])
    counts: dict[str, int] = {}
    for line in out.splitlines():
        for t in line.split("|"):
            if t:
                counts[t] = counts.get(t, 0) + 1
    return wall, rss, counts, cpu


def run(path: Path = DEFAULT, port: int = 54359, *, with_tshark: bool = True) -> dict:
    if not path.exists():
        raise SystemExit(f"{path} missing: make it with python3 samples/generate/pcap_app_samples.py "
                         f"--big {path} --mb 560")
    size_mb = path.stat().st_size / 1e6
    load = os.getloadavg()[0]
    cat_s, _, _, _ = timed(["sh", "-c", f"cat {path} > /dev/null"])
    wall, rss, out, _ = timed([sys.executable, "-c", FAST, str(path), str(port)], cwd=ROOT,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
    fast = json.loads(out.strip().splitlines()[-1])
    pps = fast["packets"] / fast["seconds"]
    report = {"capture": str(path), "size_mb": round(size_mb), "packets": fast["packets"],
              "cat_mb_per_s": round(size_mb / cat_s), "fast_seconds": round(fast["seconds"], 2),
              "fast_packets_per_s": round(pps),
              "fast_cpu_packets_per_s": round(fast["packets"] / fast["cpu_seconds"]),
              "fast_mb_per_s": round(size_mb / fast["seconds"], 1),
              "fast_peak_rss_mb": rss, "fast_queries": fast["queries"], "fast_summary": fast["summary"],
              "load_average_1min": round(load, 2)}
    print(f"capture {path}: {size_mb:.0f} MB, {fast['packets']} packets; cat {size_mb / cat_s:.0f} MB/s; "
          f"load average {load:.2f}")
    print(f"fast engine + PostgreSQL wire latency: {fast['seconds']:.1f} s = {pps / 1e3:.0f} k packets/s "
          f"({size_mb / fast['seconds']:.1f} MB/s; CPU {fast['cpu_seconds']:.1f} s = "
          f"{fast['packets'] / fast['cpu_seconds'] / 1e3:.0f} k packets/s), peak RSS {rss} MiB, "
          f"{fast['queries']} queries")
    if with_tshark:
        t_wall, t_rss, counts, t_cpu = tshark_counts(path, port)
        z, startups = counts.get("Ready for query", 0), counts.get("Startup message", 0)
        report.update({"tshark_seconds": round(t_wall, 1), "tshark_packets_per_s": round(fast["packets"] / t_wall),
                       "tshark_cpu_packets_per_s": round(fast["packets"] / t_cpu),
                       "tshark_peak_rss_mb": t_rss, "tshark_ready_for_query": z, "tshark_startups": startups})
        print(f"tshark pgsql dissector (-T fields -e pgsql.type): {t_wall:.1f} s = "
              f"{fast['packets'] / t_wall / 1e3:.0f} k packets/s (CPU {t_cpu:.1f} s = "
              f"{fast['packets'] / t_cpu / 1e3:.0f} k packets/s), peak RSS {t_rss} MiB; "
              f"ReadyForQuery {z} - startups {startups} = {z - startups} (fast engine: {fast['queries']}); "
              f"speed-up x{t_wall / fast['seconds']:.1f}")
    return report


def test_bench_pgwire() -> None:
    report = run(DEFAULT, with_tshark=os.environ.get("STALLSCOPE_BENCH_TSHARK", "1") == "1")
    assert report["packets"] > 0


if __name__ == "__main__":
    args = sys.argv[1:]
    run(Path(args[0]) if args else DEFAULT, int(args[1]) if len(args) > 1 else 54359)
