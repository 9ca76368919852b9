from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import polars as pl
import pytest

import analyzer
from parsers.timeutil import (
    UTC,
    DayRoller,
    TimePolicy,
    ZoneError,
    localize,
    parse_clock,
    parse_date,
    parse_iso,
    parse_loose,
    resolve_zone,
    zone_hint,
)

from .conftest import SAMPLES

MONITOR = SAMPLES / "thread_monitor" / "monitor_sleep_threads.log"


@pytest.mark.parametrize(("text", "expected"), [
    ("10:00:05", dt.time(10, 0, 5)), ("12:06:39 PM", dt.time(12, 6, 39)), ("12:06:39 AM", dt.time(0, 6, 39)),
    ("01:02:03 pm", dt.time(13, 2, 3)), ("01时54分25秒", dt.time(1, 54, 25)), ("10:00:05,250", dt.time(10, 0, 5, 250000)),
    ("25:00:00", None), ("13:00:00 PM", None), ("x", None)])
def test_parse_clock(text, expected):
    assert parse_clock(text) == expected


@pytest.mark.parametrize(("text", "expected", "ambiguous"), [
    ("01/01/70", dt.date(1970, 1, 1), False), ("11/30/2021", dt.date(2021, 11, 30), False),
    ("30/11/2021", dt.date(2021, 11, 30), False), ("03/04/26", dt.date(2026, 3, 4), True),
    ("2024-07-27", dt.date(2024, 7, 27), False), ("22.1.2017", dt.date(2017, 1, 22), False),
    ("2020年04月11日", dt.date(2020, 4, 11), False), ("Thursday 04 September 2014", dt.date(2014, 9, 4), False)])
def test_parse_date(text, expected, ambiguous):
    parsed = parse_date(text)
    assert parsed is not None and parsed.date == expected and parsed.ambiguous == ambiguous


def test_parse_iso_and_loose():
    assert parse_iso("2026-01-02T10:00:05+0100") == dt.datetime(2026, 1, 2, 9, 0, 5, tzinfo=UTC)
    assert parse_iso("2026-01-02 10:00:05,123Z").microsecond == 123000
    stamp, explicit = parse_loose("Fri Jan  2 10:00:05 UTC 2026")
    assert explicit and stamp == dt.datetime(2026, 1, 2, 10, 0, 5, tzinfo=UTC)
    stamp, explicit = parse_loose("Fri 02 Jan 2026 10:00:05 PM CET")
    assert not explicit and stamp == dt.datetime(2026, 1, 2, 22, 0, 5)


def test_day_roller_advances_at_midnight():
    roll = DayRoller(dt.date(2026, 1, 1))
    stamps = [roll.at(parse_clock(t)) for t in ("23:59:58", "23:59:59", "00:00:00", "00:00:01")]
    assert [s.date() for s in stamps] == [dt.date(2026, 1, 1)] * 2 + [dt.date(2026, 1, 2)] * 2


def test_resolve_zone_forms():
    assert resolve_zone("UTC") is UTC
    assert resolve_zone("+02:00").utcoffset(None) == dt.timedelta(hours=2)
    assert resolve_zone("-0530").utcoffset(None) == -dt.timedelta(hours=5, minutes=30)
    assert resolve_zone("Europe/Berlin").key == "Europe/Berlin"
    with pytest.raises(ZoneError, match="expected an IANA name"):
        resolve_zone("Mars/Olympus")


def test_localize_dst_fold_and_gap():
    df = pl.DataFrame({"ts": [dt.datetime(2026, 10, 25, 2, 30), dt.datetime(2026, 3, 29, 2, 30),
                              dt.datetime(2026, 7, 1, 12, 0)]})
    out = localize(df, resolve_zone("Europe/Berlin")).get_column("ts").to_list()
    assert out[0] == dt.datetime(2026, 10, 25, 0, 30, tzinfo=dt.timezone.utc)  # fold: earlier instant
    assert out[1] is None  # gap: does not exist
    assert out[2] == dt.datetime(2026, 7, 1, 10, 0, tzinfo=dt.timezone.utc)


def test_policy_precedence():
    policy = TimePolicy(tz="Asia/Tokyo", tz_for=[("*.log", "Europe/Berlin")], bundle_tz="America/New_York",
                        bundle_tz_source="timezone")
    assert policy.decide("x/app.log").reason == "--tz-for *.log=Europe/Berlin"
    assert policy.decide("iostat.txt").reason == "--tz Asia/Tokyo"
    assert TimePolicy(bundle_tz="America/New_York", bundle_tz_source="tz").decide("a").reason.startswith("bundle")
    assumed = TimePolicy().decide("a")
    assert assumed.assumed and assumed.tz is UTC


@pytest.mark.parametrize(("text", "zone"), [
    ("               Local time: Sat 2026-11-28 06:00:00 CET\n           Universal time: Sat 2026-11-28 05:00:00 UTC\n"
     "                Time zone: Europe/Berlin (CET, +0100)\n", "Europe/Berlin"),
    ("Europe/Paris\n", "Europe/Paris"), ("+0530\n", "+0530"), ("Sat Nov 28 05:28:24 UTC 2026\n", "UTC"),
    ("TZ=America/Chicago\n", "America/Chicago")])
def test_zone_hints(text, zone):
    assert zone_hint(text)[0] == zone


def test_bundle_timezone_file_sets_the_zone(tmp_path: Path):
    shutil.copy(MONITOR, tmp_path / "threads.log")
    (tmp_path / "host").mkdir()
    (tmp_path / "host" / "timezone").write_text("Asia/Kolkata\n")
    tl = analyzer.load(tmp_path)
    row = tl.sources.filter(pl.col("file") == "threads.log").row(0, named=True)
    assert row["tz"] == "Asia/Kolkata" and row["tz_reason"].startswith("bundle metadata (host/timezone")
    first_local = dt.datetime.strptime(MONITOR.read_text()[:19], "%Y-%m-%d %H:%M:%S")
    assert tl.metrics.get_column("ts")[0] == (first_local - dt.timedelta(hours=5, minutes=30)).replace(tzinfo=UTC)
    assert "tz_assumed" not in tl.diagnostics.get_column("code").to_list()
    assert tl.display_tz == "Asia/Kolkata"
    # an explicit --tz still wins over the bundle
    tl2 = analyzer.load(tmp_path, tz="UTC")
    assert tl2.sources.filter(pl.col("file") == "threads.log").row(0, named=True)["tz"] == "UTC"
