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
from parsers._tcp_rtt import _RANK_SHIFT, _REL_BIAS, _ack_rtt, _clip_rel, _initial_rtt

# analysis flag bits (per packet)
RETRANS, FAST, SPURIOUS, OOO, LOST, DUP_ACK, ZERO_WIN, ZW_PROBE, KEEP_ALIVE = (1 << i for i in range(9))
ANY_RETRANS = RETRANS | FAST | SPURIOUS
_KA_BIT, _ZWP_BIT = 1, 2  # lastsegmentflags bits that matter
M32 = 0xFFFFFFFF
OOO_DEFAULT_NS = 3_000_000
FAST_WINDOW_NS = 20_000_000

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
    # columns already gathered in ``order`` (stream, dir, time, TCP flags, analysis flags, RTT), to reuse
    in_order: dict[str, np.ndarray] | None = None


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
    """Analyse one batch (rows in file order; ``stream``/``dirn`` from the flow table).

    Row indexes of "the previous row" are -1 or the last row of the previous stream when a
    stream has none in the batch: gathers read that harmless neighbour (no clipping) and the
    few such rows then take the carried per-direction state instead (``prev``)."""
    n = len(cols)
    flags_out = np.zeros(n, dtype=np.int64)
    rtt_out = np.full(n, -1, dtype=np.int64)
    ok = cols.seglen >= 0  # tshark does not analyse segments whose length it cannot know
    if ok.all():
        order = stable_argsort(stream)
    else:
        rows = np.flatnonzero(ok)
        if len(rows) == 0:
            return BatchAnalysis(flags_out, rtt_out, rows)
        order = rows[stable_argsort(stream[rows])]
    S = stream[order]
    D = dirn[order]
    T = cols.ts_ns[order]
    SEQ = cols.seq[order]
    ACK = cols.ack[order]
    F = cols.flags[order]
    W = cols.window[order]
    L = cols.seglen[order]
    m = len(order)
    pos = np.arange(m, dtype=np.int32)  # row indexes as int32: half the memory traffic
    first = np.ones(m, dtype=bool)
    np.not_equal(S[1:], S[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    rank = np.cumsum(first) - 1
    ss = starts.astype(np.int32)[rank]  # first row of each row's stream
    ssm1 = ss - 1
    ends = np.append(starts[1:], m) - 1
    s_ids = S[starts]

    def ffill(cond: np.ndarray) -> np.ndarray:  # _ffill with the batch's pos/ss
        return np.maximum.accumulate(np.where(cond, pos, ssm1))

    def before(last_incl: np.ndarray) -> np.ndarray:  # _before
        out = np.empty_like(last_incl)
        out[0] = -1
        out[1:] = last_incl[:-1]
        return np.maximum(out, ssm1, out=out)

    dst, sst = st.d, st.s
    snap = _Snapshot(st, s_ids)

    def state(name: str, k: int) -> np.ndarray:  # carried value per batch stream, direction k
        return dst[name][s_ids * 2 + k]

    has_ack = (F & TH_ACK) != 0
    synfin = ((F & (TH_SYN | TH_FIN)) != 0).astype(np.int64)
    no_sfr = (F & (TH_SYN | TH_FIN | TH_RST)) == 0

    # previous row of the same / the other direction (in-stream), or ss-1
    is_d = (D == 0, D == 1)
    last_d = [ffill(is_d[k]) for k in (0, 1)]
    prev_d = [before(x) for x in last_d]
    prev_same = np.where(is_d[0], prev_d[0], prev_d[1])
    prev_other = np.where(is_d[0], prev_d[1], prev_d[0])
    no_same = np.flatnonzero(prev_same < ss)  # first row of its direction in this batch
    no_other = np.flatnonzero(prev_other < ss)
    G_ns = S[no_same] * 2 + D[no_same]
    G_no = (S[no_other] * 2 + D[no_other]) ^ 1

    def prev(values: np.ndarray, name: str, other: bool) -> np.ndarray:
        """``values`` at the previous row of the same (other) direction, else the carried state."""
        out = values[prev_other if other else prev_same]
        if other:
            out[no_other] = dst[name][G_no]
        else:
            out[no_same] = dst[name][G_ns]
        return out

    # -- unwrap both sequence spaces (space k: seq of dir k, ack of dir 1-k) -------------
    U = []
    for k in (0, 1):
        val = np.where(is_d[k], SEQ, ACK)
        valid = is_d[k] | has_ack
        lv_end = ffill(valid)
        lastv = before(lv_end)
        inb = lastv >= ss
        delta = _wrap(val - val[lastv])
        delta[~(valid & inb)] = 0
        fv_idx = np.flatnonzero(valid & ~inb)
        carried_r = state("sp_set", k) != 0
        base = np.where(carried_r, state("sp_u", k), 0)
        if len(fv_idx):
            g_fv = S[fv_idx] * 2 + k
            car_fv = dst["sp_set"][g_fv] != 0
            v_fv = val[fv_idx]
            delta[fv_idx] = np.where(car_fv, _wrap(v_fv - dst["sp_raw"][g_fv]), 0)
            r = rank[fv_idx]
            nb = ~car_fv
            base[r[nb]] = v_fv[nb]
        cs = np.cumsum(delta)
        cs_before = cs[starts - 1]
        cs_before[starts == 0] = 0
        u = cs + (base - cs_before)[rank]
        U.append(u)
        # carry: last valid row of each stream
        last_valid = lv_end[ends]
        have = last_valid >= starts
        gsel = s_ids[have] * 2 + k
        dst["sp_set"][gsel] = 1
        dst["sp_raw"][gsel] = val[last_valid[have]]
        dst["sp_u"][gsel] = u[last_valid[have]]
    seq_u = np.where(is_d[0], U[0], U[1])
    ack_u = np.where(is_d[0], U[1], U[0])
    end_u = seq_u + L + synfin

    # -- next expected sequence number before each row ---------------------------------
    base_r = np.minimum.reduceat(np.minimum(U[0], U[1]), starts)
    base_s = base_r[rank]
    rs = rank * _RANK_SHIFT
    rel_all = _clip_rel(end_u - base_s)
    rel_all += rs
    nx_before = np.zeros(m, dtype=np.int64)
    nx_has = np.zeros(m, dtype=bool)
    for k in (0, 1):
        sel = is_d[k]
        cm = np.maximum.accumulate(np.where(sel, rel_all, rs))
        cm -= rs  # inclusive, 0 = none yet
        p = prev_d[k]
        cmp_ = cm[p]
        inb = (p >= ss) & (cmp_ > 0)
        inval = cmp_ - _REL_BIAS + base_s
        car_r = state("nx_set", k) != 0
        car = car_r[rank]
        carv = state("nx_u", k)[rank]
        val = np.where(inb, inval, carv)
        np.maximum(val, carv, out=val, where=inb & car)
        nx_before = np.where(sel, val, nx_before)
        nx_has = np.where(sel, inb | car, nx_has)
    advanced = ~nx_has | (end_u > nx_before)
    nxt_before = np.zeros(m, dtype=np.int64)
    adv_d = []
    for k in (0, 1):
        sel = is_d[k]
        adv_d.append(ffill(sel & advanced))
        la = before(adv_d[k])
        t = T[la]
        fix = np.flatnonzero(la < ss)
        t[fix] = dst["nx_time"][S[fix] * 2 + k]
        nxt_before = np.where(sel, t, nxt_before)
    nx_raw = nx_before & M32
    nx_raw[~nx_has] = 0

    # -- what the previous packets left behind -----------------------------------------
    win_prev = prev(W, "window", False)
    ack_prev = prev(ACK, "lastack", False)
    rev_ack = prev(ACK, "lastack", True)
    rev_win = prev(W, "window", True)

    zwp = (L == 1) & (SEQ == nx_raw) & (rev_win == 0)
    nx_m1 = (nx_raw - 1) & M32
    keepalive = (L <= 1) & (SEQ == nx_m1) & no_sfr
    lastflags = keepalive.astype(np.int64)  # _KA_BIT
    if zwp.any():
        lastflags |= np.where(zwp, _ZWP_BIT, 0)
    same = (L == 0) & (W != 0) & (W == win_prev) & (SEQ == nx_raw) & (ACK == ack_prev) & no_sfr
    reset = ACK != ack_prev
    dup_r = [state("dupack", k) for k in (0, 1)]
    if same.any() or dup_r[0].any() or dup_r[1].any():
        rev_flags = prev(lastflags, "lastflags", True)
        dup = same & ((rev_flags & _KA_BIT) == 0) & ~zwp
        dupack_after = np.zeros(m, dtype=np.int64)
        for k in (0, 1):
            sel = is_d[k]
            c = np.cumsum(dup & sel)
            lr = ffill(reset & sel)
            c_before_start = c[ss - 1]
            c_before_start[ss == 0] = 0
            val = np.where(lr >= ss, c - c[lr], dup_r[k][rank] + c - c_before_start)
            dupack_after = np.where(sel, val, dupack_after)
        rev_dup = prev(dupack_after, "dupack", True)
    else:  # no duplicate ACK in the batch and none carried: every count stays 0
        dup = same
        dupack_after = rev_dup = None

    # -- initial RTT (tshark's ts_first_rtt) known before each row ---------------------
    irtt = _initial_rtt(S, T, F, rank, starts, ends, s_ids, sst)

    seq_nx = _wrap(SEQ - nx_raw)
    zero_win = (W == 0) & no_sfr & ~zwp
    lost = nx_has & (seq_nx > 0) & ((F & TH_RST) == 0) & ~zwp
    carries = ((L > 0) | (synfin > 0)) & ~(keepalive & ~zwp)
    sna = nx_has & (seq_nx < 0) & ~((L > 1) & (SEQ == nx_m1))
    spurious = carries & (L > 0) & (rev_ack != 0) & (_wrap(rev_ack - (SEQ + L)) >= 0)
    flags = np.where(zero_win, ZERO_WIN, 0)
    for mask, bit in ((spurious, SPURIOUS), (lost, LOST), (dup, DUP_ACK), (zwp, ZW_PROBE), (keepalive, KEEP_ALIVE)):
        hit = np.flatnonzero(mask)
        if len(hit):
            flags[hit] |= bit
    # fast retransmission / out-of-order / retransmission: only segments below nextseq
    cand = np.flatnonzero(carries & ~spurious & sna)
    if len(cand):
        seq_c, t_c = SEQ[cand], T[cand]
        rev_time = prev(T, "last_time", True)[cand]
        rd = rev_dup[cand] if rev_dup is not None else np.zeros(len(cand), dtype=np.int64)
        dt_fast = t_c - rev_time
        fast = (rd >= 2) & (rev_ack[cand] == seq_c) & (dt_fast >= 0) & (dt_fast < FAST_WINDOW_NS)
        first_rtt = irtt(cand)
        thres = np.where(first_rtt != 0, first_rtt, OOO_DEFAULT_NS).astype(np.uint64)
        dt_ooo = (t_c - nxt_before[cand]).astype(np.uint64)
        ooo = ~fast & (dt_ooo < thres) & (nx_raw[cand] != ((seq_c + L[cand] + synfin[cand]) & M32))
        flags[cand] |= np.where(fast, FAST, np.where(ooo, OOO, RETRANS))
    rtt = _ack_rtt(S, D, T, has_ack, ack_u, end_u, (L > 0) | (synfin > 0), starts, rank, base_r, st)

    # -- carry per-direction state --------------------------------------------------------
    for k in (0, 1):
        li = last_d[k][ends]
        have = li >= starts
        gsel = s_ids[have] * 2 + k
        idx = li[have]
        nxn = np.maximum(np.where(nx_has[idx], nx_before[idx], end_u[idx]), end_u[idx])
        adv_last = adv_d[k][ends][have]
        adv_ok = adv_last >= starts[have]
        dst["nx_time"][gsel] = np.where(adv_ok, T[adv_last], dst["nx_time"][gsel])
        dst["nx_u"][gsel] = nxn
        dst["nx_set"][gsel] = 1
        dst["lastack"][gsel] = ACK[idx]
        dst["last_time"][gsel] = T[idx]
        dst["window"][gsel] = W[idx]
        dst["dupack"][gsel] = dupack_after[idx] if dupack_after is not None else 0
        dst["lastflags"][gsel] = lastflags[idx]

    # streams with a zero-window-probe candidate: exact per-packet rules
    if zwp.any():
        for s_id in np.unique(S[zwp]).tolist():
            a, b = np.searchsorted(S, [s_id, s_id + 1])
            snap.restore(st, s_id)
            flags[a:b], rtt[a:b] = sequential(order[a:b], cols, dirn, s_id, st)
    flags_out[order] = flags
    rtt_out[order] = rtt
    return BatchAnalysis(flags_out, rtt_out, order, {"S": S, "D": D, "T": T, "F": F, "flags": flags, "rtt": rtt})


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
