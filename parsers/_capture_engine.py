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
from parsers._tcp_analysis import ANY_RETRANS, DUP_ACK, LOST, OOO, ZERO_WIN, AnalysisState, analyze
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


class _Accumulator:
    """Per-batch numpy columns waiting to become frames."""

    def __init__(self) -> None:
        self.cols: dict[str, list[np.ndarray]] = {}
        self.runs = 0
        self.batches = 0

    def add(self, name: str, values: np.ndarray) -> None:
        self.cols.setdefault(name, []).append(values)

    def take(self, name: str) -> np.ndarray:
        parts = self.cols.get(name, [])
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _group_ep_rtt(b: np.ndarray, ep: np.ndarray, sec: np.ndarray, rtt: np.ndarray) -> pl.DataFrame:
    """Median/max/count of RTT samples per (batch, endpoint, second), without the batch column.
    The three keys are packed into one int64 when they fit (polars groups one integer column
    several times faster than three)."""
    aggs = (pl.col("rtt").median().alias("rtt_med"), pl.col("rtt").max().alias("rtt_max"), pl.len().alias("rtt_n"))
    heads = np.flatnonzero(np.r_[True, b[1:] != b[:-1]])  # b ascends: one run per batch
    smin = np.minimum.reduceat(sec, heads)
    rel = sec - np.repeat(smin, np.diff(np.r_[heads, len(b)]))
    if len(heads) < 128 and int(ep.max()) < 1 << 24 and int(rel.max()) < 1 << 32:
        key = (np.repeat(np.arange(len(heads), dtype=np.int64), np.diff(np.r_[heads, len(b)])) << 56) | (
            ep << 32) | rel
        out = pl.DataFrame({"k": key, "rtt": rtt}).group_by("k").agg(*aggs)
        k = out.get_column("k").to_numpy()
        return out.select(pl.Series("ep", (k >> 32) & 0xFFFFFF), pl.Series("sec", (k & 0xFFFFFFFF) + smin[k >> 56]),
                          "rtt_med", "rtt_max", "rtt_n")
    return (pl.DataFrame({"b": b, "ep": ep, "sec": sec, "rtt": rtt}).group_by("b", "ep", "sec").agg(*aggs)
            .drop("b"))


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
        self._aggregate(cols, stream, dirn, result.flags, result.rtt_ns, result.order)
        self._collect_events(cols, stream, dirn, result.flags, frame)
        if self.consumers:
            client = np.asarray(self.flows.client_dir, dtype=np.int64)[stream]
            batch = PacketBatch(records=rb, tcp=cols, stream=stream, c2s=dirn == client, flags=result.flags,
                                rtt_ns=result.rtt_ns, frame=frame, flows=self.flows)
            for consumer in self.consumers:
                consumer(batch)

    def _aggregate(self, cols: TcpColumns, stream: np.ndarray, dirn: np.ndarray, flags: np.ndarray,
                   rtt: np.ndarray, order: np.ndarray) -> None:
        """Per (stream, direction, second) sums over runs of the stream-sorted rows: no sort
        here; a (stream, second) split over several runs is merged when results are built."""
        if len(order) < len(stream):  # rows tshark does not analyse still count as packets
            rest = np.setdiff1d(np.arange(len(stream)), order, assume_unique=True)
            order = np.concatenate([order, rest])
        S = stream[order]
        sec = cols.ts_ns[order] // NS
        T = cols.ts_ns[order]
        D = dirn[order]
        brk = np.ones(len(S), dtype=bool)
        brk[1:] = (S[1:] != S[:-1]) | (sec[1:] != sec[:-1])
        starts = np.flatnonzero(brk)
        f = cols.flags[order]
        fl = flags[order]
        length = cols.frame_len[order]
        columns = {
            "retrans": (fl & ANY_RETRANS) != 0, "dup": (fl & DUP_ACK) != 0, "zw": (fl & ZERO_WIN) != 0,
            "ooo": (fl & OOO) != 0, "lost": (fl & LOST) != 0, "rst": (f & TH_RST) != 0,
            "syn": (f & (TH_SYN | TH_ACK)) == TH_SYN, "synack": (f & (TH_SYN | TH_ACK)) == (TH_SYN | TH_ACK),
            "fin": (f & TH_FIN) != 0,
        }
        tmin, tmax = np.minimum.reduceat(T, starts), np.maximum.reduceat(T, starts)
        acc = self._acc
        S0, sec0 = S[starts], sec[starts]
        for d in (0, 1):
            mine = D == d
            packets = np.add.reduceat(mine.astype(np.int64), starts)
            keep = packets > 0
            acc.add("s", S0[keep])
            acc.add("d", np.full(int(keep.sum()), d, dtype=np.int64))
            acc.add("sec", sec0[keep])
            acc.add("packets", packets[keep])
            acc.add("bytes", np.add.reduceat(np.where(mine, length, 0), starts)[keep])
            for name, values in columns.items():
                acc.add(name, np.add.reduceat((values & mine).astype(np.int64), starts)[keep])
            acc.add("tmin", tmin[keep])
            acc.add("tmax", tmax[keep])
        R = rtt[order]
        have = R >= 0
        if have.any():
            # per-run (stream, second) median/max, grouped for many batches at once in _flush
            run = np.cumsum(brk) - 1
            acc.add("run", run[have] + acc.runs)
            acc.add("run_rtt", R[have] / 1e6)
            acc.add("run_s", S0)
            acc.add("run_sec", sec0)
            acc.runs += len(starts)
        have_rtt = rtt >= 0
        if have_rtt.any():
            n_rtt = int(have_rtt.sum())
            acc.add("ep_b", np.full(n_rtt, acc.batches, dtype=np.int64))
            acc.add("ep", self.flows.server_ids(stream[have_rtt]))
            acc.add("ep_sec", cols.ts_ns[have_rtt] // NS)
            acc.add("ep_rtt", rtt[have_rtt] / 1e6)
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
        if "run" in acc.cols:
            run, run_s, run_sec = acc.take("run"), acc.take("run_s"), acc.take("run_sec")
            rt = (pl.DataFrame({"run": run, "rtt": acc.take("run_rtt")})
                  .with_columns(pl.col("run").set_sorted()).group_by("run")  # runs ascend: a sorted key
                  .agg(pl.col("rtt").median().alias("rtt_med"), pl.col("rtt").max().alias("rtt_max"),
                       pl.len().cast(pl.Int64).alias("rtt_n")))
            runs = rt.get_column("run").to_numpy()
            self.flow_rtt_parts.append(rt.drop("run").with_columns(
                pl.Series("s", run_s[runs]), pl.Series("sec", run_sec[runs])))
        if "ep" in acc.cols:
            self.ep_rtt_parts.append(_group_ep_rtt(acc.take("ep_b"), acc.take("ep"), acc.take("ep_sec"),
                                                   acc.take("ep_rtt")))
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
