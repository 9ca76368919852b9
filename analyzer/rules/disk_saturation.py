"""``disk_saturation``: a block device's request latency / queue / utilisation far above its
baseline, with ``%iowait`` — also when ``%util`` stays low, as it does on fast virtual and
parallel (NVMe) devices whose queues never look "busy".

One finding per period, naming the whole disk first (partitions and device-mapper volumes
follow it), the process that did the I/O (pidstat ``-d``), and what the disk slowed down
(database time, wire latency, loop stalls, HTTP latency) with rank correlation and lag.
"""

from __future__ import annotations

import datetime as dt
import re

import polars as pl

from analyzer.rules._base import (
    Candidate,
    Context,
    Rule,
    grade,
    iso,
    merge_intervals,
    num,
    seconds,
    segment_evidence,
    worse,
)

LATENCY = ("disk.await_ms", "disk.w_await_ms", "disk.r_await_ms", "disk.f_await_ms")
QUEUE = ("disk.aqu_sz",)
UTIL = ("disk.util_pct",)
THROUGHPUT = ("disk.write_kbps", "disk.read_kbps", "disk.w_per_s")
SLOWED = ("pg.exec_ms_per_s", "pg.wire_latency_ms", "pg.wire_latency_p99_ms", "loop.stall_ms",
          "http.latency_ms", "http.latency_p99_ms")
SLOWED_NAMES = {"pg": "PostgreSQL", "loop": "the event loop", "http": "HTTP responses"}
_LAYERED = re.compile(r"^dev:(dm-\d+|md\d+|loop\d+|zram\d+|.*\d+p\d+|(sd|vd|xvd|hd)[a-z]+\d+)$")


def find(ctx: Context) -> list[Candidate]:
    core = ctx.segs(LATENCY + QUEUE + UTIL, prefix="dev:")
    core = core.filter(~pl.col("metric").is_in(list(UTIL)) | (pl.col("peak") > 90.0))
    spans = merge_intervals([(r["start"], r["end"]) for r in core.iter_rows(named=True)], gap_s=5.0)
    out = []
    for start, end in spans:
        cand = _candidate(ctx, core.filter((pl.col("start") <= end) & (pl.col("end") >= start)), start, end)
        if cand is not None:
            out.append(cand)
    return out


def _candidate(ctx: Context, part: pl.DataFrame, start: dt.datetime, end: dt.datetime) -> Candidate | None:
    devices = part.group_by("entity").agg(pl.col("z_max").max().fill_null(0.0).alias("z"), pl.len().alias("n"),
                                          pl.col("samples").sum().alias("samples"))
    devices = devices.with_columns(pl.col("entity").str.contains(_LAYERED.pattern).alias("layered")) \
        .sort(["layered", "z", "entity"], descending=[False, True, False])
    root = devices.row(0, named=True)["entity"]
    mine = part.filter(pl.col("entity") == root)
    iowait = ctx.segs(["cpu.iowait_pct"], start=start, end=end, pad_s=2)
    volume = ctx.segs(THROUGHPUT, start=start, end=end, pad_s=2).filter(pl.col("entity") == root)
    classes = {m for m in mine.get_column("metric").to_list()}
    has_latency = bool(classes & set(LATENCY + QUEUE))
    if not has_latency and not (classes & set(UTIL)):
        return None
    corroborated = iowait.height > 0 or volume.height > 0
    if num(mine.get_column("samples").max()) < 2 and iowait.height == 0:
        return None  # one busy second without CPU iowait: a flush, not saturation
    evidence = [segment_evidence(r, unit=_unit(r["metric"]), role="device")
                for r in mine.sort("z_max", descending=True, nulls_last=True).iter_rows(named=True)]
    evidence += [segment_evidence(r, unit=_unit(r["metric"]), role="throughput") for r in volume.head(2).iter_rows(named=True)]
    evidence += [segment_evidence(r, unit="%", role="iowait") for r in iowait.head(1).iter_rows(named=True)]
    writer = _top_process(ctx, start, end, _peak(volume, THROUGHPUT[:2]))
    if writer:
        evidence.append(writer["evidence"])
    await_peak = _peak(mine, LATENCY)
    util_peak = _peak(mine, UTIL)
    severity = worse(grade(await_peak, [(20, "medium"), (100, "high")]),
                     grade(_peak(mine, QUEUE), [(4, "medium"), (16, "high")]))
    severity = worse(severity, grade(util_peak, [(95, "medium")]))
    if iowait.height:
        severity = worse(severity, grade(num(iowait.get_column("peak").max()), [(30, "medium")]))
    if not corroborated or seconds(end - start) < 3:
        severity = "low"
    slowed = _slowed(ctx, mine, start, end)
    evidence += slowed
    low_util = util_peak is None or util_peak < 60
    confidence = 0.5 + 0.2 * bool(iowait.height) + 0.15 * bool(volume.height) + 0.1 * bool(writer)
    reason = ", ".join(filter(None, [
        "device latency/queue far above baseline" if has_latency else "device busy above 90 %",
        "with CPU iowait" if iowait.height else "without iowait",
        "throughput rose" if volume.height else None,
        f"{writer['label']} did the I/O" if writer else None]))
    entities = [root] + [d for d in devices.get_column("entity").to_list() if d != root]
    if writer:
        entities.append(writer["pid"])
    return Candidate(start, end, severity, min(confidence, 0.95), reason, entities, evidence,
                     {"device": root.removeprefix("dev:"), "await_peak": await_peak,
                      "await_base": _base(mine, LATENCY), "queue_peak": _peak(mine, QUEUE),
                      "util_peak": util_peak, "low_util": low_util,
                      "iowait_peak": num(iowait.get_column("peak").max()) if iowait.height else None,
                      "writer": writer["label"] if writer else None,
                      "slowed": sorted({SLOWED_NAMES[s["metric"].split(".")[0]] for s in slowed})})


def _unit(metric: str) -> str:
    return "ms" if metric.endswith("_ms") else "%" if metric.endswith("_pct") else \
        "KiB/s" if metric.endswith("kbps") else "/s" if metric.endswith("per_s") else ""


def _peak(rows: pl.DataFrame, metrics: tuple[str, ...]) -> float | None:
    sel = rows.filter(pl.col("metric").is_in(list(metrics)))
    return num(sel.get_column("peak").max()) if sel.height else None


def _base(rows: pl.DataFrame, metrics: tuple[str, ...]) -> float | None:
    sel = rows.filter(pl.col("metric").is_in(list(metrics))).sort("peak", descending=True)
    return num(sel.get_column("base").first()) if sel.height else None


def _top_process(ctx: Context, start: dt.datetime, end: dt.datetime, device_peak: float | None) -> dict | None:
    """The command that moved most data in the window (pidstat ``-d``), its pids summed.

    A sample is capped at the device's peak throughput: when a child exits the kernel adds
    its I/O to the parent, and pidstat then shows the parent "writing" gigabytes in a second."""
    io = ctx.metrics.filter(pl.col("metric").is_in(["proc.write_kbps", "proc.read_kbps"])
                            & pl.col("entity").str.starts_with("pid:")
                            & pl.col("ts").is_between(start, end + dt.timedelta(seconds=1)))
    if io.height == 0:
        return None
    if device_peak:
        io = io.with_columns(pl.col("value").clip(upper_bound=device_peak))
    labels = pl.DataFrame({"entity": io.get_column("entity").unique()}).with_columns(
        pl.col("entity").map_elements(lambda e: ctx.label(e) or e, return_dtype=pl.Utf8).alias("label"))
    io = io.join(labels, on="entity", how="left")
    # processes that moved a tenth of what the busiest one did; the rest are bystanders
    per_pid = io.group_by("entity").agg(pl.col("value").sum().alias("_kib"))
    movers = per_pid.filter(pl.col("_kib") >= 0.1 * pl.col("_kib").max()).get_column("entity")
    io = io.filter(pl.col("entity").is_in(movers.implode()))
    per = io.group_by("label").agg(pl.col("value").sum().alias("kib"), pl.col("entity").unique().sort().alias("pids"),
                                   pl.col("source").first(), pl.col("file").first(), pl.col("line").first(),
                                   pl.col("value").max().alias("peak")).sort(["kib", "label"], descending=[True, False])
    top = per.row(0, named=True)
    if top["kib"] <= 0:
        return None
    share = top["kib"] / float(per.get_column("kib").sum())
    pid = max(top["pids"], key=lambda p: float(io.filter(pl.col("entity") == p).get_column("value").sum()))
    label = top["label"] + (f" ×{len(top['pids'])}" if len(top["pids"]) > 1 else "")
    return {"pid": pid, "label": label,
            "evidence": {"role": "writer", "source": top["source"], "metric": "proc.write_kbps+read_kbps",
                         "entity": pid, "label": top["label"], "pids": top["pids"][:10],
                         "peak": round(top["peak"], 1), "unit": "KiB/s", "share": round(share, 3),
                         "file": top["file"], "line": top["line"]}}


def _slowed(ctx: Context, mine: pl.DataFrame, start: dt.datetime, end: dt.datetime) -> list[dict]:
    others = ctx.segs(SLOWED, start=start, end=end, pad_s=2)
    if others.height == 0:
        return []
    cause = mine.filter(pl.col("metric").is_in(list(LATENCY + QUEUE))).sort("z_max", descending=True)
    cause_row = (cause if cause.height else mine).row(0, named=True)
    moves = ctx.comove(cause_row, others.to_dicts(), start, end)
    by_series = {(m["source"], m["entity"], m["metric"]): m for m in moves}
    out = []
    for r in others.iter_rows(named=True):
        m = by_series.get((r["source"], r["entity"], r["metric"]), {})
        out.append(segment_evidence(r, unit=_unit(r["metric"]), role="slowed", correlation=m.get("rho"),
                                    lag_s=m.get("lag_s"), onset_after_s=round(seconds(r["start"] - start), 1),
                                    since=iso(r["start"])))
    return out


RULE = Rule(
    key="disk_saturation",
    triggers=LATENCY + QUEUE + UTIL,
    explains=("slow_query", "event_loop_blocked", "thread_exhaustion", "db_pool_exhaustion"),
    title=(
        "Disk {{ device }} saturated:"
        "{% if await_peak is not none %} request latency {{ await_peak|num }} ms"
        "{% if await_base is not none %} (baseline {{ await_base|num }} ms){% endif %}{% endif %}"
        "{% if queue_peak is not none %}{{ ',' if await_peak is not none }} queue {{ queue_peak|num }}{% endif %}"
        "{% if await_peak is none and queue_peak is none %} %util {{ util_peak|num }} %{% endif %}"
        "{% if iowait_peak is not none %}, CPU iowait {{ iowait_peak|num }} %{% endif %}"
        "{% if low_util %} while %util stayed low (a fast or parallel device){% endif %}"
        "{% if writer %}; {{ writer }} did the I/O{% endif %}"
        "{% if downstream or slowed %}; it slowed down {{ downstream|human if downstream else slowed|join(', ') }}{% endif %}."),
    recommendations=(
        "Find the writer{% if writer %} ({{ writer }}){% endif %}: throttle or schedule bulk I/O (ionice -c3, "
        "cgroup io.max), and keep it off the database's and the service's volume.",
        "Avoid synchronous/direct small writes (O_DSYNC, fsync per record); batch them.",
        "On virtual or NVMe disks judge saturation by await and aqu-sz against their baseline, not %util.",
    ),
    find=find,
)
