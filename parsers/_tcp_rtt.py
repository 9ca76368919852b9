"""ACK RTT and initial RTT (tshark's ``tcp.analysis.ack_rtt`` and ``ts_first_rtt``) for the
vectorised TCP analysis of ``_tcp_analysis``: rows of one batch in stream order, with the
unacked segments and per-stream SYN/iRTT state carried in its ``AnalysisState``.

Per-stream scans share one running maximum: values are made relative to the stream's lowest
sequence number (+``_REL_BIAS``, clipped) and offset by ``rank * _RANK_SHIFT``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from parsers._capture_decode import TH_ACK, TH_SYN

if TYPE_CHECKING:
    from parsers._tcp_analysis import AnalysisState

PENDING_MAX_AGE_NS = 120 * 1_000_000_000
_REL_BIAS = 1 << 36
_RANK_SHIFT = 1 << 40


def _clip_rel(diff: np.ndarray) -> np.ndarray:
    """``clip(diff + _REL_BIAS, 1, _RANK_SHIFT - 1)``, in place on ``diff`` (a temporary)."""
    diff += _REL_BIAS
    np.maximum(diff, 1, out=diff)
    return np.minimum(diff, _RANK_SHIFT - 1, out=diff)


def _initial_rtt(S, T, F, rank, starts, ends, s_ids, sst):
    """tshark: the first pure ACK after a SYN sets iRTT = its time - most recent SYN time.
    Updates the per-stream state and returns ``irtt(rows)``: the iRTT known before each of
    ``rows`` (only streams without one yet look at their rows)."""
    carried_r = sst["first_rtt"][s_ids]
    known_from = None
    sp = np.flatnonzero((F & (TH_SYN | TH_ACK)) == TH_SYN)  # pure SYNs (few)
    need_r = carried_r == 0
    if need_r.any():
        rows = np.flatnonzero(need_r[rank])
        rows = rows[(F[rows] & (TH_SYN | TH_ACK)) == TH_ACK]  # pure ACKs of streams without an iRTT
        if len(rows):
            j = np.searchsorted(sp, rows, side="right") - 1  # the latest pure SYN at or before the row
            lsyn = sp[np.maximum(j, 0)] if len(sp) else np.zeros(len(rows), dtype=np.int64)
            in_b = (j >= 0) & (S[lsyn] == S[rows]) if len(sp) else np.zeros(len(rows), dtype=bool)
            mru = np.where(in_b, T[lsyn], sst["mru_syn"][S[rows]])
            ok = (mru != 0) & (T[rows] - mru != 0)
            ci, mru = rows[ok], mru[ok]
            if len(ci):
                sc = S[ci]  # ascending (rows are in stream order): the first candidate of each stream
                head = np.flatnonzero(np.r_[True, sc[1:] != sc[:-1]])
                ci, value = ci[head], T[ci[head]] - mru[head]
                known_from = np.full(len(starts), len(S), dtype=np.int64)
                val_by_rank = np.zeros(len(starts), dtype=np.int64)
                known_from[rank[ci]] = ci + 1
                val_by_rank[rank[ci]] = value
                sst["first_rtt"][S[ci]] = value
    if len(sp):  # most recent SYN of each stream: its last pure SYN in the batch
        r = rank[sp]
        last = np.flatnonzero(np.r_[r[1:] != r[:-1], True])
        sst["mru_syn"][S[sp[last]]] = T[sp[last]]

    def irtt(rows: np.ndarray) -> np.ndarray:
        r = rank[rows]
        if known_from is None:
            return carried_r[r]
        return np.where(rows >= known_from[r], val_by_rank[r], carried_r[r])

    return irtt


def _ack_rtt(S, D, T, has_ack, ack_u, end_u, carries, starts, rank, base_r, st: AnalysisState
             ) -> np.ndarray:
    """ACK RTT: a packet whose ack equals the end of a still-unacked segment of the other
    direction measures the time since that segment (the oldest one, as tshark keeps it).
    ``carries``: the row holds payload, SYN or FIN."""
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
        seg = (D == k) & carries
        ackr = (D != k) & has_ack
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
            a_u = ack_u[ap]
            rel = _clip_rel(a_u - base_r[a_r])
            rel += a_r * _RANK_SHIFT
            cm = np.maximum.accumulate(rel)
            r_seg = srank[s_s]
            seg_base = base_r[r_seg]
            key = _clip_rel(s_n - seg_base)
            key += r_seg * _RANK_SHIFT
            j = np.searchsorted(cm, key, side="left")
            lo = np.searchsorted(ap, s_pos, side="right")  # ack rows at or before each segment
            j = np.maximum(j, lo)
            valid = j < len(ap)
            jj = np.minimum(j, len(ap) - 1)
            a_j = a_u[jj]
            valid &= (a_s[jj] == s_s) & (a_j >= s_n)
            matched = valid
            exact = valid & (a_j == s_n)
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
