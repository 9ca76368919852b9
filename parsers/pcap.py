"""tcpdump/dumpcap captures → per-second TCP health per flow and per server endpoint,
TCP analysis events (tshark's definitions) and a flow table.

Formats: classic pcap (µs and ns magic, either byte order), pcapng (several sections and
interfaces, EPB/SPB/PB), gzip-compressed either way. Link types: Ethernet (+802.1Q/QinQ),
Linux SLL/SLL2, RAW, IPv4, IPv6, NULL, LOOP.

Records: a record is a packet record (pcap record, EPB, SPB, PB); pcapng's structural blocks
are not counted. Every packet of a supported link type is parsed (TCP, UDP, ARP or anything
else: understood, and only TCP feeds the analysis); packets of an unsupported link type and
corrupt records are skipped as ``decode_error``, a cut last record as ``truncated_record``.
Times are UTC (capture timestamps are seconds since the epoch).

Metrics (ts = end of the second): ``net.packets_per_s``, ``net.bytes_per_s`` (frame
lengths, as tshark's ``conv,tcp``) and their ``_c2s``/``_s2c`` variants, ``net.retransmits``
(retransmission + fast + spurious), ``net.dup_acks``, ``net.zero_window``,
``net.out_of_order``, ``net.lost_segments``, ``net.rsts``, ``net.syns``,
``net.ack_rtt_ms``/``net.ack_rtt_max_ms``, and for endpoints ``net.connections_opened``.
Events: ``tcp.rst`` (one per RST segment; ``line`` is the frame number), ``tcp.syn_retry``,
``tcp.zero_window`` (episodes with duration), ``tcp.handshake``. Table ``flows``: one row
per connection (tshark's ``tcp.stream``). See ``_capture_output`` for which flows get series.
"""

from __future__ import annotations

import zlib
from typing import BinaryIO

import polars as pl

from parsers._app_capture import AppLatency
from parsers._capture_decode import LINKTYPE_NAMES
from parsers._capture_engine import CaptureEngine, Consumer
from parsers._capture_output import build
from parsers._capture_reader import PCAP_MAGICS, PCAPNG_SHB
from parsers.base import Accounting, ParseContext, ParseResult

NAME = "pcap"
DESCRIPTION = "tcpdump/dumpcap captures (pcap, pcapng, gzip): TCP health per flow, resets, zero windows, flows"
SAMPLES = "pcap"
NAME_HINTS = ("*.pcap", "*.pcapng", "*.cap", "*.pcap.gz", "*.pcapng.gz", "*.dmp")


def sniff(head: bytes) -> float:
    if head[:2] == b"\x1f\x8b":
        try:
            head = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, 64)
        except zlib.error:
            return 0.0
    magic = head[:4]
    if magic in PCAP_MAGICS:
        order = PCAP_MAGICS[magic][0]
        major = int.from_bytes(head[4:6], "little" if order == "<" else "big") if len(head) >= 6 else 2
        return 1.0 if major == 2 else 0.7
    if magic == PCAPNG_SHB and head[8:12] in (b"\x4d\x3c\x2b\x1a", b"\x1a\x2b\x3c\x4d"):
        return 1.0
    return 0.0


def parse(stream: BinaryIO, *, ctx: ParseContext, consumers: list[Consumer] | None = None) -> ParseResult:
    fallback = None
    if ctx.options.get("pcap_engine") == "tshark":  # --pcap-engine tshark: Wireshark's dissectors
        from parsers._tshark_engine import TsharkUnavailable
        from parsers._tshark_engine import parse as parse_with_tshark
        try:
            return parse_with_tshark(stream, ctx=ctx)
        except TsharkUnavailable as exc:
            fallback = str(exc)
    acct = Accounting(ctx.file)
    app = AppLatency(pg_port=ctx.pg_port)  # PostgreSQL and HTTP latency (parsers._app_capture)
    engine = CaptureEngine(pg_port=ctx.pg_port, consumers=[app, *(consumers or [])])
    engine.run(stream, acct)
    app.finish()
    metrics, events, flows, entities = build(engine)
    app_metrics, app_events, app_tables = app.build()
    result = ParseResult(metrics=pl.concat([metrics, app_metrics], how="vertical_relaxed"),
                         events=pl.concat([events, app_events], how="vertical_relaxed"), accounting=acct,
                         variant=_variant(engine), entities=entities,
                         tables={**({"flows": flows} if flows.height else {}), **app_tables})
    result.tz_reason = "capture timestamps are UTC epoch"
    result.tz_name = "UTC"
    _notes(engine, acct)
    for code, text in app.notes():
        acct.note(code, text, level="info")
    if fallback:
        acct.note("pcap_engine", f"--pcap-engine tshark: {fallback}; used the fast engine", level="warning")
    return result


def _variant(engine: CaptureEngine) -> str:
    info = engine.info
    if not info.kind:
        return "unrecognised capture"
    links = "+".join(LINKTYPE_NAMES.get(lt, f"linktype {lt}") for lt in sorted(info.linktypes))
    if info.kind == "pcap":
        text = f"pcap {info.byte_order} {'µs' if info.resolution == 'us' else 'ns'}"
    else:
        text = f"pcapng {info.sections} section{'s' if info.sections != 1 else ''}, {info.interfaces} interface" \
               f"{'s' if info.interfaces != 1 else ''}"
    return f"{text}, {links}" + (", gzip" if info.gzipped else "")


def _notes(engine: CaptureEngine, acct: Accounting) -> None:
    counts = engine.stats.counts
    if engine.packets:
        summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        acct.note("capture_summary", f"{engine.packets} packets, {engine.tcp_packets} TCP in "
                  f"{len(engine.flows)} connections ({summary})", level="info")
    if counts.get("ip_fragment"):
        acct.note("ip_fragments", f"{counts['ip_fragment']} IP fragments counted, not reassembled", level="info")
    for kind, n in engine.events.dropped.items():
        acct.note("limit_exceeded", f"{n} more {kind} events not listed (cap {len(getattr(engine.events, kind))}); "
                  "the per-second metrics still count them", level="warning")
