"""pg_stat_statements written one snapshot per file: the files together make one series.

The per-snapshot files are cut from real dumps at their snapshot boundaries (each piece is
exactly what one ``COPY (SELECT now() AS snapshot_time, * FROM pg_stat_statements) TO STDOUT
WITH CSV HEADER`` run wrote), so the split directory must give the same deltas as the file.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import analyzer

ROOT = Path(__file__).resolve().parent.parent
BUNDLE_DUMP = ROOT / "samples" / "bundles" / "checkout" / "pgss_snapshots.csv"
RESET_PAIR = ROOT / "samples" / "pg_stat_statements" / "pgss_reset_pair.csv"


def split(dump: Path, out: Path) -> list[Path]:
    """One file per CSV header (one header per snapshot in these dumps)."""
    text = dump.read_text()
    header = text.split("\n", 1)[0] + "\n"
    pieces = [header + p for p in text.split(header) if p]
    paths = []
    for i, piece in enumerate(pieces):
        path = out / f"pgss_{i:04d}.csv"
        path.write_text(piece)
        paths.append(path)
    return paths


def pg_rows(tl) -> pl.DataFrame:
    return tl.metrics.filter(pl.col("source") == "pg_stat_statements") \
        .select("ts", "entity", "metric", "value").sort("ts", "entity", "metric")


def test_one_snapshot_per_file_gives_the_same_series_as_one_file(tmp_path: Path) -> None:
    paths = split(BUNDLE_DUMP, tmp_path)
    assert len(paths) > 20
    whole = pg_rows(analyzer.load(str(BUNDLE_DUMP)))
    tl = analyzer.load(str(tmp_path))
    parts = pg_rows(tl)
    assert whole.height > 1000
    assert parts.height == whole.height
    assert_frame_equal(parts, whole, check_exact=False)  # sums may differ in the last bit
    # each delta names the file of its later snapshot
    files = tl.metrics.filter(pl.col("source") == "pg_stat_statements").get_column("file").unique().sort()
    assert files.to_list() == sorted(p.name for p in paths[1:])
    [note] = [d for d in tl.diagnostics.iter_rows(named=True) if d["code"] == "snapshots_across_files"]
    assert f"{len(paths)} files" in note["message"] and f"{len(paths) - 1} intervals" in note["message"]


def test_a_reset_between_two_snapshot_files_is_an_event_not_a_negative_rate(tmp_path: Path) -> None:
    paths = split(RESET_PAIR, tmp_path)
    assert len(paths) == 4  # two snapshots, pg_stat_statements_reset(), two more
    whole = analyzer.load(str(RESET_PAIR)).events.filter(pl.col("kind") == "pg.stats_reset")
    tl = analyzer.load(str(tmp_path))
    resets = tl.events.filter(pl.col("kind") == "pg.stats_reset")
    assert whole.height == 1 and resets.height == 1
    assert resets.get_column("ts").to_list() == whole.get_column("ts").to_list()
    assert resets.get_column("file").to_list() == [paths[2].name]
    rates = tl.metrics.filter(pl.col("metric").str.ends_with("_per_s"))
    assert rates.height > 0 and rates.get_column("value").min() >= 0


@pytest.mark.parametrize("count", [1])
def test_a_single_snapshot_file_alone_makes_no_series(tmp_path: Path, count: int) -> None:
    paths = split(BUNDLE_DUMP, tmp_path)
    for p in paths[count:]:
        p.unlink()
    tl = analyzer.load(str(tmp_path))
    assert pg_rows(tl).height == 0
    assert not any(d == "snapshots_across_files" for d in tl.diagnostics.get_column("code").to_list())


def test_a_failure_to_combine_is_a_diagnostic_not_a_crash(tmp_path: Path, monkeypatch) -> None:
    from analyzer import pgss_files

    def broken(host, items):
        raise ValueError("boom")

    split(RESET_PAIR, tmp_path)
    monkeypatch.setattr(pgss_files, "_combine", broken)
    tl = analyzer.load(str(tmp_path))
    [diag] = tl.diagnostics.filter(pl.col("code") == "parser_error").to_dicts()
    assert "across 4 files could not be combined (ValueError: boom)" in diag["message"]
    assert tl.tables["pg_statements"].get_column("file").n_unique() == 4
