"""``syn_backlog_overflow``: SYNs retransmitted in bursts or the kernel's "possible SYN
flooding" message: the listen backlog (somaxconn / backlog argument) overflowed."""

from __future__ import annotations

import polars as pl

from analyzer.rules._base import (
    Candidate,
    Context,
    Rule,
    endpoint_of,
    event_evidence,
    merge_intervals,
    segment_evidence,
)


def find(ctx: Context) -> list[Candidate]:
    segs = ctx.segs(["tcp.syn_retry", "kernel.syn_flood"])
    out = []
    for start, end in merge_intervals([(r["start"], r["end"]) for r in segs.iter_rows(named=True)], gap_s=5.0):
        part = segs.filter((pl.col("start") <= end) & (pl.col("end") >= start))
        events = ctx.events_of(["tcp.syn_retry", "kernel.syn_flood"], start, end)
        endpoints = [e for e in (endpoint_of(x) for x in events.get_column("entity").to_list()) if e]
        endpoint = max(sorted(set(endpoints)), key=endpoints.count) if endpoints else None
        kernel = events.filter(pl.col("kind") == "kernel.syn_flood")
        retries = events.filter(pl.col("kind") == "tcp.syn_retry").height
        evidence = [segment_evidence(r, role="signal") for r in part.iter_rows(named=True)]
        evidence += [event_evidence(r, role="kernel") for r in kernel.head(2).iter_rows(named=True)]
        severity = "high" if kernel.height or retries >= 50 else "medium"
        out.append(Candidate(start, end, severity, 0.9 if kernel.height else 0.7,
                             "the kernel reported SYN flooding" if kernel.height else "SYNs were retransmitted in a burst",
                             [endpoint] if endpoint else [str(part.get_column("entity").first())], evidence,
                             {"endpoint": endpoint.removeprefix("endpoint:") if endpoint else None,
                              "retries": retries, "kernel": kernel.height > 0}))
    return out


RULE = Rule(
    key="syn_backlog_overflow",
    triggers=("tcp.syn_retry", "kernel.syn_flood"),
    # a full accept queue also drops the handshake's last ACK and the first data segments of
    # connections it could not take: their SYN-ACK and data retransmissions are its symptom
    explains=("connection_resets", "network_retransmissions"),
    relates=lambda cause, key, effect: key != "network_retransmissions"
    or not cause.params.get("endpoint") or effect.params.get("endpoint") == cause.params["endpoint"],
    title=(
        "Listen backlog overflow{% if endpoint %} on {{ endpoint }}{% endif %}: {{ retries }} SYN "
        "retransmission{{ 's' if retries != 1 }}{% if kernel %} and the kernel's SYN-flooding warning{% endif %}"
        "{% if upstream %}, while {{ upstream|human }} was under way{% endif %}."),
    recommendations=(
        "Raise the listen backlog (net.core.somaxconn, net.ipv4.tcp_max_syn_backlog and the server's backlog "
        "argument) and make sure the server accepts promptly (a blocked event loop stops accepting).",
        "If it is an attack, enable SYN cookies (net.ipv4.tcp_syncookies=1) and rate-limit upstream.",
    ),
    find=find,
)
