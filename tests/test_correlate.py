"""The engine's building blocks (baselines, change points, event bursts, incident windows,
co-movement) and its public surface (``correlate``, ``findings_frame``, ``--json``)."""

from __future__ import annotations

import datetime as dt
import doctest
import importlib
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import analyzer
from analyzer import anomaly, windows
from analyzer.cli import main
from analyzer.correlate import FINDING_COLUMNS, anomalies, correlate, findings_frame, incidents
from tests._timeline_factory import at, event, level, series, timeline

N = 120


def _metrics(rows):
    return timeline(rows).metrics


def test_rolling_baseline_flags_the_burst_and_only_the_burst():
    scored = anomaly.score(_metrics(series("disk.await_ms", "dev:vda", level(0.5, 40.0, n=N, burst=range(60, 70)))))
    flagged = scored.filter(pl.col("anomalous"))
    assert flagged.height == 10
    assert flagged.get_column("ts").min() == at(61) and flagged.get_column("reason").unique().to_list() == ["baseline"]
    assert scored.get_column("base").median() == 0.5


def test_threshold_catches_what_the_baseline_calls_normal():
    # util stuck at 95 % all along: no deviation from its baseline, but above what practitioners accept
    scored = anomaly.score(_metrics(series("disk.util_pct", "dev:sda", [95.0] * N)))
    assert scored.get_column("anomalous").all() and scored.get_column("reason").unique().to_list() == ["threshold"]


def test_user_baseline_period_replaces_the_rolling_median():
    # the second half is elevated and would dominate a rolling median; the named quiet period says otherwise
    values = [2.0] * 40 + [20.0] * 80
    rows = series("disk.await_ms", "dev:vda", values)
    rolling = anomaly.score(_metrics(rows))
    quiet = anomaly.score(_metrics(rows), baseline=(at(0), at(40)))
    assert rolling.filter(pl.col("ts") > at(100)).get_column("anomalous").sum() == 0
    assert quiet.filter(pl.col("ts") > at(41)).get_column("anomalous").all()
    assert quiet.get_column("base").unique().to_list() == [2.0]


def test_sparse_series_absent_means_zero():
    # pidstat prints active tasks only: a process seen in 5 of 120 seconds has a zero baseline
    rows = series("proc.write_kbps", "pid:5", [0.0] * N, source="pidstat")[:1] + \
        series("proc.write_kbps", "pid:6", [200_000.0] * 5, source="pidstat", start=60) + \
        series("proc.write_kbps", "pid:7", [1.0] * N, source="pidstat")
    scored = anomaly.score(_metrics(rows))
    hot = scored.filter(pl.col("entity") == "pid:6")
    assert hot.get_column("base").unique().to_list() == [0.0] and hot.get_column("anomalous").all()


def test_flows_are_summed_per_server_endpoint():
    rows = series("net.retransmits", "flow:10.0.0.1:5000>10.0.0.2:80", [1.0] * 5, source="pcap") + \
        series("net.retransmits", "flow:10.0.0.3:5001>10.0.0.2:80", [2.0] * 5, source="pcap")
    prepared = anomaly.prepare(_metrics(rows))
    assert prepared.get_column("entity").unique().to_list() == ["endpoint:10.0.0.2:80"]
    assert prepared.get_column("value").to_list() == [3.0] * 5


def test_change_point_marks_the_step():
    values = [5.0] * 50 + [120.0] * 70
    changes = anomaly.change_points(anomaly.score(_metrics(series("proc.threads", "pid:1", values,
                                                                  source="thread_monitor"))))
    assert changes.height == 1
    row = changes.row(0, named=True)
    assert row["ts"] == at(51) and (row["before"], row["after"]) == (5.0, 120.0)


def test_event_bursts_respect_gap_and_minimum_count():
    evs = [event("tcp.rst", 10 + i / 10, entity="flow:a:1>b:2", source="pcap") for i in range(8)]
    evs += [event("tcp.rst", 60.0, entity="flow:a:1>b:2", source="pcap")]  # alone: below min_count 5
    evs += [event("loop.slow_callback", s, s + 0.4, entity="coro:f@x.py:1", value=0.4) for s in (30, 33, 50)]
    bursts = anomaly.event_bursts(timeline(events=evs).events)
    got = sorted((r["metric"], r["samples"]) for r in bursts.iter_rows(named=True))
    assert got == [("loop.slow_callback", 1), ("loop.slow_callback", 2), ("tcp.rst", 8)]


def test_windows_merge_within_tolerance_and_rank_onsets():
    segs = pl.DataFrame({"start": [at(10), at(13), at(40)], "end": [at(20), at(30), at(41)],
                         "metric": ["disk.await_ms", "pg.exec_ms_per_s", "loop.stall_ms"], "source": ["a", "b", "c"]})
    merged = windows.merge(segs, tolerance_s=5)
    assert merged.get_column("window").to_list() == [0, 0, 1]
    assert merged.get_column("onset").to_list() == [1, 2, 1]
    summary = windows.windows(merged)
    assert summary.get_column("first_movers").to_list()[0] == ["disk.await_ms", "pg.exec_ms_per_s"]


def test_comovement_finds_lag_and_rank_correlation():
    rng = np.random.default_rng(3)
    cause = np.r_[np.zeros(30), np.linspace(1, 10, 10), np.full(10, 10.0), np.zeros(30)] + rng.random(80) * 0.1
    effect = np.roll(cause, 2) * 3 + 5
    result = windows.comovement(cause, effect, max_lag=5)
    assert result["lag"] == 2 and result["rho_at_lag"] > 0.9 and result["rho"] > 0.5
    assert windows.comovement(cause, np.ones(80))["rho"] is None


def test_pairwise_on_a_timeline_grid():
    rows = series("disk.await_ms", "dev:vda", level(1.0, 50.0, n=N, burst=range(60, 70))) + \
        series("pg.wire_latency_ms", "endpoint:1.2.3.4:5432", level(2.0, 90.0, n=N, burst=range(63, 73)),
               source="pcap")
    m = timeline(rows).metrics
    out = windows.pairwise(m, {"source": "iostat", "entity": "dev:vda", "metric": "disk.await_ms"},
                           [{"source": "pcap", "entity": "endpoint:1.2.3.4:5432", "metric": "pg.wire_latency_ms"}],
                           start=at(60), end=at(75))
    assert out[0]["lag_s"] == 3 and out[0]["rho_at_lag"] > 0.9


def test_findings_frame_and_dicts_agree():
    tl = timeline(series("disk.await_ms", "dev:vda", level(0.5, 80.0, n=N, burst=range(60, 75)))
                  + series("cpu.iowait_pct", "cpu:all", level(0.5, 40.0, n=N, burst=range(60, 75))))
    found = correlate(tl)
    frame = findings_frame(tl)
    assert frame.schema == pl.Schema(FINDING_COLUMNS)
    assert frame.get_column("id").to_list() == [f["id"] for f in found] == ["disk_saturation-1"]
    assert frame.get_column("start").to_list() == [at(60)]
    assert json.loads(frame.get_column("evidence")[0]) == found[0]["evidence"]
    assert tl.findings() == found
    assert findings_frame(timeline()).height == 0


def test_correlate_reads_the_baseline_option():
    values = [2.0] * 40 + [20.0] * 80
    tl = timeline(series("disk.await_ms", "dev:vda", values) + series("cpu.iowait_pct", "cpu:all", [1.0] * 40 + [30.0] * 80))
    assert correlate(tl) == []  # rolling baselines: the elevated level is the normal one
    tl.options["baseline"] = ("2026-01-02T10:00:00Z", "2026-01-02T10:00:40Z")
    [f] = correlate(tl)
    assert f["key"] == "disk_saturation" and f["start"] == "2026-01-02T10:00:40.000Z"


def test_cli_json_with_baseline_and_auto_offset(tmp_path, capsys):
    out = tmp_path / "findings.json"
    code = main(["report", "samples/thread_monitor/monitor_sleep_threads.log", "-o", str(tmp_path / "r.html"),
                 "--json", str(out), "--baseline", "2026-01-01T00:00:00Z..2026-01-01T00:05:00Z", "--auto-offset"])
    assert code == 0
    doc = json.loads(out.read_text())
    assert set(doc) == {"version", "window", "sources", "findings"} and doc["version"] == 1
    assert main(["report", "x", "-o", "y", "--baseline", "yesterday"]) == 2
    assert "START..END" in capsys.readouterr().err


def test_finding_records_carry_the_contract_fields():
    tl = timeline(events=[event("os.too_many_open_files", 5 + i, entity="pid:3") for i in range(2)])
    [f] = tl.findings()
    assert list(f) == ["id", "key", "title", "start", "end", "severity", "confidence", "confidence_reason",
                       "entities", "evidence", "recommendations", "upstream", "downstream"]
    assert 0 <= f["confidence"] <= 1 and f["severity"] in ("info", "low", "medium", "high", "critical")
    assert json.loads(json.dumps(f)) == f
    assert dt.datetime.fromisoformat(f["start"].replace("Z", "+00:00")) == at(5)


def test_real_bundle_runs_through_the_public_api():
    tl = analyzer.load("samples/thread_monitor/monitor_sleep_threads.log")
    assert analyzer.correlate(tl) == tl.findings()


@pytest.mark.parametrize("name", ["analyzer.anomaly", "analyzer.windows", "analyzer.correlate",
                                  "analyzer.rules._base", "analyzer.skew"])
def test_docstring_examples_run(name):
    if name == "analyzer.skew" and not Path("samples/bundles/demo/iostat.json").is_file():
        pytest.skip("the demo bundle is not present")
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0


def test_anomalies_and_incidents_tell_what_moved_first():
    tl = timeline(series("disk.await_ms", "dev:vda", level(0.5, 80.0, n=N, burst=range(60, 75)))
                  + series("pg.exec_ms_per_s", "query:1", level(10.0, 900.0, n=N, burst=range(63, 75)),
                           source="pg_stat_statements"))
    segs = anomalies(tl)
    assert segs.sort("onset").get_column("metric").to_list() == ["disk.await_ms", "pg.exec_ms_per_s"]
    [row] = incidents(tl).to_dicts()
    assert row["first_movers"] == ["disk.await_ms", "pg.exec_ms_per_s"] and row["start"] == at(60)
