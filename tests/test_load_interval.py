"""iostat without -t prints no time per report: with no --interval, the loader borrows the
sampling interval of a timed sysstat file of the same bundle and says so."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import polars as pl

import analyzer

from .conftest import SAMPLES

NO_T = SAMPLES / "iostat" / "x_c_no_t.txt"  # iostat -x 1 3
PIDSTAT = SAMPLES / "pidstat" / "urdw_c.txt"  # pidstat -u -r -d -w 1 3


def _bundle(tmp_path: Path, *files: Path) -> Path:
    for f in files:
        shutil.copy(f, tmp_path / f.name)
    os.utime(tmp_path / NO_T.name, (1_767_352_000, 1_767_352_000))  # 2026-01-02 11:06:40 UTC
    return tmp_path


def test_interval_is_borrowed_from_a_timed_neighbour(tmp_path: Path) -> None:
    tl = analyzer.load(str(_bundle(tmp_path, NO_T, PIDSTAT)))
    io = tl.metrics.filter(pl.col("source") == "iostat")
    times = io.get_column("ts").unique().sort()
    assert times.len() == 2  # three reports, the first one since boot
    assert (times[1] - times[0]).total_seconds() == 1.0
    assert times[-1].timestamp() == 1_767_352_000
    [note] = tl.diagnostics.filter(pl.col("code") == "interval_inferred").to_dicts()
    assert "1 s, the sampling interval of urdw_c.txt" in note["message"] and note["file"] == NO_T.name
    row = tl.sources.filter(pl.col("file") == NO_T.name).row(0, named=True)
    assert row["records_total"] == row["records_parsed"] + row["records_skipped"]
    assert "no_timestamp" not in (row["skipped_by_reason"] or {})


def test_without_a_neighbour_or_interval_nothing_is_placed(tmp_path: Path) -> None:
    tl = analyzer.load(str(_bundle(tmp_path, NO_T)))
    assert tl.metrics.filter(pl.col("source") == "iostat").height == 0
    assert tl.diagnostics.filter(pl.col("code") == "interval_inferred").height == 0
    with_interval = analyzer.load(str(tmp_path / NO_T.name), interval=[("*", 2.0)])
    times = with_interval.metrics.get_column("ts").unique().sort()
    assert (times[1] - times[0]).total_seconds() == 2.0
