"""Vectorised link/IP/TCP header decoding of a ``RecordBatch`` (numpy, no per-packet Python).

Link types: Ethernet (with 802.1Q/802.1ad/QinQ tags), Linux SLL and SLL2, RAW (101, and the
BSD DLT_RAW values 12/14), IPv4 (228), IPv6 (229), NULL (AF in the writer's byte order) and
LOOP (AF in network order). IPv4 and IPv6 (hop-by-hop, routing, destination-options, AH and
atomic-fragment headers skipped). IP fragments are counted, not reassembled. Packets cut by
the snap length are decoded as far as their headers go: the TCP segment length comes from
the IP length fields, as Wireshark computes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from parsers._capture_np import byte_rows, unaligned
from parsers._capture_reader import RecordBatch

LINKTYPE_NAMES = {0: "NULL", 1: "EN10MB", 12: "RAW", 14: "RAW", 101: "RAW", 108: "LOOP", 113: "LINUX_SLL",
                  228: "IPV4", 229: "IPV6", 276: "LINUX_SLL2"}
SUPPORTED_LINKTYPES = frozenset(LINKTYPE_NAMES)
ETH_IPV4, ETH_IPV6 = 0x0800, 0x86DD
VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)
AF_INET6_VALUES = (10, 24, 28, 30)  # Linux, NetBSD/OpenBSD, FreeBSD, macOS
IPV6_SKIPPABLE = (0, 43, 60)  # hop-by-hop, routing, destination options

TH_FIN, TH_SYN, TH_RST, TH_PSH, TH_ACK = 0x01, 0x02, 0x04, 0x08, 0x10


@dataclass
class TcpColumns:
    """The TCP packets of one batch, in file order (numpy columns, one row per packet)."""

    rec: np.ndarray  # index of the record in its RecordBatch
    ts_ns: np.ndarray
    frame_len: np.ndarray  # original (wire) length: what tshark's conv,tcp counts as bytes
    v6: np.ndarray  # bool
    src_hi: np.ndarray  # uint64 (0 for IPv4)
    src_lo: np.ndarray  # uint64 (the IPv4 address for IPv4)
    dst_hi: np.ndarray
    dst_lo: np.ndarray
    sport: np.ndarray  # int64
    dport: np.ndarray
    seq: np.ndarray  # int64 holding the raw uint32
    ack: np.ndarray
    flags: np.ndarray  # int64, 9 flag bits (NS..FIN)
    window: np.ndarray  # raw (unscaled) window field
    seglen: np.ndarray  # TCP payload length from the IP lengths; -1 when it cannot be known
    payload_off: np.ndarray  # offset of the first payload byte in the batch buffer
    payload_cap: np.ndarray  # payload bytes actually captured (<= seglen)

    def __len__(self) -> int:
        return len(self.rec)

    def take(self, index: np.ndarray) -> TcpColumns:
        return TcpColumns(**{name: getattr(self, name)[index] for name in self.__dataclass_fields__})


@dataclass
class DecodeStats:
    """Per-category record counts (what the capture held besides TCP)."""

    counts: dict[str, int] = field(default_factory=dict)
    unsupported: dict[int, int] = field(default_factory=dict)  # link type -> records

    def add(self, name: str, n: int) -> None:
        if n:
            self.counts[name] = self.counts.get(name, 0) + int(n)


def _u8(buf: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return buf[np.minimum(idx, len(buf) - 1)].astype(np.int64)


def _field(buf: np.ndarray, idx: np.ndarray, width: int, fmt: str) -> np.ndarray:
    """A fixed-width integer field at ``idx`` of every packet (clamped to the buffer)."""
    if len(buf) < width or not buf.flags.c_contiguous:
        return byte_rows(buf, np.minimum(idx, len(buf) - width), width).view(fmt).reshape(-1)
    return unaligned(buf, fmt)[np.minimum(idx, len(buf) - width)]


def _be16(buf: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return _field(buf, idx, 2, ">u2").astype(np.int64)


def _be32(buf: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return _field(buf, idx, 4, ">u4").astype(np.int64)


def _le32(buf: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return _field(buf, idx, 4, "<u4").astype(np.int64)


def _be64(buf: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return _field(buf, idx, 8, ">u8").astype(np.uint64)


def decode(batch: RecordBatch, stats: DecodeStats) -> TcpColumns:
    """Find the TCP packets of ``batch`` and decode their headers."""
    buf = batch.buf
    n = len(batch)
    lt = batch.linktype
    start = batch.data_off
    end = start + batch.caplen
    ethertype = np.zeros(n, dtype=np.int64)
    l3 = start.copy()
    single = int(lt[0]) if n and (lt == lt[0]).all() else None  # one link type: scalar decisions
    known = np.full(n, single in SUPPORTED_LINKTYPES) if single is not None else np.isin(lt, list(SUPPORTED_LINKTYPES))
    if not known.all():
        for value in np.unique(lt[~known]):
            stats.unsupported[int(value)] = stats.unsupported.get(int(value), 0) + int((lt == value).sum())

    eth = lt == 1 if single in (None, 1) else np.zeros(n, dtype=bool)
    eth_win = None  # Ethernet only: each frame's first 54 bytes (+2 before, so the IP header is aligned)
    if eth.any():
        if single == 1 and int(start.min()) >= 2 and int(start.max()) + 54 <= len(buf):
            eth_win = byte_rows(buf, start - 2, 56)
            et = eth_win[:, 14:16].view(">u2")[:, 0].astype(np.int64)
        else:
            et = _be16(buf, start + 12)
        pos = start + 14
        for _ in range(3):  # 802.1Q, 802.1ad, QinQ stacks
            tag = eth & ((et == VLAN_TPIDS[0]) | (et == VLAN_TPIDS[1]) | (et == VLAN_TPIDS[2])) & (pos + 4 <= end)
            if not tag.any():
                break
            eth_win = None
            et = np.where(tag, _be16(buf, pos + 2), et)
            pos = np.where(tag, pos + 4, pos)
        ethertype = np.where(eth & (start + 14 <= end), et, ethertype)
        l3 = np.where(eth, pos, l3)
    sll = lt == 113
    if sll.any():
        ethertype = np.where(sll & (start + 16 <= end), _be16(buf, start + 14), ethertype)
        l3 = np.where(sll, start + 16, l3)
    sll2 = lt == 276
    if sll2.any():
        ethertype = np.where(sll2 & (start + 20 <= end), _be16(buf, start), ethertype)
        l3 = np.where(sll2, start + 20, l3)
    raw = np.full(n, single in (12, 14, 101)) if single is not None else np.isin(lt, (12, 14, 101))
    if raw.any():
        version = _u8(buf, start) >> 4
        guess = np.where(version == 4, ETH_IPV4, np.where(version == 6, ETH_IPV6, 0))
        ethertype = np.where(raw & (start < end), guess, ethertype)
    ethertype = np.where(lt == 228, ETH_IPV4, np.where(lt == 229, ETH_IPV6, ethertype))
    for value, reader in ((0, "host"), (108, "network")):
        sel = lt == value
        if not sel.any():
            continue
        if reader == "network":
            af = _be32(buf, start)
        else:
            af = _le32(buf, start)
            swapped = af > 0xFFFF  # written by a big-endian host
            af = np.where(swapped, _be32(buf, start), af)
        fam = np.where(af == 2, ETH_IPV4, np.where(np.isin(af, AF_INET6_VALUES), ETH_IPV6, 0))
        ethertype = np.where(sel & (start + 4 <= end), fam, ethertype)
        l3 = np.where(sel, start + 4, l3)
    ethertype = np.where(known, ethertype, -1)

    is4 = (ethertype == ETH_IPV4) & (l3 + 20 <= end)
    is6 = (ethertype == ETH_IPV6) & (l3 + 40 <= end)
    vbyte = eth_win[:, 16].astype(np.int64) if eth_win is not None else _u8(buf, l3)
    is4 &= (vbyte >> 4) == 4
    is6 &= (vbyte >> 4) == 6
    stats.add("ipv4", is4.sum())
    stats.add("ipv6", is6.sum())
    stats.add("link_header_truncated", (known & (ethertype == 0) & (l3 > end)).sum())
    stats.add("not_ip", (known & ~is4 & ~is6).sum())

    fast = _fast_tcp(batch, l3, end, is4, is6, stats, eth_win[:, 16:] if eth_win is not None else None)
    if fast is not None:
        return fast
    proto = np.full(n, -1, dtype=np.int64)
    l4 = np.zeros(n, dtype=np.int64)
    ip_payload = np.zeros(n, dtype=np.int64)
    frag = np.zeros(n, dtype=bool)
    src_hi = np.zeros(n, dtype=np.uint64)
    src_lo = np.zeros(n, dtype=np.uint64)
    dst_hi = np.zeros(n, dtype=np.uint64)
    dst_lo = np.zeros(n, dtype=np.uint64)
    if is4.any():
        i4 = np.flatnonzero(is4)
        b = l3[i4]
        ihl = (_u8(buf, b) & 0x0F) * 4
        total = _be16(buf, b + 2)
        fragw = _be16(buf, b + 6)
        proto[i4] = np.where(ihl >= 20, _u8(buf, b + 9), -1)
        frag[i4] = (fragw & 0x3FFF) != 0
        src_lo[i4] = _be32(buf, b + 12).astype(np.uint64)
        dst_lo[i4] = _be32(buf, b + 16).astype(np.uint64)
        l4[i4] = b + ihl
        # total length 0: segmentation offload on the capturing host; use what was captured
        ip_payload[i4] = np.where(total > 0, total, end[i4] - b) - ihl
    if is6.any():
        i6 = np.flatnonzero(is6)
        b = l3[i6]
        plen = _be16(buf, b + 4)
        nh = _u8(buf, b + 6)
        src_hi[i6] = _be64(buf, b + 8)
        src_lo[i6] = _be64(buf, b + 16)
        dst_hi[i6] = _be64(buf, b + 24)
        dst_lo[i6] = _be64(buf, b + 32)
        pos = b + 40
        e6 = end[i6]
        fr = np.zeros(len(i6), dtype=bool)
        for _ in range(8):
            ext = np.isin(nh, IPV6_SKIPPABLE) & (pos + 8 <= e6)
            fragh = (nh == 44) & (pos + 8 <= e6)
            ah = (nh == 51) & (pos + 8 <= e6)
            if not (ext.any() or fragh.any() or ah.any()):
                break
            fw = _be16(buf, pos + 2)
            is_real_frag = fragh & (((fw >> 3) != 0) | ((fw & 1) != 0))
            fr |= is_real_frag
            step = np.where(ext, (_u8(buf, pos + 1) + 1) * 8,
                            np.where(fragh, 8, np.where(ah, (_u8(buf, pos + 1) + 2) * 4, 0)))
            moving = (ext | ah | fragh) & ~is_real_frag
            nh = np.where(moving, _u8(buf, pos), nh)
            pos = np.where(moving, pos + step, pos)
        stuck = np.isin(nh, IPV6_SKIPPABLE + (51,))  # extension header cut by the snap length
        proto[i6] = np.where(stuck, -1, nh)
        frag[i6] = fr
        l4[i6] = pos
        ip_payload[i6] = np.where(plen > 0, plen + b + 40, e6) - pos
    stats.add("ip_fragment", frag.sum())
    ip_ok = (is4 | is6) & ~frag
    stats.add("ip_header_truncated", ((is4 | is6) & ~frag & (proto < 0)).sum())
    stats.add("udp", (ip_ok & (proto == 17)).sum())
    stats.add("icmp", (ip_ok & np.isin(proto, (1, 58))).sum())
    stats.add("other_ip_protocol", (ip_ok & (proto >= 0) & ~np.isin(proto, (1, 6, 17, 58))).sum())
    tcp_any = ip_ok & (proto == 6)
    tcp = tcp_any & (l4 + 20 <= end)
    stats.add("tcp_header_truncated", (tcp_any & ~tcp).sum())
    it = np.flatnonzero(tcp)
    t4 = l4[it]
    off_flags = _be16(buf, t4 + 12)
    thlen = (off_flags >> 12) * 4
    good = thlen >= 20
    stats.add("tcp_bad_header_length", (~good).sum())
    it, t4, off_flags, thlen = it[good], t4[good], off_flags[good], thlen[good]
    stats.add("tcp", len(it))
    seglen = ip_payload[it] - thlen
    seglen = np.where(seglen >= 0, seglen, -1)
    payload_off = t4 + thlen
    payload_cap = np.clip(end[it] - payload_off, 0, np.maximum(seglen, 0))
    return TcpColumns(
        rec=it, ts_ns=batch.ts_ns[it], frame_len=batch.origlen[it], v6=is6[it],
        src_hi=src_hi[it], src_lo=src_lo[it], dst_hi=dst_hi[it], dst_lo=dst_lo[it],
        sport=_be16(buf, t4), dport=_be16(buf, t4 + 2), seq=_be32(buf, t4 + 4), ack=_be32(buf, t4 + 8),
        flags=off_flags & 0x01FF, window=_be16(buf, t4 + 14), seglen=seglen,
        payload_off=payload_off, payload_cap=payload_cap)


def _fast_tcp(batch: RecordBatch, l3: np.ndarray, end: np.ndarray, is4: np.ndarray, is6: np.ndarray,
              stats: DecodeStats, l3_win: np.ndarray | None = None) -> TcpColumns | None:
    """The common case in one gather: every IP packet is option-less IPv4 or extension-less
    IPv6 carrying an unfragmented TCP header with its 20 fixed bytes captured. Field reads
    are column slices of one (n, 40|60)-byte window viewed as big-endian words (``l3_win``:
    the first 40 bytes at ``l3`` of every packet, when already gathered)."""
    buf = batch.buf
    n = len(l3)
    ip = is4 | is6
    if not ip.any() or (is4.any() and is6.any()):
        return None
    v6 = bool(is6.any())
    width = 60 if v6 else 40
    rows = np.flatnonzero(ip)
    if l3_win is not None and not v6 and len(rows) == n:
        win = l3_win
    else:
        win = byte_rows(buf, np.minimum(l3[rows], len(buf) - width), width)
    w16 = win.view(">u2")
    w32 = win.view(">u4")
    if v6:
        tcp_ok = (win[:, 6] == 6) & (l3[rows] + 60 <= end[rows])
        t16, t32 = w16[:, 20:30], w32[:, 10:15]
        ip_payload = w16[:, 2].astype(np.int64)
    else:
        tcp_ok = (win[:, 0] == 0x45) & (win[:, 9] == 6) & ((w16[:, 3] & 0x3FFF) == 0) & (l3[rows] + 40 <= end[rows])
        t16, t32 = w16[:, 10:20], w32[:, 5:10]
        ip_payload = w16[:, 1].astype(np.int64) - 20
    thlen = (t16[:, 6] >> 12).astype(np.int64) * 4
    tcp_ok &= thlen >= 20
    other = ~tcp_ok
    if other.any():
        # anything else (fragments, UDP, options...) goes through the general decoder only if it
        # could be TCP; plain non-TCP packets are just counted here
        proto = win[:, 6] if v6 else win[:, 9]
        maybe = other & ((proto == 6) | (v6 & np.isin(proto, (0, 43, 44, 51, 60)))
                         | (~v6 & ((win[:, 0] != 0x45) | ((w16[:, 3] & 0x3FFF) != 0))))
        if maybe.any():
            return None
        ip_ok = other
        stats.add("udp", (ip_ok & (proto == 17)).sum())
        stats.add("icmp", (ip_ok & np.isin(proto, (1, 58))).sum())
        stats.add("other_ip_protocol", (ip_ok & ~np.isin(proto, (1, 6, 17, 58))).sum())
    stats.add("ipv6" if v6 else "ipv4", len(rows))
    stats.add("not_ip", n - len(rows))
    sel = np.flatnonzero(tcp_ok)
    if len(sel) == len(rows):  # every IP packet is TCP: column views instead of gathers
        sel = slice(None)
    if len(rows) == n and isinstance(sel, slice):  # ... and every packet is IP
        it, l3_it, end_it, ts_it, len_it = np.arange(n), l3, end, batch.ts_ns, batch.origlen
    else:
        it = rows[sel]
        l3_it, end_it, ts_it, len_it = l3[it], end[it], batch.ts_ns[it], batch.origlen[it]
    stats.add("tcp", len(it))
    if v6:
        total = ip_payload[sel]
        payload = np.where(total > 0, total, end_it - l3_it - 40)
        src_hi = w32[sel, 2].astype(np.uint64) << np.uint64(32) | w32[sel, 3]
        src_lo = w32[sel, 4].astype(np.uint64) << np.uint64(32) | w32[sel, 5]
        dst_hi = w32[sel, 6].astype(np.uint64) << np.uint64(32) | w32[sel, 7]
        dst_lo = w32[sel, 8].astype(np.uint64) << np.uint64(32) | w32[sel, 9]
        l4 = l3_it + 40
    else:
        total = ip_payload[sel]
        payload = np.where(total > -20, total, end_it - l3_it - 20)  # total length 0: offload
        src_hi = np.zeros(len(it), dtype=np.uint64)
        dst_hi = src_hi
        src_lo = w32[sel, 3].astype(np.uint64)
        dst_lo = w32[sel, 4].astype(np.uint64)
        l4 = l3_it + 20
    th = thlen[sel]
    seglen = payload - th
    seglen = np.where(seglen >= 0, seglen, -1)
    payload_off = l4 + th
    return TcpColumns(
        rec=it, ts_ns=ts_it, frame_len=len_it, v6=np.full(len(it), v6),
        src_hi=src_hi, src_lo=src_lo, dst_hi=dst_hi, dst_lo=dst_lo,
        sport=t16[sel, 0].astype(np.int64), dport=t16[sel, 1].astype(np.int64),
        seq=t32[sel, 1].astype(np.int64), ack=t32[sel, 2].astype(np.int64),
        flags=(t16[sel, 6] & 0x01FF).astype(np.int64), window=t16[sel, 7].astype(np.int64), seglen=seglen,
        payload_off=payload_off, payload_cap=np.clip(end_it - payload_off, 0, np.maximum(seglen, 0)))
