"""``cpu_saturation``: the host's CPUs busy (user + system, not iowait) above 80 % for
several samples; names the processes that used the CPU (pidstat ``-u``).
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from analyzer.rules._base import Candidate, Context, Rule, grade, num, seconds, segment_evidence

THRESHOLD = 80.0
MIN_SAMPLES = 3
# what a starved service shows; a busy host whose service shows none of it is only a note
SYMPTOMS = ("loop.slow_callback", "loop.stall_ms", "http.latency_ms", "http.latency_p99_ms",
            "pg.wire_latency_ms", "pg.wire_latency_p99_ms", "pg.exec_ms_per_s", "pg.mean_exec_ms",
            "net.retransmits", "server.worker_timeout")


def find(ctx: Context) -> list[Candidate]:
    out = []
    for seg in ctx.segs(["cpu.busy_pct"]).filter(pl.col("samples") >= MIN_SAMPLES).iter_rows(named=True):
        busy = ctx.scored.of("cpu.busy_pct", entity=seg["entity"], file=seg["file"]) \
            .filter(pl.col("ts").is_between(seg["end"] - _span(seg), seg["end"]))  # derived from idle
        iowait = ctx.samples("cpu.iowait_pct", entity=seg["entity"], start=seg["end"] - _span(seg), end=seg["end"]) \
            .filter(pl.col("file") == seg["file"])
        used = busy.join(iowait.select("ts", pl.col("value").alias("iowait")), on="ts", how="left") \
            .with_columns((pl.col("value") - pl.col("iowait").fill_null(0.0)).alias("used"))
        hot = used.filter(pl.col("used") >= THRESHOLD)
        if hot.height < MIN_SAMPLES:
            continue  # busy is mostly iowait: a disk story, not a CPU one
        mean_used = num(hot.get_column("used").mean())
        start, end = seg["start"], seg["end"]
        duration = seconds(end - start)
        severity = "low"
        if mean_used >= 95 and duration >= 10:
            severity = "high"
        elif duration >= 5:
            severity = grade(mean_used, [(THRESHOLD, "medium")])
        symptoms = ctx.segs(SYMPTOMS, start=start, end=end, pad_s=2).filter(
            ~pl.col("metric").str.starts_with("loop.")  # a 0.1 s callback is no starvation
            | ((pl.col("metric") == "loop.stall_ms") & (pl.col("peak") >= 300))
            | ((pl.col("metric") == "loop.slow_callback") & (pl.col("peak") >= 0.3)))
        if symptoms.height == 0:
            severity = "low"
        top = _top_processes(ctx, start, end)
        evidence = [segment_evidence(seg, unit="%", role="host_cpu", used_pct_mean=round(mean_used, 1))]
        evidence += [segment_evidence(r, role="symptom") for r in symptoms.head(3).iter_rows(named=True)]
        evidence += [{"role": "consumer", "source": t["source"], "metric": "proc.cpu_pct", "entity": t["entity"],
                      "label": ctx.label(t["entity"]), "peak": round(t["peak"], 1), "mean": round(t["mean"], 1),
                      "unit": "%", "file": t["file"], "line": t["line"]} for t in top]
        names = [ctx.label(t["entity"]) or t["entity"] for t in top]
        out.append(Candidate(start, end, severity, 0.8 if top else 0.65,
                             f"CPU busy (without iowait) {mean_used:.0f} % on average for {duration:.0f} s"
                             + ("" if symptoms.height else "; the service showed no symptom meanwhile"),
                             [seg["entity"]] + [t["entity"] for t in top], evidence,
                             {"used": mean_used, "duration": duration, "consumers": names}))
    return out


def _span(seg: dict) -> dt.timedelta:
    return seg["end"] - seg["start"]


def _top_processes(ctx: Context, start: dt.datetime, end: dt.datetime) -> list[dict]:
    cpu = ctx.samples("proc.cpu_pct", prefix="pid:", start=start, end=end + dt.timedelta(seconds=1))
    if cpu.height == 0:
        return []
    per = cpu.group_by("entity").agg(pl.col("value").sum().alias("total"), pl.col("value").max().alias("peak"),
                                     pl.col("value").mean().alias("mean"), pl.col("source").first(),
                                     pl.col("file").first(), pl.col("line").first())
    return per.sort(["total", "entity"], descending=[True, False]).head(3).filter(pl.col("mean") >= 20).to_dicts()


def _relates(cause: Candidate, key: str, effect: Candidate) -> bool:
    if key == "network_retransmissions":
        return bool(effect.params.get("loopback"))
    if key == "slow_query":
        # both start together when the query's own executions are what fills the CPUs: then the
        # query is the cause; a starved CPU slows queries down only when it came first
        return seconds(effect.start - cause.start) > LEAD_S
    return True


LEAD_S = 5.0  # how much earlier the CPUs must have been saturated to be the cause of a slow query


RULE = Rule(
    key="cpu_saturation",
    triggers=("cpu.busy_pct",),
    # a starved CPU delays everything; on loopback it also delays ACK processing and drains the
    # backlog late, which TCP sees as (spurious) retransmissions — on a real link loss is the link's
    explains=("event_loop_blocked", "slow_query", "network_retransmissions"),
    relates=lambda cause, key, effect: _relates(cause, key, effect),
    title=(
        "CPUs saturated: {{ used|num }} % busy (not counting iowait) for {{ duration|num }} s"
        "{% if consumers %}, mostly {{ consumers|join(', ') }}{% endif %}"
        "{% if upstream %}, as a consequence of {{ upstream|human }}{% endif %}."),
    recommendations=(
        "Profile the top consumer{% if consumers %} ({{ consumers[0] }}){% endif %} during the window "
        "(py-spy top, perf top) and cap background work with nice or cgroup cpu.max.",
        "Add CPU capacity or spread the load if this is steady demand rather than a burst.",
    ),
    find=find,
)
