"""Report benchmark: a 24-hour multi-source timeline (1-second samples) and every committed
bundle → HTML size, render time, peak RSS, and (when Chromium + Playwright are present) time
until every chart is drawn. Baseline measured in the same run: writing the same metrics as CSV. Wall and CPU time are
both printed: on a shared machine the CPU time is the steadier number.

    python3 -m pytest tests/benchmarks/bench_report.py -s
    python3 tests/benchmarks/bench_report.py [HOURS]
"""

from __future__ import annotations

import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import analyzer  # noqa: E402
from analyzer import report  # noqa: E402
from tests.report_synth import synthetic_findings, synthetic_timeline  # noqa: E402

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _browser_seconds(path: Path) -> float | None:
    executable = shutil.which("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if executable is None:
        return None
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        started = time.perf_counter()
        page.goto(path.resolve().as_uri(), timeout=600_000)
        page.wait_for_selector("body[data-rendered='1']", timeout=600_000)
        seconds = time.perf_counter() - started
        browser.close()
    return seconds


def measure(name: str, tl: analyzer.Timeline, findings: list, out_dir: Path, browser: bool) -> dict:
    out = out_dir / f"{name}.html"
    started, cpu_started = time.perf_counter(), time.process_time()
    html = report.render(tl, findings)
    render_s, render_cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
    out.write_text(html, encoding="utf-8")
    started = time.perf_counter()
    csv_path = out_dir / f"{name}-metrics.csv"
    tl.metrics.write_csv(csv_path)
    csv_s = time.perf_counter() - started
    row = {"name": name, "metric_rows": tl.metrics.height, "events": tl.events.height,
           "html_mb": out.stat().st_size / 1e6, "render_s": render_s, "render_cpu_s": render_cpu_s,
           "baseline_csv_s": csv_s, "baseline_csv_mb": csv_path.stat().st_size / 1e6,
           "peak_rss_mb": _rss_mb(), "browser_s": _browser_seconds(out) if browser else None}
    browser_text = f"{row['browser_s']:.1f} s" if row["browser_s"] is not None else "n/a"
    print(f"{name:>14}: {row['metric_rows']:>9} rows, {row['events']:>6} events → {row['html_mb']:.1f} MB HTML "
          f"in {render_s:.2f} s wall / {render_cpu_s:.2f} s CPU (baseline: metrics CSV {row['baseline_csv_mb']:.0f} MB in {csv_s:.2f} s); "
          f"peak RSS {row['peak_rss_mb']:.0f} MB; Chromium until all charts drawn: {browser_text}")
    return row


def run(hours: float = 24.0, browser: bool = True) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = Path(tmp)
        started = time.perf_counter()
        tl = synthetic_timeline(hours=hours)
        print(f"synthetic {hours:g} h timeline built in {time.perf_counter() - started:.1f} s")
        rows.append(measure(f"synthetic-{hours:g}h", tl, synthetic_findings(tl), out_dir, browser))
        del tl
        for bundle in sorted(p for p in (ROOT / "samples" / "bundles").glob("*") if p.is_dir()):
            started = time.perf_counter()
            tl = analyzer.load(str(bundle))
            load_s = time.perf_counter() - started
            try:
                findings = tl.findings()
            except Exception as exc:  # another module; measure the report regardless
                print(f"{bundle.name}: findings failed: {exc!r}")
                findings = []
            print(f"{bundle.name}: loaded in {load_s:.1f} s, {len(findings)} findings")
            rows.append(measure(bundle.name, tl, findings, out_dir, browser))
    return rows


def test_bench_report():
    rows = run(24.0)
    assert rows[0]["html_mb"] < 15


if __name__ == "__main__":
    run(float(sys.argv[1]) if len(sys.argv) > 1 else 24.0)
