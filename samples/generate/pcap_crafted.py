"""Crafted capture samples (``samples/pcap/crafted_*``): packets built with scapy, files
written byte by byte, for layouts this machine's tools do not produce.

- crafted_vlan_qinq.pcap       Ethernet with 802.1Q and 802.1ad+802.1Q (QinQ) tags
- crafted_ipv6_ext.pcap        IPv6 with hop-by-hop, routing and destination-options headers
                               before TCP, plus two real IPv6 fragments (counted, not decoded)
- crafted_sll.pcap             LINUX_SLL (113), what `tcpdump -i any` wrote before libpcap 1.10
- crafted_null_be.pcap         NULL (0) written by a big-endian host (AF in host order), µs, big-endian file
- crafted_loop.pcap            LOOP (108, OpenBSD: AF in network order), IPv6
- crafted_raw_ns.pcap          RAW (101) with nanosecond magic; also IPv4 fragments and UDP/ICMP packets
- crafted_ipv4_228.pcap        LINKTYPE_IPV4 (228), snaplen 54: headers only, payload cut
- crafted_ns_bigendian.pcap    big-endian nanosecond magic (a1b23c4d); frames end in a 4-byte FCS announced
                               by the FCS bits of the link-type field (masked with 0xFFFF for the link type)
- crafted_multisection.pcapng  two sections (little- then big-endian); interfaces EN10MB (µs),
                               RAW (if_tsresol 10^-9), LINUX_SLL2 (if_tsresol 2^-20, if_tsoffset 1 s);
                               EPB, SPB and obsolete PB packets; NRB, ISB, DSB and custom blocks to skip
- crafted_tcp_anomalies.pcap   one connection with a zero-window episode and probes, out-of-order and
                               retransmitted segments, three duplicate ACKs and a fast retransmission,
                               a lost segment, a keep-alive, then reset; a second connection on a reused port

    python3 samples/generate/pcap_crafted.py
"""

from __future__ import annotations

import struct
from pathlib import Path

from scapy.layers.inet import ICMP, IP, TCP, UDP, fragment
from scapy.layers.inet6 import (
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.l2 import CookedLinux, Dot1AD, Dot1Q, Ether

OUT = Path(__file__).resolve().parent.parent / "pcap"
T0 = 1_767_350_000_000_000_000  # 2026-01-02 10:33:20 UTC, in ns
C4, S4 = "10.1.0.5", "10.1.0.9"
C6, S6 = "2001:db8::5", "2001:db8::9"


def conversation(ip_layer, sport: int = 41000, dport: int = 5432, isn_c: int = 1000, isn_s: int = 900000,
                 payload: bytes = b"SELECT 1;") -> list:
    """Handshake, one request/response, FIN/ACK both ways — as (seconds offset, packet)."""
    c, s = ip_layer(True), ip_layer(False)
    out = [
        (0.000, c / TCP(sport=sport, dport=dport, flags="S", seq=isn_c, window=64240)),
        (0.010, s / TCP(sport=dport, dport=sport, flags="SA", seq=isn_s, ack=isn_c + 1, window=65160)),
        (0.020, c / TCP(sport=sport, dport=dport, flags="A", seq=isn_c + 1, ack=isn_s + 1, window=502)),
        (0.030, c / TCP(sport=sport, dport=dport, flags="PA", seq=isn_c + 1, ack=isn_s + 1, window=502) / payload),
        (0.040, s / TCP(sport=dport, dport=sport, flags="PA", seq=isn_s + 1, ack=isn_c + 1 + len(payload),
                        window=510) / (b"r" * 40)),
        (0.050, c / TCP(sport=sport, dport=dport, flags="FA", seq=isn_c + 1 + len(payload), ack=isn_s + 41,
                        window=502)),
        (0.060, s / TCP(sport=dport, dport=sport, flags="FA", seq=isn_s + 41, ack=isn_c + 2 + len(payload),
                        window=510)),
        (0.070, c / TCP(sport=sport, dport=dport, flags="A", seq=isn_c + 2 + len(payload), ack=isn_s + 42,
                        window=502)),
    ]
    return out


def ip4(client: bool):
    return IP(src=C4, dst=S4) if client else IP(src=S4, dst=C4)


def ip6(client: bool):
    return IPv6(src=C6, dst=S6) if client else IPv6(src=S6, dst=C6)


def write_pcap(name: str, linktype: int, packets: list[tuple[float, bytes]], *, nano: bool = False,
               big: bool = False, snaplen: int = 262144, link_field: int | None = None) -> None:
    e = ">" if big else "<"
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = [struct.pack(e + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype if link_field is None else link_field)]
    for offset, data in packets:
        ns = T0 + round(offset * 1e9)
        sec, frac = divmod(ns, 1_000_000_000)
        frac = frac if nano else frac // 1000
        cap = data[:snaplen]
        out.append(struct.pack(e + "IIII", sec, frac, len(cap), len(data)) + cap)
    (OUT / name).write_bytes(b"".join(out))


def _block(e: str, btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    n = len(body) + 12
    return struct.pack(e + "II", btype, n) + body + struct.pack(e + "I", n)


def _opt(e: str, code: int, value: bytes) -> bytes:
    return struct.pack(e + "HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def write_multisection(name: str) -> None:
    out = []
    # section 1, little-endian: one Ethernet interface, µs (default resolution)
    e = "<"
    out.append(_block(e, 0x0A0D0D0A, struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, -1)))
    out.append(_block(e, 1, struct.pack(e + "HHI", 1, 0, 262144) + _opt(e, 2, b"eth0") + _opt(e, 0, b"")))
    for off, pkt in conversation(lambda c: Ether(src="02:00:00:00:00:05", dst="02:00:00:00:00:09") / ip4(c))[:4]:
        ts = (T0 + round(off * 1e9)) // 1000
        data = bytes(pkt)
        out.append(_block(e, 6, struct.pack(e + "IIIII", 0, ts >> 32, ts & 0xFFFFFFFF, len(data), len(data)) + data))
    record = bytes([10, 1, 0, 9]) + b"db.local\0"
    out.append(_block(e, 4, struct.pack(e + "HH", 1, len(record)) + record + b"\0" * (-len(record) % 4)
                      + struct.pack(e + "HH", 0, 0)))  # name resolution block
    out.append(_block(e, 0x0BAD, struct.pack(e + "I", 32473) + b"custom block, copy me"))
    # section 2, big-endian: RAW at ns resolution, SLL2 at 2^-20 s with a 1 s offset
    e = ">"
    out.append(_block(e, 0x0A0D0D0A, struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, -1)))
    out.append(_block(e, 1, struct.pack(e + "HHI", 101, 0, 65535) + _opt(e, 9, bytes([9])) + _opt(e, 0, b"")))
    out.append(_block(e, 1, struct.pack(e + "HHI", 276, 0, 65535) + _opt(e, 9, bytes([0x80 | 20]))
                      + _opt(e, 14, struct.pack(e + "q", -1)) + _opt(e, 0, b"")))
    conv = conversation(ip6, sport=41001, dport=8080)
    for i, (off, pkt) in enumerate(conv):
        ns = T0 + round((off + 1.0) * 1e9)
        if i % 2 == 0:  # RAW interface, nanoseconds
            data, iface, units = bytes(pkt), 0, ns
        else:  # SLL2 interface, 2^-20 s units, recorded one second early (if_tsoffset -1 s adds it back... )
            sll2 = struct.pack(">HHIHBB8s", 0x86DD, 0, 1, 772, 0, 6, b"\0" * 8)
            data, iface, units = sll2 + bytes(pkt), 1, ((ns + 1_000_000_000) << 20) // 1_000_000_000
        if i == 5:  # obsolete packet block
            out.append(_block(e, 2, struct.pack(e + "HHIIII", iface, 0, units >> 32, units & 0xFFFFFFFF, len(data),
                                                len(data)) + data))
        elif i == 7:  # simple packet block (interface 0, no timestamp)
            data = bytes(pkt)
            out.append(_block(e, 3, struct.pack(e + "I", len(data)) + data))
        else:
            out.append(_block(e, 6, struct.pack(e + "IIIII", iface, units >> 32, units & 0xFFFFFFFF, len(data),
                                                len(data)) + data))
    out.append(_block(e, 5, struct.pack(e + "III", 0, 0, 0) + _opt(e, 0, b"")))  # interface statistics
    out.append(_block(e, 0x0A, struct.pack(e + "II", 0x544C534B, 4) + b"keys"))  # decryption secrets
    (OUT / name).write_bytes(b"".join(out))


def anomalies() -> list[tuple[float, bytes]]:
    """A connection with tshark's TCP analysis cases, then a port-reuse reconnect."""
    cs, sc = (lambda: Ether(src="02:00:00:00:00:05", dst="02:00:00:00:00:09") / ip4(True)), (lambda: Ether(src="02:00:00:00:00:05", dst="02:00:00:00:00:09") / ip4(False))
    sp, dp, c0, s0 = 42000, 5432, 5000, 70000

    def c(off, fl, seq, ack, win=500, data=b""):
        return off, cs() / TCP(sport=sp, dport=dp, flags=fl, seq=c0 + seq, ack=s0 + ack, window=win) / data

    def s(off, fl, seq, ack, win=600, data=b""):
        return off, sc() / TCP(sport=dp, dport=sp, flags=fl, seq=s0 + seq, ack=c0 + ack, window=win) / data

    d100 = b"d" * 100
    pk = [
        (0.000, cs() / TCP(sport=sp, dport=dp, flags="S", seq=c0, window=500)),
        s(0.200, "SA", 0, 1),  # slow handshake: 300 ms iRTT
        c(0.300, "A", 1, 1),
        c(0.400, "PA", 1, 1, data=d100), s(0.401, "A", 1, 101),
        c(0.500, "PA", 101, 1, data=d100), c(0.501, "PA", 301, 1, data=d100),  # 201..300 missing: lost segment
        s(0.502, "A", 1, 201), s(0.5025, "A", 1, 201), s(0.503, "A", 1, 201), s(0.5035, "A", 1, 201),  # dup ACKs
        c(0.504, "PA", 201, 1, data=d100),  # fast retransmission
        s(0.505, "A", 1, 401),
        c(0.600, "PA", 401, 1, data=d100), c(0.6005, "PA", 501, 1, data=d100),
        c(0.601, "PA", 401, 1, data=d100),  # out of order (within the 3 ms... iRTT 300 ms threshold)
        s(0.700, "A", 1, 601),
        c(1.500, "PA", 501, 1, data=d100),  # retransmission long after: spurious (already ACKed)
        s(1.600, "PA", 1, 601, data=b"x" * 50), c(1.601, "A", 601, 51, win=0),  # client zero window
        s(1.900, "PA", 51, 601, data=b"y"),  # zero-window probe
        c(1.901, "A", 601, 51, win=0),
        s(2.500, "PA", 51, 601, data=b"y"),  # probe again
        c(2.501, "A", 601, 51, win=0),
        c(3.000, "A", 601, 51, win=400),  # window opens: episode ends
        s(3.001, "PA", 51, 601, data=b"z" * 30),
        c(3.002, "A", 601, 81),
        c(13.0, "A", 600, 81),  # keep-alive
        s(13.001, "A", 81, 601),
        s(14.0, "RA", 81, 601),  # server resets
        (15.0, cs() / TCP(sport=sp, dport=dp, flags="S", seq=900, window=500)),  # same port, new ISN: new stream
        (15.001, sc() / TCP(sport=dp, dport=sp, flags="SA", seq=123, ack=901, window=600)),
        (15.002, cs() / TCP(sport=sp, dport=dp, flags="A", seq=901, ack=124, window=500)),
        (15.003, cs() / TCP(sport=sp, dport=dp, flags="RA", seq=901, ack=124, window=0)),
    ]
    return [(off, bytes(p)) for off, p in pk]


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    eth = conversation(lambda cl: Ether(src="02:00:00:00:00:05", dst="02:00:00:00:00:09") / ip4(cl))
    vlan = [(o, bytes(Ether(src="02:00:00:00:00:05", dst="02:00:00:00:00:09") / Dot1Q(vlan=10) / p[IP])) for o, p in eth]
    qinq = [(o + 1, bytes(Ether(src="02:00:00:00:00:05", dst="02:00:00:00:00:09") / Dot1AD(vlan=100) / Dot1Q(vlan=20) / p[IP]))
            for o, p in conversation(lambda cl: Ether(src="02:00:00:00:00:05", dst="02:00:00:00:00:09") / ip4(cl), sport=41002)]
    write_pcap("crafted_vlan_qinq.pcap", 1, vlan + qinq)

    ext = []
    for o, p in conversation(ip6, sport=41003):
        tcp = p[TCP]
        ext.append((o, bytes(IPv6(src=p.src, dst=p.dst) / IPv6ExtHdrHopByHop() / IPv6ExtHdrRouting(addresses=[])
                             / IPv6ExtHdrDestOpt() / tcp)))
    big = IPv6(src=C6, dst=S6) / IPv6ExtHdrFragment(id=7) / UDP(sport=5353, dport=5353) / (b"f" * 3000)
    from scapy.layers.inet6 import fragment6
    ext += [(0.5 + i / 1000, bytes(f)) for i, f in enumerate(fragment6(big, 1280))]
    write_pcap("crafted_ipv6_ext.pcap", 101, ext)

    sll = []
    for o, p in conversation(ip4, sport=41004):
        sll.append((o, bytes(CookedLinux(pkttype=0 if p.src == S4 else 4, lladdrtype=772, lladdrlen=6, proto=0x0800)
                             / p)))
    write_pcap("crafted_sll.pcap", 113, sll)

    null_be = [(o, struct.pack(">I", 2) + bytes(p)) for o, p in conversation(ip4, sport=41005)]
    write_pcap("crafted_null_be.pcap", 0, null_be, big=True)

    loop6 = [(o, struct.pack(">I", 24) + bytes(p)) for o, p in conversation(ip6, sport=41006)]
    write_pcap("crafted_loop.pcap", 108, loop6)

    raw = [(o, bytes(p)) for o, p in conversation(ip4, sport=41007)]
    frags = fragment(IP(src=C4, dst=S4) / UDP(sport=53, dport=53) / (b"q" * 2000), fragsize=800)
    raw += [(0.2 + i / 1000, bytes(f)) for i, f in enumerate(frags)]
    raw += [(0.3, bytes(IP(src=C4, dst=S4) / ICMP())), (0.31, bytes(IP(src=C4, dst="10.1.0.53") / UDP() / b"dns"))]
    write_pcap("crafted_raw_ns.pcap", 101, raw, nano=True)

    write_pcap("crafted_ipv4_228.pcap", 228, [(o, bytes(p)) for o, p in conversation(ip4, sport=41008)], snaplen=54)

    # frames carry a 4-byte FCS, announced in the link-type field (FCS length 2 x 16 bits, P bit)
    write_pcap("crafted_ns_bigendian.pcap", 1, [(o, bytes(p) + b"\xfc\xfc\xfc\xfc") for o, p in conversation(
        lambda cl: Ether(src="02:00:00:00:00:05", dst="02:00:00:00:00:09") / ip4(cl), sport=41009)],
        nano=True, big=True, link_field=(1 | (2 << 28) | (1 << 26)))

    write_multisection("crafted_multisection.pcapng")
    write_pcap("crafted_tcp_anomalies.pcap", 1, anomalies())


if __name__ == "__main__":
    main()
