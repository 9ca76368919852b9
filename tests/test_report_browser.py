"""The HTML report in a real headless Chromium: offline, error-free, every chart drawn, the
UTC/local toggle, XSS payloads inert, a non-blank screenshot per report.

Uses Debian's ``chromium`` driven by Playwright's Python package (never a downloaded browser).
Screenshots and timings go to ``$STALLSCOPE_TEST_ARTIFACTS`` (default ``test-artifacts/``)
under ``report/``; with ``STALLSCOPE_UPDATE_SCREENSHOT=1`` the demo bundle's screenshot also
replaces ``samples/screenshots/demo-report.png`` (the README's picture).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

import analyzer
from analyzer import report
from analyzer.report_time import display_zone
from tests.conftest import REQUIRE_TOOLS, require_tool
from tests.report_synth import synthetic_findings, synthetic_timeline
from tests.test_report import BUNDLES, XSS, bundle_timeline

pytestmark = pytest.mark.tools

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(os.environ.get("STALLSCOPE_TEST_ARTIFACTS", "test-artifacts")).resolve() / "report"
SCREENSHOT = Path("samples/screenshots/demo-report.png")
RENDER_TIMEOUT_MS = 240_000  # generous: a busy shared machine; typical renders take seconds
sys.path.insert(0, str(Path("samples/generate").resolve()))


@pytest.fixture(scope="module")
def browser():
    executable = require_tool("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if REQUIRE_TOOLS:
            pytest.fail("the playwright Python package is required (STALLSCOPE_REQUIRE_TOOLS=1)")
        pytest.skip("playwright (Python package) not installed")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=executable, args=ARGS)
        yield chromium
        chromium.close()


class Opened:
    """A report page plus everything it tried to do."""

    def __init__(self, browser, path: Path) -> None:
        self.url = path.resolve().as_uri()
        self.requests: list[str] = []
        self.console_errors: list[str] = []
        self.dialogs: list[str] = []
        self.page = browser.new_page(viewport={"width": 1400, "height": 1000})
        self.page.set_default_timeout(RENDER_TIMEOUT_MS)
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("console", lambda m: self.console_errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.console_errors.append(f"page error: {e}"))
        self.page.on("dialog", self._dialog)
        started = time.perf_counter()
        self.page.goto(self.url, wait_until="load", timeout=RENDER_TIMEOUT_MS)
        self.page.wait_for_selector("body[data-rendered='1']", timeout=RENDER_TIMEOUT_MS)
        self.seconds = time.perf_counter() - started

    def _dialog(self, dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def charts(self, selector: str = ".chart") -> list[dict]:
        return self.page.evaluate("""sel => Array.from(document.querySelectorAll(sel)).map(el => ({
            id: el.id, traces: el.data ? el.data.length : 0,
            points: el.data ? el.data.reduce((n, t) => n + ((t.x || t.y || []).length), 0) : 0,
            svg: el.querySelectorAll('svg.main-svg').length,
            drawn: el.querySelectorAll('g.trace, g.points path, path.js-line, g.point').length,
            height: el.getBoundingClientRect().height}))""", selector)

    def tick_labels(self, chart_id: str) -> list[str]:
        return self.page.evaluate("id => Array.from(document.querySelectorAll('#' + id + ' .xtick text'))"
                                  ".map(t => t.textContent)", chart_id)

    def close(self) -> None:
        self.page.close()


def _assert_healthy(opened: Opened) -> list[dict]:
    assert [u for u in opened.requests if u != opened.url] == [], "the report must not fetch anything"
    assert opened.console_errors == []
    assert opened.dialogs == []
    charts = opened.charts("#lanes .chart, .evidence-charts .chart")
    assert charts, "no chart elements"
    for chart in charts:
        assert chart["svg"] >= 1 and chart["traces"] >= 1 and chart["points"] >= 1 and chart["drawn"] >= 1, chart
        assert chart["height"] > 80, chart
    return charts


def _open_more_metrics(opened: Opened) -> None:
    if opened.page.query_selector("#more-metrics"):
        opened.page.evaluate("() => { document.getElementById('more-metrics').open = true; }")
        opened.page.wait_for_selector("body[data-extra-rendered='1']", timeout=RENDER_TIMEOUT_MS)
        for chart in opened.charts("#more-metrics .chart"):
            assert chart["svg"] >= 1 and chart["traces"] >= 1 and chart["drawn"] >= 1, chart


def _png_pixels(data: bytes) -> np.ndarray:
    """Decode an 8-bit RGB/RGBA non-interlaced PNG (what Chromium writes) into an array."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks, header = 8, [], None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            chunks.append(body)
        pos += 12 + length
    width, height, depth, color, _c, _f, interlace = header
    assert depth == 8 and color in (2, 6) and interlace == 0
    channels = 3 if color == 2 else 4
    raw = np.frombuffer(zlib.decompress(b"".join(chunks)), dtype=np.uint8)
    stride = width * channels
    rows = raw.reshape(height, stride + 1)
    out = np.zeros((height, stride), dtype=np.int32)
    prev = np.zeros(stride, dtype=np.int32)
    for y in range(height):
        kind, line = rows[y, 0], rows[y, 1:].astype(np.int32)
        if kind == 0:
            cur = line
        elif kind == 2:
            cur = (line + prev) & 0xFF
        else:  # 1 sub, 3 average, 4 paeth depend on the current row: decode per byte
            cur = np.zeros(stride, dtype=np.int32)
            for x in range(stride):
                left = cur[x - channels] if x >= channels else 0
                up, ul = prev[x], (prev[x - channels] if x >= channels else 0)
                if kind == 1:
                    pred = left
                elif kind == 3:
                    pred = (left + up) // 2
                else:
                    p = left + up - ul
                    pa, pb, pc = abs(p - left), abs(p - up), abs(p - ul)
                    pred = left if pa <= pb and pa <= pc else up if pb <= pc else ul
                cur[x] = (line[x] + pred) & 0xFF
        out[y] = cur
        prev = cur
    return out.reshape(height, width, channels)


def _screenshot(opened: Opened, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    target = ARTIFACTS / f"{name}.png"
    opened.page.evaluate("window.scrollTo(0, 0)")
    data = opened.page.screenshot(path=str(target), full_page=False)
    pixels = _png_pixels(data)[:, :, :3]
    assert pixels.std() > 20, "screenshot looks blank"
    assert len(np.unique(pixels.reshape(-1, 3)[::97], axis=0)) > 20, "screenshot has almost no colours"
    return target


def _note(name: str, **numbers: object) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / "report-metrics.json"
    notes = json.loads(path.read_text()) if path.is_file() else {}
    notes[name] = numbers
    path.write_text(json.dumps(notes, indent=2, sort_keys=True))
    print(f"\n{name}: " + ", ".join(f"{k}={v}" for k, v in numbers.items()))


def _render(tl, findings, path: Path) -> float:
    started = time.perf_counter()
    path.write_text(report.render(tl, findings), encoding="utf-8")
    return time.perf_counter() - started


@pytest.mark.parametrize("bundle", BUNDLES, ids=[b.name for b in BUNDLES])
def test_committed_bundle_in_chromium(browser, bundle, tmp_path):
    tl = bundle_timeline(str(bundle))
    try:
        findings = tl.findings()
    except Exception as exc:  # the engine is another module: the report must still be checked
        findings = []
        print(f"findings failed for {bundle.name}: {exc!r}")
    out = tmp_path / f"{bundle.name}.html"
    render_s = _render(tl, findings, out)
    opened = Opened(browser, out)
    try:
        charts = _assert_healthy(opened)
        _open_more_metrics(opened)
        toggle = opened.page.query_selector("#tz-toggle")
        if tl.display_tz.upper() in ("UTC", "ETC/UTC"):
            assert toggle is None and opened.page.inner_text("#tz-current") == "UTC"
        else:
            _check_toggle(opened, charts[0]["id"], display_zone(tl.display_tz, *tl.window).label)
        shot = _screenshot(opened, bundle.name)
        if bundle.name == "demo" and os.environ.get("STALLSCOPE_UPDATE_SCREENSHOT") == "1":
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shot, SCREENSHOT)  # the README's picture of the demo report
        _note(bundle.name, html_mb=round(out.stat().st_size / 1e6, 2), render_s=round(render_s, 2),
              browser_s=round(opened.seconds, 2), charts=len(charts), findings=len(findings),
              screenshot=str(shot))
    finally:
        opened.close()


def _click_toggle(opened: Opened) -> None:
    opened.page.evaluate("() => window.scrollTo(0, 0)")
    opened.page.click("#tz-toggle")


def _check_toggle(opened: Opened, chart_id: str, zone: str) -> None:
    before = opened.tick_labels(chart_id)
    title_before = opened.page.inner_text("#tz-current")
    stamp_before = opened.page.inner_text("header .ts")
    _click_toggle(opened)
    opened.page.wait_for_selector("body[data-rendered='1']", timeout=RENDER_TIMEOUT_MS)
    after = opened.tick_labels(chart_id)
    assert title_before == "UTC" and zone in opened.page.inner_text("#tz-current")
    assert before and after and before != after, "axis labels must change with the display zone"
    assert opened.page.inner_text("header .ts") != stamp_before
    axis_title = opened.page.evaluate("() => Array.from(document.querySelectorAll('#lanes .xtitle'))"
                                      ".map(t => t.textContent)")
    assert axis_title and all(zone in t for t in axis_title)
    _click_toggle(opened)
    opened.page.wait_for_selector("body[data-rendered='1']", timeout=RENDER_TIMEOUT_MS)
    assert opened.tick_labels(chart_id) == before
    assert opened.console_errors == []


def test_synthetic_multi_source_report_and_zone_toggle(browser, tmp_path):
    tl = synthetic_timeline(hours=2)  # Europe/Berlin, crossing the spring-forward change
    out = tmp_path / "synthetic.html"
    render_s = _render(tl, synthetic_findings(tl), out)
    opened = Opened(browser, out)
    try:
        charts = _assert_healthy(opened)
        ids = {c["id"] for c in charts}
        assert {"lane-cpu", "lane-threads", "lane-loop", "lane-disk-util", "lane-db-time", "lane-net-errors",
                "lane-events", "lane-coverage", "ev-1-1", "ev-2-1"} <= ids
        _open_more_metrics(opened)
        _check_toggle(opened, "lane-cpu", "Europe/Berlin (CET/CEST)")
        # zooming one lane zooms them all
        opened.page.evaluate("() => Plotly.relayout('lane-cpu', {'xaxis.range': ['2026-03-29 01:00', "
                             "'2026-03-29 01:10']})")
        opened.page.wait_for_timeout(500)
        ranges = opened.page.evaluate("() => ['lane-threads', 'lane-coverage'].map(id => "
                                      "document.getElementById(id).layout.xaxis.range.map(String))")
        assert all(r[0].startswith("2026-03-29 01:00") and r[1].startswith("2026-03-29 01:10") for r in ranges)
        _screenshot(opened, "synthetic-2h")
        _note("synthetic-2h", html_mb=round(out.stat().st_size / 1e6, 2), render_s=round(render_s, 2),
              browser_s=round(opened.seconds, 2), charts=len(charts))
    finally:
        opened.close()


def _assert_inert_and_visible(opened: Opened) -> None:
    assert opened.dialogs == []
    assert opened.page.evaluate("() => document.scripts.length") == 3
    assert opened.page.evaluate("() => document.querySelectorAll('img').length") == 0
    text = opened.page.inner_text("body")
    for payload in XSS[:2]:
        assert payload in text, payload
    svg_text = opened.page.evaluate("() => Array.from(document.querySelectorAll('svg text'))"
                                    ".map(t => t.textContent).join('\\n')")
    assert "<script>alert(1)</script>" in svg_text or '"><img' in svg_text  # plotly shows it as text too
    for chart in opened.page.query_selector_all("#lanes .chart"):
        chart.hover()  # hover labels carry log text
    opened.page.wait_for_timeout(300)
    assert opened.dialogs == [] and opened.console_errors == []


def test_xss_bundle_is_inert(browser, tmp_path):
    from xss_bundle import CLOSE, IMG, SCRIPT, write_bundle

    write_bundle(tmp_path / "bundle")
    tl = analyzer.load(str(tmp_path / "bundle"))
    findings = synthetic_findings(tl, payload=SCRIPT + IMG + CLOSE)
    out = tmp_path / "xss.html"
    _render(tl, findings, out)
    html = out.read_text(encoding="utf-8")
    assert html.count("<script") == 3 and "<img" not in html
    opened = Opened(browser, out)
    try:
        _assert_healthy(opened)
        _assert_inert_and_visible(opened)
        text = opened.page.inner_text("#quality")
        assert "handmade_xss_<script>alert(1)</script>handmade_xss_threads.log" in text  # </script> in a path
        assert f"handmade_xss_notes{IMG}.txt" in text
        if opened.page.query_selector("#tz-toggle"):
            _click_toggle(opened)
            opened.page.wait_for_selector("body[data-rendered='1']", timeout=RENDER_TIMEOUT_MS)
        assert opened.dialogs == []
    finally:
        opened.close()


def test_payload_in_every_field_is_inert(browser, tmp_path):
    payload = "".join(XSS)
    tl = synthetic_timeline(hours=0.1, payload=payload)
    out = tmp_path / "payload.html"
    _render(tl, synthetic_findings(tl, payload), out)
    opened = Opened(browser, out)
    try:
        _assert_healthy(opened)
        _open_more_metrics(opened)
        _assert_inert_and_visible(opened)
        assert XSS[2] in opened.page.inner_text("#details")  # query text, shown verbatim
    finally:
        opened.close()
