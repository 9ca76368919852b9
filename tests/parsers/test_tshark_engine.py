"""``--pcap-engine tshark`` (Wireshark's dissectors through tshark) against the fast engine:
the same query, request, status and connection counts, and the same latencies."""

from __future__ import annotations

import functools
from collections import Counter
from pathlib import Path

import polars as pl
import pytest

from parsers import _tshark_engine as te
from parsers.base import ParseContext, ParseResult

from ..conftest import SAMPLES, require_tool
from .test_pgwire import APP, BUNDLE_PG_PORT, PG_PORT, fast

CASES = [(APP / n, PG_PORT) for n in ("pgbench_simple.pcap.gz", "pgbench_extended.pcap.gz",
                                      "pgbench_prepared.pcap.gz", "pgbench_pipeline.pcap.gz", "psql_errors.pcap.gz",
                                      "http_keepalive.pcap.gz")] + [(SAMPLES / "bundles" / "quiet" / "capture.pcap.gz",
                                                                     BUNDLE_PG_PORT)]


@functools.cache
def slow(path: Path, pg_port: int) -> ParseResult:
    require_tool("tshark")
    with open(path, "rb") as fh:
        return te.parse(fh, ctx=ParseContext(file=path.name, pg_port=pg_port))


def test_tshark_found_through_pyshark() -> None:
    require_tool("tshark")
    path, version = te.find_tshark()
    assert Path(path).name == "tshark" and int(version.split(".")[0]) >= 3


@pytest.mark.parametrize(("path", "pg_port"), CASES, ids=lambda v: v.name if isinstance(v, Path) else str(v))
def test_engines_agree(path: Path, pg_port: int) -> None:
    ours = fast(path, pg_port)[3]
    theirs = slow(path, pg_port).tables
    for table in ("pg_queries", "http_requests"):
        assert (table in ours) == (table in theirs)
    if "pg_queries" in ours:
        a, b = ours["pg_queries"], theirs["pg_queries"]
        assert a.height == b.height
        assert Counter(a.get_column("sqlstate").to_list()) == Counter(b.get_column("sqlstate").to_list())
        # same definition (first message's frame → ReadyForQuery's frame), same frames: same numbers
        lat_a = a.sort("frame_start").get_column("latency_ms")
        lat_b = b.sort("frame_start").get_column("latency_ms")
        assert (lat_a - lat_b).abs().max() < 1e-3
        assert (a.get_column("statement").str.slice(0, 60).sort().to_list()
                == b.get_column("statement").str.slice(0, 60).sort().to_list())
    if "http_requests" in ours:
        a, b = ours["http_requests"], theirs["http_requests"]
        statuses = Counter(a.get_column("status").drop_nulls().to_list())
        statuses.update(int(s) for x in a.get_column("interim").drop_nulls().to_list() for s in x.split(","))
        assert statuses == Counter(b.get_column("status").to_list())
    fast_flows = {r for r in zip(*[ours["flows"].get_column(c) for c in ("client", "server")], strict=True)} \
        if "flows" in ours else None
    slow_flows = set(zip(*[theirs["flows"].get_column(c) for c in ("client", "server")], strict=True))
    if fast_flows is not None:
        assert fast_flows == slow_flows


def test_tcp_metrics_from_tshark() -> None:
    path = APP / "pgbench_simple.pcap.gz"
    result = slow(path, PG_PORT)
    m = result.metrics
    packets = m.filter((pl.col("metric") == "net.packets_per_s") & pl.col("entity").str.starts_with("flow:"))
    assert packets.get_column("value").sum() == result.accounting.total == 1992
    flows = result.tables["flows"]
    assert (flows.get_column("packets_c2s") + flows.get_column("packets_s2c")).sum() == 1992
    assert result.variant.startswith("tshark 4.") or result.variant.startswith("tshark 3.")
    assert m.filter(pl.col("metric") == "pg.wire_queries_per_s").get_column("value").sum() == 774


def test_packets_drilldown() -> None:
    """``Timeline.packets``: the packets of one flow and window, as pyshark packets (tshark's
    dissection) or scapy packets; the module's docstring examples run too."""
    import doctest

    import analyzer
    import analyzer.packets

    assert doctest.testmod(analyzer.packets).failed == 0
    tl = analyzer.load("samples/pcap_app/psql_errors.pcap.gz", pg_port=PG_PORT)
    flows = tl.tables["flows"].sort("start")
    flow = flows.get_column("flow").first()
    row = flows.row(0, named=True)
    every = tl.packets(flow=flow, engine="scapy")
    assert len(every) == row["packets_c2s"] + row["packets_s2c"]
    first = tl.packets(flow=flow, start=row["start"], end=row["start"], engine="scapy")
    assert len(first) == 1 and first[0]["TCP"].flags == "S"
    require_tool("tshark")
    pkts = tl.packets(flow=flow, limit=10, engine="pyshark")
    assert len(pkts) == 10 and pkts[0].tcp.flags_syn in ("1", "True")
    endpoint = tl.packets(flow=f"endpoint:127.0.0.1:{PG_PORT}", limit=5, engine="pyshark")
    assert len(endpoint) == 5
