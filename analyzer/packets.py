"""Drill-down from the timeline to the bytes: the few capture packets of one flow and time
window, as pyshark packets (Wireshark's full dissection, through tshark) or, when tshark is
not installed, as scapy packets.

The timeline remembers its inputs; the captures among them (sources parsed as ``pcap``) are
opened again and filtered — by a Wireshark display filter for pyshark, by addresses, ports
and time for scapy.

>>> import analyzer
>>> tl = analyzer.load("samples/pcap_app/psql_errors.pcap.gz")
>>> flow = tl.tables["flows"].get_column("flow").first()
>>> pkts = tl.packets(flow=flow, limit=3, engine="scapy")
>>> len(pkts)
3
"""

from __future__ import annotations

import datetime as dt
import gzip
import ipaddress
import shutil
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from analyzer.bundle import open_inputs

if TYPE_CHECKING:
    from analyzer.timeline import Timeline


def parse_flow(flow: str) -> tuple[tuple[str, int], tuple[str, int]]:
    """``flow:10.0.0.5:41234>10.0.0.9:5432`` (or ``endpoint:...`` / IPv6 in brackets) →
    ((client ip, port), (server ip, port)); an endpoint yields it twice."""
    body = flow.split(":", 1)[1] if flow.startswith(("flow:", "endpoint:")) else flow
    sides = body.split(">")
    out = []
    for side in sides:
        host, _, port = side.rpartition(":")
        out.append((str(ipaddress.ip_address(host.strip("[]"))), int(port)))
    return (out[0], out[-1])


def _epoch(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value.timestamp()
    return float(value)


def display_filter(flow: str | None, start: Any = None, end: Any = None) -> str:
    """The Wireshark display filter selecting ``flow`` (or endpoint) between ``start`` and ``end``.

    >>> display_filter("flow:10.0.0.5:41234>10.0.0.9:5432")
    'tcp && ip.addr == 10.0.0.5 && tcp.port == 41234 && ip.addr == 10.0.0.9 && tcp.port == 5432'
    """
    parts = ["tcp"]
    if flow:
        (cip, cport), (sip, sport) = parse_flow(flow)
        field = "ipv6.addr" if ":" in cip else "ip.addr"
        if flow.startswith("endpoint:"):
            parts += [f"{field} == {sip}", f"tcp.port == {sport}"]
        else:
            parts += [f"{field} == {cip}", f"tcp.port == {cport}", f"{field} == {sip}", f"tcp.port == {sport}"]
    lo, hi = _epoch(start), _epoch(end)
    if lo is not None:
        parts.append(f"frame.time_epoch >= {lo:.9f}")
    if hi is not None:
        parts.append(f"frame.time_epoch <= {hi:.9f}")
    return " && ".join(parts)


def packets(timeline: Timeline, *, flow: str | None = None, start: Any = None, end: Any = None,
            limit: int = 1000, engine: str = "auto") -> list[Any]:
    """Packets of ``flow`` (a ``flow:`` or ``endpoint:`` entity) between ``start`` and ``end``
    (UTC datetimes, ISO strings or epoch seconds) from the timeline's captures, at most
    ``limit``. ``engine``: ``"pyshark"``, ``"scapy"`` or ``"auto"`` (pyshark when tshark is
    installed)."""
    if engine == "auto":
        engine = "pyshark" if shutil.which("tshark") else "scapy"
    out: list[Any] = []
    for path in _captures(timeline):
        room = limit - len(out)
        if room <= 0:
            break
        if engine == "pyshark":
            out += _pyshark(path, display_filter(flow, start, end), room, timeline.options.get("pg_port"))
        else:
            out += _scapy(path, flow, _epoch(start), _epoch(end), room)
    return out


def _captures(timeline: Timeline) -> Iterator[str]:
    names = set(timeline.sources.filter(timeline.sources["parser"] == "pcap").get_column("file").to_list()) \
        if timeline.sources.height else set()
    if not names or not timeline.inputs:
        return
    with open_inputs(list(timeline.inputs)) as bundle:
        for member in bundle.members:
            if member.name in names:
                yield str(member.path)


def _pyshark(path: str, dfilter: str, limit: int, pg_port: int | None) -> list[Any]:
    import asyncio
    import warnings

    import pyshark

    # pyshark installs a SafeChildWatcher bound to its own event loop; once that loop is
    # closed, nobody else in the process can start a subprocess through asyncio. Put the
    # process-wide watcher back as we found it.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        watcher = asyncio.get_child_watcher()
    decode = {f"tcp.port=={pg_port}": "pgsql"} if pg_port else None
    cap = pyshark.FileCapture(path, display_filter=dfilter, decode_as=decode, keep_packets=False)
    out = []
    try:
        for pkt in cap:
            out.append(pkt)
            if len(out) >= limit:
                break
    finally:
        cap.close()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            asyncio.set_child_watcher(watcher)
    return out


def _scapy(path: str, flow: str | None, lo: float | None, hi: float | None, limit: int) -> list[Any]:
    from scapy.layers.inet import TCP
    from scapy.utils import PcapNgReader, PcapReader

    want = parse_flow(flow) if flow else None
    endpoint_only = bool(flow and flow.startswith("endpoint:"))
    with open(path, "rb") as raw:
        gzipped = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        fh: Any = gzip.GzipFile(fileobj=raw) if gzipped else raw
        magic = fh.read(4)
        fh.seek(0)
        reader = PcapNgReader(fh) if magic == b"\x0a\x0d\x0d\x0a" else PcapReader(fh)
        out = []
        for pkt in reader:
            t = float(pkt.time)
            if (lo is not None and t < lo) or (hi is not None and t > hi) or TCP not in pkt:
                continue
            if want is not None and not _matches(pkt, want, endpoint_only):
                continue
            out.append(pkt)
            if len(out) >= limit:
                break
    return out


def _matches(pkt: Any, want: tuple[tuple[str, int], tuple[str, int]], endpoint_only: bool) -> bool:
    ip = pkt.getlayer("IP") or pkt.getlayer("IPv6")
    if ip is None:
        return False
    tcp = pkt.getlayer("TCP")
    src = (str(ipaddress.ip_address(ip.src)), int(tcp.sport))
    dst = (str(ipaddress.ip_address(ip.dst)), int(tcp.dport))
    if endpoint_only:
        return want[1] in (src, dst)
    return {src, dst} == {want[0], want[1]}
