"""The classic-pcap record walk: offsets of the records in a stretch of the file (and
``epb_chain``: runs of pcapng enhanced packet blocks, found the same way).

Records are chained by their lengths (each header's captured length says where the next
record starts), so the walk is inherently sequential; ``record_chain`` follows it without
per-record Python (see ``_walk_vector``) and falls back to ``_walk_py``, one record at a time,
for short stretches and where the vectorised chain cannot continue. Both give the same
records, stop position and corrupt-length verdict.
"""

from __future__ import annotations

import struct

import numpy as np

from parsers._capture_np import byte_rows

VECTOR_MIN_BYTES = 1 << 16  # below this much data the record walk is per record
VECTOR_RETRY_RECORDS = 256  # records walked one by one where the vectorised chain breaks
WALK_WINDOW = 1 << 21  # bytes scanned for record headers at once


def _walk_py(data: bytes, n: int, pos: int, order: str, cap_limit: int, max_records: int
             ) -> tuple[list[int], int, int, bool]:
    """Follow the record-length chain in ``data[:n]`` from ``pos`` one record at a time (at most
    ``max_records``): (record positions, where it stopped, corrupt caplen or 0, finished)."""
    caplen_at = struct.Struct(order + "I").unpack_from
    limit = n - 16
    positions: list[int] = []
    append = positions.append
    while pos <= limit:
        if len(positions) >= max_records:
            return positions, pos, 0, False
        caplen = caplen_at(data, pos + 8)[0]
        end = pos + 16 + caplen
        if end > n or caplen > cap_limit:
            return positions, pos, caplen if caplen > cap_limit else 0, True
        append(pos)
        pos = end
    return positions, pos, 0, True


def _walk_vector(arr: np.ndarray, pos: int, order: str, cap_limit: int, frac_limit: int
                 ) -> tuple[np.ndarray, int, int, bool]:
    """The record chain from ``pos`` without per-record Python. Candidates are the offsets whose
    two high timestamp bytes equal those of the record at ``pos`` (every record of the same
    ~18 hours, plus a few payload look-alikes) and whose sub-second field is below
    ``frac_limit``; the chain is followed from ``pos`` through consecutive candidates (each
    the successor of the one before), jumping over look-alikes (searchsorted where the next
    candidate is not the successor). Stops where the next record is not a candidate (timestamp
    high bytes changed, or fewer than 16 bytes left): (positions, stop, corrupt caplen or 0,
    finished) with ``finished`` False when the caller must continue record by record."""
    n = len(arr)
    count = n - 15 - pos  # offsets i with i + 16 <= n
    empty = np.zeros(0, dtype=np.int64)
    if count <= 0:
        return empty, pos, 0, True
    at = pos + (2 if order == "<" else 0)  # the timestamp's high 16 bits, read at every offset
    value = int.from_bytes(arr[at:at + 2].tobytes(), "little" if order == "<" else "big")
    dt = np.dtype(order + "u2")
    even = np.frombuffer(arr, dtype=dt, count=(n - at) // 2, offset=at)
    odd = np.frombuffer(arr, dtype=dt, count=(n - at - 1) // 2, offset=at + 1)
    cand = np.concatenate([np.flatnonzero(even == value) * 2, np.flatnonzero(odd == value) * 2 + 1])
    cand.sort()
    cand = cand[:np.searchsorted(cand, count)] + pos
    # the sub-second field (look-alikes rarely fit) and the captured length, in one gather
    fields = byte_rows(arr, np.minimum(cand + 4, len(arr) - 8), 8).view(order + "u4")
    plausible = fields[:, 0] < frac_limit
    plausible[0] = True
    cand = cand[plausible]
    caplen = fields[plausible, 1].astype(np.int64)
    nxt = cand + 16 + caplen
    good = (caplen <= cap_limit) & (nxt <= n)
    consecutive = np.zeros(len(cand), dtype=bool)  # the next candidate is this record's successor
    np.equal(cand[1:], nxt[:-1], out=consecutive[:-1])
    consecutive &= good
    breaks = np.flatnonzero(~consecutive)  # the last candidate always breaks
    parts: list[np.ndarray] = []
    i = 0  # cand[0] == pos
    while True:
        b = int(breaks[np.searchsorted(breaks, i)])
        if not good[b]:  # the record at cand[b] is cut by the end of the data, or corrupt
            parts.append(cand[i:b])
            c = int(caplen[b])
            return np.concatenate(parts), int(cand[b]), c if c > cap_limit else 0, True
        parts.append(cand[i:b + 1])
        succ = int(np.searchsorted(cand, nxt[b]))
        if succ < len(cand) and cand[succ] == nxt[b]:  # a payload look-alike sits before the successor
            i = succ
            continue
        stop = int(nxt[b])
        return np.concatenate(parts), stop, 0, stop > n - 16


def record_chain(data: bytes, n: int, order: str, cap_limit: int, frac_limit: int = 1 << 32
                 ) -> tuple[np.ndarray, int, int]:
    """Offsets of the complete pcap records in ``data[:n]`` (which starts at a record), where
    the walk stopped, and the caplen of a corrupt record header there (0 when the data just ends)."""
    arr = np.frombuffer(data, dtype=np.uint8, count=n)
    pos = 0
    parts: list[np.ndarray] = []
    window = WALK_WINDOW
    while True:
        if n - pos < VECTOR_MIN_BYTES:
            found, pos, corrupt, done = _walk_py(data, n, pos, order, cap_limit, 1 << 62)
            parts.append(np.asarray(found, dtype=np.int64))
            break
        lim = min(n, pos + window)  # a window at a time: its temporaries stay in the CPU caches
        start = pos
        got, pos, corrupt, done = _walk_vector(arr[:lim], pos, order, cap_limit, frac_limit)
        parts.append(got)
        if done:
            if lim < n and not corrupt:  # the window ended, not the data
                window = WALK_WINDOW if pos > start else 2 * window  # a record longer than the window
                continue
            break
        # the next record's timestamp differs in its high bytes: a few records one by one
        found, pos, corrupt, done = _walk_py(data, n, pos, order, cap_limit, VECTOR_RETRY_RECORDS)
        parts.append(np.asarray(found, dtype=np.int64))
        if done:
            break
    return np.concatenate(parts) if len(parts) > 1 else parts[0], pos, corrupt


# -- pcapng enhanced packet blocks --------------------------------------------------------

EPB_TYPE = 6
MAX_BLOCK = 1 << 20  # the pcapng walk's block length limit (MAX_CAPLEN * 4)


def epb_chain(arr: np.ndarray, pos: int, n: int, order: str, room: int, window: int
              ) -> tuple[np.ndarray, np.ndarray]:
    """Offsets and lengths of the consecutive, complete, validly sized enhanced packet blocks
    from ``pos`` (an EPB) within ``arr[pos:min(n, pos + window)]``, at most ``room`` of them —
    the blocks the per-block pcapng walk would take one at a time, without per-block Python.
    Candidates are the offsets holding the EPB type word; the chain follows each block's
    length and ends before the first block that is not a candidate (another block type, or
    one cut by the window) or has an invalid length, which the caller then walks itself."""
    seg = arr[pos:min(n, pos + window)]
    empty = np.zeros(0, dtype=np.int64)
    if len(seg) < 24:
        return empty, empty
    at = 0 if order == "<" else 2  # the type word's half that holds the 6
    dt = np.dtype(order + "u2")
    half = []
    for par in (0, 1):
        start = at + par
        count = (len(seg) - 12 - par) // 2  # type + length + 4 more bytes must be present
        if count <= 0:
            half.append(empty)
            continue
        words = np.frombuffer(seg, dtype=dt, count=count, offset=start)
        half.append(np.flatnonzero(words == EPB_TYPE) * 2 + start)
    cand = np.concatenate(half) - at
    cand.sort()
    cand = cand[cand >= 0]
    fields = byte_rows(seg, cand, 8).view(order + "u4")  # type and block length
    is_epb = fields[:, 0] == EPB_TYPE
    cand = cand[is_epb]
    if not len(cand) or cand[0] != 0:
        return empty, empty
    blen = fields[is_epb, 1].astype(np.int64)
    nxt = cand + blen
    good = (blen >= 12) & (blen % 4 == 0) & (blen <= MAX_BLOCK) & (nxt <= len(seg))
    consecutive = np.zeros(len(cand), dtype=bool)
    np.equal(cand[1:], nxt[:-1], out=consecutive[:-1])
    consecutive &= good
    breaks = np.flatnonzero(~consecutive)
    parts: list[np.ndarray] = []
    i = 0
    while True:
        b = int(breaks[np.searchsorted(breaks, i)])
        if not good[b]:
            parts.append(np.arange(i, b))
            break
        parts.append(np.arange(i, b + 1))
        succ = int(np.searchsorted(cand, nxt[b]))
        if succ < len(cand) and cand[succ] == nxt[b]:  # payload look-alikes sit before the next block
            i = succ
            continue
        break
    idx = np.concatenate(parts)[:room]
    return cand[idx] + pos, blen[idx]
