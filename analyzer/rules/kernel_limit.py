"""``kernel_limit``: the kernel or the C library refused for a limit: conntrack table full,
too many open files (EMFILE), OOM kills, other limit messages."""

from __future__ import annotations

from analyzer.rules._base import Candidate, Context, Rule, event_evidence, segment_evidence

KINDS = ("kernel.conntrack_full", "kernel.limit", "kernel.oom_kill", "os.too_many_open_files")
NAMES = {"kernel.conntrack_full": "conntrack table full", "kernel.limit": "a kernel limit",
         "kernel.oom_kill": "the OOM killer", "os.too_many_open_files": "too many open files"}


def find(ctx: Context) -> list[Candidate]:
    out = []
    for seg in ctx.segs(KINDS).iter_rows(named=True):
        events = ctx.events_of([seg["metric"]], seg["start"], seg["end"])
        evidence = [segment_evidence(seg, role="limit")]
        evidence += [event_evidence(r, role="message") for r in events.head(3).iter_rows(named=True)]
        entity = seg["entity"] or f"host:{seg['host'] or 'unknown'}"
        out.append(Candidate(seg["start"], seg["end"], "high", 0.9, "the limit was reported verbatim",
                             [entity], evidence,
                             {"limit": NAMES[seg["metric"]], "kind": seg["metric"], "count": seg["samples"],
                              "entity": entity,
                              "listener": entity.removeprefix("endpoint:") if entity.startswith("endpoint:") else None}))
    return out


RULE = Rule(
    key="kernel_limit",
    triggers=KINDS,
    explains=("connection_resets", "syn_backlog_overflow", "db_pool_exhaustion"),
    title=("Hit {{ limit }} ({{ count }} message{{ 's' if count != 1 }}"
           "{% if listener %}: the server could not accept connections on {{ listener }}{% else %}, {{ entity }}"
           "{% endif %}).{% if upstream %} It happened while {{ upstream|human }} was under way.{% endif %}"),
    recommendations=(
        "{% if kind == 'kernel.conntrack_full' %}Raise net.netfilter.nf_conntrack_max or exempt the traffic "
        "from tracking (NOTRACK).{% elif kind == 'os.too_many_open_files' %}Raise the open-files limit "
        "(ulimit -n / LimitNOFILE) and look for descriptor leaks (ls /proc/PID/fd | wc -l over time)."
        "{% elif kind == 'kernel.oom_kill' %}Find the memory growth (RSS over time) and set memory limits "
        "that fail the request rather than the process.{% else %}Read the kernel message and raise the "
        "named limit after checking what consumes it.{% endif %}",
    ),
    find=find,
)
