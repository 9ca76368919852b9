"""Clock-skew estimation: synthetic pairs with known offsets, and a committed bundle with one
source shifted by +37 s."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

import analyzer
from analyzer import skew
from tests._timeline_factory import event, level, series, timeline

BUNDLES = sorted(p for p in (Path("samples") / "bundles").glob("*") if (p / "iostat.json").is_file()
                 and (p / "iostat.txt").is_file() and (p / "expected.json").is_file())


def _pair(est: list[skew.SkewEstimate], file: str) -> skew.SkewEstimate:
    return next(e for e in est if e.file == file)


def test_metric_shapes_recover_a_known_offset():
    rnd = random.Random(7)
    shape = [rnd.random() * 5 + (60 if 100 <= i < 130 else 0) + (25 if 200 <= i < 215 else 0) for i in range(300)]
    # b's clock runs 12 s ahead: what a saw at t, b stamped t + 12
    rows = series("disk.await_ms", "dev:vda", shape, file="a.txt") + \
        series("disk.await_ms", "dev:vda", shape, file="b.json", start=13.0)
    [est] = skew.estimate(timeline(rows), reference="a.txt")
    assert est.file == "b.json" and abs(est.offset_s - -12.0) < 0.5 and est.uncertainty_s <= 0.5
    assert est.method.startswith("metrics:disk.await_ms")


def test_event_trains_recover_a_sub_second_offset():
    rnd = random.Random(3)
    times = sorted(rnd.uniform(0, 300) for _ in range(400))
    evs = [event("http.request", t, entity="http:GET /x", file="app.log") for t in times]
    evs += [event("http.request", t - 37.25 + rnd.gauss(0, 0.002), entity="http:GET /x", source="pcap",
                  file="cap.pcap") for t in times[::2]]
    [est] = skew.estimate(timeline(events=evs), reference="app.log")
    assert est.file == "cap.pcap" and abs(est.offset_s - 37.25) < 0.05
    assert est.method == "events:http.request" and est.support >= 150


def test_a_periodic_signal_is_too_ambiguous_to_trust():
    shape = [float(i % 17 == 0) * 50 for i in range(240)]
    tl = timeline(series("disk.await_ms", "dev:vda", shape, file="a.txt")
                  + series("disk.await_ms", "dev:vda", shape, file="b.json", start=31.0))
    [pair] = skew.pair_estimates(tl)
    assert pair.quality < 0.3
    assert skew.estimate(tl) == []


def test_a_file_read_in_the_wrong_zone_shows_up_as_hours_of_skew():
    rnd = random.Random(2)
    shape = [rnd.random() * 5 + (50 if 100 <= i < 140 else 0) for i in range(300)]
    rows = series("disk.await_ms", "dev:vda", shape, file="a.txt") + \
        series("disk.await_ms", "dev:vda", shape, file="b.json", start=1.0 + 5 * 3600)
    [est] = skew.estimate(timeline(rows), reference="a.txt")
    assert abs(est.offset_s - -5 * 3600) < 1.0


def test_unrelated_files_get_no_estimate():
    rows = series("disk.await_ms", "dev:vda", level(1, 9, n=100, burst=range(40, 50)), file="a.txt") + \
        series("proc.threads", "pid:1", level(4, 90, n=100, burst=range(10, 90)), file="b.log")
    assert skew.estimate(timeline(rows)) == []


def test_apply_shifts_the_file_and_records_the_estimate():
    rnd = random.Random(11)
    shape = [rnd.random() * 10 + (80 if 100 <= i < 120 else 0) for i in range(240)]
    tl = timeline(series("disk.await_ms", "dev:vda", shape, file="a.txt")
                  + series("disk.await_ms", "dev:vda", shape, file="b.json", start=31.0))
    fixed = skew.apply(tl, skew.estimate(tl, reference="a.txt"))
    a = fixed.metrics.filter(fixed.metrics["file"] == "a.txt").get_column("ts").to_list()
    b = fixed.metrics.filter(fixed.metrics["file"] == "b.json").get_column("ts").to_list()
    assert max(abs((x - y).total_seconds()) for x, y in zip(a, b, strict=True)) < 0.5
    [entry] = fixed.options["clock_skew"]
    assert entry["applied"] and entry["file"] == "b.json" and round(entry["offset_s"]) == -30
    assert "b.json: -30.0 ± 0.5 s against a.txt" in skew.describe(entry)


@pytest.mark.skipif(not BUNDLES, reason="no committed bundle with iostat text and JSON")
def test_committed_bundle_shifted_by_37_seconds_is_recovered():
    bundle = BUNDLES[0]
    # the host facts decide the zone of the local-time files; the rest are the sources compared
    files = [str(p) for p in sorted((bundle / "host").glob("*"))] + [
        str(bundle / name) for name in ("iostat.txt", "iostat.json", "pidstat.txt", "threads.log", "app.log")
        if (bundle / name).is_file()]
    tl = analyzer.load(*files, offsets={"iostat.json": 37})
    est = _pair(skew.estimate(tl, reference="iostat.txt"), "iostat.json")
    assert abs(est.offset_s - -37.0) < 1.0, est
    assert est.uncertainty_s < 1.0
