"""Capture engine throughput on a >= 500 MB real capture, next to tshark and cat.

    python3 tests/benchmarks/bench_pcap.py [CAPTURE]      (or: pytest tests/benchmarks/bench_pcap.py -s)

Without CAPTURE, makes one in /tmp/stallscope-bench/pgbench.pcap (root needed): a private
PostgreSQL (initdb into a temp dir, 127.0.0.1:54349) driven by pgbench (simple, extended and
prepared protocols, part of it reconnecting per transaction) while ``tcpdump -i lo`` writes.
Reports packets/s (per wall second and per CPU second of the process: other work on the
machine distorts wall time), MB/s, the ratios to tshark's ``-q -z conv,tcp`` and peak RSS of
each. The engine runs with full TCP analysis (flow table, tshark analysis flags, ACK RTT,
per-second metrics, events); the whole parser (the same plus PostgreSQL/HTTP latency, see
bench_pgwire.py) is timed too. Timings are reported, never asserted. STALLSCOPE_BENCH_TSHARK=0
skips tshark.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

WORK = Path(os.environ.get("STALLSCOPE_BENCH_DIR", "/tmp/stallscope-bench"))
CAPTURE = WORK / "pgbench.pcap"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
PORT = 54349
TARGET_BYTES = 520 << 20
ROOT = Path(__file__).resolve().parents[2]


def _pg_bin(name: str) -> str:
    for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (d / name).exists():
            return str(d / name)
    return shutil.which(name) or name


def make_capture(path: Path = CAPTURE) -> Path:
    """A real pgbench-over-loopback capture of at least TARGET_BYTES."""
    if path.exists() and path.stat().st_size >= TARGET_BYTES:
        return path
    WORK.mkdir(parents=True, exist_ok=True)
    data = WORK / "pgdata"
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir()
    shutil.chown(WORK, "postgres")
    shutil.chown(data, "postgres")
    as_pg = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*as_pg, _pg_bin("initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"], check=True,
                   capture_output=True)
    subprocess.run([*as_pg, _pg_bin("pg_ctl"), "-D", str(data), "-l", str(WORK / "pg.log"), "-w", "-o",
                    f"-p {PORT} -k {WORK} -c listen_addresses=127.0.0.1 -c max_connections=50", "start"],
                   check=True, capture_output=True)
    pgbench = [_pg_bin("pgbench"), "-h", "127.0.0.1", "-p", str(PORT), "-U", "postgres"]
    try:
        subprocess.run([*pgbench, "-i", "-s", "5", "postgres"], check=True, capture_output=True)
        dump = subprocess.Popen(["tcpdump", "-i", "lo", "-s", "0", "-U", "-w", str(path), f"tcp port {PORT}"],
                                stderr=subprocess.DEVNULL)
        time.sleep(1)
        rounds = [["-M", "simple"], ["-M", "extended"], ["-M", "prepared"], ["-M", "simple", "-C"],
                  ["-M", "prepared", "-S"]]
        i = 0
        while not path.exists() or path.stat().st_size < TARGET_BYTES:
            subprocess.run([*pgbench, "-c", "8", "-j", "2", "-T", "15", *rounds[i % len(rounds)], "postgres"],
                           capture_output=True)
            i += 1
        dump.send_signal(signal.SIGINT)
        dump.wait(timeout=30)
    finally:
        subprocess.run([*as_pg, _pg_bin("pg_ctl"), "-D", str(data), "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(data, ignore_errors=True)
    return path


def _run(cmd: list[str], keep: bool = True) -> tuple[float, float, float, str]:
    """(wall seconds, CPU seconds, peak RSS MiB, first MiBs of stdout unless not ``keep``) of one
    process. Output that is not needed is not kept: a child's peak RSS as Linux reports it
    includes this process's RSS at the fork, so this process must stay small."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    chunks = []
    assert proc.stdout is not None
    for chunk in iter(lambda: proc.stdout.read(1 << 20), b""):
        if keep and len(chunks) < 64:
            chunks.append(chunk)
    _, _, usage = os.wait4(proc.pid, 0)
    return (time.perf_counter() - t0, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024,
            b"".join(chunks).decode("utf-8", "replace"))


# The capture engine alone (issue scope: flows, tshark's TCP analysis flags, ACK RTT, per-second
# metrics, events) and the whole parser (the same plus PostgreSQL/HTTP latency), each timed
# around the parse only (imports excluded), wall and CPU (all threads of the process).
ENGINE = """
import json, sys, time
sys.path.insert(0, {root!r})
from parsers._capture_engine import CaptureEngine
from parsers._capture_output import build
from parsers.base import Accounting
t, cpu = time.perf_counter(), time.process_time()
acct = Accounting('bench')
engine = CaptureEngine()
with open({path!r}, 'rb') as fh:
    engine.run(fh, acct)
metrics, events, flows, _ = build(engine)
el, cpu = time.perf_counter() - t, time.process_time() - cpu
print(json.dumps(dict(seconds=el, cpu=cpu, packets=acct.total, tcp=int(flows['packets_c2s'].sum()
      + flows['packets_s2c'].sum()), flows=flows.height, metrics=metrics.height, events=events.height,
      retrans=int(flows['retransmits'].sum()))))
"""

PARSE = """
import json, sys, time
sys.path.insert(0, {root!r})
from parsers import pcap
from parsers.base import ParseContext
t, cpu = time.perf_counter(), time.process_time()
with open({path!r}, 'rb') as fh:
    r = pcap.parse(fh, ctx=ParseContext(file='bench'))
el, cpu = time.perf_counter() - t, time.process_time() - cpu
print(json.dumps(dict(seconds=el, cpu=cpu, packets=r.accounting.total, flows=r.tables['flows'].height,
                      metrics=r.metrics.height, events=r.events.height)))
"""


def bench(path: Path, *, with_tshark: bool = True) -> dict:
    import json

    size = path.stat().st_size
    load = os.getloadavg()[0]
    t_cat, c_cat, rss_cat, _ = _run(["cat", str(path)], keep=False)
    t_eng, c_eng, rss_eng, out = _run([sys.executable, "-c", ENGINE.format(root=str(ROOT), path=str(path))])
    eng = json.loads(out.strip().splitlines()[-1])
    t_all, c_all, rss_all, out = _run([sys.executable, "-c", PARSE.format(root=str(ROOT), path=str(path))])
    full = json.loads(out.strip().splitlines()[-1])
    pkts = eng["packets"]
    report = {
        "capture": str(path), "size_mb": round(size / 1e6), "packets": pkts, "tcp_packets": eng["tcp"],
        "flows": eng["flows"], "metric_rows": eng["metrics"], "events": eng["events"],
        "load_average_1min": round(load, 2),
        "engine_parse_s": round(eng["seconds"], 2), "engine_cpu_s": round(eng["cpu"], 2),
        "engine_pkts_per_s": round(pkts / eng["seconds"]), "engine_pkts_per_cpu_s": round(pkts / eng["cpu"]),
        "engine_mb_per_s": round(size / 1e6 / eng["seconds"], 1), "engine_peak_rss_mb": round(rss_eng),
        "engine_process_s": round(t_eng, 2), "engine_process_cpu_s": round(c_eng, 2),
        "parse_s": round(full["seconds"], 2), "parse_cpu_s": round(full["cpu"], 2),
        "parse_pkts_per_s": round(pkts / full["seconds"]), "parse_pkts_per_cpu_s": round(pkts / full["cpu"]),
        "parse_peak_rss_mb": round(rss_all),
        "cat_s": round(t_cat, 2), "cat_cpu_s": round(c_cat, 2), "cat_mb_per_s": round(size / 1e6 / t_cat),
        "cat_peak_rss_mb": round(rss_cat), "engine_vs_cat": round(eng["seconds"] / t_cat, 1),
        "load_average_1min_end": round(os.getloadavg()[0], 2),
    }
    if with_tshark:
        t_tsh, c_tsh, rss_tsh, _ = _run(["tshark", "-r", str(path), "-q", "-z", "conv,tcp"], keep=False)
        report.update({
            "tshark_conv_s": round(t_tsh, 2), "tshark_cpu_s": round(c_tsh, 2),
            "tshark_pkts_per_s": round(pkts / t_tsh), "tshark_pkts_per_cpu_s": round(pkts / c_tsh),
            "tshark_peak_rss_mb": round(rss_tsh), "speedup_vs_tshark": round(t_tsh / eng["seconds"], 1),
            "cpu_speedup_vs_tshark": round(c_tsh / eng["cpu"], 1)})
    return report


def test_bench_pcap():
    if shutil.which("tshark") is None or (not CAPTURE.exists() and os.geteuid() != 0):
        import pytest

        pytest.skip("needs tshark and either an existing capture or root to make one")
    report = bench(make_capture(), with_tshark=os.environ.get("STALLSCOPE_BENCH_TSHARK", "1") == "1")
    for key, value in report.items():
        print(f"{key:22s} {value}")


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else make_capture()
    for key, value in bench(target, with_tshark=os.environ.get("STALLSCOPE_BENCH_TSHARK", "1") == "1").items():
        print(f"{key:22s} {value}")
