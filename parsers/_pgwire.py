"""PostgreSQL frontend/backend protocol (v3) over reassembled TCP streams → one latency sample
per query: simple ``Q`` → ``Z``, extended batch (first ``P``/``B``/``E``/... → the ``Z`` that
answers its ``S``), function call ``F`` → ``Z``.

- Startup: the untyped first messages (``Int32 length, Int32 code``: 3.0/3.2 startup,
  SSLRequest, GSSENCRequest, CancelRequest). The server's one-byte answer to SSLRequest/GSSENC
  is unframed: ``N`` → plain text follows, ``S``/``G`` → the connection is encrypted and counted
  as unreadable (never guessed at). The startup message is answered by the ``Z`` that ends
  authentication: that pair is a connection setup, not a query.
- Pairing: every ``Z`` answers the oldest outstanding sync point (``Q``, ``S``, ``F``, startup)
  of its connection — FIFO, which is what pipelining needs. Between two ``Z`` the server's ``C``
  tags (last one kept, count of commands), the first ``E`` (SQLSTATE, message) belong to the
  query being answered. Statement text: the ``Q`` string, the batch's ``P`` query, or for a
  batch that only binds a prepared statement the text its ``P`` registered on this connection.
- Connections seen mid-way (no startup) and streams after a gap resynchronise on a plausible
  message chain; outstanding queries are then dropped (counted) and ``Z`` earlier than the
  oldest known sync point are ignored until the two sides line up again.
"""

from __future__ import annotations

import struct
from collections import deque

import numpy as np

from parsers._pgwire_pair import pair
from parsers._pgwire_walk import BAD, DONE, END, resync, spec_walk, walk_py
from parsers._reassembly import Delivery

STARTUP_CODES = {196608: "3.0", 196610: "3.2"}
SSL_CODE, GSS_CODE, CANCEL_CODE = 80877103, 80877104, 80877102
NEW, STARTUP, SSL_REPLY, TYPED, RESYNC, DEAD = range(6)
TEXT_BYTES = 2048  # raw bytes kept of a statement (500 characters are reported)
TAIL_MAX = 1 << 16  # a message cut at a batch end is carried if its rest is at most this
STARTUP_MSG = 0  # pseudo type of the untyped startup message
_Q, _S, _F, _P, _B, _Z, _C, _E = b"QSFPBZCE"
CLIENT_KEEP = np.zeros(256, dtype=bool)
CLIENT_KEEP[[STARTUP_MSG, _Q, _S, _F, _P, _B]] = True
SERVER_KEEP = np.zeros(256, dtype=bool)
SERVER_KEEP[[_Z, _C, _E]] = True
KEEP = np.stack([SERVER_KEEP, CLIENT_KEEP])  # [from_client, type]
_BE32X2 = struct.Struct(">II").unpack_from


def startup_code(data: bytes | memoryview, p: int = 0) -> int:
    """The code of an untyped startup-phase message at ``p`` (0 if not one)."""
    if len(data) < p + 8:
        return 0
    length, code = _BE32X2(data, p)
    if code in STARTUP_CODES and 8 < length <= 10_000:
        return code
    if code in (SSL_CODE, GSS_CODE, CANCEL_CODE) and length in (8, 16):
        return code
    return 0


def looks_like_pg(data: bytes, from_client: bool) -> bool:
    """Content test for a stream's first payload on a port not known to be PostgreSQL:
    a startup-phase message, or a chain of plausible typed messages covering the payload."""
    if from_client and startup_code(data):
        return True
    out: list[tuple[int, int, int]] = []
    status, p = walk_py(data, 0, len(data), len(data), int(from_client), out)
    if status != DONE or p != len(data) or not out:
        return False
    first = out[0][1]
    strong = b"QPBF" if from_client else b"ZTRC12E"
    return first in strong and (len(out) >= 2 or out[0][2] >= 5)


class PgDir:
    __slots__ = ("phase", "tail", "skip", "skip_msg", "gaps")

    def __init__(self) -> None:
        self.phase = NEW
        self.tail: tuple[bytes, int, int] | None = None  # bytes from a message start, ts, frame
        self.skip = 0  # bytes of a large message still to come
        self.skip_msg: tuple[int, bytes, int, int] | None = None  # type, first bytes, ts, frame
        self.gaps = 0


class PgConn:
    __slots__ = ("stream", "client", "server", "pending", "names", "unnamed", "open_ts", "open_frame", "text",
                 "tag", "ncmd", "err", "aligned", "saw_startup", "tls", "cancel", "version")

    def __init__(self, stream: int) -> None:
        self.stream = stream
        self.client, self.server = PgDir(), PgDir()
        self.pending: deque[tuple[int, int, int, bytes | None]] = deque()  # kind, ts, frame, text
        self.names: dict[bytes, bytes] = {}
        self.unnamed: bytes | None = None
        self.open_ts = -1
        self.open_frame = 0
        self.text: bytes | None = None
        self.tag: bytes | None = None
        self.ncmd = 0
        self.err: bytes | None = None
        self.aligned = False
        self.saw_startup = False
        self.tls = False
        self.cancel = False
        self.version = ""

    def desync(self) -> int:
        lost = len(self.pending)
        self.pending.clear()
        self.aligned = False
        self.open_ts, self.text, self.tag, self.ncmd, self.err = -1, None, None, 0, None
        return lost


class PgWire:
    """PostgreSQL latency over all connections of a capture. ``samples`` holds completed
    queries as tuples (stream, start_ns, end_ns, kind, text, tag, ncmd, error, frame_start,
    frame_end, status); kind is the sync message (``Q``, ``S``, ``F``)."""

    def __init__(self) -> None:
        self.conns: dict[int, PgConn] = {}
        self.samples: list[tuple] = []
        self.setups = 0  # startup → Z pairs (connection setups)
        self.unmatched_z = 0
        self.lost_queries = 0
        self.resyncs = 0
        self.tls_streams = 0
        self.cancels = 0
        self.dead: list[int] = []  # streams that turned encrypted or were cancel requests
        self.frames: list = []  # completed queries paired column-wise (``_pgwire_pair``)
        # which completed queries get their text and tag sliced (set by the consumer): the first
        # ``table_room`` overall, and any taking at least ``detail_ns``
        self.table_room = 1 << 62
        self.detail_ns = 0
        self.rows_out = 0
        self.connections = 0

    def conn(self, stream: int) -> PgConn:
        c = self.conns.get(stream)
        if c is None:
            c = self.conns[stream] = PgConn(stream)
            self.connections += 1
        return c

    def forget(self, stream: int) -> None:
        """A closed connection: its outstanding queries are lost, its state dropped."""
        c = self.conns.pop(stream, None)
        if c is not None:
            self.lost_queries += len([q for q in c.pending if q[0] != STARTUP_MSG])

    def lead(self, keys: np.ndarray) -> dict[int, tuple[bytes, int, int]]:
        """Tails carried from the previous batch for the direction keys of this batch."""
        out = {}
        for k in np.unique(keys).tolist():
            c = self.conns.get(k >> 1)
            if c is not None:
                d = c.client if k & 1 == 0 else c.server
                if d.tail is not None:
                    out[k] = d.tail
                    d.tail = None
        return out

    # -- one batch ------------------------------------------------------------------------
    def process(self, dv: Delivery) -> None:
        if not len(dv):
            return
        data = dv.data
        arr = np.frombuffer(data + b"\0" * 8, dtype=np.uint8)
        key, starts = dv.key, dv.start
        ends = starts + dv.length
        n = len(key)
        new_run = np.ones(n, dtype=bool)
        new_run[1:] = (key[1:] != key[:-1]) | dv.gap[1:]
        run_first = np.flatnonzero(new_run)
        run_last = np.append(run_first[1:], n) - 1
        first_of_key = np.ones(len(run_first), dtype=bool)
        first_of_key[1:] = key[run_first[1:]] != key[run_first[:-1]]
        last_of_key = np.ones(len(run_first), dtype=bool)
        last_of_key[:-1] = key[run_first[1:]] != key[run_first[:-1]]
        run_end = ends[run_last]
        extra: list[tuple[int, int, int, int]] = []  # key, pos, type, length
        override: dict[tuple[int, int], tuple[bytes, int, int]] = {}  # (key, pos) -> body, ts, frame
        t0: list[int | None] = []
        for r, (a_piece, k, fk) in enumerate(zip(run_first.tolist(), key[run_first].tolist(),
                                                 first_of_key.tolist(), strict=True)):
            t0.append(self._run_start(dv, int(a_piece), int(run_last[r]), k, fk, int(run_end[r]), extra, override))
        live = np.asarray([t is not None for t in t0], dtype=bool)
        piece_run = np.cumsum(new_run) - 1
        live_piece = live[piece_run]
        client = (key & 1 == 0).astype(np.int64)
        cand = np.flatnonzero(live_piece)
        status = np.zeros(n, dtype=np.int8)
        epos = np.zeros(n, dtype=np.int64)
        if len(cand):
            st, ep, msgs = spec_walk(arr, data, starts[cand], ends[cand], run_end[piece_run[cand]], client[cand],
                                     KEEP)
            status[cand], epos[cand] = st, ep
            msgs[:, 0] = cand[msgs[:, 0]]
        else:
            msgs = np.zeros((0, 4), dtype=np.int64)
        valid = np.zeros(n, dtype=bool)
        # a run is "simple" when framing starts at its first piece and every speculative walk
        # ends exactly where the next piece starts: all its walks are the true chain
        link_bad = np.ones(n, dtype=np.int64)
        link_bad[:-1] = ~((status[:-1] == DONE) & (epos[:-1] == starts[1:]))
        link_bad[run_last] = status[run_last] == BAD
        t0_arr = np.asarray([-1 if t is None else t for t in t0], dtype=np.int64)
        simple = live & (t0_arr == starts[run_first]) & (np.add.reduceat(link_bad, run_first) == 0)
        valid[simple[piece_run]] = True
        for r in np.flatnonzero(simple & (status[run_last] == END) & last_of_key).tolist():
            self._finish_run(dv, data, int(key[run_first[r]]), END, int(epos[run_last[r]]), int(run_end[r]), True)
        for r in np.flatnonzero(live & ~simple).tolist():
            self._chain(dv, data, r, int(run_first[r]), int(run_last[r]), int(run_end[r]), t0[r], status, epos,
                        valid, extra, bool(last_of_key[r]), client)
        msgs = msgs[valid[msgs[:, 0]]]
        mkey = np.concatenate([key[msgs[:, 0]], np.asarray([e[0] for e in extra], dtype=np.int64)])
        mpos = np.concatenate([msgs[:, 1], np.asarray([e[1] for e in extra], dtype=np.int64)])
        mtype = np.concatenate([msgs[:, 2], np.asarray([e[2] for e in extra], dtype=np.int64)])
        mlen = np.concatenate([msgs[:, 3], np.asarray([e[3] for e in extra], dtype=np.int64)])
        is_client = mkey & 1 == 0
        keep = np.where(is_client, CLIENT_KEEP[mtype], SERVER_KEEP[mtype])
        idx = np.flatnonzero(keep)
        order = idx[np.lexsort((mpos[idx], mkey[idx]))]
        if not len(order):
            return
        piece_first = np.searchsorted(starts, mpos[order], side="right") - 1
        piece_last = np.searchsorted(starts, mpos[order] + mlen[order], side="right") - 1
        ts_first = dv.ts[np.maximum(piece_first, 0)]
        ts_last = dv.ts[np.maximum(piece_last, 0)]
        fr_first = dv.frame[np.maximum(piece_first, 0)]
        fr_last = dv.frame[np.maximum(piece_last, 0)]
        okey, opos, otype, olen = mkey[order], mpos[order], mtype[order], mlen[order]
        ostream = okey >> 1
        streams = np.unique(ostream)
        slow = [s for s in streams.tolist() if not self.conns[s].aligned]
        if override:
            slow = sorted(set(slow) | {k >> 1 for k, _ in override})
        fast = ~np.isin(ostream, slow) if slow else np.ones(len(ostream), dtype=bool)
        if fast.any():
            frame = pair(self, data, arr, okey[fast], opos[fast], otype[fast], olen[fast], ts_first[fast], ts_last[fast],
                         fr_first[fast], fr_last[fast])
            if frame is not None:
                self.frames.append(frame)
        if slow:
            s_ = ~fast
            self._protocol(data, okey[s_].tolist(), opos[s_].tolist(), otype[s_].tolist(), olen[s_].tolist(),
                           ts_first[s_].tolist(), ts_last[s_].tolist(), fr_first[s_].tolist(), fr_last[s_].tolist(),
                           override)

    def _run_start(self, dv: Delivery, a: int, b: int, k: int, first_of_key: bool, end: int,
                   extra: list, override: dict) -> int | None:
        """Where framing starts in run [a..b] (piece indexes): after the startup phase, a
        skipped large message or a resynchronisation. None when the run is not walked."""
        conn = self.conn(k >> 1)
        is_client = k & 1 == 0
        d = conn.client if is_client else conn.server
        p = int(dv.start[a])
        if d.phase == DEAD:
            return None
        if not first_of_key or bool(dv.gap[a]):
            d.skip, d.skip_msg = 0, None
            if d.phase in (TYPED, STARTUP, SSL_REPLY):
                d.phase = RESYNC
                d.gaps += 1
                self.lost_queries += conn.desync()
        if d.skip:
            if d.skip >= end - p:
                d.skip -= end - p
                return None
            p += d.skip
            d.skip = 0
            if d.skip_msg is not None:
                t, head, ts, frame = d.skip_msg
                i = int(np.searchsorted(dv.start, p - 1, side="right")) - 1
                extra.append((k, p - 1, t, len(head) - 1))
                override[(k, p - 1)] = (head, ts, frame, int(dv.ts[i]), int(dv.frame[i]))  # type: ignore[assignment]
                d.skip_msg = None
        data = dv.data
        if d.phase == NEW:
            if is_client:
                d.phase = STARTUP if startup_code(data, p) else RESYNC
            elif conn.server.phase == NEW:
                d.phase = TYPED if conn.saw_startup else RESYNC
        while d.phase in (STARTUP, SSL_REPLY):
            if d.phase == SSL_REPLY:
                if p >= end:
                    return None
                reply = data[p]
                p += 1
                if reply == 0x4E:  # 'N': plain text continues
                    d.phase = TYPED
                elif reply in (0x53, 0x47):  # 'S' TLS / 'G' GSSAPI encryption
                    conn.tls = True
                    conn.client.phase = conn.server.phase = DEAD
                    self.tls_streams += 1
                    self.dead.append(conn.stream)
                    return None
                else:
                    d.phase = RESYNC
                break
            if end - p < 8:
                d.tail = (data[p:end], int(dv.ts[a]), int(dv.frame[a])) if end > p else None
                return None
            length, code = _BE32X2(data, p)
            code = startup_code(data, p)
            if not code:
                d.phase = RESYNC
                break
            if p + length > end:
                d.tail = (data[p:end], int(dv.ts[a]), int(dv.frame[a]))
                return None
            if code in STARTUP_CODES:
                extra.append((k, p, STARTUP_MSG, length - 1))
                conn.saw_startup = True
                conn.aligned = True
                conn.version = STARTUP_CODES[code]
                d.phase = TYPED
                if conn.server.phase == NEW:
                    conn.server.phase = TYPED
            elif code == CANCEL_CODE:
                conn.cancel = True
                self.cancels += 1
                self.dead.append(conn.stream)
                d.phase = DEAD
                return None
            else:  # SSLRequest / GSSENCRequest: the server answers one unframed byte
                conn.server.phase = SSL_REPLY
                conn.saw_startup = True
            p += length
        if d.phase == RESYNC:
            ends = set((dv.start[a:b + 1] + dv.length[a:b + 1]).tolist())
            q = resync(data, p, end, int(is_client), ends)
            if q is None:
                return None
            self.resyncs += 1
            d.phase = TYPED
            p = q
        return p

    def _chain(self, dv: Delivery, data: bytes, r: int, a: int, b: int, end: int, t0: int | None,
               status: np.ndarray, epos: np.ndarray, valid: np.ndarray, extra: list, last_run: bool,
               client: np.ndarray) -> None:
        """Keep the speculative walks the true chain passes through; walk the rest in Python."""
        assert t0 is not None
        starts = dv.start[a:b + 1].tolist()
        ends = (dv.start[a:b + 1] + dv.length[a:b + 1]).tolist()
        st_list, ep_list = status[a:b + 1].tolist(), epos[a:b + 1].tolist()
        k = int(dv.key[a])
        cl = int(client[a])
        conn = self.conns[k >> 1]
        d = conn.client if cl else conn.server
        last = b - a
        j = 0
        p = t0
        piece_ends: set[int] | None = None
        while True:
            if p >= end:
                return
            while ends[j] <= p and j < last:
                j += 1
            if p == starts[j]:
                valid[a + j] = True
                st, q = st_list[j], ep_list[j]
            else:
                out: list[tuple[int, int, int]] = []
                st, q = walk_py(data, p, ends[j], end, cl, out)
                extra.extend((k, *m) for m in out)
            if st == DONE:
                p = q
                continue
            if st == END:
                self._finish_run(dv, data, k, END, q, end, last_run)
                return
            if piece_ends is None:
                piece_ends = set(ends)
            nq = resync(data, q + 1, end, cl, piece_ends)
            d.gaps += 1
            self.lost_queries += conn.desync()
            if nq is None:
                d.phase = RESYNC
                return
            self.resyncs += 1
            p = nq

    def _finish_run(self, dv: Delivery, data: bytes, k: int, st: int, p: int, end: int, last_run: bool) -> None:
        if not last_run or st != END or p >= end:
            return
        conn = self.conns[k >> 1]
        d = conn.client if k & 1 == 0 else conn.server
        i = int(np.searchsorted(dv.start, p, side="right")) - 1
        ts, frame = int(dv.ts[i]), int(dv.frame[i])
        if end - p >= 5:
            length = int.from_bytes(data[p + 1:p + 5], "big")
            rest = p + 1 + length - end
            if rest > TAIL_MAX:
                d.skip = rest
                d.skip_msg = (data[p], data[p:p + min(1 + length, TEXT_BYTES + 5)], ts, frame)
                return
        d.tail = (data[p:end], ts, frame)

    # -- pairing --------------------------------------------------------------------------
    def _protocol(self, data: bytes, mkey: list, mpos: list, mtype: list, mlen: list, ts_first: list,
                  ts_last: list, fr_first: list, fr_last: list, override: dict) -> None:
        conn: PgConn | None = None
        cur = -1
        samples = self.samples
        for k, p, t, ln, t1, t2, f1, f2 in zip(mkey, mpos, mtype, mlen, ts_first, ts_last, fr_first, fr_last,
                                                strict=True):
            if k >> 1 != cur:
                cur = k >> 1
                conn = self.conns[cur]
            assert conn is not None
            body_end = p + 1 + ln
            ov = override.get((k, p)) if override else None
            if ov is not None:
                head, t1, f1, t2, f2 = ov
                body, body_start, body_end = head, 5, len(head)
            else:
                body, body_start = data, p + 5
            if k & 1 == 0:  # client
                if t == _B:
                    if conn.open_ts < 0:
                        conn.open_ts, conn.open_frame = t1, f1
                    if conn.text is None:
                        portal_end = body.find(b"\0", body_start, body_end)
                        name_end = body.find(b"\0", portal_end + 1, body_end)
                        name = body[portal_end + 1:name_end] if portal_end >= 0 and name_end >= 0 else b""
                        conn.text = conn.names.get(name) if name else conn.unnamed
                    continue
                if t == _P:
                    if conn.open_ts < 0:
                        conn.open_ts, conn.open_frame = t1, f1
                    name_end = body.find(b"\0", body_start, body_end)
                    text = body[name_end + 1:min(body_end, name_end + 1 + TEXT_BYTES)] if name_end >= 0 else b""
                    if name_end > body_start:
                        conn.names[body[body_start:name_end]] = text
                    else:
                        conn.unnamed = text
                    if conn.text is None:
                        conn.text = text
                    continue
                if conn.open_ts < 0:
                    conn.open_ts, conn.open_frame = t1, f1
                if t == _Q:
                    conn.text = body[body_start:min(body_end, body_start + TEXT_BYTES)]
                conn.pending.append((t, conn.open_ts, conn.open_frame, conn.text))
                conn.open_ts, conn.text = -1, None
                continue
            if t == _C:
                conn.tag = body[body_start:body_end - 1]
                conn.ncmd += 1
            elif t == _E:
                if conn.err is None:
                    conn.err = body[body_start:min(body_end, body_start + TEXT_BYTES)]
            else:  # Z
                if not conn.pending or (not conn.aligned and conn.pending[0][1] > t2):
                    self.unmatched_z += 1
                else:
                    conn.aligned = True
                    kind, start, frame, text = conn.pending.popleft()
                    if kind == STARTUP_MSG:
                        self.setups += 1
                    else:
                        samples.append((cur, start, t2, kind, text, conn.tag, conn.ncmd, conn.err, frame, f2,
                                        body[body_start] if body_end > body_start else 0))
                conn.tag, conn.ncmd, conn.err = None, 0, None

    def finish(self) -> None:
        for c in self.conns.values():
            self.lost_queries += len([q for q in c.pending if q[0] != STARTUP_MSG])


def error_fields(raw: bytes | None) -> dict[str, str]:
    """SQLSTATE, severity and message of an ErrorResponse body."""
    if not raw:
        return {}
    out: dict[str, str] = {}
    names = {ord("C"): "sqlstate", ord("M"): "message", ord("V"): "severity", ord("S"): "severity"}
    for part in raw.split(b"\0"):
        if part and part[0] in names and names[part[0]] not in out:
            out[names[part[0]]] = part[1:].decode("utf-8", "replace")
    return out


def tag_rows(tag: bytes | None) -> int | None:
    """Rows from a command tag (``SELECT 5`` → 5, ``INSERT 0 1`` → 1, ``BEGIN`` → None)."""
    if not tag:
        return None
    last = tag.rsplit(b" ", 1)[-1]
    return int(last) if last.isdigit() and b" " in tag else None
