"""Benchmark: parse a large ``pidstat -h -t`` file built by repeating a real sample with advancing
times; report MB/s and peak RSS next to ``wc -l`` on the same file.

Run: ``python3 tests/benchmarks/bench_pidstat.py [MB]`` or
``python3 -m pytest tests/benchmarks/bench_pidstat.py -s``. Never asserts timings.
"""

from __future__ import annotations

import datetime as dt
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from parsers import pidstat  # noqa: E402
from parsers.base import ParseContext  # noqa: E402

SAMPLE = ROOT / "samples" / "pidstat" / "h_urdwt_c.txt"


def build(path: Path, target_mb: int) -> int:
    """Header once, then the sample's per-interval blocks with clock times one second apart
    (crossing midnight many times, so the day roll-over is exercised too)."""
    lines = SAMPLE.read_text().splitlines(keepends=True)
    header, body = lines[0], lines[1:]
    blocks: list[list[str]] = []
    for line in body:
        if line.startswith("#"):
            blocks.append([line])
        elif blocks and line.strip():
            blocks[-1].append(line)
    t = dt.datetime(2026, 1, 1)
    written = 0
    with path.open("w") as fh:
        fh.write(header + "\n")
        while written < target_mb << 20:
            chunk = []
            for n in range(1000):
                block = blocks[n % len(blocks)]
                clock = t.strftime("%H:%M:%S")
                chunk.append("\n" + block[0])
                chunk.extend(clock + row[8:] for row in block[1:])
                t += dt.timedelta(seconds=1)
            text = "".join(chunk)
            fh.write(text)
            written += len(text)
    return path.stat().st_size


def run(target_mb: int = 100) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pidstat_big.txt"
        size = build(path, target_mb)
        t0 = time.perf_counter()
        wc = subprocess.run(["wc", "-l", str(path)], capture_output=True, text=True, check=True)
        wc_s = time.perf_counter() - t0
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        load = os.getloadavg()[0]
        t0, c0 = time.perf_counter(), time.process_time()
        with path.open("rb") as fh:
            result = pidstat.parse(fh, ctx=ParseContext(file=path.name))
        parse_s, parse_cpu = time.perf_counter() - t0, time.process_time() - c0
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        acct = result.accounting
        mb = size / 2 ** 20
        out = {"size_mb": mb, "lines": int(wc.stdout.split()[0]), "records_total": acct.total,
               "metric_rows": result.metrics.height, "parse_mb_s": mb / parse_s, "wc_mb_s": mb / wc_s,
               "parse_cpu_s": parse_cpu, "parse_mb_cpu_s": mb / parse_cpu, "load": load,
               "peak_rss_mb": rss_after / 1024, "rss_before_mb": rss_before / 1024,
               "metrics_frame_mb": result.metrics.estimated_size() / 2 ** 20, "skipped": dict(acct.skipped)}
        print(f"pidstat -h -t {mb:.0f} MB, {out['lines']} lines (load average {load:.1f} on {os.cpu_count()} "
              f"cores): parse {parse_s:.2f} s = {out['parse_mb_s']:.1f} MB/s, {parse_cpu:.2f} CPU-s = "
              f"{out['parse_mb_cpu_s']:.1f} MB per CPU-second; wc -l {wc_s:.2f} s = {out['wc_mb_s']:.0f} MB/s; peak RSS {out['peak_rss_mb']:.0f} MB "
              f"(before {out['rss_before_mb']:.0f} MB; metric frame {out['metrics_frame_mb']:.0f} MB for "
              f"{out['metric_rows']} rows); skipped {out['skipped']}")
        return out


def test_bench_pidstat():
    out = run(int(os.environ.get("BENCH_MB", "100")))
    assert out["records_total"] == out["lines"]


if __name__ == "__main__":
    run(int(sys.argv[1]) if len(sys.argv) > 1 else 100)
