"""TCP sequence analysis with Wireshark's definitions (``tcp_analyze_sequence_number`` in
packet-tcp.c; User's Guide §7.5), vectorised over a batch with per-direction state carried
between batches.

Everything tshark keeps per direction (next expected sequence number and when it last
advanced, last ACK/window/time, duplicate-ACK count, flags of the last segment, unacked
segments for ACK RTT) and per stream (most recent SYN time, initial RTT) lives in
``AnalysisState``. A batch is processed in stream order with segmented numpy scans
(running maxima, forward fills, segmented cumulative sums); sequence numbers are unwrapped
to 64 bits per sequence space (a direction's seq and the other direction's ack), so
tshark's modular comparisons become plain ones.

Zero-window probes feed back into ``nextseq`` (a probe does not advance it); a stream with a
probe candidate in a batch is re-run through ``_sequential`` — the same rules written
per packet, which is also the reference the vectorised path is tested against.

Deviations (documented, rare): ACK-only removal of unacked segments (tshark also lets a
non-ACK packet's zero ack field remove them), no cap of 10,000 unacked segments, no
"ACKed unseen segment" flag, no MPTCP.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from parsers._capture_decode import TH_ACK, TH_FIN, TH_RST, TH_SYN, TcpColumns
from parsers._capture_np import stable_argsort

# analysis flag bits (per packet)
RETRANS, FAST, SPURIOUS, OOO, LOST, DUP_ACK, ZERO_WIN, ZW_PROBE, KEEP_ALIVE = (1 << i for i in range(9))
ANY_RETRANS = RETRANS | FAST | SPURIOUS
_KA_BIT, _ZWP_BIT = 1, 2  # lastsegmentflags bits that matter
M32 = 0xFFFFFFFF
OOO_DEFAULT_NS = 3_000_000
FAST_WINDOW_NS = 20_000_000
PENDING_MAX_AGE_NS = 120 * 1_000_000_000
_REL_BIAS = 1 << 36
_RANK_SHIFT = 1 << 40

_DIR_FIELDS = ("sp_set", "sp_raw", "sp_u", "nx_set", "nx_u", "nx_time", "lastack", "last_time", "window",
               "dupack", "lastflags")
_STREAM_FIELDS = ("mru_syn", "first_rtt")


class AnalysisState:
    """Per-direction (index 2*stream+dir) and per-stream state carried between batches."""

    def __init__(self) -> None:
        self.n_streams = 0
        self.d: dict[str, np.ndarray] = {f: np.zeros(0, dtype=np.int64) for f in _DIR_FIELDS}
        self.s: dict[str, np.ndarray] = {f: np.zeros(0, dtype=np.int64) for f in _STREAM_FIELDS}
        # unacked segments waiting for their ACK: direction index, unwrapped nextseq, time
        self.pend_g = np.zeros(0, dtype=np.int64)
        self.pend_n = np.zeros(0, dtype=np.int64)
        self.pend_t = np.zeros(0, dtype=np.int64)

    def ensure(self, n_streams: int) -> None:
        if n_streams <= self.n_streams:
            return
        cap = max(n_streams, self.n_streams * 2, 1024)
        for table, per in ((self.d, 2), (self.s, 1)):
            for name, arr in table.items():
                if len(arr) < cap * per:
                    grown = np.zeros(cap * per, dtype=np.int64)
                    grown[:len(arr)] = arr
                    table[name] = grown
        self.n_streams = n_streams


@dataclass
class BatchAnalysis:
    flags: np.ndarray  # per packet (file order) analysis bits
    rtt_ns: np.ndarray  # ACK RTT measured at this packet, -1 when none
    order: np.ndarray  # the analysed rows in stream order (rows without a known length excluded)


def _wrap(x: np.ndarray) -> np.ndarray:
    """Signed 32-bit difference (tshark's (gint32)(a - b))."""
    return ((x + (1 << 31)) & M32) - (1 << 31)


def _ffill(cond: np.ndarray, ss: np.ndarray) -> np.ndarray:
    """Per row: last position <= row (same stream) where ``cond``; ss-1 when none."""
    pos = np.arange(len(cond))
    return np.maximum.accumulate(np.where(cond, pos, ss - 1))


def _before(last_incl: np.ndarray, ss: np.ndarray) -> np.ndarray:
    """Shift a forward-fill by one row: last position strictly before the row (or ss-1)."""
    out = np.empty_like(last_incl)
    out[0] = -1
    out[1:] = last_incl[:-1]
    return np.maximum(out, ss - 1)


def analyze(cols: TcpColumns, stream: np.ndarray, dirn: np.ndarray, st: AnalysisState) -> BatchAnalysis:
    """Analyse one batch (rows in file order; ``stream``/``dirn`` from the flow table)."""
    n = len(cols)
    flags_out = np.zeros(n, dtype=np.int64)
    rtt_out = np.full(n, -1, dtype=np.int64)
    ok = cols.seglen >= 0  # tshark does not analyse segments whose length it cannot know
    rows = np.flatnonzero(ok)
    if len(rows) == 0:
        return BatchAnalysis(flags_out, rtt_out, rows)
    order = rows[stable_argsort(stream[rows])]
    S = stream[order]
    D = dirn[order]
    G = S * 2 + D
    T = cols.ts_ns[order]
    SEQ = cols.seq[order]
    ACK = cols.ack[order]
    F = cols.flags[order]
    W = cols.window[order]
    L = cols.seglen[order]
    m = len(order)
    pos = np.arange(m, dtype=np.int32)  # row indexes as int32: half the memory traffic
    first = np.ones(m, dtype=bool)
    first[1:] = S[1:] != S[:-1]
    ss = np.maximum.accumulate(np.where(first, pos, 0))
    ssm1 = ss - 1

    def ffill(cond: np.ndarray) -> np.ndarray:  # _ffill with the batch's pos/ss
        return np.maximum.accumulate(np.where(cond, pos, ssm1))

    def before(last_incl: np.ndarray) -> np.ndarray:  # _before
        out = np.empty_like(last_incl)
        out[0] = -1
        out[1:] = last_incl[:-1]
        return np.maximum(out, ssm1, out=out)

    starts = np.flatnonzero(first)
    rank = np.cumsum(first) - 1
    dst, sst = st.d, st.s
    snap = _Snapshot(st, S[starts])

    has_ack = (F & TH_ACK) != 0
    synfin = ((F & (TH_SYN | TH_FIN)) != 0).astype(np.int64)
    no_sfr = (F & (TH_SYN | TH_FIN | TH_RST)) == 0

    # previous row of the same / the other direction (in-stream), or ss-1
    is_d = (D == 0, D == 1)
    gks = (S * 2, S * 2 + 1)
    last_d = [ffill(is_d[k]) for k in (0, 1)]
    prev_d = [before(x) for x in last_d]
    prev_same = np.where(is_d[0], prev_d[0], prev_d[1])
    prev_other = np.where(is_d[0], prev_d[1], prev_d[0])
    has_same = prev_same >= ss
    has_other = prev_other >= ss
    Gs, Go = G, G ^ 1
    ps, po = np.maximum(prev_same, 0), np.maximum(prev_other, 0)

    # -- unwrap both sequence spaces (space k: seq of dir k, ack of dir 1-k) -------------
    U = []
    for k in (0, 1):
        val = np.where(is_d[k], SEQ, ACK)
        valid = is_d[k] | has_ack
        lv_end = ffill(valid)
        lastv = before(lv_end)
        gk = gks[k]
        carried = dst["sp_set"][gk] != 0
        prev_raw = np.where(lastv >= ss, val[np.maximum(lastv, 0)], dst["sp_raw"][gk])
        delta = np.where(valid & ((lastv >= ss) | carried), _wrap(val - prev_raw), 0)
        first_valid = valid & (lastv < ss)
        # stream base: carried unwrapped value, else the first valid raw value
        fv_idx = np.flatnonzero(first_valid)
        base = np.where(carried[starts], dst["sp_u"][S[starts] * 2 + k], 0)
        if len(fv_idx):
            r = rank[fv_idx]
            nb = ~carried[fv_idx]
            base[r[nb]] = val[fv_idx][nb]
        cs = np.cumsum(delta)
        cs_before = np.where(starts > 0, cs[np.maximum(starts - 1, 0)], 0)
        u = cs - cs_before[rank] + base[rank]
        U.append(u)
        # carry: last valid row of each stream
        ends = np.append(starts[1:], m) - 1
        last_valid = lv_end[ends]
        have = last_valid >= starts
        gsel = S[starts[have]] * 2 + k
        dst["sp_set"][gsel] = 1
        dst["sp_raw"][gsel] = val[last_valid[have]]
        dst["sp_u"][gsel] = u[last_valid[have]]
    seq_u = np.where(is_d[0], U[0], U[1])
    ack_u = np.where(is_d[0], U[1], U[0])
    end_u = seq_u + L + synfin

    # -- next expected sequence number before each row ---------------------------------
    base_s = np.minimum.reduceat(np.minimum(U[0], U[1]), starts)[rank]
    nx_before = np.zeros(m, dtype=np.int64)
    nx_has = np.zeros(m, dtype=bool)
    nxt_before = np.zeros(m, dtype=np.int64)
    advanced = np.zeros(m, dtype=bool)
    for k in (0, 1):
        sel = is_d[k]
        gk = gks[k]
        rel = np.where(sel, np.clip(end_u - base_s + _REL_BIAS, 1, _RANK_SHIFT - 1), 0)
        key = rank * _RANK_SHIFT + rel
        cm = np.maximum.accumulate(key) - rank * _RANK_SHIFT  # inclusive, 0 = none yet
        p = prev_d[k]
        inb = (p >= ss) & (cm[np.maximum(p, 0)] > 0)
        inval = cm[np.maximum(p, 0)] - _REL_BIAS + base_s
        car = dst["nx_set"][gk] != 0
        carv = dst["nx_u"][gk]
        val = np.where(inb & car, np.maximum(inval, carv), np.where(inb, inval, carv))
        nx_before = np.where(sel, val, nx_before)
        nx_has = np.where(sel, inb | car, nx_has)
    advanced = ~nx_has | (end_u > nx_before)
    adv_d = []
    for k in (0, 1):
        sel = is_d[k]
        adv_d.append(ffill(sel & advanced))
        la = before(adv_d[k])
        t = np.where(la >= ss, T[np.maximum(la, 0)], dst["nx_time"][gks[k]])
        nxt_before = np.where(sel, t, nxt_before)
    nx_raw = np.where(nx_has, nx_before & M32, 0)

    # -- what the previous packets left behind -----------------------------------------
    win_prev = np.where(has_same, W[ps], dst["window"][Gs])
    ack_prev = np.where(has_same, ACK[ps], dst["lastack"][Gs])
    rev_ack = np.where(has_other, ACK[po], dst["lastack"][Go])
    rev_time = np.where(has_other, T[po], dst["last_time"][Go])
    rev_win = np.where(has_other, W[po], dst["window"][Go])

    zwp = (L == 1) & (SEQ == nx_raw) & (rev_win == 0)
    keepalive = (L <= 1) & (SEQ == ((nx_raw - 1) & M32)) & no_sfr
    lastflags = np.where(keepalive, _KA_BIT, 0) | np.where(zwp, _ZWP_BIT, 0)
    rev_flags = np.where(has_other, lastflags[po], dst["lastflags"][Go])
    same = (L == 0) & (W != 0) & (W == win_prev) & (SEQ == nx_raw) & (ACK == ack_prev) & no_sfr
    dup = same & ((rev_flags & _KA_BIT) == 0) & ~zwp
    reset = ACK != ack_prev
    dupack_after = np.zeros(m, dtype=np.int64)
    for k in (0, 1):
        sel = is_d[k]
        c = np.cumsum(dup & sel)
        lr = ffill(reset & sel)
        c_at_lr = c[np.maximum(lr, 0)]
        c_before_start = np.where(ss > 0, c[np.maximum(ss - 1, 0)], 0)
        val = np.where(lr >= ss, c - c_at_lr, dst["dupack"][gks[k]] + c - c_before_start)
        dupack_after = np.where(sel, val, dupack_after)
    rev_dup = np.where(has_other, dupack_after[po], dst["dupack"][Go])

    # -- initial RTT (tshark's ts_first_rtt) known before each row ---------------------
    first_rtt = _initial_rtt(S, T, F, ss, rank, starts, sst)

    zero_win = (W == 0) & no_sfr & ~zwp
    lost = nx_has & (_wrap(SEQ - nx_raw) > 0) & ((F & TH_RST) == 0) & ~zwp
    carries = ((L > 0) | (synfin > 0)) & ~(keepalive & ~zwp)
    sna = nx_has & (_wrap(SEQ - nx_raw) < 0) & ~((L > 1) & (SEQ == ((nx_raw - 1) & M32)))
    spurious = carries & (L > 0) & (rev_ack != 0) & (_wrap(rev_ack - (SEQ + L)) >= 0)
    dt_fast = T - rev_time
    fast = carries & ~spurious & sna & (rev_dup >= 2) & (rev_ack == SEQ) & (dt_fast >= 0) & (
        dt_fast < FAST_WINDOW_NS)
    thres = np.where(first_rtt != 0, first_rtt, OOO_DEFAULT_NS).astype(np.uint64)
    dt_ooo = (T - nxt_before).astype(np.uint64)
    ooo = carries & ~spurious & ~fast & sna & (dt_ooo < thres) & (nx_raw != ((SEQ + L + synfin) & M32))
    retrans = carries & ~spurious & ~fast & ~ooo & sna

    flags = (np.where(retrans, RETRANS, 0) | np.where(fast, FAST, 0) | np.where(spurious, SPURIOUS, 0)
             | np.where(ooo, OOO, 0) | np.where(lost, LOST, 0) | np.where(dup, DUP_ACK, 0)
             | np.where(zero_win, ZERO_WIN, 0) | np.where(zwp, ZW_PROBE, 0) | np.where(keepalive, KEEP_ALIVE, 0))
    rtt = _ack_rtt(S, D, T, F, seq_u, ack_u, end_u, L, synfin, starts, rank, base_s, st)

    # -- carry per-direction state --------------------------------------------------------
    for k in (0, 1):
        lastk = last_d[k]
        ends = np.append(starts[1:], m) - 1
        li = lastk[ends]
        have = li >= starts
        gsel = S[starts[have]] * 2 + k
        idx = li[have]
        nxn = np.maximum(np.where(nx_has[idx], nx_before[idx], end_u[idx]), end_u[idx])
        adv_last = adv_d[k][ends][have]
        adv_ok = adv_last >= starts[have]
        dst["nx_time"][gsel] = np.where(adv_ok, T[np.maximum(adv_last, 0)], dst["nx_time"][gsel])
        dst["nx_u"][gsel] = nxn
        dst["nx_set"][gsel] = 1
        dst["lastack"][gsel] = ACK[idx]
        dst["last_time"][gsel] = T[idx]
        dst["window"][gsel] = W[idx]
        dst["dupack"][gsel] = dupack_after[idx]
        dst["lastflags"][gsel] = lastflags[idx]

    # streams with a zero-window-probe candidate: exact per-packet rules
    if zwp.any():
        for s_id in np.unique(S[zwp]).tolist():
            a, b = np.searchsorted(S, [s_id, s_id + 1])
            snap.restore(st, s_id)
            flags[a:b], rtt[a:b] = sequential(order[a:b], cols, dirn, s_id, st)
    flags_out[order] = flags
    rtt_out[order] = rtt
    return BatchAnalysis(flags_out, rtt_out, order)


def _initial_rtt(S, T, F, ss, rank, starts, sst) -> np.ndarray:
    """tshark: the first pure ACK after a SYN sets iRTT = its time - most recent SYN time."""
    m = len(S)
    pure_syn = (F & (TH_SYN | TH_ACK)) == TH_SYN
    pure_ack = (F & (TH_SYN | TH_ACK)) == TH_ACK
    lsyn = _ffill(pure_syn, ss)
    mru = np.where(lsyn >= ss, T[np.maximum(lsyn, 0)], sst["mru_syn"][S])
    carried = sst["first_rtt"][S]
    cand = pure_ack & (mru != 0) & (carried == 0) & (T - mru != 0)
    out = carried.copy()
    if cand.any():
        ci = np.flatnonzero(cand)
        sc = S[ci]  # ascending (rows are in stream order): the first candidate of each stream
        ci = ci[np.flatnonzero(np.r_[True, sc[1:] != sc[:-1]])]
        value = T[ci] - mru[ci]
        known_from = np.full(len(starts), m, dtype=np.int64)
        val_by_rank = np.zeros(len(starts), dtype=np.int64)
        known_from[rank[ci]] = ci + 1
        val_by_rank[rank[ci]] = value
        pos = np.arange(m)
        out = np.where(pos >= known_from[rank], val_by_rank[rank], out)
        sst["first_rtt"][S[ci]] = value
    ends = np.append(starts[1:], m) - 1
    have = lsyn[ends] >= starts
    sst["mru_syn"][S[starts[have]]] = T[lsyn[ends][have]]
    return out


def _ack_rtt(S, D, T, F, seq_u, ack_u, end_u, L, synfin, starts, rank, base_s, st: AnalysisState) -> np.ndarray:
    """ACK RTT: a packet whose ack equals the end of a still-unacked segment of the other
    direction measures the time since that segment (the oldest one, as tshark keeps it)."""
    m = len(S)
    rtt = np.full(m, -1, dtype=np.int64)
    srank = np.full(st.n_streams + 1, -1, dtype=np.int64)
    srank[S[starts]] = np.arange(len(starts))
    keep_g, keep_n, keep_t = [], [], []
    pg, pn, pt = st.pend_g, st.pend_n, st.pend_t
    in_batch = srank[pg // 2] >= 0 if len(pg) else np.zeros(0, dtype=bool)
    keep_g.append(pg[~in_batch])
    keep_n.append(pn[~in_batch])
    keep_t.append(pt[~in_batch])
    tmax = int(T.max())
    for k in (0, 1):
        seg = (D == k) & ((L > 0) | (synfin > 0))
        ackr = (D != k) & ((F & TH_ACK) != 0)
        sp = np.flatnonzero(seg)
        s_pos, s_n, s_t, s_s = sp, end_u[sp], T[sp], S[sp]
        pk = in_batch & (pg % 2 == k)
        if pk.any():
            ps_ = pg[pk] // 2
            s_pos = np.concatenate([starts[srank[ps_]] - 1, s_pos])
            s_n = np.concatenate([pn[pk], s_n])
            s_t = np.concatenate([pt[pk], s_t])
            s_s = np.concatenate([ps_, s_s])
        if len(s_pos) == 0:
            continue
        ap = np.flatnonzero(ackr)
        matched = np.zeros(len(s_pos), dtype=bool)
        if len(ap):
            a_s = S[ap]
            a_r = rank[ap]
            bs = base_s[ap]
            rel = np.clip(ack_u[ap] - bs + _REL_BIAS, 1, _RANK_SHIFT - 1)
            cm = np.maximum.accumulate(a_r * _RANK_SHIFT + rel)
            r_seg = srank[s_s]
            seg_base = base_s[starts][r_seg]
            key = r_seg * _RANK_SHIFT + np.clip(s_n - seg_base + _REL_BIAS, 1, _RANK_SHIFT - 1)
            j = np.searchsorted(cm, key, side="left")
            acks_upto = np.cumsum(ackr)  # ack rows at or before each position (= searchsorted(ap, ., "right"))
            lo = np.where(s_pos >= 0, acks_upto[np.maximum(s_pos, 0)], 0)
            j = np.maximum(j, lo)
            valid = j < len(ap)
            jj = np.minimum(j, len(ap) - 1)
            valid &= (a_s[jj] == s_s) & (ack_u[ap[jj]] >= s_n)
            matched = valid
            exact = valid & (ack_u[ap[jj]] == s_n)
            if exact.any():
                rows = ap[jj[exact]]
                np.maximum.at(rtt, rows, T[rows] - s_t[exact])
        left = ~matched & (s_t >= tmax - PENDING_MAX_AGE_NS)
        keep_g.append(s_s[left] * 2 + k)
        keep_n.append(s_n[left])
        keep_t.append(s_t[left])
    st.pend_g = np.concatenate(keep_g)
    st.pend_n = np.concatenate(keep_n)
    st.pend_t = np.concatenate(keep_t)
    return rtt


# -- the per-packet reference -------------------------------------------------------------

class _Snapshot:
    """Pre-batch state of the batch's streams, to re-run one of them per packet."""

    def __init__(self, st: AnalysisState, streams: np.ndarray) -> None:
        self.index = {s: i for i, s in enumerate(streams.tolist())}
        self.d = {f: (st.d[f][2 * streams].copy(), st.d[f][2 * streams + 1].copy()) for f in _DIR_FIELDS}
        self.s = {f: st.s[f][streams].copy() for f in _STREAM_FIELDS}
        self.pend = (st.pend_g, st.pend_n, st.pend_t)  # replaced, never mutated, by analyze

    def restore(self, st: AnalysisState, s_id: int) -> None:
        i = self.index[s_id]
        for f, (v0, v1) in self.d.items():
            st.d[f][2 * s_id], st.d[f][2 * s_id + 1] = v0[i], v1[i]
        for f, v in self.s.items():
            st.s[f][s_id] = v[i]
        pg, pn, pt = self.pend
        old = (pg // 2) == s_id
        other = (st.pend_g // 2) != s_id
        st.pend_g = np.concatenate([st.pend_g[other], pg[old]])
        st.pend_n = np.concatenate([st.pend_n[other], pn[old]])
        st.pend_t = np.concatenate([st.pend_t[other], pt[old]])


def sequential(rows: np.ndarray, cols: TcpColumns, dirn: np.ndarray, s_id: int,
               st: AnalysisState) -> tuple[np.ndarray, np.ndarray]:
    """tshark's rules packet by packet for one stream's ``rows`` (file order), updating ``st``."""
    d = {f: [int(st.d[f][2 * s_id]), int(st.d[f][2 * s_id + 1])] for f in _DIR_FIELDS}
    mru_syn, first_rtt = int(st.s["mru_syn"][s_id]), int(st.s["first_rtt"][s_id])
    mine = (st.pend_g // 2) == s_id
    pending: list[list[tuple[int, int]]] = [[], []]
    for g_, n_, t_ in zip(st.pend_g[mine].tolist(), st.pend_n[mine].tolist(), st.pend_t[mine].tolist(), strict=True):
        pending[g_ % 2].append((n_, t_))
    out_f = np.zeros(len(rows), dtype=np.int64)
    out_r = np.full(len(rows), -1, dtype=np.int64)

    def unwrap(k: int, raw: int) -> int:
        if d["sp_set"][k]:
            u = d["sp_u"][k] + (((raw - d["sp_raw"][k] + (1 << 31)) & M32) - (1 << 31))
        else:
            u = raw
        d["sp_set"][k], d["sp_raw"][k], d["sp_u"][k] = 1, raw, u
        return u

    for i, r in enumerate(rows.tolist()):
        k = int(dirn[r])
        o = 1 - k
        t, seq, ack = int(cols.ts_ns[r]), int(cols.seq[r]), int(cols.ack[r])
        fl, win, seglen = int(cols.flags[r]), int(cols.window[r]), int(cols.seglen[r])
        seq_u = unwrap(k, seq)
        ack_u = unwrap(o, ack) if fl & TH_ACK else None
        synfin = 1 if fl & (TH_SYN | TH_FIN) else 0
        no_sfr = not fl & (TH_SYN | TH_FIN | TH_RST)
        nx_has = bool(d["nx_set"][k])
        nx_raw = d["nx_u"][k] & M32 if nx_has else 0
        f = 0
        if seglen == 1 and seq == nx_raw and d["window"][o] == 0:
            f |= ZW_PROBE
        else:
            if win == 0 and no_sfr:
                f |= ZERO_WIN
            if nx_has and _wrap(seq - nx_raw) > 0 and not fl & TH_RST:
                f |= LOST
            if seglen <= 1 and seq == ((nx_raw - 1) & M32) and no_sfr:
                f |= KEEP_ALIVE
            same = (seglen == 0 and win != 0 and win == d["window"][k] and seq == nx_raw
                    and ack == d["lastack"][k] and no_sfr)
            if same and not d["lastflags"][o] & _KA_BIT:
                d["dupack"][k] += 1
                f |= DUP_ACK
        if ack != d["lastack"][k]:
            d["dupack"][k] = 0
        if (seglen > 0 or synfin) and not f & KEEP_ALIVE:
            sna = nx_has and _wrap(seq - nx_raw) < 0
            if seglen > 1 and ((nx_raw - 1) & M32) == seq:
                sna = False
            rev_ack = d["lastack"][o]
            if seglen > 0 and rev_ack != 0 and _wrap(rev_ack - (seq + seglen)) >= 0:
                f |= SPURIOUS
            elif sna and d["dupack"][o] >= 2 and rev_ack == seq and 0 <= t - d["last_time"][o] < FAST_WINDOW_NS:
                f |= FAST
            elif sna and ((t - d["nx_time"][k]) & ((1 << 64) - 1)) < (
                    (first_rtt if first_rtt else OOO_DEFAULT_NS) & ((1 << 64) - 1)) and nx_raw != (
                    (seq + seglen + synfin) & M32):
                f |= OOO
            elif sna:
                f |= RETRANS
        end_u = seq_u + seglen + synfin
        if seglen > 0 or synfin:
            pending[k].append((end_u, t))
        if (not nx_has or end_u > d["nx_u"][k]) and not f & ZW_PROBE:
            d["nx_set"][k], d["nx_u"][k], d["nx_time"][k] = 1, end_u, t
        d["window"][k], d["lastack"][k], d["last_time"][k] = win, ack, t
        d["lastflags"][k] = (_KA_BIT if f & KEEP_ALIVE else 0) | (_ZWP_BIT if f & ZW_PROBE else 0)
        if ack_u is not None and pending[o]:
            keep, best = [], -1
            for n_, t_ in pending[o]:
                if ack_u >= n_:
                    if ack_u == n_:
                        best = max(best, t - t_)
                else:
                    keep.append((n_, t_))
            pending[o] = keep
            out_r[i] = best
        if (fl & (TH_SYN | TH_ACK)) == TH_SYN:
            mru_syn = t
        elif (fl & (TH_SYN | TH_ACK)) == TH_ACK and mru_syn and not first_rtt and t != mru_syn:
            first_rtt = t - mru_syn
        out_f[i] = f
    for fld in _DIR_FIELDS:
        st.d[fld][2 * s_id], st.d[fld][2 * s_id + 1] = d[fld]
    st.s["mru_syn"][s_id], st.s["first_rtt"][s_id] = mru_syn, first_rtt
    other = (st.pend_g // 2) != s_id
    extra = [(2 * s_id + k, n_, t_) for k in (0, 1) for n_, t_ in pending[k]]
    st.pend_g = np.concatenate([st.pend_g[other], np.array([e[0] for e in extra], dtype=np.int64)])
    st.pend_n = np.concatenate([st.pend_n[other], np.array([e[1] for e in extra], dtype=np.int64)])
    st.pend_t = np.concatenate([st.pend_t[other], np.array([e[2] for e in extra], dtype=np.int64)])
    return out_f, out_r
