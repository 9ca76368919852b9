"""``connection_resets``: a burst of TCP RST segments on a server endpoint (capture events
``tcp.rst`` or per-second ``net.rsts``); says which side sent them when the capture knows."""

from __future__ import annotations

import json

import polars as pl

from analyzer.rules._base import (
    Candidate,
    Context,
    Rule,
    endpoint_of,
    grade,
    merge_intervals,
    segment_evidence,
)

MIN_RESETS = 10


def find(ctx: Context) -> list[Candidate]:
    segs = ctx.segs(["tcp.rst", "net.rsts"])
    out = []
    for start, end in merge_intervals([(r["start"], r["end"]) for r in segs.iter_rows(named=True)], gap_s=3.0):
        part = segs.filter((pl.col("start") <= end) & (pl.col("end") >= start))
        rsts = ctx.events_of(["tcp.rst"], start, end)
        count = rsts.height or int(part.filter(pl.col("metric") == "net.rsts").get_column("total").sum())
        if count < MIN_RESETS:
            continue  # a client pool closing a few connections at once is no storm
        named = rsts.get_column("entity") if rsts.height else part.get_column("entity")
        endpoints = [e for e in (endpoint_of(x) for x in named.to_list()) if e is not None]
        endpoint = max(sorted(set(endpoints)), key=endpoints.count) if endpoints else None
        sender = _sender(rsts)
        evidence = [segment_evidence(r, unit="/s" if r["origin"] == "metric" else "", role="resets")
                    for r in part.iter_rows(named=True)]
        severity = grade(count, [(20, "medium"), (100, "high")])
        out.append(Candidate(start, end, severity, 0.85 if endpoint else 0.6,
                             f"{count} RST segments within {max((end - start).total_seconds(), 1):.0f} s",
                             [endpoint] if endpoint else [str(part.get_column("entity").first())], evidence,
                             {"endpoint": endpoint.removeprefix("endpoint:") if endpoint else None, "count": count,
                              "sender": sender, "duration": (end - start).total_seconds()}))
    return out


def _sender(rsts: pl.DataFrame) -> str | None:
    """Who sent most resets, if the capture's event attributes say (client/server)."""
    sides = []
    for text in rsts.get_column("attrs").drop_nulls().head(500).to_list():
        try:
            attrs = json.loads(text)
        except ValueError:
            continue
        side = attrs.get("by") or attrs.get("sender") or attrs.get("from") or attrs.get("direction") or attrs.get("initiator")
        if isinstance(side, str):
            sides.append(side)
    return max(sorted(set(sides)), key=sides.count) if sides else None


RULE = Rule(
    key="connection_resets",
    triggers=("tcp.rst", "net.rsts"),
    title=(
        "{{ count }} connection resets{% if endpoint %} on {{ endpoint }}{% endif %} within "
        "{{ duration|num }} s{% if sender %}, sent by the {{ sender }}{% endif %}"
        "{% if upstream %}, following {{ upstream|human }}{% endif %}."),
    recommendations=(
        "Find who aborts the connections: client timeouts or SO_LINGER=0 closes, a proxy's idle timeout, or "
        "the server refusing (listen backlog full, worker restarts).",
        "Match the resets with the client's errors and the server's accept queue (ss -ltn: Recv-Q vs "
        "Send-Q).",
    ),
    find=find,
)
