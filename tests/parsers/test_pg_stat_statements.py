"""pg_stat_statements: every dump form of the real PG 15 samples, other versions' column sets,
golden deltas recomputed independently from the raw CSV, resets, and mutated dumps."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parsers import pg_stat_activity, pg_stat_statements, registry
from parsers._psql_table import read_tables
from parsers.base import Accounting, ParseContext

SAMPLES = Path("samples/pg_stat_statements")


def run(name: str, **ctx_args):
    path = SAMPLES / name
    with path.open("rb") as fh:
        return registry.run(pg_stat_statements, fh, ParseContext(file=name, **ctx_args))


def metric(result, entity: str, name: str) -> dict[dt.datetime, float]:
    rows = result.metrics.filter((pl.col("entity") == entity) & (pl.col("metric") == name))
    return dict(zip(rows.get_column("ts").to_list(), rows.get_column("value").to_list(), strict=False))


# -- accounting on every real sample: (lines, parsed, skipped by reason, timed snapshots) ------------
ACCOUNTING = {
    "handmade_pg12_total_time.csv": (80, 80, {}, 3),
    "handmade_pg13_aligned.txt": (75, 75, {}, 2),
    "handmade_pg14_expanded.txt": (1657, 1657, {}, 2),
    "handmade_pg17.csv": (136, 136, {}, 4),
    "handmade_pg18.jsonl": (81, 81, {}, 3),
    "handmade_pg94_aligned.txt": (73, 73, {}, 2),
    "pgss_aligned_date_echo.txt": (87, 87, {}, 3),
    "pgss_aligned_now.txt": (131, 131, {}, 4),
    "pgss_copy_header_per_snapshot.csv": (130, 130, {}, 6),
    "pgss_copy_one_header.csv": (87, 87, {}, 4),
    "pgss_expanded.txt": (2541, 2541, {}, 3),
    "pgss_final_no_time.txt": (28, 28, {}, 0),
    "pgss_insufficient_privilege.csv": (35, 7, {"insufficient_privilege": 28}, 2),
    "pgss_json_agg.json": (3, 3, {}, 3),
    "pgss_json_agg_tuples.txt": (6, 6, {}, 3),
    "pgss_jsonb_pretty_psql.txt": (844, 844, {}, 3),
    "pgss_reset_pair.csv": (96, 96, {}, 4),
    "pgss_rows.jsonl": (65, 65, {}, 3),
}


@pytest.mark.parametrize("name", sorted(ACCOUNTING))
def test_accounting_exact(name):
    lines, parsed, skipped, snapshots = ACCOUNTING[name]
    result = run(name)
    acct = result.accounting
    assert acct.total == lines == len((SAMPLES / name).read_bytes().splitlines())
    assert acct.parsed_count == parsed
    assert dict(acct.skipped) == skipped
    assert result.events.filter(pl.col("kind") == "pg.snapshot").height == snapshots
    assert result.metrics.filter(pl.col("value") < 0).height == 0


def test_every_real_sample_is_pinned():
    real = {p.name for p in SAMPLES.iterdir() if p.suffix != ".md"}
    assert real == set(ACCOUNTING)


# -- golden deltas, recomputed with the csv module ------------------------------------------------
def csv_snapshots(name: str) -> list[tuple[dt.datetime, dict[tuple[str, ...], dict[str, str]]]]:
    snaps: dict[str, dict[tuple[str, ...], dict[str, str]]] = {}
    header: list[str] | None = None
    for row in csv.reader(io.StringIO((SAMPLES / name).read_text())):
        if row and row[0] == "snapshot_time":
            header = row
            continue
        rec = dict(zip(header, row, strict=False))
        key = (rec["userid"], rec["dbid"], rec["toplevel"], rec["queryid"])
        snaps.setdefault(rec["snapshot_time"], {})[key] = rec
    out = []
    for text, rows in snaps.items():
        stamp = dt.datetime.strptime(text.replace("+00", ""), "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=dt.timezone.utc)
        out.append((stamp, rows))
    return out


def expected_interval(prev: dict[str, str], cur: dict[str, str], seconds: float) -> dict[str, float]:
    calls = float(cur["calls"]) - float(prev["calls"])
    total = float(cur["total_exec_time"]) - float(prev["total_exec_time"])
    out = {"pg.calls_per_s": calls / seconds, "pg.exec_ms_per_s": total / seconds,
           "pg.rows_per_s": (float(cur["rows"]) - float(prev["rows"])) / seconds,
           "pg.shared_blks_read_per_s": (float(cur["shared_blks_read"]) - float(prev["shared_blks_read"])) / seconds}
    if calls > 0:
        def sq(r):
            return (float(r["stddev_exec_time"]) ** 2 + float(r["mean_exec_time"]) ** 2) * float(r["calls"])
        mean = total / calls
        out["pg.mean_exec_ms"] = mean
        out["pg.stddev_exec_ms"] = math.sqrt(max((sq(cur) - sq(prev)) / calls - mean ** 2, 0.0))
    return out


@pytest.mark.parametrize("name", ["pgss_copy_header_per_snapshot.csv", "pgss_copy_one_header.csv",
                                  "pgss_reset_pair.csv"])
def test_golden_deltas_match_csv_recomputation(name):
    result = run(name)
    snaps = csv_snapshots(name)
    checked = 0
    for (t0, rows0), (t1, rows1) in zip(snaps, snaps[1:], strict=False):
        seconds = (t1 - t0).total_seconds()
        for key, cur in rows1.items():
            prev = rows0.get(key)
            same_query = [k for k in rows1 if k[3] == key[3]]
            if prev is None or len(same_query) != 1 or float(cur["calls"]) < float(prev["calls"]):
                continue
            for name_, value in expected_interval(prev, cur, seconds).items():
                got = metric(result, f"query:{key[3]}", name_)
                if float(cur["calls"]) == float(prev["calls"]) and t1 not in got:
                    continue  # idle in this and the previous interval: not emitted
                assert got[t1] == pytest.approx(value, rel=1e-6, abs=1e-6), (key, name_, t1)
                checked += 1
    assert checked >= 40


def test_golden_values_of_chosen_queries():
    result = run("pgss_copy_header_per_snapshot.csv")
    snaps = csv_snapshots("pgss_copy_header_per_snapshot.csv")
    slow = next(k for k, r in snaps[-1][1].items() if r["query"].startswith("SELECT count(*) FROM pgbench_accounts a"))
    multi = next(k for k, r in snaps[-1][1].items() if r["query"].startswith("SELECT b.bid,\n"))
    for key in (slow, multi):
        series = metric(result, f"query:{key[3]}", "pg.mean_exec_ms")
        assert series, key
    # the slow scan is the heaviest per call in every interval where it ran
    slow_mean = metric(result, f"query:{slow[3]}", "pg.mean_exec_ms")
    for ts, value in slow_mean.items():
        others = result.metrics.filter((pl.col("ts") == ts) & (pl.col("metric") == "pg.mean_exec_ms")
                                       & (pl.col("entity") != f"query:{slow[3]}") & (pl.col("entity") != "query:all"))
        assert value > others.get_column("value").max()
    entity = result.entities.filter(pl.col("entity") == f"query:{multi[3]}").row(0, named=True)
    attrs = json.loads(entity["attrs"])
    assert attrs["query"] == snaps[-1][1][multi]["query"] and "\n" in attrs["query"]
    flat = " ".join(attrs["query"].split())
    assert len(flat) > 60 and entity["label"] == flat[:59] + "…" and "\n" not in entity["label"]


def test_totals_cover_top_level_statements():
    name = "pgss_copy_header_per_snapshot.csv"
    result = run(name)
    snaps = csv_snapshots(name)
    total_ms = metric(result, "query:all", "pg.exec_ms_per_s")
    for (t0, rows0), (t1, rows1) in zip(snaps, snaps[1:], strict=False):
        expected = 0.0
        for key, cur in rows1.items():
            if key[2] != "t":
                continue
            prev = rows0.get(key)
            expected += float(cur["total_exec_time"]) - (float(prev["total_exec_time"]) if prev else 0.0)
        assert total_ms[t1] == pytest.approx(expected / (t1 - t0).total_seconds(), rel=1e-9)


# -- every form gives the same kind of result ------------------------------------------------------
@pytest.mark.parametrize("name", ["pgss_aligned_now.txt", "pgss_aligned_date_echo.txt", "pgss_expanded.txt",
                                  "pgss_json_agg.json", "pgss_json_agg_tuples.txt", "pgss_jsonb_pretty_psql.txt",
                                  "pgss_rows.jsonl"])
def test_other_forms_give_deltas_and_texts(name):
    result = run(name)
    assert result.tz_name == "UTC" and "offset" in result.tz_reason
    calls = metric(result, "query:all", "pg.calls_per_s")
    assert len(calls) >= 1 and all(v > 0 for v in calls.values())
    texts = [json.loads(a)["query"] for a in result.entities.get_column("attrs").to_list()]
    if name != "pgss_jsonb_pretty_psql.txt" or any("||" in t for t in texts):
        assert any("|| aid::text ||" in t for t in texts)
    multi = [t for t in texts if t.startswith("SELECT b.bid,")]
    assert multi and multi[0].count("\n") == 6


def test_echo_line_zone_abbreviation_gives_utc():
    text = (SAMPLES / "pgss_aligned_date_echo.txt").read_text().splitlines()
    echoed = [ln for ln in text if ln.startswith("===")]
    first = dt.datetime.strptime(echoed[1][4:23], "%Y-%m-%d %H:%M:%S")
    offset = {"EST": 5, "EDT": 4}[echoed[1].split()[3]]
    result = run("pgss_aligned_date_echo.txt")
    snaps = sorted(result.events.filter(pl.col("kind") == "pg.snapshot").get_column("ts").to_list())
    assert snaps[1] == (first + dt.timedelta(hours=offset)).replace(tzinfo=dt.timezone.utc)


def test_no_time_dump_becomes_a_table():
    result = run("pgss_final_no_time.txt")
    assert result.metrics.height == 0 and result.events.height == 0
    table = result.tables["pg_statements"]
    rows = [ln for ln in (SAMPLES / "pgss_final_no_time.txt").read_text().splitlines() if ln.startswith("  ")
            and not ln.startswith("   ")]
    assert table.height == int((SAMPLES / "pgss_final_no_time.txt").read_text().split("(")[-1].split()[0])
    assert table.get_column("snapshot_time").null_count() == table.height
    assert table.get_column("total_exec_time").is_sorted(descending=True)
    assert "shared_blk_read_time" in table.columns  # blk_read_time, normalised
    assert any(c.code == "no_snapshot_time" for c in result.accounting.diagnostics)
    assert result.entities.height == table.get_column("queryid").n_unique()
    assert rows  # the file really has left-padded data rows


def test_no_time_dump_is_not_placed_at_the_mtime():
    mtime = dt.datetime(2026, 11, 28, 6, 0, tzinfo=dt.timezone.utc)
    result = run("pgss_final_no_time.txt", interval_s=10.0, file_mtime=mtime)
    assert result.metrics.height == 0 and result.events.height == 0  # one snapshot: nothing to subtract
    assert any(c.code == "no_snapshot_time" for c in result.accounting.diagnostics)
    # the same queryid printed twice (top-level and nested; the dump has no toplevel column)
    table = result.tables["pg_statements"]
    assert table.height == table.get_column("queryid").n_unique() + 2


# -- resets, privileges, versions --------------------------------------------------------------------
def test_real_reset_gives_one_event_and_no_fake_rates():
    result = run("pgss_reset_pair.csv")
    snaps = csv_snapshots("pgss_reset_pair.csv")
    resets = result.events.filter(pl.col("kind") == "pg.stats_reset")
    assert resets.height == 1
    event = resets.row(0, named=True)
    assert (event["entity"], event["ts"], event["end"]) == ("query:all", snaps[1][0], snaps[2][0])
    assert result.metrics.filter(pl.col("value") < 0).height == 0
    calls = metric(result, "query:all", "pg.calls_per_s")
    assert len(calls) == 3
    # after the reset the rate stays of the same order as before (no cumulative counters as delta)
    assert calls[snaps[2][0]] < 3 * max(calls[snaps[1][0]], calls[snaps[3][0]])


def test_insufficient_privilege_rows_are_counted_apart():
    text = (SAMPLES / "pgss_insufficient_privilege.csv").read_text()
    hidden = [r for r in csv.reader(io.StringIO(text)) if "<insufficient privilege>" in r]
    result = run("pgss_insufficient_privilege.csv")
    assert result.accounting.skipped["insufficient_privilege"] == len(hidden) > 0
    assert not any("insufficient" in (lbl or "") for lbl in result.entities.get_column("label").to_list())


HANDMADE = {
    "handmade_pg12_total_time.csv": ("PG 9.5-12", True, False),
    "handmade_pg94_aligned.txt": ("PG 9.4", False, False),
    "handmade_pg13_aligned.txt": ("PG 13", True, True),
    "handmade_pg14_expanded.txt": ("PG 14", True, True),
    "handmade_pg17.csv": ("PG 17", True, True),
    "handmade_pg18.jsonl": ("PG 18", True, True),
}


@pytest.mark.parametrize("name", sorted(HANDMADE))
def test_other_versions_column_sets(name):
    version, has_stddev, has_plan = HANDMADE[name]
    result = run(name)
    assert version in result.variant
    names = set(result.metrics.get_column("metric").unique().to_list())
    assert {"pg.calls_per_s", "pg.exec_ms_per_s", "pg.mean_exec_ms", "pg.rows_per_s"} <= names
    assert ("pg.stddev_exec_ms" in names) == has_stddev
    assert ("pg.plan_ms_per_s" in names) == has_plan
    assert result.accounting.skipped_count == 0
    assert result.metrics.filter(pl.col("value") < 0).height == 0


def test_pg17_entry_reset_by_stats_since():
    result = run("handmade_pg17.csv")
    resets = result.events.filter(pl.col("kind") == "pg.stats_reset")
    assert resets.height == 1
    attrs = json.loads(resets.get_column("attrs")[0])
    assert attrs["reason"] == "stats_since changed"
    label = result.entities.filter(pl.col("entity") == resets.get_column("entity")[0]).get_column("label")[0]
    assert label.startswith("UPDATE pgbench_accounts")


# -- sniffing --------------------------------------------------------------------------------------
def test_sniff_declines_pg_stat_monitor_and_activity():
    pgsm = b"bucket,bucket_start_time,userid,dbid,queryid,query,calls,total_exec_time,resp_calls\n"
    assert pg_stat_statements.sniff(pgsm) == 0.0
    pgsa = (Path("samples/pg_stat_activity") / "pgsa_snapshots.csv").read_bytes()[:4096]
    assert pg_stat_statements.sniff(pgsa) == 0.0
    pgss = (SAMPLES / "pgss_copy_one_header.csv").read_bytes()[:4096]
    assert pg_stat_activity.sniff(pgss) == 0.0


# -- the table reader on forms psql can print but the samples don't use -------------------------------
def tables_of(text: str):
    acct = Accounting("t")
    tables = list(read_tables(io.BytesIO(text.encode()), acct))
    assert acct.parsed_count + acct.skipped_count + sum(sum(t.spans) for t in tables) == acct.total
    return tables, acct


def test_reader_border2_unaligned_tsv_and_wide_characters():
    border2 = ("+--------+-------+\n| calls  | query |\n+--------+-------+\n|      1 | a|b  +|\n"
               "|        | c     |\n+--------+-------+\n(1 row)\n")
    tables, acct = tables_of(border2)
    assert [[v.strip() for v in row] for row in tables[0].rows] == [["1", "a|b\nc"]] and acct.skipped_count == 0
    tables, _ = tables_of("queryid|query|calls\n1|SELECT $1 || $2|5\n(1 row)\n")
    assert tables[0].rows == [["1", "SELECT $1 || $2", "5"]]
    tables, _ = tables_of("queryid\tquery\tcalls\n1\tSELECT 1\\nFROM t\t\\N\n")
    assert tables[0].rows == [["1", "SELECT 1\nFROM t", None]]
    wide = (" queryid |     query     | calls \n---------+---------------+-------\n"
            "       1 | SELECT '日本' |     7\n       2 | x             |     8\n")
    tables, _ = tables_of(wide)
    assert [[v.strip() for v in row] for row in tables[0].rows] == [["1", "SELECT '日本'", "7"], ["2", "x", "8"]]


def test_record_without_query_and_cut_file_still_accounted():
    lines = (SAMPLES / "pgss_expanded.txt").read_bytes().split(b"\n")[:299]
    del lines[next(i for i, ln in enumerate(lines) if ln.startswith(b"query "))]
    data = b"\n".join(lines)
    result = registry.run(pg_stat_statements, io.BytesIO(data), ParseContext(file="cut.txt"))
    acct = result.accounting
    assert acct.total == 298 and acct.parsed_count + acct.skipped_count == acct.total
    assert not result.hints.get("failed")


# -- mutated real dumps --------------------------------------------------------------------------------
MUTATION_SOURCES = ["pgss_copy_header_per_snapshot.csv", "pgss_aligned_now.txt", "pgss_expanded.txt",
                    "pgss_rows.jsonl", "pgss_jsonb_pretty_psql.txt", "pgss_reset_pair.csv"]


@st.composite
def mutated(draw):
    name = draw(st.sampled_from(MUTATION_SOURCES))
    lines = (SAMPLES / name).read_bytes().split(b"\n")
    if name == "pgss_expanded.txt":
        lines = lines[:300]
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["drop", "dup", "swap", "flip", "junk", "cut", "crlf", "digits"]))
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        if op == "drop":
            del lines[i]
        elif op == "dup":
            lines.insert(i, lines[i])
        elif op == "swap" and len(lines) > 1:
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "flip" and lines[i]:
            k = draw(st.integers(0, len(lines[i]) - 1))
            lines[i] = lines[i][:k] + draw(st.sampled_from([b'"', b"|", b",", b"+", b"\x00", b"{", b"-"])) \
                + lines[i][k + 1:]
        elif op == "junk":
            lines.insert(i, draw(st.binary(max_size=80)).replace(b"\n", b""))
        elif op == "cut":
            lines = lines[:i]
        elif op == "crlf":
            lines[i] = lines[i] + b"\r"
        elif op == "digits":
            lines[i] = lines[i].replace(b"1", b"9")
    return name, b"\n".join(lines)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_dumps_never_raise_and_account_every_line(case):
    name, data = case
    result = registry.run(pg_stat_statements, io.BytesIO(data), ParseContext(file=name))
    acct = result.accounting
    assert not result.hints.get("failed"), acct.all_diagnostics()
    assert acct.parsed_count + acct.skipped_count == acct.total
    assert acct.total == data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)
    assert result.metrics.filter(pl.col("value") < 0).height == 0


# -- committed incident bundles: the slow query stands out in its window ---------------------------------
def slow_query_bundles() -> list[Path]:
    out = []
    for expected in sorted(Path("samples/bundles").glob("*/expected.json")):
        faults = json.loads(expected.read_text()).get("faults", [])
        if (expected.parent / "pgss_snapshots.csv").exists() and any(f["key"] == "slow_query" for f in faults):
            out.append(expected.parent)
    return out


@pytest.mark.parametrize("bundle", slow_query_bundles(), ids=lambda p: p.name)
def test_bundle_slow_query_has_the_highest_load_in_its_window(bundle):
    fault = next(f for f in json.loads((bundle / "expected.json").read_text())["faults"] if f["key"] == "slow_query")
    start, end = (dt.datetime.fromisoformat(fault[k].replace("Z", "+00:00")) for k in ("start", "end"))
    with (bundle / "pgss_snapshots.csv").open("rb") as fh:
        result = registry.run(pg_stat_statements, fh, ParseContext(file="pgss_snapshots.csv"))
    assert result.accounting.skipped_count == 0
    entity = f"query:{fault['root']['queryid']}"
    load = result.metrics.filter((pl.col("metric") == "pg.exec_ms_per_s") & (pl.col("entity") != "query:all"))
    # intervals that lie mostly inside the window (a delta's ts is the end of its interval, and a
    # statement is counted when it completes: an interval ending a second into the window has
    # seen none of the burst's multi-second calls finish)
    step = load.get_column("ts").unique().sort().diff().median()
    inside = load.filter((pl.col("ts") >= start + step / 2) & (pl.col("ts") <= end + dt.timedelta(seconds=5)))
    assert inside.height
    for ts in inside.get_column("ts").unique().to_list():
        top = inside.filter(pl.col("ts") == ts).sort("value", descending=True).row(0, named=True)
        assert top["entity"] == entity, ts
    mine = load.filter(pl.col("entity") == entity)
    peak = inside.filter(pl.col("entity") == entity).get_column("value").max()
    outside = mine.filter((pl.col("ts") <= start) | (pl.col("ts") > end + dt.timedelta(seconds=15)))
    assert peak >= 5 * outside.get_column("value").median()
    mean = metric(result, entity, "pg.mean_exec_ms")
    mean_in = max(v for ts, v in mean.items() if start < ts <= end + dt.timedelta(seconds=5))
    mean_out = sorted(v for ts, v in mean.items() if ts <= start or ts > end + dt.timedelta(seconds=15))
    # per-call time in the burst is many times its baseline, and outside the window every
    # interval stays near that baseline (never within 5x of the burst)
    assert mean_in >= 5 * mean_out[len(mean_out) // 2], (mean_in, mean_out[len(mean_out) // 2])
    assert 5 * mean_out[-1] <= mean_in, (mean_in, mean_out[-1])
    assert outside.get_column("value").max() <= 0.05 * peak
    assert "LIKE" in json.loads(result.entities.filter(pl.col("entity") == entity).get_column("attrs")[0])["query"]
