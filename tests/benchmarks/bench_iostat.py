"""Benchmark: parse a >= 200 MB ``iostat -xt`` file built by repeating a real sample with
advancing timestamps; report MB/s and peak RSS next to ``wc -l`` on the same file.

Run: ``python3 tests/benchmarks/bench_iostat.py [MB ...]`` (several sizes: each in its own
process, to compare peak RSS) or ``python3 -m pytest tests/benchmarks/bench_iostat.py -s``.
Besides wall time it reports CPU seconds (the process's, polars threads included), which a
shared machine distorts less. Never asserts timings.
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

import polars as pl

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from parsers import iostat  # noqa: E402
from parsers.base import ParseContext  # noqa: E402

SAMPLE = ROOT / "samples" / "iostat" / "xt_c.txt"


def build(path: Path, target_mb: int) -> int:
    """Header once, then the sample's reports over and over with times one second apart."""
    lines = SAMPLE.read_text().splitlines(keepends=True)
    header, body = lines[0], lines[1:]
    stamps = [i for i, ln in enumerate(body) if ln[:2].isdigit() and ln.count(":") == 2 and "/" in ln]
    reports = [body[a:b] for a, b in zip(stamps, stamps[1:] + [len(body)], strict=True)]
    t = dt.datetime(2026, 1, 1)
    written = 0
    with path.open("w") as fh:
        fh.write(header + "\n")
        while written < target_mb << 20:
            chunk = []
            for _ in range(2000):
                report = reports[written % len(reports)]
                chunk.append(t.strftime("%m/%d/%y %H:%M:%S") + "\n")
                chunk.extend(report[1:])
                t += dt.timedelta(seconds=1)
            text = "".join(chunk)
            fh.write(text)
            written += len(text)
    return path.stat().st_size


def _naive_loop(path: Path) -> int:
    """Baseline: the least a per-line Python parser does (decode, split, float the last field)."""
    rows = 0
    with path.open("rb") as fh:
        for raw in fh:
            fields = raw.decode("utf-8", "replace").split()
            if len(fields) > 10 and fields[0][0].isalpha() and fields[0] != "Device":
                float(fields[-1])
                rows += 1
    return rows


def _cpu_children() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def frame_bytes(df) -> int:
    """What the frame's columns take: fixed-width columns their width a row, strings 16 bytes a
    row (polars' string views; the few distinct names themselves are shared). ``estimated_size``
    counts string lengths instead of views and so undercounts these columns."""
    return sum(16 * s.len() if s.dtype == pl.Utf8 else s.estimated_size() for s in df.get_columns())


def run(target_mb: int = 210) -> dict:
    """One size in this process (peak RSS is per process: use ``sizes`` for several)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "iostat_big.txt"
        size = build(path, target_mb)
        mb = size / 2 ** 20
        load_before = os.getloadavg()[0]
        t0, c0 = time.perf_counter(), _cpu_children()
        wc = subprocess.run(["wc", "-l", str(path)], capture_output=True, text=True, check=True)
        wc_s, wc_cpu = time.perf_counter() - t0, _cpu_children() - c0
        t0, c0 = time.perf_counter(), time.process_time()
        naive_rows = _naive_loop(path)
        naive_s, naive_cpu = time.perf_counter() - t0, time.process_time() - c0
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        t0, c0 = time.perf_counter(), time.process_time()
        with path.open("rb") as fh:
            result = iostat.parse(fh, ctx=ParseContext(file=path.name))
        parse_s, parse_cpu = time.perf_counter() - t0, time.process_time() - c0
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        rss_after = ru1.ru_maxrss
        acct = result.accounting
        frame_mb = frame_bytes(result.metrics) / 2 ** 20
        out = {"size_mb": mb, "lines": int(wc.stdout.split()[0]), "records_total": acct.total,
               "metric_rows": result.metrics.height, "parse_s": parse_s, "parse_cpu_s": parse_cpu,
               "parse_mb_s": mb / parse_s, "parse_mb_cpu_s": mb / parse_cpu,
               "wc_s": wc_s, "wc_mb_s": mb / wc_s, "wc_mb_cpu_s": mb / max(wc_cpu, 1e-3),
               "naive_s": naive_s, "naive_mb_s": mb / naive_s, "naive_mb_cpu_s": mb / naive_cpu,
               "naive_rows": naive_rows, "peak_rss_mb": rss_after / 1024, "rss_before_mb": rss_before / 1024,
               "metrics_frame_mb": frame_mb, "page_faults": ru1.ru_minflt - ru0.ru_minflt,
               "user_s": ru1.ru_utime - ru0.ru_utime, "sys_s": ru1.ru_stime - ru0.ru_stime,
               "working_mb": rss_after / 1024 - rss_before / 1024 - frame_mb,
               "load": (load_before, os.getloadavg()[0]), "skipped": dict(acct.skipped)}
        print(f"iostat -xt {mb:.0f} MB, {out['lines']} lines, load average {load_before:.1f}->"
              f"{out['load'][1]:.1f} on {os.cpu_count()} cores\n"
              f"  parse     {parse_s:6.2f} s wall = {out['parse_mb_s']:5.0f} MB/s; {parse_cpu:6.2f} CPU-s = "
              f"{out['parse_mb_cpu_s']:5.0f} MB per CPU-second ({out['user_s']:.2f} user + {out['sys_s']:.2f} sys, "
              f"{out['page_faults']} page faults)\n"
              f"  wc -l     {wc_s:6.2f} s wall = {out['wc_mb_s']:5.0f} MB/s; {wc_cpu:6.2f} CPU-s\n"
              f"  naive     {naive_s:6.2f} s wall = {out['naive_mb_s']:5.0f} MB/s; {naive_cpu:6.2f} CPU-s = "
              f"{out['naive_mb_cpu_s']:5.0f} MB per CPU-second (Python split-every-line loop)\n"
              f"  ratios    parse/naive {naive_s / parse_s:.1f}x wall, {naive_cpu / parse_cpu:.1f}x CPU; "
              f"parse/wc -l {wc_s / parse_s:.3f}x wall\n"
              f"  memory    peak RSS {out['peak_rss_mb']:.0f} MB (before parsing {out['rss_before_mb']:.0f} MB); "
              f"the metric frame itself {frame_mb:.0f} MB for {out['metric_rows']} rows "
              f"({result.metrics.width} columns, strings as 16-byte views); the rest "
              f"{out['working_mb']:.0f} MB\n  skipped   {out['skipped']}", flush=True)
        return out


def sizes(mbs: list[int]) -> None:
    """Each size in a fresh process, so that each peak RSS is its own."""
    for mb in mbs:
        subprocess.run([sys.executable, __file__, str(mb)], check=True)


def test_bench_iostat():
    out = run(int(os.environ.get("BENCH_MB", "210")))
    assert out["records_total"] == out["lines"]


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]] or [210]
    if len(args) == 1:
        run(args[0])
    else:
        sizes(args)
