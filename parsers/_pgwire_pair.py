"""Vectorised query/ReadyForQuery pairing for connections whose two directions are in step
(the common case): the per-message loop of ``PgWire._protocol`` done with numpy per batch.

Client side: a *group* is the run of messages up to and including a sync point (``Q``, ``S``,
``F``, the startup message); its start is its first message (or the opening carried from the
previous batch), its text the first ``Q``/``P`` of the group, else the statement a ``B`` names.
Server side: a *response* is the run up to and including a ``Z``; its tag is its last ``C``,
``commands`` the number of ``C``, its error the first ``E``. The k-th closed response of a
connection answers its k-th outstanding sync point. Per-connection state carried across
batches (open group, open response, outstanding sync points) is handled per connection;
statement texts and tags are sliced per query; nothing else is per-message Python.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import polars as pl

if TYPE_CHECKING:
    from parsers._pgwire import PgConn, PgWire

_Q, _S, _F, _P, _B, _Z, _C, _E = b"QSFPBZCE"
STARTUP_MSG = 0
TEXT_BYTES = 2048
BIG = np.iinfo(np.int64).max


def _starts(breaks: np.ndarray) -> np.ndarray:
    return np.flatnonzero(breaks)


def pair(wire: PgWire, data: bytes, arr: np.ndarray, key: np.ndarray, pos: np.ndarray, typ: np.ndarray, ln: np.ndarray,
         t1: np.ndarray, t2: np.ndarray, f1: np.ndarray, f2: np.ndarray) -> pl.DataFrame | None:
    """Pair the kept messages of in-step connections (sorted by key, then position; ``arr`` is
    ``data`` as padded uint8); returns completed queries as a frame in the layout of
    ``AppLatency.pg_parts``."""
    client = key & 1 == 0
    stream = key >> 1
    # -- client groups ---------------------------------------------------------------------
    ci = np.flatnonzero(client)
    cs, ct = stream[ci], typ[ci]
    is_sync = np.isin(ct, (_Q, _S, _F, STARTUP_MSG))
    new_group = np.ones(len(ci), dtype=bool)
    new_group[1:] = (cs[1:] != cs[:-1]) | is_sync[:-1]
    g0 = _starts(new_group)
    g_last = np.append(g0[1:], len(ci)) - 1 if len(g0) else g0
    n = np.arange(len(ci))
    text_at = np.minimum.reduceat(np.where(np.isin(ct, (_Q, _P)), n, BIG), g0) if len(ci) else g0
    bind_at = np.minimum.reduceat(np.where(ct == _B, n, BIG), g0) if len(ci) else g0
    g_stream = cs[g0]
    first_of_stream = np.ones(len(g0), dtype=bool)
    first_of_stream[1:] = g_stream[1:] != g_stream[:-1]
    closed = is_sync[g_last]
    named_p = ci[(ct == _P) & (arr[np.minimum(pos[ci] + 5, len(data))] != 0)] if len(ci) else ci
    need_b = np.flatnonzero((text_at == BIG) & (bind_at != BIG))
    if len(need_b):  # unnamed statements matter to Bind-only groups of the same connections
        named_p = np.union1d(named_p, ci[(ct == _P) & np.isin(cs, g_stream[need_b])])
    if len(named_p):
        _register(wire, data, named_p, stream, pos, ln)
    # texts are sliced only for the queries that need one (see ``_Texts``)
    texts = _Texts(wire, data, stream, pos, ln, typ,
                   np.where(text_at != BIG, ci[np.minimum(text_at, max(len(ci) - 1, 0))], -1) if len(ci) else g0,
                   np.where(bind_at != BIG, ci[np.minimum(bind_at, max(len(ci) - 1, 0))], -1) if len(ci) else g0)
    open_ts = t1[ci[g0]].copy()
    open_fr = f1[ci[g0]].copy()
    kinds = ct[g_last]
    # carried-in open groups, carried-out unfinished groups, outstanding sync points
    for gi in np.flatnonzero(first_of_stream).tolist():
        conn = wire.conns[int(g_stream[gi])]
        if conn.open_ts >= 0:  # the group began in an earlier batch: its start and text win
            open_ts[gi], open_fr[gi] = conn.open_ts, conn.open_frame
            if conn.text is not None:
                texts.known[gi] = conn.text
            conn.open_ts, conn.text = -1, None
    for gi in np.flatnonzero(~closed).tolist():
        conn = wire.conns[int(g_stream[gi])]
        conn.open_ts, conn.open_frame, conn.text = int(open_ts[gi]), int(open_fr[gi]), texts.get(gi)
    # -- server responses --------------------------------------------------------------------
    si = np.flatnonzero(~client)
    ss, st = stream[si], typ[si]
    is_z = st == _Z
    new_resp = np.ones(len(si), dtype=bool)
    new_resp[1:] = (ss[1:] != ss[:-1]) | is_z[:-1]
    r0 = _starts(new_resp)
    r_last = np.append(r0[1:], len(si)) - 1 if len(r0) else r0
    k = np.arange(len(si))
    last_c = np.maximum.reduceat(np.where(st == _C, k, -1), r0) if len(si) else r0
    ncmd = np.add.reduceat((st == _C).astype(np.int64), r0) if len(si) else r0
    first_e = np.minimum.reduceat(np.where(st == _E, k, BIG), r0) if len(si) else r0
    r_stream = ss[r0]
    r_first = np.ones(len(r0), dtype=bool)
    r_first[1:] = r_stream[1:] != r_stream[:-1]
    r_closed = is_z[r_last]
    tag_known: dict[int, bytes | None] = {}

    def tag_of(ri: int) -> bytes | None:
        c = int(last_c[ri])
        if c < 0:
            return tag_known.get(ri)
        m = int(si[c])
        return data[int(pos[m]) + 5:int(pos[m]) + int(ln[m])]
    errs: dict[int, bytes] = {}  # response index -> first ErrorResponse body (few)
    for ri in np.flatnonzero(first_e != BIG).tolist():
        e = int(si[first_e[ri]])
        errs[ri] = data[int(pos[e]) + 5:int(pos[e]) + 1 + min(int(ln[e]), TEXT_BYTES)]
    for ri in np.flatnonzero(r_first).tolist():
        conn = wire.conns[int(r_stream[ri])]
        if conn.ncmd or conn.err is not None:
            tag_known[ri] = conn.tag
            ncmd[ri] += conn.ncmd
            if conn.err is not None:
                errs[ri] = conn.err
        conn.tag, conn.ncmd, conn.err = None, 0, None
    for ri in np.flatnonzero(~r_closed).tolist():
        conn = wire.conns[int(r_stream[ri])]
        conn.tag, conn.ncmd, conn.err = tag_of(ri), int(ncmd[ri]), errs.get(ri)
    # -- FIFO per connection ---------------------------------------------------------------------
    sync_g = np.flatnonzero(closed)
    resp_r = np.flatnonzero(r_closed)
    sync_stream, resp_stream = g_stream[sync_g], r_stream[resp_r]
    streams = np.union1d(sync_stream, resp_stream)
    s_lo, s_hi = np.searchsorted(sync_stream, streams), np.searchsorted(sync_stream, streams, side="right")
    z_lo, z_hi = np.searchsorted(resp_stream, streams), np.searchsorted(resp_stream, streams, side="right")
    out_sync: list[int] = []  # group index of the sync point, or -1 - index into carried
    out_resp: list[int] = []
    carried: list[tuple[int, int, int, bytes | None]] = []
    for s, a, b, za, zb in zip(streams.tolist(), s_lo.tolist(), s_hi.tolist(), z_lo.tolist(), z_hi.tolist(),
                               strict=True):
        conn: PgConn = wire.conns[s]
        nz = zb - za
        old = len(conn.pending)
        take_old = min(old, nz)
        for j in range(take_old):
            carried.append(conn.pending.popleft())
            out_sync.append(-len(carried))
            out_resp.append(resp_r[za + j])
        take_new = min(b - a, nz - take_old)
        out_sync.extend(sync_g[a:a + take_new].tolist())
        out_resp.extend(resp_r[za + take_old:za + take_old + take_new].tolist())
        wire.unmatched_z += nz - take_old - take_new
        for gi in sync_g[a + take_new:b].tolist():
            conn.pending.append((int(kinds[gi]), int(open_ts[gi]), int(open_fr[gi]), texts.get(gi)))
    if not out_sync:
        return None
    sync_idx = np.asarray(out_sync, dtype=np.int64)
    resp_idx = np.asarray(out_resp, dtype=np.int64)
    new = sync_idx >= 0
    g = np.where(new, sync_idx, 0)
    old_rows = [carried[-i - 1] for i in sync_idx[~new].tolist()]
    kind = np.where(new, kinds[g], 0)
    start = np.where(new, open_ts[g], 0)
    frame0 = np.where(new, open_fr[g], 0)
    if old_rows:
        kind[~new] = [r[0] for r in old_rows]
        start[~new] = [r[1] for r in old_rows]
        frame0[~new] = [r[2] for r in old_rows]
    zpos = si[r_last[resp_idx]]
    is_query = kind != STARTUP_MSG
    wire.setups += int((~is_query).sum())
    keep = np.flatnonzero(is_query)
    if not len(keep):
        return None
    zk = zpos[keep]
    # detail (text, tag) only where it can be used: table rows, and possible events — among the
    # slowest so far, slow, or failed
    lat = t2[zk] - start[keep]
    rk = resp_idx[keep]
    failed = np.isin(rk, np.fromiter(errs, dtype=np.int64, count=len(errs))) if errs else np.zeros(len(rk), dtype=bool)
    room = wire.table_room - wire.rows_out
    need = (np.arange(len(keep)) < room) | (lat >= wire.detail_ns) | failed
    wire.rows_out += len(keep)
    text: list[bytes | None] = [None] * len(keep)
    tag: list[bytes | None] = [None] * len(keep)
    rows = np.flatnonzero(need)
    gsel = sync_idx[keep][rows]
    for j, t in zip(rows[gsel < 0].tolist(), [carried[-i - 1][3] for i in gsel[gsel < 0].tolist()], strict=True):
        text[j] = t
    for j, t in zip(rows[gsel >= 0].tolist(), texts.many(gsel[gsel >= 0]), strict=True):
        text[j] = t
    rsel = resp_idx[keep][rows]
    cmsg = last_c[rsel]
    found = cmsg >= 0
    m = si[np.maximum(cmsg, 0)]
    for j, ok, a, b, r in zip(rows.tolist(), found.tolist(), (pos[m] + 5).tolist(), (pos[m] + ln[m]).tolist(),
                              rsel.tolist(), strict=True):
        tag[j] = data[a:b] if ok else tag_known.get(r)
    return pl.DataFrame({
        "stream": pl.Series(stream[zk], dtype=pl.Int64), "start": pl.Series(start[keep], dtype=pl.Int64),
        "end": pl.Series(t2[zk], dtype=pl.Int64), "kind": pl.Series(kind[keep], dtype=pl.UInt8),
        "text": pl.Series(text, dtype=pl.Binary), "tag": pl.Series(tag, dtype=pl.Binary),
        "commands": pl.Series(ncmd[resp_idx][keep], dtype=pl.Int64),
        "error": (pl.Series([errs.get(r) for r in rk.tolist()], dtype=pl.Binary) if errs
                  else pl.repeat(None, len(rk), dtype=pl.Binary, eager=True)),
        "frame_start": pl.Series(frame0[keep], dtype=pl.Int64), "frame_end": pl.Series(f2[zk], dtype=pl.Int64),
        "tx_status": pl.Series(arr[np.minimum(pos[zk] + 5, len(data))], dtype=pl.UInt8),
    })


def _register(wire: PgWire, data: bytes, parses: np.ndarray, stream: np.ndarray, pos: np.ndarray,
              ln: np.ndarray) -> None:
    """Statements prepared by Parse messages: named ones by name, the unnamed one per connection."""
    for s, p, end in zip(stream[parses].tolist(), (pos[parses] + 5).tolist(), (pos[parses] + 1 + ln[parses]).tolist(),
                         strict=True):
        conn = wire.conns[s]
        name_end = data.find(b"\0", p, end)
        text = data[name_end + 1:min(end, name_end + 1 + TEXT_BYTES)]
        if name_end > p:
            conn.names[data[p:name_end]] = text
        else:
            conn.unnamed = text


class _Texts:
    """Statement text of a client group, sliced on demand: the first Q's string or P's query,
    else the text of the statement its first Bind names; ``known`` holds texts carried in."""

    def __init__(self, wire: PgWire, data: bytes, stream: np.ndarray, pos: np.ndarray, ln: np.ndarray,
                 typ: np.ndarray, text_msg: np.ndarray, bind_msg: np.ndarray) -> None:
        self.wire, self.data, self.stream, self.pos, self.ln, self.typ = wire, data, stream, pos, ln, typ
        self.text_msg, self.bind_msg = text_msg, bind_msg
        self.known: dict[int, bytes | None] = {}

    def many(self, gis: np.ndarray) -> list[bytes | None]:
        """``get`` for many groups, positions gathered with numpy."""
        out: list[bytes | None] = [None] * len(gis)
        data, known, conns = self.data, self.known, self.wire.conns
        m = self.text_msg[gis]
        direct = np.flatnonzero(m >= 0)
        md = m[direct]
        for j, p, end, is_p in zip(direct.tolist(), (self.pos[md] + 5).tolist(), (self.pos[md] + 1 + self.ln[md]).tolist(),
                                   (self.typ[md] == _P).tolist(), strict=True):
            if is_p:
                p = data.find(b"\0", p, end) + 1
            out[j] = data[p:min(end, p + TEXT_BYTES)]
        bound = np.flatnonzero((m < 0) & (self.bind_msg[gis] >= 0))
        mb = self.bind_msg[gis[bound]]
        for j, s, p, end in zip(bound.tolist(), self.stream[mb].tolist(), (self.pos[mb] + 5).tolist(),
                                (self.pos[mb] + 1 + self.ln[mb]).tolist(), strict=True):
            portal_end = data.find(b"\0", p, end)
            name_end = data.find(b"\0", portal_end + 1, end)
            name = data[portal_end + 1:name_end] if portal_end >= 0 and name_end >= 0 else b""
            conn = conns[s]
            out[j] = conn.names.get(name) if name else conn.unnamed
        if known:
            for j, gi in enumerate(gis.tolist()):
                if gi in known:
                    out[j] = known[gi]
        return out

    def get(self, gi: int) -> bytes | None:
        if gi in self.known:
            return self.known[gi]
        data = self.data
        m = int(self.text_msg[gi])
        if m >= 0:
            p, end = int(self.pos[m]) + 5, int(self.pos[m]) + 1 + int(self.ln[m])
            if self.typ[m] == _P:
                p = data.find(b"\0", p, end) + 1
            return data[p:min(end, p + TEXT_BYTES)]
        b = int(self.bind_msg[gi])
        if b < 0:
            return None
        p, end = int(self.pos[b]) + 5, int(self.pos[b]) + 1 + int(self.ln[b])
        portal_end = data.find(b"\0", p, end)
        name_end = data.find(b"\0", portal_end + 1, end)
        name = data[portal_end + 1:name_end] if portal_end >= 0 and name_end >= 0 else b""
        conn = self.wire.conns[int(self.stream[b])]
        return conn.names.get(name) if name else conn.unnamed
