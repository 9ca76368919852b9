"""PostgreSQL wire latency from captures: query counts against tshark's ReadyForQuery count,
SQLSTATEs, TLS streams, pipelining, reassembly and framing edge cases, resynchronisation, and
bad input that must never raise."""

from __future__ import annotations

import functools
import gzip
import io
import json
import random
import subprocess
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parsers import _pgwire_walk as walk
from parsers import pcap
from parsers._pgwire import looks_like_pg, startup_code, tag_rows
from parsers._reassembly import Direction
from parsers.base import ParseContext

from ..conftest import SAMPLES, require_tool

APP = SAMPLES / "pcap_app"
PG_PORT = 54359
BUNDLE_PG_PORT = 54329  # samples/bundles/*/expected.json meta.ports.postgres
BUNDLES = sorted((SAMPLES / "bundles").glob("*/capture.pcap.gz"))
# loss-free pgbench captures: every ReadyForQuery is seen by both tools
PGBENCH = ["pgbench_simple.pcap.gz", "pgbench_extended.pcap.gz", "pgbench_prepared.pcap.gz",
           "pgbench_pipeline.pcap.gz", "psql_errors.pcap.gz"]


@functools.cache
def fast(path: Path, pg_port: int) -> tuple[dict, pl.DataFrame, pl.DataFrame, dict]:
    """The capture parser (fast engine, application layer included): (summary notes, the
    application metrics, the application events, all tables)."""
    with open(path, "rb") as fh:
        result = pcap.parse(fh, ctx=ParseContext(file=path.name, pg_port=pg_port))
    notes = {d.code: json.loads(d.message) for d in result.accounting.diagnostics
             if d.code in ("pg_wire_summary", "http_summary")}
    metrics = result.metrics.filter(pl.col("metric").str.starts_with("pg.") | pl.col("metric").str.starts_with("http."))
    events = result.events.filter(pl.col("kind").is_in(["pg.query", "http.request"]))
    return notes, metrics, events, result.tables


@functools.cache
def tshark_pg(path: Path, pg_port: int) -> dict[str, int]:
    """Counts of PostgreSQL message types as Wireshark's pgsql dissector reads them."""
    exe = require_tool("tshark")
    out = subprocess.run([exe, "-r", str(path), "-n", "-d", f"tcp.port=={pg_port},pgsql", "-T", "fields",
                          "-E", "occurrence=a", "-E", "aggregator=|", "-e", "pgsql.type"],
                         capture_output=True, text=True, check=True).stdout
    counts: dict[str, int] = {}
    for line in out.splitlines():
        for t in line.split("|"):
            if t:
                counts[t] = counts.get(t, 0) + 1
    return counts


def summary(notes: dict) -> dict:
    return notes["pg_wire_summary"]


@pytest.mark.parametrize("name", PGBENCH)
def test_queries_equal_ready_for_query_minus_startups(name: str) -> None:
    app, _, _, tables = fast(APP / name, PG_PORT)
    counts = tshark_pg(APP / name, PG_PORT)
    s = summary(app)
    assert s["unmatched_ready_for_query"] == 0 and s["resyncs"] == 0
    assert s["connection_setups"] == counts["Startup message"]
    assert tables["pg_queries"].height == counts["Ready for query"] - counts["Startup message"]


@pytest.mark.parametrize("path", BUNDLES, ids=lambda p: p.parent.name)
def test_bundle_queries_equal_ready_for_query_minus_startups(path: Path) -> None:
    app, metrics, _, tables = fast(path, BUNDLE_PG_PORT)
    counts = tshark_pg(path, BUNDLE_PG_PORT)
    assert tables["pg_queries"].height == counts["Ready for query"] - counts["Startup message"]
    per_second = metrics.filter(pl.col("metric") == "pg.wire_queries_per_s").get_column("value").sum()
    assert per_second == tables["pg_queries"].height


def test_modes_and_reconnects() -> None:
    for name, mode in (("pgbench_simple.pcap.gz", "simple"), ("pgbench_extended.pcap.gz", "extended"),
                       ("pgbench_prepared.pcap.gz", "extended")):
        app, _, _, tables = fast(APP / name, PG_PORT)
        q = tables["pg_queries"]
        # pgbench's own set-up queries (scale detection) use the simple protocol in every mode
        assert q.filter(pl.col("mode") != mode).height <= 4 * 2
        # two pgbench runs: -c 2 (+ pgbench's own setup connection each) and -C -c 2 -t 15
        assert summary(app)["connections"] >= 30
        # pgbench's tpcb-like script: 7 statements per transaction, all answered; -M prepared adds
        # one Parse+Sync batch per statement and connection (2 clients + 30 reconnects)
        ends = q.filter(pl.col("statement").str.starts_with("END")).height
        assert ends == 2 * 40 + 2 * 15 + (32 if name == "pgbench_prepared.pcap.gz" else 0)
    prepared = fast(APP / "pgbench_prepared.pcap.gz", PG_PORT)[3]["pg_queries"]
    # Bind-only batches get the text their Parse registered on the same connection
    assert prepared.filter(pl.col("statement").is_null()).height == 0
    assert prepared.filter(pl.col("statement").str.contains(r"\$1")).height > 0


def test_errors_carry_sqlstate() -> None:
    q = fast(APP / "psql_errors.pcap.gz", PG_PORT)[3]["pg_queries"]
    errors = q.filter(pl.col("sqlstate").is_not_null()).select("statement", "sqlstate", "tx_status").rows()
    assert [(s, c) for s, c, _ in errors] == [("SELECT 1/0;", "22012"), ("SELECT * FROM no_such_table;", "42P01"),
                                              ("SELEC broken syntax;", "42601"), ("SELECT 1/0;", "22012"),
                                              ("SELECT 2;", "25P02")]
    assert errors[3][2] == "E" and errors[4][2] == "E"  # inside the failed transaction
    multi = q.filter(pl.col("statement").str.starts_with("SELECT 1; SELECT 2; SELECT 3")).row(0, named=True)
    assert multi["commands"] == 3 and multi["tag"] == "SELECT 1"  # the last command's tag
    copy = q.filter(pl.col("statement").str.starts_with("COPY (SELECT")).row(0, named=True)
    assert copy["tag"] == "COPY 2000" and copy["rows"] == 2000
    sleep = q.filter(pl.col("statement").str.contains("pg_sleep")).row(0, named=True)
    assert 300 <= sleep["latency_ms"] < 400


def test_error_events() -> None:
    events = fast(APP / "psql_errors.pcap.gz", PG_PORT)[2]
    errs = events.filter(pl.col("attrs").str.contains('"sqlstate"'))
    assert events.filter(pl.col("severity") == "medium").height == errs.height
    assert errs.height == 5
    attrs = json.loads(errs.row(0, named=True)["attrs"])
    assert attrs["sqlstate"] == "22012" and attrs["error"] == "division by zero"
    assert set(events.get_column("entity")) == {f"endpoint:127.0.0.1:{PG_PORT}"}


def test_tls_stream_is_unreadable_not_guessed() -> None:
    app, _, _, tables = fast(APP / "psql_ssl.pcap.gz", PG_PORT)
    s = summary(app)
    assert s["tls_connections"] == 1 and s["connection_setups"] == 1
    assert tables["pg_queries"].get_column("statement").to_list() == ["SELECT 43"]


def test_pipeline_batches_pair_fifo() -> None:
    q = fast(APP / "pgbench_pipeline.pcap.gz", PG_PORT)[3]["pg_queries"]
    # one Sync per \endpipeline: one sample per pipeline, text of its first statement
    batches = q.filter(pl.col("statement").str.starts_with("SELECT abalance"))
    assert batches.height == 80
    assert (batches.get_column("commands") == 3).all()


def test_capture_with_kernel_drops_resynchronises() -> None:
    """A real capture in which tcpdump's kernel buffer overflowed: gaps, then resynchronisation;
    every ReadyForQuery tshark sees is still accounted for (matched, setup or unmatched)."""
    path = APP / "pgbench_extended_kernel_drops.pcap.gz"
    app = fast(path, PG_PORT)[0]
    s = summary(app)
    counts = tshark_pg(path, PG_PORT)
    assert s["resyncs"] > 0
    assert s["queries"] + s["connection_setups"] + s["unmatched_ready_for_query"] == counts["Ready for query"]


def test_slow_query_window_in_checkout_bundle() -> None:
    path = SAMPLES / "bundles" / "checkout" / "capture.pcap.gz"
    expected = json.loads((path.parent / "expected.json").read_text())
    fault = next(f for f in expected["faults"] if f["key"] == "slow_query")
    start, end = (pl.Series([fault[k]]).str.to_datetime(time_zone="UTC").item() for k in ("start", "end"))
    _, metrics, events, tables = fast(path, BUNDLE_PG_PORT)
    p99 = metrics.filter(pl.col("metric") == "pg.wire_latency_p99_ms")
    inside = p99.filter(pl.col("ts").is_between(start, end)).get_column("value").max()
    before = p99.filter(pl.col("ts") < start).get_column("value").median()
    assert inside > 20 * before
    slow = events.filter((pl.col("kind") == "pg.query") & pl.col("ts").is_between(start, end)) \
        .sort("value", descending=True).row(0, named=True)
    statement = json.loads(slow["attrs"])["statement"]
    # the wire shows the statement as sent (parameters as $n): pg_stat_statements' normalised text
    # differs only where constants became placeholders
    norm = fault["root"]["query"]
    assert statement.split("WHERE")[0].split("round(")[0] == norm.split("WHERE")[0].split("round(")[0]
    assert "note LIKE" in statement


# -- units -------------------------------------------------------------------------------

def msg(t: bytes, body: bytes) -> bytes:
    return t + (len(body) + 4).to_bytes(4, "big") + body


def test_walk_speculative_equals_sequential_over_any_split() -> None:
    import numpy as np

    data = (msg(b"T", b"\0\1abc\0" + bytes(18)) + msg(b"D", b"\0\1\0\0\0\3xyz") * 5 + msg(b"C", b"SELECT 5\0")
            + msg(b"Z", b"I"))
    rng = random.Random(7)
    seq: list[tuple[int, int, int]] = []
    assert walk.walk_py(data, 0, len(data), len(data), 0, seq) == (walk.DONE, len(data))
    for _ in range(50):
        cuts = sorted(rng.sample(range(1, len(data)), 4))
        starts = np.asarray([0, *cuts], dtype=np.int64)
        ends = np.asarray([*cuts, len(data)], dtype=np.int64)
        arr = np.frombuffer(data + bytes(8), dtype=np.uint8)
        status, pos, msgs = walk.spec_walk(arr, data, starts, ends, np.full(5, len(data)), np.zeros(5, dtype=np.int64))
        # the walk from piece 0 is always on the chain; others only when a boundary falls there
        first = [tuple(m[1:]) for m in msgs.tolist() if m[0] == 0]
        assert first == [s for s in seq if s[0] < ends[0]] or first == [s for s in seq if s[0] <= pos[0] - 1]


def test_startup_and_detection() -> None:
    startup = (8 + 9).to_bytes(4, "big") + (196608).to_bytes(4, "big") + b"user\0x\0\0"
    assert startup_code(startup) == 196608
    assert startup_code((8).to_bytes(4, "big") + (80877103).to_bytes(4, "big")) == 80877103
    assert looks_like_pg(startup, True)
    assert looks_like_pg(msg(b"Q", b"SELECT 1\0"), True)
    assert looks_like_pg(msg(b"C", b"SELECT 1\0") + msg(b"Z", b"I"), False)
    assert not looks_like_pg(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", True)
    assert not looks_like_pg(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", True)
    assert tag_rows(b"INSERT 0 7") == 7 and tag_rows(b"BEGIN") is None and tag_rows(b"SELECT 12") == 12


def test_reassembly_duplicates_overlap_out_of_order_gap() -> None:
    d = Direction()
    got: list[tuple[bytes, bool]] = []

    def add(seq: int, data: bytes, seglen: int | None = None, peer_ack: int | None = None) -> None:
        got.extend((p, g) for p, _, _, g in d.add(seq, data, len(data) if seglen is None else seglen, 0, 0, peer_ack))

    add(1000, b"abcd")
    add(1000, b"abcd")  # retransmission: delivered once
    add(1002, b"cdef")  # overlap: only "ef" is new
    add(1010, b"kl")  # ahead of a hole: held
    add(1006, b"ghij")  # fills the hole: both delivered
    add(1012, b"mn", seglen=4)  # cut by the snap length: a gap follows
    add(1020, b"uv")  # held
    add(1022, b"wx", peer_ack=1022)  # the other side acked past the hole: capture loss, gap now
    assert got == [(b"abcd", False), (b"ef", False), (b"ghij", False), (b"kl", False), (b"mn", False),
                   (b"", True), (b"uv", True), (b"wx", False)]
    assert d.dup_bytes == 4 + 2 and d.gaps == 2


def test_sequence_wraparound() -> None:
    d = Direction()
    out = d.add(0xFFFFFFFE, b"ab", 2, 0, 0) + d.add(0, b"cd", 2, 0, 0) + d.add(0xFFFFFFFF, b"bc", 2, 0, 0)
    assert [p for p, *_ in out] == [b"ab", b"cd"]


# -- bad input ---------------------------------------------------------------------------

def _records(path: Path) -> tuple[bytes, list[int]]:
    data = gzip.decompress(path.read_bytes())
    offs, p = [], 24
    while p + 16 <= len(data):
        offs.append(p)
        p += 16 + int.from_bytes(data[p + 8:p + 12], "little")
    return data, offs


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_captures_never_raise(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(["psql_errors.pcap.gz", "pgbench_pipeline.pcap.gz", "http_keepalive.pcap.gz"]))
    raw, offs = _records(APP / name)
    buf = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 30))):
        rec = offs[data.draw(st.integers(0, len(offs) - 1))]
        caplen = int.from_bytes(buf[rec + 8:rec + 12], "little")
        if caplen > 66:
            pos = rec + 16 + data.draw(st.integers(54, caplen - 1))  # inside TCP header or payload
            buf[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(24, len(buf)))
    result = pcap.parse(io.BytesIO(bytes(buf[:cut])), ctx=ParseContext(file=name, pg_port=PG_PORT))
    acct = result.accounting
    assert acct.parsed_count + acct.skipped_count == acct.total
    for table in ("pg_queries", "http_requests"):
        if table in result.tables:
            assert result.tables[table].get_column("start").null_count() == 0


def test_finished_seconds_are_aggregated_early(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bounded memory: seconds no query can still complete in are aggregated while reading;
    the metrics are the same as when everything is aggregated at the end."""
    from parsers import _app_capture

    path = APP / "pgbench_simple.pcap.gz"
    whole = fast(path, PG_PORT)[1].sort("entity", "metric", "ts")
    monkeypatch.setattr(_app_capture, "FINALIZE_ROWS", 50)
    monkeypatch.setattr(_app_capture, "FINALIZE_LAG_NS", 1)
    monkeypatch.setattr(_app_capture, "FLUSH_SAMPLES", 100)
    with open(path, "rb") as fh:
        result = pcap.parse(fh, ctx=ParseContext(file=path.name, pg_port=PG_PORT))
    early = result.metrics.filter(pl.col("metric").str.starts_with("pg.")).sort("entity", "metric", "ts")
    assert early.height == whole.height > 0
    assert early.drop("line").equals(whole.drop("line"))


def test_detail_only_where_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the table's size, statement texts are only kept for queries that can still become
    events: the slowest, slow and failed ones keep theirs."""
    from parsers import _app_capture, _app_latency, _capture_reader

    path = APP / "pgbench_prepared.pcap.gz"
    full = fast(path, PG_PORT)
    monkeypatch.setattr(_capture_reader, "MAX_RECORDS", 200)  # many batches
    monkeypatch.setattr(_app_capture, "FLUSH_FRAMES", 1)
    monkeypatch.setattr(_app_capture, "TABLE_MAX", 100)
    monkeypatch.setattr(_app_latency, "TOP_QUERIES", 20)
    monkeypatch.setattr(_app_capture, "TOP_QUERIES", 20)
    with open(path, "rb") as fh:
        result = pcap.parse(fh, ctx=ParseContext(file=path.name, pg_port=PG_PORT))
    table = result.tables["pg_queries"]
    assert table.height == 100 and table.get_column("statement").null_count() == 0
    events = result.events.filter(pl.col("kind") == "pg.query")
    assert events.height == 20
    assert all(json.loads(a).get("statement") for a in events.get_column("attrs").to_list())
    slowest = full[3]["pg_queries"].sort("latency_ms", descending=True).head(20).get_column("latency_ms")
    assert np.allclose(sorted(events.get_column("value").to_list()), sorted((slowest / 1000).to_list()))

