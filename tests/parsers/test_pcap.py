"""Capture engine: readers, link types, accounting, TCP analysis, outputs, fuzzing."""

from __future__ import annotations

import gzip
import io
import json
import random
import struct
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parsers import _capture_pcapwalk, _capture_reader, _tcp_analysis, pcap, registry, schema
from parsers.base import ParseContext

from ..conftest import SAMPLES

PCAP = SAMPLES / "pcap"

# file: (records total, parsed, flows, variant)
GOLDEN = {
    "any_sll2.pcap": (111, 111, 9, "pcap little-endian µs, LINUX_SLL2"),
    "crafted_ipv4_228.pcap": (8, 8, 1, "pcap little-endian µs, IPV4"),
    "crafted_ipv6_ext.pcap": (11, 11, 1, "pcap little-endian µs, RAW"),
    "crafted_loop.pcap": (8, 8, 1, "pcap little-endian µs, LOOP"),
    "crafted_multisection.pcapng": (12, 12, 2, "pcapng 2 sections, 3 interfaces, EN10MB+RAW+LINUX_SLL2"),
    "crafted_ns_bigendian.pcap": (8, 8, 1, "pcap big-endian ns, EN10MB"),
    "crafted_null_be.pcap": (8, 8, 1, "pcap big-endian µs, NULL"),
    "crafted_raw_ns.pcap": (13, 13, 1, "pcap little-endian ns, RAW"),
    "crafted_sll.pcap": (8, 8, 1, "pcap little-endian µs, LINUX_SLL"),
    "crafted_tcp_anomalies.pcap": (34, 34, 2, "pcap little-endian µs, EN10MB"),
    "crafted_vlan_qinq.pcap": (16, 16, 2, "pcap little-endian µs, EN10MB"),
    "dumpcap_lo_any.pcapng": (174, 174, 5, "pcapng 1 section, 2 interfaces, EN10MB+LINUX_SLL"),
    "lo_scenarios.pcap.gz": (440, 440, 23, "pcap little-endian µs, EN10MB, gzip"),
    "netem_loss.pcap.gz": (4474, 4474, 8, "pcap little-endian µs, EN10MB, gzip"),
}


def raw_bytes(name: str) -> bytes:
    data = (PCAP / name).read_bytes()
    return gzip.decompress(data) if name.endswith(".gz") else data


def run(data: bytes, name: str = "x.pcap", **kw):
    return pcap.parse(io.BytesIO(data), ctx=ParseContext(file=name, **kw))


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_sample_golden_counts(name):
    total, parsed, flows, variant = GOLDEN[name]
    result = pcap.parse(io.BytesIO((PCAP / name).read_bytes()), ctx=ParseContext(file=name))
    acct = result.accounting
    assert (acct.total, acct.parsed_count, acct.skipped_count) == (total, parsed, 0)
    assert result.tables["flows"].height == flows
    assert result.variant == variant
    assert result.tz_reason == "capture timestamps are UTC epoch" and result.tz_name == "UTC"
    assert result.metrics.get_column("ts").dtype == schema.UTC_NS
    assert schema.unknown_names(result.metrics, "metric", schema.METRICS) == []
    assert schema.bad_entities(result.metrics) == [] and schema.bad_entities(result.events) == []


@pytest.mark.parametrize("name", ["lo_scenarios.pcap.gz", "netem_loss.pcap.gz"])
def test_same_capture_same_output(name):
    """Parsing twice gives the same rows in the same order (aggregation runs on threads)."""
    data = raw_bytes(name)
    first, second = run(data, name), run(data, name)
    assert first.metrics.height > 100
    assert first.metrics.equals(second.metrics)
    assert first.events.equals(second.events)
    assert first.tables["flows"].equals(second.tables["flows"])


def test_sniff():
    assert pcap.sniff(raw_bytes("lo_scenarios.pcap.gz")[:64]) == 1.0
    assert pcap.sniff((PCAP / "lo_scenarios.pcap.gz").read_bytes()[:4096]) == 1.0  # gzip head
    assert pcap.sniff((PCAP / "crafted_multisection.pcapng").read_bytes()[:64]) == 1.0
    assert pcap.sniff((PCAP / "crafted_ns_bigendian.pcap").read_bytes()[:64]) == 1.0
    assert pcap.sniff(b"2026-01-02 10:00:05 - PID: 1, Threads: 3\n") == 0.0
    assert pcap.sniff(b"") == 0.0
    assert pcap.sniff(b"\x1f\x8b\x08\x00garbage") == 0.0


def test_anomalies_flow_table_and_events():
    result = run((PCAP / "crafted_tcp_anomalies.pcap").read_bytes())
    flows = result.tables["flows"]
    first, second = flows.row(0, named=True), flows.row(1, named=True)
    assert first["flow"] == second["flow"] == "flow:10.1.0.5:42000>10.1.0.9:5432"  # port reuse: two streams
    assert (first["stream"], second["stream"]) == (0, 1)
    # tshark: fast retransmission (frame 12) + spurious retransmission (18); 16 is out-of-order
    assert (first["packets_c2s"], first["packets_s2c"], first["retransmits"], first["rsts"]) == (16, 14, 2, 1)
    assert first["state"] == "reset_by_server" and second["state"] == "reset_by_client"
    assert first["irtt_ms"] == pytest.approx(300.0)
    ev = result.events
    zw = ev.filter(pl.col("kind") == "tcp.zero_window").row(0, named=True)
    assert zw["value"] == pytest.approx(1.399)  # 1.601 s → 3.000 s
    assert json.loads(zw["attrs"]) == {"side": "client", "segments": 3, "stream": 0}
    rst = ev.filter(pl.col("kind") == "tcp.rst")
    assert [json.loads(a)["by"] for a in rst.get_column("attrs")] == ["server", "client"]
    assert rst.get_column("line").to_list() == [30, 34]  # frame numbers
    hs = ev.filter(pl.col("kind") == "tcp.handshake").sort("ts")
    assert hs.get_column("value").to_list() == pytest.approx([0.3, 0.002])
    assert hs.get_column("severity").to_list() == ["medium", "info"]


def test_anomalies_per_second_metrics():
    m = run((PCAP / "crafted_tcp_anomalies.pcap").read_bytes()).metrics
    ts0 = pl.datetime(2026, 1, 2, 10, 33, 21, time_zone="UTC")  # end of the first second

    def val(entity, metric, ts=ts0):
        rows = m.filter((pl.col("entity") == entity) & (pl.col("metric") == metric) & (pl.col("ts") == ts))
        return rows.get_column("value").to_list()

    flow, ep = "flow:10.1.0.5:42000>10.1.0.9:5432", "endpoint:10.1.0.9:5432"
    assert val(flow, "net.packets_per_s") == [17.0]  # frames 1-17
    assert val(flow, "net.packets_c2s_per_s") == [9.0] and val(flow, "net.packets_s2c_per_s") == [8.0]
    assert val(flow, "net.retransmits") == [1.0]  # the fast retransmission; out-of-order is not one
    assert val(flow, "net.dup_acks") == [3.0] and val(flow, "net.lost_segments") == [1.0]
    assert val(flow, "net.out_of_order") == [1.0]
    assert val(ep, "net.zero_window") == [0.0]  # endpoint lanes keep zeros
    ts1 = pl.datetime(2026, 1, 2, 10, 33, 22, time_zone="UTC")
    assert val(flow, "net.zero_window", ts1) == [2.0] and val(flow, "net.retransmits", ts1) == [1.0]
    assert val(ep, "net.connections_opened") == [1.0]


def test_ipv6_entity_and_link_types():
    r = run((PCAP / "crafted_loop.pcap").read_bytes())
    assert r.tables["flows"].get_column("flow").to_list() == ["flow:[2001:db8::5]:41006>[2001:db8::9]:5432"]
    for name in ("crafted_sll.pcap", "crafted_null_be.pcap", "crafted_vlan_qinq.pcap", "crafted_ipv4_228.pcap",
                 "crafted_raw_ns.pcap", "crafted_ipv6_ext.pcap", "crafted_ns_bigendian.pcap"):
        flows = run((PCAP / name).read_bytes()).tables["flows"]
        assert set(flows.get_column("state")) == {"closed"}, name
        assert flows.get_column("packets_c2s").sum() == 5 * flows.height, name


def test_multisection_times_and_blocks():
    r = run((PCAP / "crafted_multisection.pcapng").read_bytes())
    flows = r.tables["flows"].sort("stream")
    # section 2 uses 10^-9 and 2^-20 s resolutions with a -1 s offset: times line up again
    start = flows.get_column("start").dt.epoch("ns").to_list()
    assert start[1] - start[0] == 1_000_000_000
    end = flows.get_column("end").dt.epoch("ns").to_list()
    assert abs((end[1] - start[1]) - 60_000_000) < 2_000  # 2^-20 s rounding, SPB inherits the previous time
    assert flows.get_column("packets_c2s").to_list() == [3, 5]


def test_gzip_direct_and_truncated_gzip():
    data = (PCAP / "netem_loss.pcap.gz").read_bytes()
    whole = run(data)
    assert whole.accounting.total == 4474 and whole.variant.endswith("gzip")
    cut = run(data[: len(data) // 2])
    assert 0 < cut.accounting.total < 4474
    assert cut.accounting.parsed_count + cut.accounting.skipped_count == cut.accounting.total
    assert any(d.code == "truncated_record" for d in cut.accounting.all_diagnostics())


def test_truncated_last_record():
    data = raw_bytes("lo_scenarios.pcap.gz")
    r = run(data[:-7])
    acct = r.accounting
    assert (acct.total, acct.parsed_count, dict(acct.skipped)) == (440, 439, {"truncated_record": 1})
    diag = next(d for d in acct.diagnostics if d.code == "truncated_record")
    assert "cut short" in diag.message and diag.offset is not None


def test_unknown_magic_names_what_was_seen():
    r = run(b"\xde\xad\xbe\xef" + b"\0" * 100)
    assert r.accounting.total == 0
    assert any("unknown magic 0xdeadbeef" in d.message for d in r.accounting.diagnostics)
    assert run(b"").accounting.total == 0


def test_corrupt_record_header_stops_with_offset():
    data = bytearray(raw_bytes("lo_scenarios.pcap.gz"))
    off = 24
    for _ in range(10):  # walk to the 11th record and give it an absurd captured length
        off += 16 + struct.unpack_from("<I", data, off + 8)[0]
    struct.pack_into("<I", data, off + 8, 0x7FFFFFFF)
    r = run(bytes(data))
    assert (r.accounting.total, r.accounting.parsed_count, dict(r.accounting.skipped)) == (11, 10,
                                                                                             {"decode_error": 1})
    assert r.accounting.diagnostics[0].offset == off


def test_unsupported_link_type_is_counted():
    data = bytearray(raw_bytes("lo_scenarios.pcap.gz"))
    struct.pack_into("<I", data, 20, 105)  # IEEE 802.11
    r = run(bytes(data))
    assert r.accounting.skipped == {"decode_error": 440}
    assert "link type 105" in r.accounting.diagnostics[0].message


def record_offsets(data: bytes) -> list[int]:
    offs, off = [], 24
    while off + 16 <= len(data):
        offs.append(off)
        off += 16 + struct.unpack_from("<I", data, off + 8)[0]
    return offs + [off]


def test_truncation_at_every_record_boundary_never_raises():
    data = raw_bytes("lo_scenarios.pcap.gz")
    offsets = record_offsets(data)
    for k, off in enumerate(offsets):
        r = run(data[:off])
        assert r.accounting.total == k and r.accounting.skipped_count == 0
        r = run(data[:off + 5])
        acct = r.accounting
        assert acct.parsed_count + acct.skipped_count == acct.total
    rng = random.Random(7)
    for cut in rng.sample(range(len(data)), 60):
        acct = run(data[:cut]).accounting
        assert acct.parsed_count + acct.skipped_count == acct.total


@pytest.mark.parametrize("name", ["crafted_multisection.pcapng", "dumpcap_lo_any.pcapng", "crafted_raw_ns.pcap"])
def test_random_truncation_and_header_flips_never_raise(name):
    data = raw_bytes(name)
    rng = random.Random(11)
    for cut in list(range(0, min(len(data), 400), 7)) + rng.sample(range(len(data)), 40):
        acct = run(data[:cut], name).accounting
        assert acct.parsed_count + acct.skipped_count == acct.total
    for _ in range(150):
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            pos = rng.randrange(min(len(data), 200)) if rng.random() < 0.6 else rng.randrange(len(data))
            mutated[pos] = rng.randrange(256)
        result = run(bytes(mutated), name)
        acct = result.accounting
        assert acct.parsed_count + acct.skipped_count == acct.total
        if acct.total == 0 and data[:4] != bytes(mutated[:4]):
            assert any("magic" in d.message for d in acct.diagnostics)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255)), max_size=12), st.integers(0, 4200))
def test_property_mutated_capture(edits, cut):
    data = bytearray(raw_bytes("crafted_tcp_anomalies.pcap"))
    for pos, value in edits:
        if pos < len(data):
            data[pos] = value
    result = run(bytes(data[:cut]))
    acct = result.accounting
    assert acct.parsed_count + acct.skipped_count == acct.total
    assert schema.unknown_names(result.metrics, "metric", schema.METRICS) == []


def _per_packet(data: bytes) -> tuple[pl.DataFrame, pcap.ParseResult]:
    rows = []

    def consumer(b):
        rows.append(pl.DataFrame({"frame": b.frame, "stream": b.stream, "flags": b.flags, "rtt": b.rtt_ns,
                                  "c2s": b.c2s, "payload": [len(b.payload(i)) for i in range(len(b.tcp))]}))

    result = pcap.parse(io.BytesIO(data), ctx=ParseContext(file="x"), consumers=[consumer])
    return pl.concat(rows), result


@pytest.mark.parametrize("name", ["netem_loss.pcap.gz", "crafted_tcp_anomalies.pcap", "lo_scenarios.pcap.gz"])
def test_small_batches_give_identical_results(name, monkeypatch):
    """State carried across batch boundaries: 7-record batches must equal one batch."""
    data = raw_bytes(name)
    whole, r1 = _per_packet(data)
    monkeypatch.setattr(_capture_reader, "MAX_RECORDS", 7)
    monkeypatch.setattr(_capture_reader, "CHUNK_BYTES", 1500)
    small, r2 = _per_packet(data)
    assert whole.drop("payload").equals(small.drop("payload"))
    assert r1.tables["flows"].equals(r2.tables["flows"])
    assert r1.events.sort("ts", "kind", "line").equals(r2.events.sort("ts", "kind", "line"))
    cols = ["ts", "entity", "metric"]
    a = r1.metrics.filter(~pl.col("metric").str.contains("rtt")).sort(cols)
    b = r2.metrics.filter(~pl.col("metric").str.contains("rtt")).sort(cols)
    assert a.equals(b)


@pytest.mark.parametrize("name", ["netem_loss.pcap.gz", "crafted_tcp_anomalies.pcap", "dumpcap_lo_any.pcapng"])
def test_vectorised_equals_per_packet_reference(name, monkeypatch):
    """The vectorised pass and the per-packet rules agree on every packet."""
    data = raw_bytes(name)
    fast, _ = _per_packet(data)

    def slow_analyze(cols, stream, dirn, state):
        flags = np.zeros(len(cols), dtype=np.int64)
        rtt = np.full(len(cols), -1, dtype=np.int64)
        ok = np.flatnonzero(cols.seglen >= 0)
        for s in np.unique(stream[ok]).tolist():
            rows = ok[stream[ok] == s]
            flags[rows], rtt[rows] = _tcp_analysis.sequential(rows, cols, dirn, s, state)
        return _tcp_analysis.BatchAnalysis(flags, rtt, ok[np.argsort(stream[ok], kind="stable")])

    monkeypatch.setattr("parsers._capture_engine.analyze", slow_analyze)
    slow, _ = _per_packet(data)
    assert fast.equals(slow)


def test_payload_hook_sees_snaplen_cut_payloads():
    per, _ = _per_packet(raw_bytes("netem_loss.pcap.gz"))
    assert per.height == 4474
    assert per.get_column("payload").max() == 128 - 14 - 20 - 32  # snaplen 128, TCP timestamps option


def test_registry_picks_pcap_for_gzip_head():
    head = (PCAP / "netem_loss.pcap.gz").read_bytes()[: registry.SNIFF_BYTES]
    assert registry.detect(head, "capture.pcap.gz").parser is pcap


def test_samples_are_small():
    assert all(p.stat().st_size < 2_000_000 for p in Path(PCAP).iterdir())


@pytest.mark.parametrize("order", ["<", ">"])
def test_vectorised_record_walk_equals_record_by_record(order):
    """The vectorised pcap record walk finds exactly the records, stop position and corrupt
    length the one-record-at-a-time walk finds: timestamps crossing a 2^16-second boundary,
    header look-alikes inside payloads, wild timestamps and sub-second fields, cuts, corruption."""
    rng = random.Random(11)
    recs, t = [], 0x6928FFF0
    for _ in range(6000):
        t += rng.choice([0, 0, 0, 1])
        payload = rng.randbytes(rng.randrange(0, 80))
        if rng.random() < 0.05:
            payload += struct.pack(order + "IIII", t, 5, 20, 20)  # a record header look-alike
        ts = rng.randrange(1 << 32) if rng.random() < 0.002 else t
        frac = (1 << 31) if rng.random() < 0.002 else rng.randrange(10**6)
        recs.append(struct.pack(order + "IIII", ts, frac, len(payload), len(payload)) + payload)
    data = b"".join(recs)
    bad = bytearray(data)
    at = len(b"".join(recs[:4000]))
    bad[at + 8:at + 12] = struct.pack(order + "I", 1 << 30)
    real = raw_bytes("netem_loss.pcap.gz")[24:] if order == "<" else b""
    cases = [data, bytes(bad), real] + [data[:rng.randrange(len(data))] for _ in range(10)]
    for case in cases:
        slow, s_pos, s_corrupt, _ = _capture_pcapwalk._walk_py(case, len(case), 0, order, 1 << 18, 1 << 62)
        fast, f_pos, f_corrupt = _capture_pcapwalk.record_chain(case, len(case), order, 1 << 18, 10**6)
        assert fast.tolist() == slow and f_pos == s_pos and f_corrupt == s_corrupt
    assert len(_capture_pcapwalk.record_chain(data, len(data), order, 1 << 18, 10**6)[0]) == 6000
