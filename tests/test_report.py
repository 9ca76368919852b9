"""The HTML report without a browser: view-model, escaping, time zones, downsampling, size."""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
from pathlib import Path

import polars as pl
import pytest

import analyzer
from analyzer import report
from analyzer.report_lanes import LANES, downsample
from analyzer.report_time import display_zone, local_text
from analyzer.report_view import build_view
from tests.report_synth import DST_START, synthetic_findings, synthetic_timeline

UTC = dt.timezone.utc
BUNDLES = sorted(p for p in Path("samples/bundles").glob("*") if p.is_dir()) if Path("samples/bundles").is_dir() \
    else []
XSS = ['<script>alert(1)</script>', '"><img src=x onerror=alert(1)>', "</script><script>alert(2)</script>"]


@functools.cache
def bundle_timeline(path: str) -> analyzer.Timeline:
    return analyzer.load(path)


def _script_bodies(html: str) -> list[str]:
    return re.findall(r"<script[^>]*>(.*?)</script>", html, flags=re.S)


# -- safe JSON and escaping --------------------------------------------------------------------
def test_script_json_cannot_close_the_script_element():
    text = str(report.script_json({"q": "</script><!-- \u2028 & <b>", "n": [1, 2.5, None]}))
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == {"q": "</script><!-- \u2028 & <b>", "n": [1, 2.5, None]}


def test_every_payload_is_escaped_everywhere():
    payload = "".join(XSS)
    tl = synthetic_timeline(hours=0.05, payload=payload)
    html = report.render(tl, synthetic_findings(tl, payload))
    # the only script elements are the three the template writes: plotly, data, report code
    assert html.count("<script") == 3 and html.count("</script>") == 3
    assert "<img src=x" not in html and "alert(1)</script>" not in html
    # payloads are shown as text: escaped in the markup ...
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in html
    # ... and intact once the embedded JSON is parsed (plotly gets entity-escaped text)
    data = json.loads(re.search(r'<script id="report-data" type="application/json">(.*?)</script>', html,
                                flags=re.S).group(1))
    names = [t["name"] for lane in data["lanes"] for t in lane["traces"]]
    assert any("&lt;script&gt;alert(1)&lt;/script&gt;" in n for n in names)
    assert not any("<script>" in n for n in names)


def test_csp_forbids_network_and_nothing_is_fetched():
    tl = synthetic_timeline(hours=0.02)
    html = report.render(tl, [])
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html).group(1)
    assert "default-src 'none'" in csp and "connect-src 'none'" in csp
    assert not re.search(r'<(?:script|link|img|iframe)[^>]+(?:src|href)=', html)
    assert html.count(report.plotly_js()[:200]) == 1  # plotly.js inlined once
    ours = html.replace(report.plotly_js(), "")
    assert "http://" not in ours and "https://" not in ours and "@import" not in ours


# -- time zones ----------------------------------------------------------------------------------
def test_display_zone_follows_dst_inside_the_window():
    zone = display_zone("Europe/Berlin", DST_START, DST_START + dt.timedelta(hours=2))
    assert [(o, a) for _t, o, a in zone.transitions] == [(3_600_000, "CET"), (7_200_000, "CEST")]
    assert zone.transitions[1][0] == int(dt.datetime(2026, 3, 29, 1, 0, tzinfo=UTC).timestamp() * 1000)
    assert zone.label == "Europe/Berlin (CET/CEST)" and not zone.is_utc
    assert local_text("2026-03-29T00:59:59Z", zone) == "2026-03-29 01:59:59 CET"
    assert local_text("2026-03-29T01:00:00Z", zone) == "2026-03-29 03:00:00 CEST"
    autumn = display_zone("America/New_York", dt.datetime(2026, 11, 1, 4, tzinfo=UTC),
                          dt.datetime(2026, 11, 1, 8, tzinfo=UTC))
    assert [(o // 3_600_000, a) for _t, o, a in autumn.transitions] == [(-4, "EDT"), (-5, "EST")]


def test_display_zone_fallbacks():
    assert display_zone("UTC", None, None).is_utc
    fixed = display_zone("+05:30", DST_START, DST_START + dt.timedelta(days=200))
    assert fixed.transitions == [(int(DST_START.timestamp() * 1000), 19_800_000, "")]
    bogus = display_zone("Mars/Olympus", DST_START, DST_START)
    assert not bogus.valid and bogus.is_utc and bogus.name == "UTC"


def test_header_states_the_zone_and_the_dst_change():
    tl = synthetic_timeline(hours=1)
    view = build_view(tl, [], None)
    assert view["zone"]["label"] == "Europe/Berlin (CET/CEST)"
    assert view["zone"]["changes"] == [{"at": "2026-03-29T01:00:00.000Z", "change": "CET → CEST",
                                        "forward": True, "minutes": 60}]
    html = report.render(tl, [])
    assert "show bundle-local time (Europe/Berlin (CET/CEST))" in html
    assert "60 minutes are skipped" in html


# -- downsampling ----------------------------------------------------------------------------------
def test_downsample_keeps_spikes_and_bounds_points():
    n = 200_000
    t = pl.Series("t", range(0, n * 1000, 1000), dtype=pl.Int64)
    values = pl.Series("value", [float(i % 7) for i in range(n)])
    values[123_457] = 999.0
    values[7] = -50.0
    df = pl.DataFrame({"k": ["a"] * n, "t": t, "value": values})
    small = downsample(df, "k", n * 1000, buckets=1000)
    assert small.height <= 2000
    assert small.get_column("value").max() == 999.0 and small.get_column("value").min() == -50.0
    assert small.filter(pl.col("value") == 999.0).get_column("t").item() == 123_457_000
    short = df.head(50)
    assert downsample(short, "k", 50_000, buckets=1000).height == 50  # fewer points than buckets: unchanged
    assert downsample(short, "k", n * 1000, buckets=1000).height == 2  # all in one bucket: its min and max


def test_gaps_become_nulls_and_lines_break():
    tl = synthetic_timeline(hours=0.25)
    view = build_view(tl, [], None)
    cpu = next(lane for lane in view["data"]["lanes"] if lane["key"] == "cpu")
    busy = next(t for t in cpu["traces"] if t["metric"] == "cpu.busy_pct")
    assert busy["y"].count(None) == 1  # the two-minute iostat gap
    assert len(busy["t"]) == len(busy["y"])
    iostat = next(s for s in view["sources"] if s["file"] == "iostat.txt")
    assert [g["seconds"] for g in iostat["gaps"]] == [121.0]


# -- lanes ------------------------------------------------------------------------------------------
def test_lanes_follow_use_order_and_cover_every_source():
    tl = synthetic_timeline(hours=0.25)
    view = build_view(tl, [], None)
    lanes = view["data"]["lanes"]
    uses = [lane["use"] for lane in lanes]
    rank = {"utilisation": 0, "saturation": 1, "errors": 2, "quality": 3}
    assert [rank[u] for u in uses] == sorted(rank[u] for u in uses)
    drawn = {lane["key"] for lane in lanes if lane["traces"]}
    assert {"cpu", "proc_cpu", "disk_util", "db_time", "threads", "loop", "disk_latency", "disk_queue",
            "db_latency", "net_rtt", "net_errors", "events", "coverage"} <= drawn
    assert view["missing"] == []
    loop = next(lane for lane in lanes if lane["key"] == "loop")
    spans = next(t for t in loop["traces"] if t["kind"] == "span")
    assert len(spans["t"]) == 15 and min(spans["w"]) >= 300  # slow callbacks as intervals, in ms
    events = next(lane for lane in lanes if lane["key"] == "events")
    assert {t["category"] for t in events["traces"]} == {"log.error", "asyncio.task_destroyed"}
    db = next(lane for lane in lanes if lane["key"] == "db_time")
    assert [t["name"] for t in db["traces"]][:2] == ["SELECT … LIKE ", "SELECT items by id"]
    # a metric no lane claims still shows up
    assert [lane["key"] for lane in view["data"]["extra"]] == ["m-cpu.idle_pct", "m-pg.calls_per_s", "m-proc.minflt_per_s"]


def test_every_lane_spec_uses_vocabulary_names():
    from parsers import schema

    for spec in LANES:
        assert set(spec.metrics) <= set(schema.METRICS), spec.key
        assert set(spec.events) - {"*"} <= set(schema.EVENTS), spec.key


def test_missing_sources_are_named_not_hidden():
    tl = analyzer.load("samples/thread_monitor/monitor_sleep_threads.log")
    view = build_view(tl, [], None)
    missing = {m["title"] for m in view["missing"]}
    assert {"CPU", "Disk utilisation", "Event-loop stalls", "Errors and events"} <= missing
    assert "Threads" not in missing
    html = report.render(tl, [])
    assert "Absence of evidence here is not evidence of absence" in html
    assert "monitor_sleep_threads.log" in html and "thread_monitor" in html


def test_a_lane_with_one_entity_per_file_draws_once_and_says_so():
    tl = synthetic_timeline(hours=0.05)
    copy = (tl.metrics.filter(pl.col("metric") == "disk.util_pct").head(100)
            .with_columns(pl.lit("iostat.json").alias("file")))
    tl.metrics = pl.concat([tl.metrics, copy])
    lane = next(lane for lane in build_view(tl, [], None)["data"]["lanes"] if lane["key"] == "disk_util")
    assert len(lane["traces"]) == 2 and "also came from iostat.json" in lane["note"]


# -- findings ------------------------------------------------------------------------------------------
def test_findings_render_with_full_minimal_and_odd_shapes():
    tl = synthetic_timeline(hours=0.25)
    findings = synthetic_findings(tl)
    view = build_view(tl, findings, None)
    f1, f2, f3 = view["findings"]
    assert (f1["key"], f2["key"], f3["key"]) == ("event_loop_blocked", "disk_saturation", "")  # by severity
    assert f2["confidence"] == "85%" and f1["confidence"] == "high" and f3["confidence"] == "not stated"
    assert f2["why"][0].startswith("%util ≥ 99")
    assert [c["title"] for c in f2["charts"]] == ["disk.util_pct — dev:sda", "cpu.iowait_pct — cpu:all",
                                                  "disk.await_ms — dev:sda"]  # evidence first, then the key's
    assert f1["charts"] and f1["charts"][0]["title"].startswith("loop.stall_ms")
    assert f2["evidence"][0]["where"] == "iostat.txt:1234"
    assert f2["recommendations"] == ["Move the write-heavy job off sda ", "Check the RAID cache"]
    assert f3["t0"] is None and f3["charts"] == []
    windows = view["data"]["windows"]
    assert [w["num"] for w in windows] == [1, 2]
    html = report.render(tl, findings)
    assert 'href="#src-iostat-txt-' in html  # evidence links to the file's data-quality row
    assert "sda 0.00 812.00 99.50" in html and "plain string evidence" in html
    for f in view["findings"]:
        assert f'id="{f["anchor"]}"' in html


def test_findings_with_junk_values_do_not_break_the_report():
    tl = synthetic_timeline(hours=0.02)
    odd = [{"title": None, "start": "not a time", "end": 5, "severity": None, "confidence": float("nan"),
            "entities": "dev:sda", "evidence": {"metric": "no.such_metric"}, "recommendations": None},
           "not a dict"]
    html = report.render(tl, odd)  # type: ignore[arg-type]
    assert "Finding 1" in html


# -- per-source sections and data quality ------------------------------------------------------------
def test_per_source_tables():
    tl = synthetic_timeline(hours=0.25)
    detail = {s["id"]: s for s in build_view(tl, [], None)["detail"]}
    slow = detail["detail-slow-callbacks"]["rows"]
    assert len(slow) == 1 and slow[0][1] == 15  # one coroutine, 15 callbacks
    queries = detail["detail-queries"]["rows"]
    assert [r[0]["code"] for r in queries] == ["query:111", "query:222", "query:333"]
    assert queries[0][6]["pre"].startswith("SELECT count(*) FROM items WHERE note LIKE")
    assert detail["detail-flows"]["rows"][0][2] == 6  # sorted by retransmits
    assert [r[0]["code"] for r in detail["detail-devices"]["rows"]] == ["dev:sda", "dev:nvme0n1"]
    assert detail["detail-threads"]["rows"][0][4] == "140"


def test_data_quality_lists_every_file_unrecognised_and_refused():
    tl = synthetic_timeline(hours=0.05)
    view = build_view(tl, [], None)
    assert len(view["sources"]) == tl.sources.height == 8
    assert [s["file"] for s in view["unrecognised"]] == ["notes/readme.txt"]
    assert [s["file"] for s in view["refused"]] == ["../evil"]
    applog = next(s for s in view["sources"] if s["parser"] == "applog")
    assert applog["reasons"] == [("not_applicable", 38), ("unparsed_line", 2)]
    html = report.render(tl, [])
    assert "unsafe_path" in html and "member path leaves the bundle" in html


def test_empty_timeline_renders():
    empty = analyzer.Timeline(*(pl.DataFrame(schema=s) for s in (
        analyzer.timeline.schema.METRIC_COLUMNS, analyzer.timeline.schema.EVENT_COLUMNS,
        analyzer.timeline.schema.SOURCE_COLUMNS, analyzer.timeline.schema.DIAGNOSTIC_COLUMNS)))
    html = report.render(empty, [])
    assert "No data was parsed" in html


def test_report_size_stays_small_for_a_long_window():
    tl = synthetic_timeline(hours=3)
    html = report.render(tl, synthetic_findings(tl))
    data = _script_bodies(html)[1]
    assert len(data) < 3_000_000  # the chart data, downsampled: independent of the sample count
    assert len(html) < 9_000_000


# -- real inputs -------------------------------------------------------------------------------------------
def test_thread_monitor_sample_report(tmp_path):
    tl = analyzer.load("samples/thread_monitor/monitor_sleep_threads.log")
    out = tl.report(tmp_path / "r.html")
    html = out.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>")
    data = json.loads(re.search(r'type="application/json">(.*?)</script>', html, flags=re.S).group(1))
    threads = next(lane for lane in data["lanes"] if lane["key"] == "threads")
    assert sum(len(t["t"]) for t in threads["traces"]) == tl.metrics.height


@pytest.mark.parametrize("bundle", BUNDLES, ids=[b.name for b in BUNDLES])
def test_committed_bundle_report(bundle):
    tl = bundle_timeline(str(bundle))
    html = report.render(tl, [])
    view = build_view(tl, [], None)
    assert len(view["sources"]) == tl.sources.height
    for source in view["sources"]:
        assert f"<code>{source['file']}</code>" in html or source["file"] != source["file"].strip()
    assert len(html) < 15_000_000


# -- Chrome trace export -------------------------------------------------------------------------------------
def test_chrome_trace_export(tmp_path):
    from analyzer.report_trace import write_trace

    tl = synthetic_timeline(hours=0.05)
    path = write_trace(tl, tmp_path / "trace.json", synthetic_findings(tl))
    doc = json.loads(path.read_text())
    events = doc["traceEvents"]
    by_phase: dict[str, int] = {}
    for e in events:
        by_phase[e["ph"]] = by_phase.get(e["ph"], 0) + 1
    assert by_phase["C"] == tl.metrics.height
    assert by_phase["X"] == tl.events.filter(pl.col("end").is_not_null()).height + 2  # + two dated findings
    assert by_phase["i"] == tl.events.filter(pl.col("end").is_null()).height
    spans = [e for e in events if e["ph"] == "X" and e["name"] == "loop.slow_callback"]
    assert all(e["dur"] >= 300_000 and e["args"]["source"].startswith("app.log:") for e in spans)
    names = {e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "process_name"}
    assert {"iostat.txt", "app.log", "stallscope findings"} <= names
    first = min(e["ts"] for e in events if e["ph"] == "C")
    assert first == int(tl.metrics.get_column("ts").min().timestamp() * 1_000_000)


def test_cli_report_writes_trace_and_json(tmp_path):
    from analyzer.cli import main

    out = tmp_path / "r.html"
    code = main(["report", "samples/thread_monitor/monitor_sleep_threads.log", "-o", str(out),
                 "--trace", str(tmp_path / "t.json"), "--json", str(tmp_path / "f.json")])
    assert code in (0, 3)
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    trace = json.loads((tmp_path / "t.json").read_text())
    assert sum(1 for e in trace["traceEvents"] if e["ph"] == "C") == 20


def test_engine_shaped_finding_links_related_findings_and_evidence_windows():
    tl = synthetic_timeline(hours=0.25)
    start, _end = tl.window
    at = lambda s: (start + dt.timedelta(seconds=s)).isoformat().replace("+00:00", "Z")  # noqa: E731
    findings = [
        {"id": "cpu_saturation-1", "key": "cpu_saturation", "title": "CPUs saturated", "start": at(300),
         "end": at(400), "severity": "high", "confidence": 0.65, "confidence_reason": "busy 100 % for 100 s",
         "entities": ["cpu:all"], "upstream": [], "downstream": ["event_loop_blocked-1", "gone-9"],
         "evidence": [{"role": "host_cpu", "source": "iostat", "metric": "cpu.busy_pct", "entity": "cpu:all",
                       "start": at(300), "end": at(400), "baseline": 20.0, "peak": 100.0, "unit": "%",
                       "peak_at": at(310), "file": "iostat.txt", "line": 13}]},
        {"id": "event_loop_blocked-1", "key": "event_loop_blocked", "title": "Loop blocked", "start": at(540),
         "end": at(555), "severity": "high", "confidence": 0.9, "upstream": ["cpu_saturation-1"],
         "evidence": [{"role": "symptom", "kind": "loop.slow_callback", "entity": "coro:x@a.py:1",
                       "start": at(540), "end": at(555), "peak": 1.87, "count": 15, "file": "app.log", "line": 353}]},
    ]
    view = build_view(tl, findings, None)
    cpu, loop = view["findings"]
    assert cpu["downstream"][0] == {"id": "event_loop_blocked-1", "anchor": "finding-event_loop_blocked-1",
                                    "label": "F2", "title": "Loop blocked"}
    assert cpu["downstream"][1]["anchor"] == ""  # an id that is not in the report stays plain text
    assert loop["upstream"][0]["label"] == "F1"
    ev = cpu["evidence"][0]
    assert ev["role"] == "host_cpu" and ev["ts"] == at(310).replace("Z", ".000Z") and ev["where"] == "iostat.txt:13"
    assert ("baseline", "20") in ev["extras"] and ("peak", "100") in ev["extras"]
    assert cpu["charts"][0]["title"] == "cpu.busy_pct — cpu:all"
    html = report.render(tl, findings)
    assert '<a href="#finding-event_loop_blocked-1">F2</a>' in html and "Caused by" in html


def test_clock_skew_estimates_are_shown_when_present():
    tl = synthetic_timeline(hours=0.02)
    tl.options["clock_skew"] = [{"file": "app.log", "reference": "iostat.txt", "offset_s": -37.04,
                                 "uncertainty_s": 0.1, "method": "events:http.request", "support": 812,
                                 "quality": 0.9, "applied": False}]
    html = report.render(tl, [])
    assert "Clock agreement between files" in html and "-37.0 s" in html and "events:http.request" in html
    assert "Clock agreement" not in report.render(synthetic_timeline(hours=0.02), [])
