"""Per-direction TCP stream reassembly for the application-protocol layer of the capture parser.

Bytes are delivered in sequence order: retransmitted and overlapping bytes are delivered once
(the first copy wins, as the receiver's stack keeps it), segments that arrive ahead of a hole
wait until it is filled, and bytes that never arrive — lost before the capture point, cut by
the snap length, or a hole still open after ``HOLE_WAIT_SEGMENTS`` later segments — become a
*gap*: the next delivered piece carries ``gap=True`` and the protocol parser resynchronises.

Fast path (the common case, vectorised): when every payload segment of a direction in a batch
starts exactly where the previous one ended and was captured whole, its pieces are the
segments themselves. Only directions that break the chain go through ``Direction.add``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MOD = 1 << 32
HOLE_WAIT_SEGMENTS = 64  # out-of-order segments held before an unfilled hole is declared a gap
HOLE_WAIT_BYTES = 4 << 20


def seq_diff(a: int, b: int) -> int:
    """a - b in sequence space (signed 32-bit)."""
    d = (a - b) & 0xFFFFFFFF
    return d - MOD if d >= 1 << 31 else d


class Direction:
    """Reassembly state of one direction of one connection (carried across batches)."""

    __slots__ = ("next_seq", "held", "held_bytes", "gaps", "gap_bytes", "dup_bytes", "acks")

    def __init__(self) -> None:
        self.next_seq: int | None = None
        self.held: dict[int, tuple[bytes, int, int, int]] = {}  # seq -> (data, seglen, ts, frame)
        self.held_bytes = 0
        self.gaps = 0
        self.gap_bytes = 0
        self.dup_bytes = 0
        self.acks: int | None = None  # last ACK number this direction sent (covers the other one)

    def add(self, seq: int, data: bytes, seglen: int, ts: int, frame: int, peer_ack: int | None = None
            ) -> list[tuple[bytes, int, int, bool]]:
        """One segment (``data`` = captured payload, ``seglen`` = its length on the wire);
        returns the pieces now deliverable as (bytes, ts, frame, gap_before). ``peer_ack`` is the
        last ACK the other side sent before this segment: a hole it already acknowledged was
        received, so it is missing from the capture and will not be retransmitted — a gap now."""
        out: list[tuple[bytes, int, int, bool]] = []
        if seglen <= 0:
            return out
        if self.next_seq is None:
            self.next_seq = seq
        d = seq_diff(seq, self.next_seq)
        if d > 0:  # ahead of a hole: hold it
            if seq not in self.held or len(self.held[seq][0]) < len(data):
                self.held_bytes += len(data)
                self.held[seq] = (data, seglen, ts, frame)
            acked = peer_ack is not None and seq_diff(peer_ack, self.next_seq) > 0
            if acked or len(self.held) > HOLE_WAIT_SEGMENTS or self.held_bytes > HOLE_WAIT_BYTES:
                self._skip_hole(out)
            self._drain(out)
            return out
        self._deliver(seq, data, seglen, ts, frame, False, out)
        self._drain(out)
        return out

    def flush(self) -> list[tuple[bytes, int, int, bool]]:
        """End of capture: whatever is held is delivered after a gap."""
        out: list[tuple[bytes, int, int, bool]] = []
        while self.held:
            self._skip_hole(out)
            self._drain(out)
        return out

    def _deliver(self, seq: int, data: bytes, seglen: int, ts: int, frame: int, gap: bool,
                 out: list[tuple[bytes, int, int, bool]]) -> None:
        assert self.next_seq is not None
        skip = -seq_diff(seq, self.next_seq)  # bytes already delivered
        if skip >= seglen:
            self.dup_bytes += seglen
            return
        self.dup_bytes += max(skip, 0)
        piece = data[max(skip, 0):]
        if piece:
            out.append((piece, ts, frame, gap))
        if len(data) < seglen:  # cut by the snap length: the rest is a gap
            self.gaps += 1
            self.gap_bytes += seglen - len(data)
            out.append((b"", ts, frame, True))
        self.next_seq = (seq + seglen) & 0xFFFFFFFF

    def _drain(self, out: list[tuple[bytes, int, int, bool]]) -> None:
        while self.held:
            assert self.next_seq is not None
            ready = [s for s in self.held if seq_diff(s, self.next_seq) <= 0]
            if not ready:
                return
            for s in sorted(ready, key=lambda s: seq_diff(s, self.next_seq)):  # type: ignore[arg-type]
                data, seglen, ts, frame = self.held.pop(s)
                self.held_bytes -= len(data)
                self._deliver(s, data, seglen, ts, frame, False, out)

    def _skip_hole(self, out: list[tuple[bytes, int, int, bool]]) -> None:
        assert self.next_seq is not None
        first = min(self.held, key=lambda s: seq_diff(s, self.next_seq))  # type: ignore[arg-type]
        self.gaps += 1
        self.gap_bytes += seq_diff(first, self.next_seq)
        data, seglen, ts, frame = self.held.pop(first)
        self.held_bytes -= len(data)
        self.next_seq = first
        self._deliver(first, data, seglen, ts, frame, True, out)


@dataclass
class Delivery:
    """Reassembled bytes of one batch: pieces grouped by direction key, in stream order.
    ``data[start[i]:start[i] + length[i]]`` is piece i; ``gap[i]`` says bytes are missing
    before it (the parser must resynchronise there)."""

    data: bytes
    key: np.ndarray
    start: np.ndarray
    length: np.ndarray
    ts: np.ndarray
    frame: np.ndarray
    gap: np.ndarray

    def __len__(self) -> int:
        return len(self.key)


def reassemble(key: np.ndarray, seq: np.ndarray, seglen: np.ndarray, cap: np.ndarray, off: np.ndarray,
               ts: np.ndarray, frame: np.ndarray, buf: np.ndarray | bytes, states: dict[int, Direction],
               lead: dict[int, tuple[bytes, int, int]] | None = None, ack: np.ndarray | None = None) -> Delivery:
    """Reassemble the payload segments of one batch (rows in file order; ``key`` names the
    direction — the two directions of a connection are ``2c`` and ``2c + 1`` — and
    ``off``/``cap`` locate the captured payload in ``buf``). ``ack``: the ACK number of every
    row, for telling capture loss from network loss. ``lead`` gives bytes to put before a
    key's first piece (a message cut at the previous batch's end)."""
    order = np.argsort(key, kind="stable")
    k, s, n, c = key[order], seq[order], seglen[order], cap[order]
    m = len(k)
    first = np.ones(m, dtype=bool)
    first[1:] = k[1:] != k[:-1]
    chained = np.ones(m, dtype=bool)
    chained[1:] = s[1:] == (s[:-1] + n[:-1]) & 0xFFFFFFFF
    ok = (chained | first) & (c == n) & (n > 0)
    heads = np.flatnonzero(first)
    keys = k[heads].tolist()
    for h, kk, sq in zip(heads.tolist(), keys, s[heads].tolist(), strict=True):
        st = states.get(kk)
        if st is None:
            st = states[kk] = Direction()
        if st.held or (st.next_seq is not None and st.next_seq != sq):
            ok[h] = False
    group_bad = (np.add.reduceat((~ok).astype(np.int64), heads) > 0).tolist() if m else []
    mv = buf if isinstance(buf, bytes) else buf.tobytes()  # slicing bytes: twice as fast as a memoryview
    if not lead and not any(group_bad):  # the common case: every segment continues its direction
        tails = np.append(heads[1:], m) - 1
        for kk, sq, ln in zip(keys, s[tails].tolist(), n[tails].tolist(), strict=True):
            states[kk].next_seq = (sq + ln) & 0xFFFFFFFF
        if ack is not None:
            for kk, a in zip(keys, ack[order[tails]].tolist(), strict=True):
                states[kk].acks = a
        start = np.zeros(m, dtype=np.int64)
        if m:
            np.cumsum(c[:-1], out=start[1:])
        data = b"".join([mv[o:o + ln] for o, ln in zip(off[order].tolist(), c.tolist(), strict=True)])
        return Delivery(data=data, key=k, start=start, length=c, ts=ts[order], frame=frame[order],
                        gap=np.zeros(m, dtype=bool))
    parts: list[bytes] = []
    p_key: list[int] = []
    p_len: list[int] = []
    p_ts: list[int] = []
    p_frame: list[int] = []
    p_gap: list[bool] = []
    bounds = np.append(heads, m).tolist()
    off_s, ts_s, fr_s = off[order], ts[order], frame[order]
    peer = _peer_acks(key, ack, order, group_bad, keys, bounds, states) if ack is not None else None
    for gi, kk in enumerate(keys):
        a, b = bounds[gi], bounds[gi + 1]
        st = states[kk]
        if lead and kk in lead:
            data0, ts0, fr0 = lead[kk]
            parts.append(data0)
            p_key.append(kk), p_len.append(len(data0)), p_ts.append(ts0), p_frame.append(fr0), p_gap.append(False)
        if not group_bad[gi]:
            offs, lens = off_s[a:b].tolist(), c[a:b].tolist()
            parts.extend(mv[o:o + ln] for o, ln in zip(offs, lens, strict=True))
            cnt = b - a
            p_key.extend([kk] * cnt)
            p_len.extend(lens)
            p_ts.extend(ts_s[a:b].tolist())
            p_frame.extend(fr_s[a:b].tolist())
            p_gap.extend([False] * cnt)
            st.next_seq = (int(s[b - 1]) + int(n[b - 1])) & 0xFFFFFFFF
            continue
        for i in range(a, b):
            o, ln = int(off_s[i]), int(c[i])
            pa = None if peer is None or peer[i] < 0 else int(peer[i])
            for piece, pts, pfr, gap in st.add(int(s[i]), mv[o:o + ln], int(n[i]), int(ts_s[i]), int(fr_s[i]), pa):
                parts.append(piece)
                p_key.append(kk), p_len.append(len(piece)), p_ts.append(pts), p_frame.append(pfr), p_gap.append(gap)
    if ack is not None:
        for gi, kk in enumerate(keys):
            states[kk].acks = int(ack[order[bounds[gi + 1] - 1]])
    length = np.asarray(p_len, dtype=np.int64)
    start = np.zeros(len(length), dtype=np.int64)
    if len(length):
        np.cumsum(length[:-1], out=start[1:])
    return Delivery(data=b"".join(parts), key=np.asarray(p_key, dtype=np.int64), start=start, length=length,
                    ts=np.asarray(p_ts, dtype=np.int64), frame=np.asarray(p_frame, dtype=np.int64),
                    gap=np.asarray(p_gap, dtype=bool))


def _peer_acks(key: np.ndarray, ack: np.ndarray, order: np.ndarray, group_bad: list[bool], keys: list[int],
               bounds: list[int], states: dict[int, Direction]) -> np.ndarray:
    """For each row (in ``order``), the last ACK the reverse direction sent before it in file
    order (-1 if none known); computed only for directions that need the slow path."""
    out = np.full(len(order), -1, dtype=np.int64)
    if not any(group_bad):
        return out
    n = len(key)
    composite = key * (n + 1) + np.arange(n)
    srt = np.argsort(composite)
    comp_sorted = composite[srt]
    for gi, kk in enumerate(keys):
        if not group_bad[gi]:
            continue
        rows = order[bounds[gi]:bounds[gi + 1]]  # file positions of this direction's rows
        rev = kk ^ 1
        pos = np.searchsorted(comp_sorted, rev * (n + 1) + rows) - 1
        ok = (pos >= 0) & (comp_sorted[np.maximum(pos, 0)] // (n + 1) == rev)
        found = np.where(ok, ack[srt[np.maximum(pos, 0)]], -1)
        st = states.get(rev)
        if st is not None and st.acks is not None:
            found = np.where(found < 0, st.acks, found)
        out[bounds[gi]:bounds[gi + 1]] = found
    return out


def flush(states: dict[int, Direction]) -> Delivery:
    """End of capture: deliver what directions still hold (after gaps)."""
    parts: list[bytes] = []
    rows: list[tuple[int, int, int, int, bool]] = []
    for kk, st in states.items():
        for piece, ts, frame, gap in st.flush():
            parts.append(piece)
            rows.append((kk, len(piece), ts, frame, gap))
    cols = list(zip(*rows, strict=True)) if rows else [[], [], [], [], []]
    length = np.asarray(cols[1], dtype=np.int64)
    start = np.zeros(len(length), dtype=np.int64)
    if len(length):
        np.cumsum(length[:-1], out=start[1:])
    return Delivery(data=b"".join(parts), key=np.asarray(cols[0], dtype=np.int64), start=start, length=length,
                    ts=np.asarray(cols[2], dtype=np.int64), frame=np.asarray(cols[3], dtype=np.int64),
                    gap=np.asarray(cols[4], dtype=bool))
