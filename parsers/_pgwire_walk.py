"""PostgreSQL wire-protocol message framing over reassembled TCP bytes, vectorised.

After startup every message is ``type byte + Int32 length`` (big-endian, the length counts
itself). Framing is a chain — each length says where the next message starts — so it is
walked *speculatively* from every delivered piece's first byte at once (numpy over all
pieces, one step per message): on loopback and most LANs each send() is one segment, so a
piece usually starts on a message boundary. A chain check then keeps the speculative walks
that the real chain passes through; only pieces where a message straddles the boundary are
walked again in Python from the true position.

Plausibility (used for framing and resynchronisation after a gap): the type byte must be one
the sending side may send, the length >= 4 and <= 1 GiB, fixed-size messages (``Z``, ``S`` sync,
``1``/``2``/``3``, ...) must have their exact length.
"""

from __future__ import annotations

import struct

import numpy as np

from parsers._capture_np import byte_rows

MAX_LEN = 1 << 30
SMALL_ACTIVE = 24  # below this many live walks, continue in Python
FRONTEND = b"QPBEDSHCXdcfpF"
BACKEND = b"ZCTDENnst123ISKRAGHWdcVv"
_FIXED_FRONT = {b"S": 4, b"H": 4, b"X": 4, b"c": 4}
_FIXED_BACK = {b"Z": 5, b"1": 4, b"2": 4, b"3": 4, b"n": 4, b"I": 4, b"c": 4, b"K": 12}
DONE, END, BAD = 1, 2, 3

VALID = np.zeros((2, 256), dtype=bool)  # [from_client, type]
FIXED = np.full((2, 256), -1, dtype=np.int64)
for _t in BACKEND:
    VALID[0, _t] = True
for _t in FRONTEND:
    VALID[1, _t] = True
for _k, _v in _FIXED_BACK.items():
    FIXED[0, _k[0]] = _v
for _k, _v in _FIXED_FRONT.items():
    FIXED[1, _k[0]] = _v
_VALID_PY = (tuple(bool(x) for x in VALID[0]), tuple(bool(x) for x in VALID[1]))
_FIXED_PY = (tuple(int(x) for x in FIXED[0]), tuple(int(x) for x in FIXED[1]))
_BE32 = struct.Struct(">I").unpack_from


def _be32(arr: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return byte_rows(arr, idx, 4).view(">u4").reshape(-1).astype(np.int64)


def plausible(data: bytes, p: int, end: int, client: int) -> int:
    """Length of a plausible message header at ``p`` (0 if not plausible; -1 if cut by ``end``)."""
    if p + 5 > end:
        return -1
    t = data[p]
    if not _VALID_PY[client][t]:
        return 0
    length = _BE32(data, p + 1)[0]
    if length < 4 or length > MAX_LEN:
        return 0
    fixed = _FIXED_PY[client][t]
    if fixed >= 0 and fixed != length:
        return 0
    return length


def walk_py(data: bytes, p: int, limit: int, end: int, client: int, out: list[tuple[int, int, int]]
            ) -> tuple[int, int]:
    """Walk from boundary ``p`` until a boundary >= ``limit``; complete messages go to ``out`` as
    (pos, type, length). Returns (status, position): DONE at the boundary reached, END at the
    start of a message cut by ``end``, BAD at an implausible header."""
    valid, fixed = _VALID_PY[client], _FIXED_PY[client]
    while p < limit:
        if p + 5 > end:
            return END, p
        t = data[p]
        length = _BE32(data, p + 1)[0]
        if not valid[t] or length < 4 or length > MAX_LEN or (fixed[t] >= 0 and fixed[t] != length):
            return BAD, p
        nxt = p + 1 + length
        if nxt > end:
            return END, p
        out.append((p, t, length))
        p = nxt
    return DONE, p


def resync(data: bytes, p: int, end: int, client: int, piece_ends: set[int], max_scan: int = 1 << 16
           ) -> int | None:
    """First position >= ``p`` where a plausible chain starts: two complete messages, or one that
    ends exactly at a segment boundary or at ``end``. None when nothing within ``max_scan``."""
    arr = np.frombuffer(data, dtype=np.uint8, count=min(end, p + max_scan) - p, offset=p)
    for q in (np.flatnonzero(VALID[client][arr]) + p).tolist():
        length = plausible(data, q, end, client)
        if length <= 0:
            continue
        nxt = q + 1 + length
        if nxt > end:
            continue
        if nxt == end or nxt in piece_ends:
            return q
        second = plausible(data, nxt, end, client)
        if second > 0 and nxt + 1 + second <= end:
            return q
        if second < 0:  # the next header is cut by the end of the bytes we have
            return q
    return None


def spec_walk(arr: np.ndarray, data: bytes, start: np.ndarray, limit: np.ndarray, end: np.ndarray,
              client: np.ndarray, keep: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Walk from every ``start`` at once. ``arr`` is ``data`` as uint8 with >= 8 bytes of padding.
    Returns (status, position, messages) with messages as an int64 array of rows
    (walk index, pos, type, length); with ``keep`` (a [from_client, type] bool table) only
    the messages it selects are listed (the walk still steps over all of them)."""
    n = len(start)
    status = np.full(n, DONE, dtype=np.int8)
    pos_out = start.copy()
    p = start.copy()
    active = np.flatnonzero(start < limit)
    parts: list[np.ndarray] = []
    while len(active):
        if len(active) < SMALL_ACTIVE:
            rows: list[tuple[int, int, int]] = []
            for w in active.tolist():
                mine: list[tuple[int, int, int]] = []
                cl = int(client[w])
                st, q = walk_py(data, int(p[w]), int(limit[w]), int(end[w]), cl, mine)
                status[w], pos_out[w] = st, q
                if keep is None:
                    rows.extend((w, *m) for m in mine)
                else:
                    rows.extend((w, *m) for m in mine if keep[cl, m[1]])
            if rows:
                parts.append(np.asarray(rows, dtype=np.int64).reshape(-1, 4))
            break
        pa = p[active]
        ca = client[active]
        ea = end[active]
        have = pa + 5 <= ea
        t = arr[pa].astype(np.int64)
        length = _be32(arr, pa + 1)
        fixed = FIXED[ca, t]
        ok = have & VALID[ca, t] & (length >= 4) & (length <= MAX_LEN) & ((fixed < 0) | (fixed == length))
        nxt = pa + 1 + length
        complete = ok & (nxt <= ea)
        listed = complete if keep is None else complete & keep[ca, t]
        if listed.any():
            parts.append(np.stack([active[listed], pa[listed], t[listed], length[listed]], axis=1))
        stop_end = ~have | (ok & ~complete)
        stop_bad = have & ~ok
        status[active[stop_end]] = END
        pos_out[active[stop_end]] = pa[stop_end]
        status[active[stop_bad]] = BAD
        pos_out[active[stop_bad]] = pa[stop_bad]
        moved = active[complete]
        p[moved] = nxt[complete]
        reached = nxt[complete] >= limit[moved]
        pos_out[moved[reached]] = nxt[complete][reached]
        active = moved[~reached]
    msgs = np.concatenate(parts) if parts else np.zeros((0, 4), dtype=np.int64)
    return status, pos_out, msgs
