"""The capture engine: records → decoded TCP columns → streams → TCP analysis → per-second
partial aggregates and events, one bounded batch at a time.

Later stages (application-protocol latency, drill-down) plug in as *packet consumers*:
callables that receive every ``PacketBatch`` after analysis, with the batch buffer, the
TCP columns (payload offsets into the buffer), stream index, client→server direction and
analysis flags, so they can reassemble per-direction payloads of the flows they select
without reading the file again::

    def consumer(batch: PacketBatch) -> None:
        for i in np.flatnonzero(batch.stream == wanted):
            data = batch.payload(i)  # captured payload bytes of packet i
            ...

    engine = CaptureEngine(consumers=[consumer]); engine.run(stream, acct)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np
import polars as pl

from parsers._capture_decode import TH_ACK, TH_FIN, TH_RST, TH_SYN, DecodeStats, TcpColumns, decode
from parsers._capture_flows import KNOWN_SERVER_PORTS, FlowTable
from parsers._capture_reader import CaptureInfo, RecordBatch, iter_records
from parsers._tcp_analysis import (
    ANY_RETRANS,
    DUP_ACK,
    LOST,
    OOO,
    ZERO_WIN,
    AnalysisState,
    BatchAnalysis,
    analyze,
)
from parsers.base import Accounting

MAX_EVENTS_PER_KIND = 50_000
NS = 1_000_000_000


@dataclass
class PacketBatch:
    """One analysed batch, for packet consumers (numpy columns, file order)."""

    records: RecordBatch  # the raw records and their buffer
    tcp: TcpColumns  # TCP packets of the batch; payload_off/payload_cap index records.buf
    stream: np.ndarray  # stream index per TCP packet (FlowTable numbering, like tcp.stream)
    c2s: np.ndarray  # bool: client → server
    flags: np.ndarray  # _tcp_analysis bits (RETRANS, ..., ZERO_WIN)
    rtt_ns: np.ndarray  # ACK RTT measured at the packet, -1 when none
    frame: np.ndarray  # 1-based record number in the file (tshark's frame.number)
    flows: FlowTable

    def payload(self, i: int) -> bytes:
        off = int(self.tcp.payload_off[i])
        return self.records.buf[off:off + int(self.tcp.payload_cap[i])].tobytes()


Consumer = Callable[[PacketBatch], None]


@dataclass
class _Events:
    """Event rows collected as plain lists (few per capture)."""

    rst: list[tuple[int, int, int, int]] = field(default_factory=list)  # ts, stream, dir, frame
    syn_retry: list[tuple[int, int, int, int, bool]] = field(default_factory=list)
    zero_window: list[tuple[int, int, int, int, int, bool]] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)

    def add(self, kind: str, rows: list) -> None:
        target = getattr(self, kind)
        room = MAX_EVENTS_PER_KIND - len(target)
        if room < len(rows):
            self.dropped[kind] = self.dropped.get(kind, 0) + len(rows) - max(room, 0)
            rows = rows[:max(room, 0)]
        target.extend(rows)


_FLOW_COLS = ("s", "d", "sec", "packets", "bytes", "retrans", "dup", "zw", "ooo", "lost", "rst", "syn", "synack",
              "fin", "tmin", "tmax")
FLUSH_BATCHES = 16
_COUNTS = ("retrans", "dup", "zw", "ooo", "lost", "rst", "syn", "synack", "fin")
_COUNTED = ANY_RETRANS | DUP_ACK | ZERO_WIN | OOO | LOST


class _Accumulator:
    """Per-batch numpy columns waiting to become frames."""

    def __init__(self) -> None:
        self.cols: dict[str, list[np.ndarray]] = {}
        self.batches = 0

    def add(self, name: str, values: np.ndarray) -> None:
        self.cols.setdefault(name, []).append(values)

    def take(self, name: str) -> np.ndarray:
        parts = self.cols.get(name, [])
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


_RTT_BITS = 37  # RTT nanoseconds below 2**37 (137 s) share an int64 with a group number


def _rtt_stats(inv: np.ndarray, n_groups: int, rtt_ns: np.ndarray) -> tuple[np.ndarray, ...] | None:
    """Median/max (ms) and count of the RTT samples of each group ``inv`` (0..n_groups-1), with
    one sort of (group, RTT) packed into an int64; the median is polars' (``lo + (hi - lo) * 0.5``
    of the two middle samples). None when the values do not fit the packing."""
    if not len(rtt_ns) or n_groups >= 1 << (63 - _RTT_BITS) or int(rtt_ns.max()) >= 1 << _RTT_BITS:
        return None
    packed = np.sort((inv << _RTT_BITS) | rtt_ns)
    value = packed & ((1 << _RTT_BITS) - 1)
    grp = packed >> _RTT_BITS
    heads = np.flatnonzero(np.r_[True, grp[1:] != grp[:-1]])
    count = np.diff(np.r_[heads, len(packed)])
    lo = value[heads + (count - 1) // 2] / 1e6
    hi = value[heads + count // 2] / 1e6
    return grp[heads], lo + (hi - lo) * 0.5, value[heads + count - 1] / 1e6, count


def _group_rtt(inv: np.ndarray, n_groups: int, rtt_ns: np.ndarray) -> tuple[np.ndarray, ...]:
    """``_rtt_stats``, or the same with polars when the values do not fit its packing."""
    stats = _rtt_stats(inv, n_groups, rtt_ns)
    if stats is not None:
        return stats
    out = (pl.DataFrame({"g": inv, "rtt": rtt_ns / 1e6}).group_by("g")
           .agg(pl.col("rtt").median(), pl.col("rtt").max().alias("max"), pl.len().cast(pl.Int64).alias("n")))
    return tuple(out.get_column(c).to_numpy() for c in ("g", "rtt", "max", "n"))


def _dense(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct keys (sorted) and each key's index among them."""
    keys = np.unique(key)
    return keys, np.searchsorted(keys, key)


class CaptureEngine:
    """Streams one capture through the fast path; results stay as compact partial frames."""

    def __init__(self, *, pg_port: int | None = None, consumers: list[Consumer] | None = None) -> None:
        ports = KNOWN_SERVER_PORTS | ({pg_port} if pg_port else set())
        self.flows = FlowTable(frozenset(ports))
        self.state = AnalysisState()
        self.info = CaptureInfo()
        self.stats = DecodeStats()
        self.consumers = list(consumers or [])
        self.flow_parts: list[pl.DataFrame] = []
        self.flow_rtt_parts: list[pl.DataFrame] = []
        self.ep_rtt_parts: list[pl.DataFrame] = []
        self.events = _Events()
        self._acc = _Accumulator()
        self.zw_open: dict[int, tuple[int, int]] = {}  # direction index -> (start ns, zero-window segments)
        self.stream_first_syn: dict[int, int] = {}
        self.packets = 0
        self.tcp_packets = 0
        self.ts_min: int | None = None
        self.ts_max: int | None = None

    def run(self, stream: BinaryIO, acct: Accounting) -> None:
        for rb in iter_records(stream, acct, self.info):
            self._batch(rb, acct)
        self._flush()

    def _batch(self, rb: RecordBatch, acct: Accounting) -> None:
        n = len(rb)
        acct.total += n
        self.packets += n
        cols = decode(rb, self.stats)
        links = rb.linktype
        if n and links[0] == links[-1] and (links == links[0]).all():  # one link type (always for pcap)
            unsupported = np.full(n, int(links[0]) not in _supported())
        else:
            unsupported = ~np.isin(links, list(_supported()))
        bad = int(unsupported.sum())
        if bad:
            lt = int(rb.linktype[unsupported][0])
            acct.skip("decode_error", n=bad, offset=int(rb.file_off[unsupported][0]),
                      message=f"link type {lt} is not decoded (supported: Ethernet, Linux SLL/SLL2, RAW, "
                              "IPv4/IPv6, NULL, LOOP)")
        acct.parsed(n - bad)
        if n:
            lo, hi = int(rb.ts_ns.min()), int(rb.ts_ns.max())
            self.ts_min = lo if self.ts_min is None else min(self.ts_min, lo)
            self.ts_max = hi if self.ts_max is None else max(self.ts_max, hi)
        if len(cols) == 0:
            return
        self.tcp_packets += len(cols)
        stream, dirn = self.flows.assign(cols)
        self.state.ensure(len(self.flows))
        result = analyze(cols, stream, dirn, self.state)
        frame = rb.first_record + cols.rec
        self._aggregate(cols, stream, dirn, result)
        self._collect_events(cols, stream, dirn, result.flags, frame)
        if self.consumers:
            client = np.asarray(self.flows.client_dir, dtype=np.int64)[stream]
            batch = PacketBatch(records=rb, tcp=cols, stream=stream, c2s=dirn == client, flags=result.flags,
                                rtt_ns=result.rtt_ns, frame=frame, flows=self.flows)
            for consumer in self.consumers:
                consumer(batch)

    def _aggregate(self, cols: TcpColumns, stream: np.ndarray, dirn: np.ndarray, result: BatchAnalysis) -> None:
        """Per (stream, direction, second) sums over runs of the stream-sorted rows: no sort
        here; a (stream, second) split over several runs is merged when results are built."""
        order = result.order
        got = result.in_order
        if len(order) < len(stream):  # rows tshark does not analyse still count as packets
            rest = np.setdiff1d(np.arange(len(stream)), order, assume_unique=True)
            order = np.concatenate([order, rest])
            got = None
        if got is None:
            got = {"S": stream[order], "D": dirn[order], "T": cols.ts_ns[order], "F": cols.flags[order],
                   "flags": result.flags[order], "rtt": result.rtt_ns[order]}
        S, D, T, f, fl, R = got["S"], got["D"], got["T"], got["F"], got["flags"], got["rtt"]
        sec = T // NS
        brk = np.ones(len(S), dtype=bool)
        brk[1:] = (S[1:] != S[:-1]) | (sec[1:] != sec[:-1])
        starts = np.flatnonzero(brk)
        nr = len(starts)
        run = np.cumsum(brk) - 1
        g = run * 2 + D  # (run, direction) cell of every row
        packets = np.bincount(g, minlength=2 * nr).reshape(nr, 2)
        nbytes = np.bincount(g, weights=cols.frame_len[order], minlength=2 * nr).astype(np.int64).reshape(nr, 2)
        # the counters are zero for most rows: count them on the rows with any flag only
        hot = np.flatnonzero(((fl & _COUNTED) != 0) | ((f & (TH_RST | TH_SYN | TH_FIN)) != 0))
        counts = {}
        if len(hot):
            fh, flh, gh = f[hot], fl[hot], g[hot]
            for name, values in (
                    ("retrans", (flh & ANY_RETRANS) != 0), ("dup", (flh & DUP_ACK) != 0), ("zw", (flh & ZERO_WIN) != 0),
                    ("ooo", (flh & OOO) != 0), ("lost", (flh & LOST) != 0), ("rst", (fh & TH_RST) != 0),
                    ("syn", (fh & (TH_SYN | TH_ACK)) == TH_SYN),
                    ("synack", (fh & (TH_SYN | TH_ACK)) == (TH_SYN | TH_ACK)), ("fin", (fh & TH_FIN) != 0)):
                counts[name] = np.bincount(gh[values], minlength=2 * nr).reshape(nr, 2)
        zeros = np.zeros((nr, 2), dtype=np.int64)
        tmin, tmax = np.minimum.reduceat(T, starts), np.maximum.reduceat(T, starts)
        acc = self._acc
        S0, sec0 = S[starts], sec[starts]
        for d in (0, 1):
            keep = np.flatnonzero(packets[:, d])
            acc.add("s", S0[keep])
            acc.add("d", np.full(len(keep), d, dtype=np.int64))
            acc.add("sec", sec0[keep])
            acc.add("packets", packets[keep, d])
            acc.add("bytes", nbytes[keep, d])
            for name in _COUNTS:
                acc.add(name, counts.get(name, zeros)[keep, d])
            acc.add("tmin", tmin[keep])
            acc.add("tmax", tmax[keep])
        have = np.flatnonzero(R >= 0)
        if len(have):
            # RTT median/max per run (stream, second) and per (server endpoint, second) of this batch
            rtt_ns = R[have]
            rr = run[have]
            head = np.r_[True, rr[1:] != rr[:-1]]  # runs ascend: groups are contiguous
            group = np.cumsum(head) - 1
            group_run = rr[head]
            g, med, mx, count = _group_rtt(group, len(group_run), rtt_ns)
            runs = group_run[g]
            for name, values in (("frtt_s", S0[runs]), ("frtt_sec", sec0[runs]), ("frtt_med", med),
                                 ("frtt_max", mx), ("frtt_n", count)):
                acc.add(name, values)
            ep = self.flows.server_ids(S0[group_run])[group]  # per run, then per sample
            sec_h = sec[have]
            smin = int(sec_h.min())
            n_ep, span = int(ep.max()) + 1, int(sec_h.max()) - smin + 1
            if n_ep * span <= 4 * len(ep) + 4096:  # few (endpoint, second) cells: a lookup table
                cell = ep * span + (sec_h - smin)
                used = np.zeros(n_ep * span, dtype=bool)
                used[cell] = True
                keys = np.flatnonzero(used)
                inv = (np.cumsum(used) - 1)[cell]
                k_ep, k_sec = keys // span, keys % span + smin
            elif int(ep.max()) < 1 << 31 and span < 1 << 32:
                keys, inv = _dense((ep << 32) | (sec_h - smin))
                k_ep, k_sec = keys >> 32, (keys & 0xFFFFFFFF) + smin
            else:  # seconds too far apart to pack (corrupt timestamps)
                keys, inv = np.unique(np.stack([ep, sec_h], axis=1), axis=0, return_inverse=True)
                inv = inv.reshape(-1)
                k_ep, k_sec = keys[:, 0], keys[:, 1]
            g, med, mx, count = _group_rtt(inv, len(keys), rtt_ns)
            for name, values in (("ertt_ep", k_ep[g]), ("ertt_sec", k_sec[g]), ("ertt_med", med),
                                 ("ertt_max", mx), ("ertt_n", count)):
                acc.add(name, values)
        acc.batches += 1
        if acc.batches >= FLUSH_BATCHES:
            self._flush()

    def _flush(self) -> None:
        """Turn the accumulated per-batch arrays into frames (a few polars calls for many
        batches); RTT medians stay per batch, as the partial-aggregate combination expects."""
        acc = self._acc
        if not acc.batches:
            return
        flow = {name: acc.take(name) for name in _FLOW_COLS}
        if len(flow["s"]):
            self.flow_parts.append(pl.DataFrame(flow))
        if "frtt_s" in acc.cols:
            self.flow_rtt_parts.append(pl.DataFrame({
                "rtt_med": acc.take("frtt_med"), "rtt_max": acc.take("frtt_max"),
                "rtt_n": acc.take("frtt_n").astype(np.int64), "s": acc.take("frtt_s"), "sec": acc.take("frtt_sec")}))
            self.ep_rtt_parts.append(pl.DataFrame({
                "ep": acc.take("ertt_ep"), "sec": acc.take("ertt_sec"), "rtt_med": acc.take("ertt_med"),
                "rtt_max": acc.take("ertt_max"), "rtt_n": pl.Series(acc.take("ertt_n"), dtype=pl.get_index_type())}))
        self._acc = _Accumulator()
        if len(self.flow_parts) >= 16:  # keep the partial lists short
            self.flow_parts = [pl.concat(self.flow_parts)]
            self.ep_rtt_parts = [pl.concat(self.ep_rtt_parts)] if self.ep_rtt_parts else []
            self.flow_rtt_parts = [pl.concat(self.flow_rtt_parts)] if self.flow_rtt_parts else []

    def _collect_events(self, cols: TcpColumns, stream: np.ndarray, dirn: np.ndarray, flags: np.ndarray,
                        frame: np.ndarray) -> None:
        f = cols.flags
        rst = np.flatnonzero((f & TH_RST) != 0)
        if len(rst):
            self.events.add("rst", list(zip(cols.ts_ns[rst].tolist(), stream[rst].tolist(), dirn[rst].tolist(),
                                            frame[rst].tolist(), strict=True)))
        syn = (f & TH_SYN) != 0
        for i in np.flatnonzero(syn & ((f & TH_ACK) == 0)).tolist():
            self.stream_first_syn.setdefault(int(stream[i]), int(cols.ts_ns[i]))
        retry = np.flatnonzero(syn & ((flags & ANY_RETRANS) != 0))
        if len(retry):
            self.events.add("syn_retry", list(zip(
                cols.ts_ns[retry].tolist(), stream[retry].tolist(), dirn[retry].tolist(), frame[retry].tolist(),
                ((f[retry] & TH_ACK) != 0).tolist(), strict=True)))
        self._zero_window_episodes(cols, stream, dirn, flags)

    def _zero_window_episodes(self, cols: TcpColumns, stream: np.ndarray, dirn: np.ndarray,
                              flags: np.ndarray) -> None:
        """An episode starts at a zero-window segment and ends at the same side's next
        segment advertising a non-zero window."""
        g = stream * 2 + dirn
        zw = (flags & ZERO_WIN) != 0
        involved = set(g[zw].tolist()) | set(self.zw_open)
        if not involved:
            return
        rows = np.flatnonzero(np.isin(g, np.fromiter(involved, dtype=np.int64)))
        done = []
        for i in rows.tolist():
            gi = int(g[i])
            t = int(cols.ts_ns[i])
            open_ = self.zw_open.get(gi)
            if zw[i]:
                self.zw_open[gi] = (open_[0], open_[1] + 1) if open_ else (t, 1)
            elif open_ and cols.window[i] != 0:
                done.append((open_[0], t, gi // 2, gi % 2, open_[1], False))
                del self.zw_open[gi]
        if done:
            self.events.add("zero_window", done)

    def close_open_episodes(self, stream_end: dict[int, int]) -> None:
        for gi, (start, count) in list(self.zw_open.items()):
            end = stream_end.get(gi // 2, start)
            self.events.add("zero_window", [(start, max(end, start), gi // 2, gi % 2, count, True)])
        self.zw_open.clear()


def _supported() -> frozenset[int]:
    from parsers._capture_decode import SUPPORTED_LINKTYPES
    return SUPPORTED_LINKTYPES
