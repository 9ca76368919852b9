"""Benchmark: scan a >= 500 MB application log in which 1 line in 20 is an asyncio
slow-callback warning; report MB/s and peak RSS next to ``grep -c took`` on the same file.

The file is made from real lines of a committed bundle's app.log (demo when present) (uvicorn access lines,
INFO lines) and real slow-callback warnings (Task and Handle forms), with the timestamp of
every line advanced by 7 ms so the stall metrics spread over the whole run.

Run: ``python3 tests/benchmarks/bench_applog.py [MB] [plain|access]`` or
``python3 -m pytest tests/benchmarks/bench_applog.py -s`` (BENCH_MB=..., BENCH_MIX=...). Never asserts
timings. ``plain`` (default): the other 19 lines of 20 are INFO/WARNING lines that make no event;
``access``: they are the bundle's lines as logged, mostly access lines (one event each).
A second baseline in the same run is a minimal polars reader of the warnings alone (lazy
``scan_lines``, filter, two extracts: no accounting, framing, times or other records).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from parsers import applog  # noqa: E402
from parsers.base import ParseContext  # noqa: E402

BUNDLE_LOGS = sorted((ROOT / "samples" / "bundles").glob("*/app.log"))
HANDLES = ROOT / "samples" / "applogs" / "py311_asctime_db.log"
STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}")


def _real_lines(mix: str) -> tuple[list[str], list[str]]:
    """Real line bodies (after the 23-character time): ordinary lines and slow-callback warnings.
    ``mix="plain"``: ordinary = the INFO/WARNING lines that make no event (the benchmark the
    issue asks for); ``mix="access"``: the bundle's lines as they come, mostly uvicorn access
    lines, each of which becomes an ``http.request`` event."""
    ordinary, warnings = [], []
    demo = next((p for p in BUNDLE_LOGS if p.parent.name == "demo"), BUNDLE_LOGS[0])
    for path in (demo, HANDLES):
        for line in path.read_text(errors="replace").splitlines():
            if not STAMP.match(line):
                continue
            rest = line[23:]
            if " took " in rest and "Executing <" in rest:
                warnings.append(rest)
            elif "ERROR" in rest or "Traceback" in rest or "CRITICAL" in rest:
                continue
            elif mix == "access" and path == demo:
                ordinary.append(rest)
            elif mix == "plain" and " HTTP/" not in rest and "server process" not in rest:
                ordinary.append(rest)
    return ordinary, warnings


def build(path: Path, target_mb: int, mix: str = "plain") -> tuple[int, int]:
    """Returns (bytes, warnings written)."""
    ordinary, warnings = _real_lines(mix)
    t = dt.datetime(2026, 1, 1)
    step = dt.timedelta(milliseconds=7)
    written = n = o = w = 0
    with path.open("w") as fh:
        while written < target_mb << 20:
            chunk = []
            for _ in range(20_000):
                stamp = t.strftime("%Y-%m-%d %H:%M:%S,") + f"{t.microsecond // 1000:03d}"
                if n % 20 == 19:
                    chunk.append(stamp + warnings[w % len(warnings)] + "\n")
                    w += 1
                else:
                    chunk.append(stamp + ordinary[o % len(ordinary)] + "\n")
                    o += 1
                n += 1
                t += step
            text = "".join(chunk)
            fh.write(text)
            written += len(text)
    return path.stat().st_size, w


def run(target_mb: int = 520, mix: str = "plain") -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "app_big.log"
        size, warnings = build(path, target_mb, mix)
        mb = size / 2**20
        env = {**os.environ, "LC_ALL": "C"}
        children0 = _cpu(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        grep = subprocess.run(["grep", "-c", "took", str(path)], capture_output=True, text=True, env=env)
        grep_s = time.perf_counter() - t0
        grep_cpu = _cpu(resource.RUSAGE_CHILDREN) - children0
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self0 = _cpu(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        with path.open("rb") as fh:
            result = applog.parse(fh, ctx=ParseContext(file=path.name))
        parse_s = time.perf_counter() - t0
        parse_cpu = _cpu(resource.RUSAGE_SELF) - self0
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        # after the parse's peak RSS is read: the prototype's own memory must not count in it
        proto0 = _cpu(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        proto_n = _prototype(path)
        proto_s = time.perf_counter() - t0
        proto_cpu = _cpu(resource.RUSAGE_SELF) - proto0
        acct = result.accounting
        slow = result.events.filter(result.events["kind"] == "loop.slow_callback").height
        out = {
            "size_mb": mb,
            "lines": acct.total,
            "warnings_written": warnings,
            "slow_callbacks": slow,
            "grep_count": int(grep.stdout.strip() or 0),
            "events": result.events.height,
            "metric_rows": result.metrics.height,
            "parse_s": parse_s,
            "parse_mb_s": mb / parse_s,
            "grep_s": grep_s,
            "grep_mb_s": mb / grep_s,
            "ratio_to_grep": parse_s / grep_s,
            "parse_cpu_s": parse_cpu,
            "parse_mb_per_cpu_s": mb / parse_cpu if parse_cpu else float("inf"),
            "grep_cpu_s": grep_cpu,
            "grep_mb_per_cpu_s": mb / grep_cpu if grep_cpu else float("inf"),
            "cpu_ratio_to_grep": parse_cpu / grep_cpu if grep_cpu else float("inf"),
            "prototype_warnings": proto_n,
            "prototype_s": proto_s,
            "prototype_cpu_s": proto_cpu,
            "prototype_mb_per_cpu_s": mb / proto_cpu if proto_cpu else float("inf"),
            "load_avg": os.getloadavg()[0],
            "peak_rss_mb": rss_after / 1024,
            "rss_before_mb": rss_before / 1024,
            "events_frame_mb": result.events.estimated_size() / 2**20,
        }
        print(
            f"applog ({mix} mix) {mb:.0f} MB, {acct.total} lines, {warnings} slow-callback warnings: parse {parse_s:.2f} s = "
            f"{out['parse_mb_s']:.0f} MB/s ({out['ratio_to_grep']:.1f}x grep's time); grep -c took "
            f"{grep_s:.2f} s = {out['grep_mb_s']:.0f} MB/s; per CPU-second: parse {out['parse_mb_per_cpu_s']:.0f} MB/s "
            f"({parse_cpu:.2f} s), grep {out['grep_mb_per_cpu_s']:.0f} MB/s ({grep_cpu:.2f} s), "
            f"{out['cpu_ratio_to_grep']:.1f}x grep's CPU; polars prototype (scan_lines, filter, extract took and "
            f"coroutine; {proto_n} warnings) {out['prototype_mb_per_cpu_s']:.0f} MB/s ({proto_cpu:.2f} s), parse "
            f"{parse_cpu / proto_cpu if proto_cpu else float('inf'):.1f}x its CPU; "
            f"load average {out['load_avg']:.1f}; events {out['events']} "
            f"({slow} slow callbacks), metric rows {out['metric_rows']}; peak RSS {out['peak_rss_mb']:.0f} MB "
            f"(before parsing {out['rss_before_mb']:.0f} MB; the events frame itself is "
            f"{out['events_frame_mb']:.0f} MB)"
        )
        return out


def _prototype(path: Path) -> int:
    """Baseline: the least a vectorised reader of the warnings does (no accounting, framing,
    times, attributes or other records): lazily scan the lines, keep the slow-callback
    warnings, take out the seconds and the coroutine."""
    import polars as pl

    line = pl.col("line")
    found = (
        pl.scan_lines(path)
        .filter(line.str.contains(" took ", literal=True))
        .select(
            line.str.extract(r" took (\d+\.\d+) seconds$", 1).cast(pl.Float64).alias("took"),
            line.str.extract(r"coro=<([^\s()]+)\(\)", 1).alias("coro"),
        )
        .filter(pl.col("took").is_not_null())
        .collect()
    )
    return found.height


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def test_bench_applog():
    out = run(int(os.environ.get("BENCH_MB", "520")), os.environ.get("BENCH_MIX", "plain"))
    assert out["slow_callbacks"] == out["warnings_written"]


if __name__ == "__main__":
    run(int(sys.argv[1]) if len(sys.argv) > 1 else 520, sys.argv[2] if len(sys.argv) > 2 else "plain")
