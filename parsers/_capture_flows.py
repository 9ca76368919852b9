"""The TCP flow table: 4-tuples → connections ("streams", numbered like tshark's
``tcp.stream``), and which side is the server.

A 4-tuple is keyed canonically (endpoint A = the lower (address, port)); direction 0 is
A→B. A new stream starts on a SYN (without ACK) whose sequence number differs from the base
sequence number the current stream holds for that direction — tshark's port-reuse rule, so
clients that reconnect from the same port get one stream per connection.

Server side, in order of evidence: the receiver of the stream's SYN, the sender of its
SYN/ACK, an endpoint that answered a SYN earlier in the capture, a known service port
(< 1024, common database/web ports, ``--pg-port``), the lower port, the first packet's
destination.
"""

from __future__ import annotations

import ipaddress
from bisect import bisect_left

import numpy as np

from parsers._capture_decode import TH_ACK, TH_SYN, TcpColumns

KNOWN_SERVER_PORTS = frozenset({1433, 1521, 2181, 2379, 3000, 3306, 4222, 5000, 5432, 5672, 6379, 6432, 8000,
                                8080, 8081, 8443, 8888, 9000, 9042, 9092, 9200, 9300, 11211, 15672, 27017})
_SLOTS = 1 << 16
_M1, _M2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9)


def _mix(h: np.ndarray, v: np.ndarray) -> np.ndarray:
    h = (h ^ v) * _M1
    return h ^ (h >> np.uint64(29))


def _endpoint_hash(hi: np.ndarray, lo: np.ndarray, port: np.ndarray, v6: np.ndarray) -> np.ndarray:
    h = _mix(np.full(len(hi), 0x243F6A8885A308D3, dtype=np.uint64), hi)
    h = _mix(h, lo)
    return _mix(h, (port.astype(np.uint64) << np.uint64(1)) | v6)


def format_endpoint(v6: bool, hi: int, lo: int, port: int) -> str:
    if v6:
        return f"[{ipaddress.IPv6Address((hi << 64) | lo).compressed}]:{port}"
    return f"{lo >> 24}.{(lo >> 16) & 255}.{(lo >> 8) & 255}.{lo & 255}:{port}"  # str(IPv4Address(lo))


class FlowTable:
    """4-tuples, streams and their client/server sides (grows with the number of connections)."""

    def __init__(self, server_ports: frozenset[int] = KNOWN_SERVER_PORTS) -> None:
        self.server_ports = server_ports
        self.key_index: dict[tuple[int, ...], int] = {}
        self.keys: list[tuple[int, ...]] = []  # ckid -> (v6, a_hi, a_lo, a_port, b_hi, b_lo, b_port)
        self.ck_stream: list[int] = []
        self.ck_base: list[list[int]] = []  # [set0, base0, set1, base1]
        self.stream_ck: list[int] = []
        self.client_dir: list[int] = []  # canonical direction that goes client -> server
        self.decided: list[bool] = []
        self.listening: set[tuple[int, int, int, int]] = set()
        self._names: dict[int, tuple[str, str]] = {}
        self._last_seg: dict[int, int] = {}  # ck -> first row of its last new stream in this batch
        self._h_sorted = np.zeros(0, dtype=np.uint64)  # 4-tuple hashes seen so far, sorted ...
        self._h_ck = np.zeros(0, dtype=np.int64)  # ... and their ckid
        self._slot_h = np.zeros(_SLOTS, dtype=np.uint64)  # direct-mapped cache of the same
        self._slot_ck = np.full(_SLOTS, -1, dtype=np.int64)
        self.ep_names: list[str] = []  # server endpoints (``ip:port``) by id
        self._ep_index: dict[str, int] = {}
        self._sid = np.full(0, -1, dtype=np.int64)  # stream -> server endpoint id (-1: not yet known)

    def __len__(self) -> int:
        return len(self.stream_ck)

    # -- per batch -----------------------------------------------------------------------
    def assign(self, cols: TcpColumns) -> tuple[np.ndarray, np.ndarray]:
        """Stream index and canonical direction (0 = A→B) of every packet."""
        n = len(cols)
        if n == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        sh, sl, dh, dl, sp, dp = cols.src_hi, cols.src_lo, cols.dst_hi, cols.dst_lo, cols.sport, cols.dport
        a_src = (sh < dh) | ((sh == dh) & ((sl < dl) | ((sl == dl) & (sp <= dp))))
        dirn = (~a_src).astype(np.int64)
        # an order-independent hash of the two endpoints: no canonical swap needed per packet
        v6 = cols.v6.astype(np.uint64)
        h = _endpoint_hash(sh, sl, sp, v6) + _endpoint_hash(dh, dl, dp, v6)
        ckid = self._lookup(h)
        miss = np.flatnonzero(ckid < 0)
        if len(miss):
            self._register(cols, a_src, h, miss, ckid)
        flags = cols.flags
        pure_syn = (flags & (TH_SYN | TH_ACK)) == TH_SYN
        present = np.zeros(len(self.keys), dtype=bool)
        present[ckid] = True
        uck_arr = np.flatnonzero(present)
        uck = uck_arr.tolist()
        base = self.ck_base
        need = set(ckid[pure_syn].tolist())
        need.update(c for c in uck if not (base[c][0] and base[c][2]))
        # current stream of each 4-tuple present (the table holds every 4-tuple ever seen)
        slot_of = np.zeros(len(self.keys), dtype=np.intp)
        slot_of[uck_arr] = np.arange(len(uck))
        ck_stream = self.ck_stream
        stream = np.array([ck_stream[c] for c in uck], dtype=np.int64)[slot_of[ckid]]
        if need:
            wanted = np.zeros(len(self.keys), dtype=bool)
            wanted[list(need)] = True
            rows = np.flatnonzero(wanted[ckid])
            rows = rows[np.argsort(ckid[rows], kind="stable")]  # grouped by 4-tuple, file order kept
            ck_rows = ckid[rows]
            g0 = np.flatnonzero(np.r_[True, ck_rows[1:] != ck_rows[:-1]])
            g_end = np.append(g0[1:], len(rows))
            syn_pos = np.flatnonzero(pure_syn[rows]).tolist()  # positions in ``rows`` of pure SYNs
            created: list[tuple[int, int, int, np.ndarray]] = []  # (first row, ck, dir, rows)
            for ck, a_, b_ in zip(ck_rows[g0].tolist(), g0.tolist(), g_end.tolist(), strict=True):
                syn_at = [j - a_ for j in syn_pos[bisect_left(syn_pos, a_):bisect_left(syn_pos, b_)]]
                created.extend(self._walk(ck, rows[a_:b_], cols, dirn, pure_syn, stream, syn_at))
            # number new streams in the order of their first packet, as tshark does
            for first_row, ck, d, rows_ in sorted(created, key=lambda c: c[0]):
                s = self._new_stream(ck, d)
                stream[rows_] = s
                if self._last_seg.get(ck) == first_row:
                    self.ck_stream[ck] = s
            self._last_seg.clear()
        # sides from SYN / SYN-ACK evidence
        synack = (flags & (TH_SYN | TH_ACK)) == (TH_SYN | TH_ACK)
        for i in np.flatnonzero(pure_syn | synack).tolist():
            s = int(stream[i])
            if self.decided[s]:
                continue
            d = int(dirn[i])
            self.client_dir[s] = d if pure_syn[i] else 1 - d
            self.decided[s] = True
            self._names.pop(s, None)
            if s < len(self._sid):
                self._sid[s] = -1
            if synack[i]:
                self.listening.add((int(cols.v6[i]), int(cols.src_hi[i]), int(cols.src_lo[i]), int(cols.sport[i])))
        return stream, dirn

    def _walk(self, ck: int, rows: np.ndarray, cols: TcpColumns, dirn: np.ndarray, pure_syn: np.ndarray,
              stream: np.ndarray, syn_at: list[int]) -> list[tuple[int, int, int, np.ndarray]]:
        """Split one 4-tuple's packets of this batch into streams (tshark's port-reuse rule).
        Rows continuing the current stream are written to ``stream``; new streams are
        returned as (first row, ck, direction of the first packet, rows) for numbering.
        ``syn_at``: positions in ``rows`` of the pure SYNs."""
        base = self.ck_base[ck]
        cur = self.ck_stream[ck]
        created: list[tuple[int, int, int, np.ndarray]] = []
        k = 0
        n = len(rows)
        seg_start = 0
        seg_new = cur < 0
        seg_dir = int(dirn[rows[0]]) if n else 0

        def close(end: int) -> None:
            if seg_new:
                created.append((int(rows[seg_start]), ck, seg_dir, rows[seg_start:end]))
            else:
                stream[rows[seg_start:end]] = cur

        while k < n:
            if base[0] and base[2]:
                nxt = next((j for j in syn_at if j >= k), n)  # only a SYN can change anything now
                if nxt >= n:
                    break
                k = nxt
            r = int(rows[k])
            d = int(dirn[r])
            seq = int(cols.seq[r])
            fl = int(cols.flags[r])
            if pure_syn[r] and base[2 * d] and seq != base[2 * d + 1]:
                close(k)
                seg_start, seg_new, seg_dir = k, True, d
                base[:] = [0, 0, 0, 0]
            if not base[2 * d]:
                base[2 * d], base[2 * d + 1] = 1, seq if fl & TH_SYN else (seq - 1) & 0xFFFFFFFF
            if not base[2 * (1 - d)] and fl & TH_ACK:
                base[2 * (1 - d)], base[2 * (1 - d) + 1] = 1, (int(cols.ack[r]) - 1) & 0xFFFFFFFF
            k += 1
        if n:
            close(n)
            if seg_new:
                self._last_seg[ck] = int(rows[seg_start])
        return created

    def _new_stream(self, ck: int, d: int) -> int:
        s = len(self.stream_ck)
        self.stream_ck.append(ck)
        self.client_dir.append(self._guess_client(ck, d))
        self.decided.append(False)
        return s

    def _guess_client(self, ck: int, first_dir: int) -> int:
        v6, a_hi, a_lo, a_p, b_hi, b_lo, b_p = self.keys[ck]
        if (v6, b_hi, b_lo, b_p) in self.listening:
            return 0
        if (v6, a_hi, a_lo, a_p) in self.listening:
            return 1
        a_known = a_p < 1024 or a_p in self.server_ports
        b_known = b_p < 1024 or b_p in self.server_ports
        if a_known != b_known:
            return 1 if a_known else 0
        if a_p != b_p:
            return 0 if b_p < a_p else 1
        return first_dir  # the first packet's destination serves

    def _lookup(self, h: np.ndarray) -> np.ndarray:
        """4-tuple id of each hash, -1 when unknown: a direct-mapped table on the hash's low
        bits first, the sorted list of every known hash for the rest."""
        slot = (h & np.uint64(_SLOTS - 1)).astype(np.intp)
        return np.where(self._slot_h[slot] == h, self._slot_ck[slot], -1)

    def _register(self, cols: TcpColumns, a_src: np.ndarray, h: np.ndarray, miss: np.ndarray,
                  ckid: np.ndarray) -> None:
        """Give the rows ``miss`` (not in the direct-mapped table) their 4-tuple ids (in ``ckid``),
        from the sorted list of known hashes or as new 4-tuples."""
        hm = h[miss]
        uh, first, inv = np.unique(hm, return_index=True, return_inverse=True)
        ck_of = np.full(len(uh), -1, dtype=np.int64)
        if len(self._h_sorted):
            at = np.minimum(np.searchsorted(self._h_sorted, uh), len(self._h_sorted) - 1)
            hit = self._h_sorted[at] == uh
            ck_of[hit] = self._h_ck[at[hit]]
        new = ck_of < 0
        for u, i in zip(np.flatnonzero(new).tolist(), miss[first[new]].tolist(), strict=True):
            if a_src[i]:
                key = (int(cols.v6[i]), int(cols.src_hi[i]), int(cols.src_lo[i]), int(cols.sport[i]),
                       int(cols.dst_hi[i]), int(cols.dst_lo[i]), int(cols.dport[i]))
            else:
                key = (int(cols.v6[i]), int(cols.dst_hi[i]), int(cols.dst_lo[i]), int(cols.dport[i]),
                       int(cols.src_hi[i]), int(cols.src_lo[i]), int(cols.sport[i]))
            ck = self.key_index.get(key)
            if ck is None:
                ck = len(self.keys)
                self.key_index[key] = ck
                self.keys.append(key)
                self.ck_stream.append(-1)
                self.ck_base.append([0, 0, 0, 0])
            ck_of[u] = ck
        ckid[miss] = ck_of[inv.reshape(-1)]
        if new.any():
            hs_all = np.concatenate([self._h_sorted, uh[new]])
            ck_all = np.concatenate([self._h_ck, ck_of[new]])
            srt = np.argsort(hs_all, kind="stable")
            self._h_sorted, self._h_ck = hs_all[srt], ck_all[srt]
        slot = (uh & np.uint64(_SLOTS - 1)).astype(np.intp)  # the latest 4-tuples take the slots
        self._slot_h[slot] = uh
        self._slot_ck[slot] = ck_of

    # -- descriptions --------------------------------------------------------------------
    def server_ids(self, streams: np.ndarray) -> np.ndarray:
        """Id (index into ``ep_names``) of the server endpoint of each of ``streams``, as
        ``endpoints(s)[1]`` names it now."""
        if len(self._sid) < len(self.stream_ck):
            grown = np.full(max(len(self.stream_ck), 2 * len(self._sid), 1024), -1, dtype=np.int64)
            grown[:len(self._sid)] = self._sid
            self._sid = grown
        ids = self._sid[streams]
        miss = ids < 0
        if miss.any():
            todo = np.zeros(len(self.stream_ck), dtype=bool)  # the distinct streams without an id, no sort
            todo[streams[miss]] = True
            for s in np.flatnonzero(todo).tolist():
                name = self.endpoints(s)[1]
                i = self._ep_index.get(name)
                if i is None:
                    i = self._ep_index[name] = len(self.ep_names)
                    self.ep_names.append(name)
                self._sid[s] = i
            ids = self._sid[streams]
        return ids

    def endpoints(self, s: int) -> tuple[str, str]:
        """(client, server) of stream ``s`` as ``ip:port`` (IPv6 in brackets)."""
        names = self._names.get(s)
        if names is not None:
            return names
        v6, a_hi, a_lo, a_p, b_hi, b_lo, b_p = self.keys[self.stream_ck[s]]
        a = format_endpoint(bool(v6), a_hi, a_lo, a_p)
        b = format_endpoint(bool(v6), b_hi, b_lo, b_p)
        names = (a, b) if self.client_dir[s] == 0 else (b, a)
        self._names[s] = names
        return names
