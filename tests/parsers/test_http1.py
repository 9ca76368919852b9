"""HTTP/1.x latency from captures: request and status counts equal tshark's, latencies agree
with ``http.time`` within 1 ms where both measure the same thing (request in one segment:
its first byte → the response's last byte), keep-alive, chunked, pipelining, 100-continue,
HEAD/204/304, and the parser's edge cases."""

from __future__ import annotations

import functools
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from parsers._http1 import Http1, looks_like_http
from parsers._reassembly import Delivery

from ..conftest import SAMPLES, require_tool
from .test_pgwire import BUNDLE_PG_PORT, PG_PORT, fast

HTTP_SAMPLE = SAMPLES / "pcap_app" / "http_keepalive.pcap.gz"
CASES = [(HTTP_SAMPLE, 18080, PG_PORT)] + [(p, 8000, BUNDLE_PG_PORT)
                                           for p in sorted((SAMPLES / "bundles").glob("*/capture.pcap.gz"))]


@functools.cache
def tshark_http(path: Path, port: int) -> pl.DataFrame:
    """One row per request (method, uri, request frame) and per response (code, http.time, request_in)."""
    exe = require_tool("tshark")
    out = subprocess.run([exe, "-r", str(path), "-n", "-d", f"tcp.port=={port},http", "-Y", "http", "-T", "fields",
                          "-E", "occurrence=a", "-E", "aggregator=|", "-e", "frame.number", "-e", "http.request.method",
                          "-e", "http.request.uri", "-e", "http.response.code", "-e", "http.time",
                          "-e", "http.request_in"], capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        frame, method, uri, code, took, req_in = line.split("\t")
        for m, u in zip(method.split("|"), uri.split("|"), strict=False):
            if m:
                rows.append(("request", int(frame), m, u, None, None, None))
        for i, c in enumerate(code.split("|")):
            if c:
                t = took.split("|")[i] if took and i < len(took.split("|")) else ""
                r = req_in.split("|")[i] if req_in and i < len(req_in.split("|")) else ""
                rows.append(("response", int(frame), None, None, int(c), float(t) * 1000 if t else None,
                             int(r) if r else None))
    return pl.DataFrame(rows, schema={"what": pl.Utf8, "frame": pl.Int64, "method": pl.Utf8, "uri": pl.Utf8,
                                      "code": pl.Int64, "time_ms": pl.Float64, "request_in": pl.Int64}, orient="row")


@pytest.mark.parametrize(("path", "port", "pg_port"), CASES, ids=lambda v: getattr(v, "parent", v).name
                         if isinstance(v, Path) else str(v))
def test_counts_equal_tshark(path: Path, port: int, pg_port: int) -> None:
    ours = fast(path, pg_port)[3]["http_requests"]
    theirs = tshark_http(path, port)
    assert ours.height == theirs.filter(pl.col("what") == "request").height
    statuses = Counter(ours.get_column("status").drop_nulls().to_list())  # null: no response captured
    statuses.update(int(s) for x in ours.get_column("interim").drop_nulls().to_list() for s in x.split(","))
    assert statuses == Counter(theirs.filter(pl.col("what") == "response").get_column("code").to_list())


@pytest.mark.parametrize(("path", "port", "pg_port"), CASES, ids=lambda v: getattr(v, "parent", v).name
                         if isinstance(v, Path) else str(v))
def test_latency_agrees_with_http_time(path: Path, port: int, pg_port: int) -> None:
    """Same measure when the request is one segment and no interim response came first:
    tshark's request frame is then the request's first segment."""
    ours = fast(path, pg_port)[3]["http_requests"].filter(pl.col("interim").is_null())
    theirs = tshark_http(path, port).filter((pl.col("what") == "response") & pl.col("time_ms").is_not_null())
    joined = ours.join(theirs, left_on=["frame_start", "frame_end"], right_on=["request_in", "frame"])
    # not joined: the 2nd and 3rd answer of a pipelined triple (tshark gives them no http.time),
    # requests whose body came in a later segment (tshark's request frame is then that one)
    assert joined.height >= 0.9 * ours.height - 2
    assert (joined.get_column("lat_ms") - joined.get_column("time_ms")).abs().max() < 1.0


def test_keepalive_chunked_pipelined_continue() -> None:
    t = fast(HTTP_SAMPLE, PG_PORT)[3]["http_requests"]
    assert t.get_column("flow").n_unique() == 4
    rows = {(r["method"], r["target"]): r for r in t.iter_rows(named=True)}
    assert rows[("GET", "/slow")]["ttfb_ms"] >= 250
    chunked = t.filter(pl.col("target") == "/chunked").get_column("lat_ms").to_list()
    assert len(chunked) == 2 and min(chunked) >= 80  # five chunks, 20 ms apart, last byte counted
    assert [r["status"] for r in t.sort("start").iter_rows(named=True)][4:6] == [204, 304]
    assert rows[("HEAD", "/item/4")]["status"] == 200  # no body after a HEAD response's Content-Length
    assert rows[("POST", "/upload")]["interim"] == "100" and rows[("POST", "/upload")]["status"] == 201
    pipelined = t.filter(pl.col("flow") == rows[("GET", "/item/10")]["flow"]).sort("start")
    assert pipelined.get_column("target").to_list() == ["/item/10", "/chunked", "/item/11"]
    assert pipelined.get_column("start").n_unique() == 1  # one segment carried all three


def test_events_and_metrics() -> None:
    _, metrics, events, _ = fast(HTTP_SAMPLE, PG_PORT)
    http = events.filter(pl.col("kind") == "http.request")
    assert http.height == 16
    assert set(http.get_column("entity")) >= {"http:GET /item/1", "http:GET /boom", "http:POST /upload"}
    assert http.filter(pl.col("entity") == "http:GET /boom").get_column("severity").item() == "medium"
    per_s = metrics.filter(pl.col("metric") == "http.requests_per_s").get_column("value").sum()
    assert per_s == 16
    assert metrics.filter(pl.col("metric") == "http.errors_per_s").get_column("value").sum() == 1
    assert set(metrics.get_column("entity")) == {"endpoint:127.0.0.1:18080"}


def _feed(chunks: list[tuple[bool, bytes]], gap_at: int | None = None) -> Http1:
    h = Http1()
    data = b"".join(c for _, c in chunks)
    starts = np.cumsum([0] + [len(c) for _, c in chunks[:-1]])
    dv = Delivery(data=data, key=np.asarray([0 if client else 1 for client, _ in chunks]), start=starts,
                  length=np.asarray([len(c) for _, c in chunks]), ts=np.arange(len(chunks)) * 1_000_000,
                  frame=np.arange(1, len(chunks) + 1), gap=np.asarray([i == gap_at for i in range(len(chunks))]))
    h.process(dv)
    h.finish()
    return h


def test_parser_edge_cases() -> None:
    h = _feed([(True, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\n"), (True, b"Host: x\r\n\r\n"),
               (False, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\nab"),
               (False, b"cd\r\n0\r\nX-Trailer: 1\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nxyz")])
    assert [(s[1], s[2], s[3], s[4], s[6]) for s in h.samples] == [
        ("GET", "/a", 200, 0, 3_000_000), ("GET", "/b", 200, 0, 3_000_000)]
    # a response without length ends when the connection does; an unanswered request is counted
    h = _feed([(True, b"GET / HTTP/1.0\r\n\r\n"), (False, b"HTTP/1.0 200 OK\r\n\r\npart"), (False, b"rest")])
    assert [(s[3], s[6]) for s in h.samples] == [(200, 2_000_000)]
    h = _feed([(True, b"GET /x HTTP/1.1\r\n\r\n"), (False, b"garbage\r\n\r\n")])
    assert [(s[2], s[3], s[6]) for s in h.samples] == [("/x", None, None)] and h.errors == 1
    # after a gap the server side resynchronises on the next status line
    h = _feed([(True, b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n"), (False, b"HTTP/1.1 200 OK\r\nContent-Le"),
               (False, b"ngth: 1\r\n\r\nyHTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")], gap_at=2)
    assert h.unanswered == 2 and [s[3] for s in h.samples] == [None, None]
    # a request whose body never arrived whole (the server had closed; it answered with RST) was
    # never a request, as in tshark; one whose body did arrive but got no answer is unanswered
    h = _feed([(True, b"POST /c HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody"), (False, b"HTTP/1.1 500 E\r\n"
               b"Content-Length: 0\r\n\r\n"), (True, b"POST /c HTTP/1.1\r\nContent-Length: 4\r\n\r\nbo")])
    assert [(s[2], s[3]) for s in h.samples] == [("/c", 500)] and h.incomplete == 1 and h.unanswered == 0
    h = _feed([(True, b"POST /c HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody")])
    assert [(s[2], s[3]) for s in h.samples] == [("/c", None)] and h.incomplete == 0 and h.unanswered == 1
    # a response cut before its body ended (the client reset the connection): the request stays
    h = _feed([(True, b"GET /i/1 HTTP/1.1\r\n\r\n"), (False, b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n")])
    assert [(s[2], s[3], s[6]) for s in h.samples] == [("/i/1", None, None)] and h.unanswered == 1
    assert looks_like_http(b"GET / HTTP/1.1\r\n", True) and looks_like_http(b"HTTP/1.1 200 OK\r\n", False)
    assert not looks_like_http(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", True)
    assert not looks_like_http(b"\x16\x03\x01\x00", True)
