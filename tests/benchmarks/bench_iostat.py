"""Benchmark: parse a >= 200 MB ``iostat -xt`` file built by repeating a real sample with
advancing timestamps; report MB/s and peak RSS next to ``wc -l`` on the same file.

Run: ``python3 tests/benchmarks/bench_iostat.py [MB]`` or
``python3 -m pytest tests/benchmarks/bench_iostat.py -s``. Never asserts timings.
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


def run(target_mb: int = 210) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "iostat_big.txt"
        size = build(path, target_mb)
        t0 = time.perf_counter()
        wc = subprocess.run(["wc", "-l", str(path)], capture_output=True, text=True, check=True)
        wc_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        naive_rows = _naive_loop(path)
        naive_s = time.perf_counter() - t0
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        with path.open("rb") as fh:
            result = iostat.parse(fh, ctx=ParseContext(file=path.name))
        parse_s = time.perf_counter() - t0
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        acct = result.accounting
        out = {"size_mb": size / 2 ** 20, "lines": int(wc.stdout.split()[0]), "records_total": acct.total,
               "metric_rows": result.metrics.height, "parse_s": parse_s,
               "parse_mb_s": size / 2 ** 20 / parse_s, "wc_s": wc_s, "wc_mb_s": size / 2 ** 20 / wc_s,
               "naive_s": naive_s, "naive_mb_s": size / 2 ** 20 / naive_s, "naive_rows": naive_rows,
               "peak_rss_mb": rss_after / 1024, "rss_before_mb": rss_before / 1024,
               "metrics_frame_mb": result.metrics.estimated_size() / 2 ** 20,
               "skipped": dict(acct.skipped)}
        print(f"iostat -xt {out['size_mb']:.0f} MB, {out['lines']} lines: parse {parse_s:.2f} s = "
              f"{out['parse_mb_s']:.0f} MB/s; wc -l {wc_s:.2f} s = {out['wc_mb_s']:.0f} MB/s; naive Python "
              f"split-every-line loop {naive_s:.2f} s = {out['naive_mb_s']:.0f} MB/s; "
              f"peak RSS {out['peak_rss_mb']:.0f} MB (before {out['rss_before_mb']:.0f} MB; the metric frame "
              f"itself is {out['metrics_frame_mb']:.0f} MB for {out['metric_rows']} rows); skipped {out['skipped']}")
        return out


def test_bench_iostat():
    out = run(int(os.environ.get("BENCH_MB", "210")))
    assert out["records_total"] == out["lines"]


if __name__ == "__main__":
    run(int(sys.argv[1]) if len(sys.argv) > 1 else 210)
