"""``network_retransmissions``: TCP retransmissions on a server endpoint far above their
baseline (captures; flows are summed per endpoint). Severity follows the retransmitted
share of segments: above 1 % a path is in trouble, above 5 % it is failing."""

from __future__ import annotations

import datetime as dt

import polars as pl

from analyzer.rules._base import Candidate, Context, Rule, grade, num, segment_evidence, worse

RELATED = ("net.lost_segments", "net.dup_acks", "net.ack_rtt_ms", "pg.wire_latency_ms", "http.latency_ms")
LOOPBACK = ("endpoint:127.", "endpoint:[::1]", "endpoint:::1")


def find(ctx: Context) -> list[Candidate]:
    out = []
    for seg in ctx.segs(["net.retransmits"]).iter_rows(named=True):
        total = seg["total"]
        if total < 10 and seg["samples"] < 3:
            continue  # a handful in one second: a dropped SYN or two, not a lossy path
        share = _share(ctx, seg["entity"], seg["start"], seg["end"], total)
        related = ctx.segs(RELATED, start=seg["start"], end=seg["end"], pad_s=2)
        evidence = [segment_evidence(seg, unit="/s", role="retransmissions", count=round(total),
                                     share_pct=round(share, 2) if share is not None else None)]
        evidence += [segment_evidence(r, role="related") for r in related.head(4).iter_rows(named=True)]
        severity = worse(grade(seg["peak"], [(10, "medium"), (50, "high")]),
                         grade(share, [(1.0, "medium"), (5.0, "high")]))
        if total < 10:
            severity = "low"
        out.append(Candidate(seg["start"], seg["end"], severity, 0.8 if related.height else 0.65,
                             "retransmissions above baseline"
                             + (f", {share:.1f} % of segments" if share is not None else "")
                             + ("; latency or loss signals rose with them" if related.height else ""),
                             [seg["entity"]], evidence,
                             {"endpoint": seg["entity"].removeprefix("endpoint:"), "peak": seg["peak"],
                              "total": total, "base": seg["base"] or 0.0, "share": share,
                              "loopback": seg["entity"].startswith(LOOPBACK),
                              "related": sorted({r["metric"] for r in related.iter_rows(named=True)})}))
    return out


def _share(ctx: Context, endpoint: str, start: dt.datetime, end: dt.datetime, total: float) -> float | None:
    """Retransmitted segments as a percentage of all packets to/from the endpoint."""
    packets = ctx.samples("net.packets_per_s", entity=endpoint, start=start, end=end)
    if packets.height == 0:  # only per-flow counters: sum the endpoint's flows
        server = endpoint.removeprefix("endpoint:")
        packets = ctx.samples("net.packets_per_s", prefix="flow:", start=start, end=end) \
            .filter(pl.col("entity").str.ends_with(">" + server))
    seen = num(packets.get_column("value").sum()) if packets.height else 0.0
    return 100.0 * total / seen if seen > 0 else None


RULE = Rule(
    key="network_retransmissions",
    triggers=("net.retransmits",),
    explains=("slow_query", "connection_resets"),
    title=(
        "TCP retransmissions to {{ endpoint }}: up to {{ peak|num }}/s ({{ total|num }} in all"
        "{% if share is not none %}, {{ share|num(2) }} % of segments{% endif %}, baseline {{ base|num }}/s)"
        "{% if related %}; {{ related|join(', ') }} rose with them{% endif %}"
        "{% if upstream %}, while {{ upstream|human }} was under way{% endif %}."),
    recommendations=(
        "Check the path for loss: interface errors and drops (ip -s link, ethtool -S), qdisc drops and "
        "shaping (tc -s qdisc), and the peer's receive buffers.",
        "Compare with RTT and zero-window evidence to tell congestion from a slow receiver.",
    ),
    find=find,
)
