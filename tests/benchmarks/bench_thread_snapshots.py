"""Throughput of the thread-snapshot parsers on large files built from the real samples.

- top: ``samples/threads/top/top_H_all.txt`` (``top -H -b``) repeated with advancing clocks,
  about 20 MB — an hours-long ``top -H -b -d 1`` capture;
- ps: ``samples/threads/ps/ps_eLf_loop_date.txt`` (``date; ps -eLf`` loop) repeated with
  advancing date lines, about 20 MB.

Each parse runs in a child process so its peak RSS is its own; ``wc -l`` on the same file is the
baseline. Reports MB/s and peak RSS; asserts nothing about time.

    python3 tests/benchmarks/bench_thread_snapshots.py
    python3 -m pytest tests/benchmarks/bench_thread_snapshots.py -s
"""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TARGET_BYTES = 20 << 20


def build_top(path: Path) -> None:
    text = (ROOT / "samples/threads/top/top_H_all.txt").read_text()
    frames = re.split(r"(?m)^(?=top - )", text)
    frames = [f for f in frames if f.startswith("top - ")]
    clock = dt.datetime(2026, 1, 1, 0, 0, 0)
    written = 0
    with path.open("w") as out:
        while written < TARGET_BYTES:
            for frame in frames:
                clock += dt.timedelta(seconds=1)
                chunk = re.sub(r"^top - \d\d:\d\d:\d\d", f"top - {clock:%H:%M:%S}", frame)
                out.write(chunk)
                written += len(chunk)


def build_ps(path: Path) -> None:
    text = (ROOT / "samples/threads/ps/ps_eLf_loop_date.txt").read_text()
    shots = re.split(r"(?m)^(?=\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d UTC \d{4}$)", text)
    shots = [s.split("\n", 1)[1] for s in shots if s.strip()]
    clock = dt.datetime(2026, 1, 1, 0, 0, 0)
    written = 0
    with path.open("w") as out:
        while written < TARGET_BYTES:
            for shot in shots:
                clock += dt.timedelta(seconds=1)
                chunk = f"{clock:%a %b %e %H:%M:%S} UTC {clock:%Y}\n{shot}"
                out.write(chunk)
                written += len(chunk)


CHILD = """
import datetime as dt, resource, sys, time
from parsers import registry
from parsers.base import ParseContext
module = registry.get(sys.argv[1])
mtime = dt.datetime(2026, 1, 9, tzinfo=dt.timezone.utc)
start = time.perf_counter()
with open(sys.argv[2], "rb") as fh:
    result = module.parse(fh, ctx=ParseContext(file=sys.argv[2], file_mtime=mtime))
elapsed = time.perf_counter() - start
acct = result.accounting
print(elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, acct.total, acct.parsed_count,
      acct.skipped_count, result.metrics.height)
"""


# the naive baseline: a Python loop that only splits every line
SPLIT_LOOP = """
import sys, time
start = time.perf_counter()
n = sum(len(line.split()) for line in open(sys.argv[1], "rb"))
print(time.perf_counter() - start)
"""


def timed_child(cmd: list[str]) -> tuple[float, float, str]:
    """(seconds, peak RSS MiB, stdout) of one child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    out = proc.stdout.read() if proc.stdout else ""
    _, _, usage = os.wait4(proc.pid, 0)
    return time.perf_counter() - t0, usage.ru_maxrss / 1024, out


def measure(parser: str, path: Path) -> dict[str, float]:
    size_mb = path.stat().st_size / 1e6
    wc_s, wc_rss, _ = timed_child(["wc", "-l", str(path)])
    _, _, split_out = timed_child([sys.executable, "-c", SPLIT_LOOP, str(path)])
    split_s = float(split_out)
    _, rss_mb, out = timed_child([sys.executable, "-c", CHILD, parser, str(path)])
    elapsed, _, total, parsed, skipped, rows = (float(x) for x in out.split())
    report = {"size_mb": size_mb, "parse_mb_s": size_mb / elapsed, "parse_rss_mb": rss_mb,
              "wc_mb_s": size_mb / wc_s, "wc_rss_mb": wc_rss, "split_loop_mb_s": size_mb / split_s,
              "lines": total, "parsed": parsed, "skipped": skipped, "metric_rows": rows}
    print(f"{parser}: {size_mb:.1f} MB, {total:.0f} lines ({parsed:.0f} parsed, {skipped:.0f} skipped), "
          f"{rows:.0f} metric rows: {report['parse_mb_s']:.1f} MB/s, peak RSS {rss_mb:.0f} MB | "
          f"wc -l: {report['wc_mb_s']:.0f} MB/s, peak RSS {wc_rss:.1f} MB | "
          f"Python split-only loop: {report['split_loop_mb_s']:.1f} MB/s")
    return report


def test_thread_snapshot_throughput():
    with tempfile.TemporaryDirectory() as tmp:
        top_file, ps_file = Path(tmp) / "top_H.txt", Path(tmp) / "ps_loop.txt"
        build_top(top_file)
        build_ps(ps_file)
        top_report = measure("top", top_file)
        ps_report = measure("ps_threads", ps_file)
    assert top_report["parsed"] + top_report["skipped"] == top_report["lines"]
    assert ps_report["parsed"] + ps_report["skipped"] == ps_report["lines"]


if __name__ == "__main__":
    test_thread_snapshot_throughput()
