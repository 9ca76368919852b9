"""pg_stat_activity snapshots from a real PG 15 with idle, idle-in-transaction, lock-waiting and
active sessions: counts recomputed independently from the raw CSV."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections import Counter
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parsers import pg_stat_activity, registry
from parsers.base import ParseContext

SAMPLES = Path("samples/pg_stat_activity")
STATES = {"active": "pg.active", "idle": "pg.idle", "idle in transaction": "pg.idle_in_tx"}


def run(name: str):
    with (SAMPLES / name).open("rb") as fh:
        return registry.run(pg_stat_activity, fh, ParseContext(file=name))


def csv_counts(name: str) -> dict[dt.datetime, Counter]:
    out: dict[dt.datetime, Counter] = {}
    header = None
    for row in csv.reader(io.StringIO((SAMPLES / name).read_text())):
        if row[0] == "snapshot_time":
            header = row
            continue
        rec = dict(zip(header, row, strict=False))
        ts = dt.datetime.fromisoformat(rec["snapshot_time"].replace("+00", "+00:00"))
        counts = out.setdefault(ts, Counter())
        if rec["backend_type"] != "client backend":
            continue
        if rec["state"] == "active" and "pg_stat_activity" in rec["query"]:
            continue  # the dumping session
        if rec["state"] in STATES:
            counts[(f"pool:{rec['datname']}", STATES[rec["state"]])] += 1
            counts[("pool:all", STATES[rec["state"]])] += 1
        if rec["wait_event_type"] and rec["state"] != "idle":
            counts[(f"wait:{rec['wait_event_type']}/{rec['wait_event']}", "pg.waiting")] += 1
    return out


@pytest.mark.parametrize(("name", "snapshots"), [("pgsa_snapshots.csv", 5), ("pgsa_aligned_now.txt", 5)])
def test_accounting_exact(name, snapshots):
    result = run(name)
    acct = result.accounting
    assert acct.total == len((SAMPLES / name).read_bytes().splitlines())
    assert acct.parsed_count == acct.total and acct.skipped_count == 0
    assert result.events.filter(pl.col("kind") == "pg.snapshot").height == snapshots
    assert result.tz_name == "UTC"


def test_counts_match_csv_recomputation():
    result = run("pgsa_snapshots.csv")
    expected = csv_counts("pgsa_snapshots.csv")
    got: dict[dt.datetime, Counter] = {}
    for ts, entity, name, value in result.metrics.select("ts", "entity", "metric", "value").iter_rows():
        if value:
            got.setdefault(ts, Counter())[(entity, name)] = int(value)
    assert got == {ts: c for ts, c in expected.items() if c}
    # zeros are explicit: every snapshot has every series
    per_series = result.metrics.group_by("entity", "metric").len().get_column("len").unique().to_list()
    assert per_series == [5]


def test_lock_wait_and_idle_in_transaction_are_visible():
    result = run("pgsa_snapshots.csv")
    lock = result.metrics.filter(pl.col("entity").str.starts_with("wait:Lock/")).sort("ts")
    assert lock.group_by("ts").agg(pl.col("value").sum()).sort("ts").get_column("value").to_list() \
        == [0.0, 0.0, 2.0, 2.0, 0.0]
    idle_tx = result.metrics.filter((pl.col("entity") == "pool:bench") & (pl.col("metric") == "pg.idle_in_tx"))
    assert idle_tx.sort("ts").get_column("value").to_list() == [0.0, 1.0, 1.0, 1.0, 0.0]


def test_aligned_form_gives_the_same_counts():
    def shape(result):
        frame = result.metrics.with_columns(pl.col("ts").rank("dense").alias("n"))
        return sorted(frame.select("n", "entity", "metric", "value").iter_rows())

    assert shape(run("pgsa_aligned_now.txt")) == shape(run("pgsa_snapshots.csv"))


def test_pre_9_6_waiting_flag_and_legacy_idle():
    legacy = ("snapshot_time,procpid,datname,usename,waiting,current_query\n"
              "2026-01-01 10:00:00+00,11,shop,app,f,<IDLE>\n"
              "2026-01-01 10:00:00+00,12,shop,app,t,UPDATE t SET v = 1\n"
              "2026-01-01 10:00:00+00,13,shop,app,f,<IDLE> in transaction\n")
    result = registry.run(pg_stat_activity, io.BytesIO(legacy.encode()), ParseContext(file="legacy.csv"))
    values = {(e, m): v for e, m, v in result.metrics.select("entity", "metric", "value").iter_rows()}
    assert values[("pool:shop", "pg.idle")] == 1 and values[("pool:shop", "pg.active")] == 1
    assert values[("pool:shop", "pg.idle_in_tx")] == 1 and values[("wait:Lock/lock", "pg.waiting")] == 1


@st.composite
def mutated(draw):
    name = draw(st.sampled_from(["pgsa_snapshots.csv", "pgsa_aligned_now.txt"]))
    lines = (SAMPLES / name).read_bytes().split(b"\n")
    for _ in range(draw(st.integers(1, 5))):
        i = draw(st.integers(0, max(len(lines) - 1, 0)))
        op = draw(st.sampled_from(["drop", "dup", "flip", "junk"]))
        if not lines:
            break
        if op == "drop":
            del lines[i]
        elif op == "dup":
            lines.insert(i, lines[i])
        elif op == "flip" and lines[i]:
            k = draw(st.integers(0, len(lines[i]) - 1))
            lines[i] = lines[i][:k] + draw(st.sampled_from([b'"', b"|", b",", b"-", b"\xff"])) + lines[i][k + 1:]
        else:
            lines.insert(i, draw(st.binary(max_size=60)).replace(b"\n", b""))
    return b"\n".join(lines)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_snapshots_never_raise(data):
    result = registry.run(pg_stat_activity, io.BytesIO(data), ParseContext(file="m.csv"))
    acct = result.accounting
    assert not result.hints.get("failed"), acct.all_diagnostics()
    assert acct.parsed_count + acct.skipped_count == acct.total
    assert result.metrics.filter(pl.col("value") < 0).height == 0
