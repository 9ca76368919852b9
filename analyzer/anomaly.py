"""Per-series anomalies: robust baselines, practitioners' thresholds, change points, event bursts.

Everything here is vectorised polars over the long ``metrics``/``events`` frames of a
:class:`~analyzer.timeline.Timeline`; no Python loop runs over rows.

Baseline of a sample = the median of its series over a centred time window (``window``,
default 10 min) and its scale = 1.4826 × the median absolute deviation over the same
window, floored per metric (an idle disk has a MAD of zero; a deviation of 0.3 ms is
still nothing). A user-named quiet period (``baseline=(start, end)``) replaces the rolling
window for every series that has samples in it.

>>> import datetime as dt, polars as pl
>>> from analyzer.anomaly import score
>>> ts = [dt.datetime(2026, 1, 1, 10, 0, s, tzinfo=dt.timezone.utc) for s in range(40)]
>>> m = pl.DataFrame({"ts": ts, "source": "iostat", "host": "", "entity": "dev:vda",
...                   "metric": "disk.await_ms", "value": [1.0] * 30 + [80.0] * 5 + [1.0] * 5,
...                   "file": "iostat.txt", "line": list(range(1, 41))})
>>> score(m).filter(pl.col("anomalous")).height
5
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass, fields
from typing import Any

import polars as pl

SERIES = ["source", "host", "entity", "metric", "file"]  # the same metric from two files stays two series
UTC_NS = pl.Datetime("ns", "UTC")


@dataclass(frozen=True)
class Policy:
    """How one metric is judged (values in the metric's own unit)."""

    floor: float  # smallest scale a deviation is measured against
    min_value: float = 0.0  # below this a sample is never anomalous (noise floor)
    threshold: float = math.inf  # practitioners' absolute threshold: above it is anomalous
    z: float = 6.0  # robust z-score that makes a sample anomalous
    rel_floor: float = 0.25  # the scale is at least this share of the baseline
    gauge: bool = False  # instant value (ts = the instant) rather than an interval average
    sparse: bool = False  # absent samples mean zero (pidstat prints active tasks only)
    level: bool = False  # look for level shifts (change points) in this series


_DISK_MS = Policy(floor=2.0, min_value=5.0, z=6.0, rel_floor=0.5)
_PG_RATE = Policy(floor=20.0, min_value=100.0, rel_floor=0.5, sparse=True)
_WIRE_MS = Policy(floor=5.0, min_value=20.0, rel_floor=0.5)
_HTTP_MS = Policy(floor=20.0, min_value=200.0, rel_floor=0.5)
# a healthy path retransmits almost never: three a second, again and again, is already loss
_NET_RATE = Policy(floor=0.5, min_value=3.0, rel_floor=0.5, sparse=True)

POLICIES: dict[str, Policy] = {
    "proc.threads": Policy(floor=2.0, min_value=0.0, z=8.0, rel_floor=0.2, gauge=True, level=True),
    "proc.cpu_pct": Policy(floor=10.0, min_value=50.0, threshold=95.0, sparse=True),
    "proc.cswch_per_s": Policy(floor=50.0, min_value=300.0, rel_floor=0.5, sparse=True),
    "proc.write_kbps": Policy(floor=1024.0, min_value=4096.0, rel_floor=0.5, sparse=True),
    "proc.read_kbps": Policy(floor=1024.0, min_value=4096.0, rel_floor=0.5, sparse=True),
    "proc.iodelay_ticks": Policy(floor=5.0, min_value=10.0, rel_floor=0.5, sparse=True),
    "cpu.busy_pct": Policy(floor=5.0, min_value=50.0, threshold=80.0),
    "cpu.iowait_pct": Policy(floor=3.0, min_value=5.0, threshold=15.0),
    "cpu.steal_pct": Policy(floor=3.0, min_value=10.0, threshold=20.0),
    "disk.await_ms": _DISK_MS, "disk.r_await_ms": _DISK_MS, "disk.w_await_ms": _DISK_MS,
    "disk.f_await_ms": _DISK_MS,
    "disk.aqu_sz": Policy(floor=0.5, min_value=1.0, rel_floor=0.5),
    "disk.util_pct": Policy(floor=10.0, min_value=30.0, threshold=90.0),
    "disk.write_kbps": Policy(floor=2048.0, min_value=8192.0, rel_floor=0.5),
    "disk.read_kbps": Policy(floor=2048.0, min_value=8192.0, rel_floor=0.5),
    "disk.w_per_s": Policy(floor=50.0, min_value=100.0, rel_floor=0.5),
    "loop.stall_ms": Policy(floor=20.0, min_value=100.0, threshold=100.0, sparse=True),
    "net.retransmits": _NET_RATE, "net.rsts": _NET_RATE, "net.lost_segments": _NET_RATE,
    "net.dup_acks": _NET_RATE, "net.zero_window": _NET_RATE,
    "net.ack_rtt_ms": Policy(floor=1.0, min_value=5.0, rel_floor=0.5),
    "pg.exec_ms_per_s": _PG_RATE, "pg.blk_read_time_ms_per_s": _PG_RATE,
    "pg.blk_write_time_ms_per_s": _PG_RATE,
    "pg.mean_exec_ms": Policy(floor=5.0, min_value=20.0, rel_floor=0.5, sparse=True),
    "pg.active": Policy(floor=1.0, min_value=4.0, gauge=True, level=True),
    "pg.idle_in_tx": Policy(floor=1.0, min_value=3.0, gauge=True),
    "pg.waiting": Policy(floor=1.0, min_value=3.0, gauge=True),
    "pg.wire_latency_ms": _WIRE_MS, "pg.wire_latency_p99_ms": _WIRE_MS, "pg.wire_latency_max_ms": _WIRE_MS,
    "http.latency_ms": _HTTP_MS, "http.latency_p99_ms": _HTTP_MS, "http.latency_max_ms": _HTTP_MS,
    "http.errors_per_s": Policy(floor=1.0, min_value=1.0, sparse=True),
}


@dataclass(frozen=True)
class EventPolicy:
    """How bursts of one event kind are cut: events closer than ``gap_s`` belong together."""

    gap_s: float = 5.0
    min_count: int = 1  # fewer events than this in a burst is no anomaly
    min_total_s: float = 0.0  # for spans: summed duration a burst needs


EVENT_POLICIES: dict[str, EventPolicy] = {
    "loop.slow_callback": EventPolicy(gap_s=5.0, min_count=1, min_total_s=0.0),
    "loop.poll_slow": EventPolicy(gap_s=5.0, min_count=3),
    "server.worker_timeout": EventPolicy(gap_s=30.0),
    "os.too_many_open_files": EventPolicy(gap_s=10.0),
    "db.pool_error": EventPolicy(gap_s=10.0),
    "db.timeout": EventPolicy(gap_s=10.0),
    "tcp.rst": EventPolicy(gap_s=3.0, min_count=5),
    "tcp.syn_retry": EventPolicy(gap_s=3.0, min_count=3),
    "tcp.zero_window": EventPolicy(gap_s=3.0, min_count=3),
    "kernel.conntrack_full": EventPolicy(gap_s=10.0),
    "kernel.syn_flood": EventPolicy(gap_s=10.0),
    "kernel.oom_kill": EventPolicy(gap_s=10.0),
    "kernel.limit": EventPolicy(gap_s=10.0),
    "asyncio.task_destroyed": EventPolicy(gap_s=10.0, min_count=3),
    "log.error": EventPolicy(gap_s=5.0, min_count=5),
}


def policy_frame() -> pl.DataFrame:
    """The metric policies as a frame (one row per metric) for vectorised joins."""
    names = [f.name for f in fields(Policy)]
    rows = [{"metric": metric, **{n: getattr(p, n) for n in names}} for metric, p in POLICIES.items()]
    return pl.DataFrame(rows).with_columns(pl.col("threshold").cast(pl.Float64))


def prepare(metrics: pl.DataFrame) -> pl.DataFrame:
    """Metrics the engine judges: known metrics only, no per-thread or per-core series, flows
    summed per server endpoint, plus derived ``cpu.busy_pct`` (100 - idle) where a source
    reports idle but not busy."""
    # per-thread and per-core series are left out: the process and the host tell the story
    keep = metrics.filter(pl.col("metric").is_in(list(POLICIES) + ["cpu.idle_pct"])
                          & ~pl.col("entity").str.starts_with("tid:") & pl.col("value").is_not_null()
                          & pl.col("value").is_finite()
                          & (~pl.col("metric").str.starts_with("cpu.") | (pl.col("entity") == "cpu:all")))
    idle = keep.filter(pl.col("metric") == "cpu.idle_pct")
    busy_sources = keep.filter(pl.col("metric") == "cpu.busy_pct").select("source", "file").unique()
    derived = idle.join(busy_sources, on=["source", "file"], how="anti").with_columns(
        pl.lit("cpu.busy_pct").alias("metric"), (100.0 - pl.col("value")).alias("value"))
    keep = keep.filter(pl.col("metric") != "cpu.idle_pct")
    # one TCP connection retransmits rarely; the server endpoint it belongs to is the series
    flows = keep.filter(pl.col("entity").str.starts_with("flow:"))
    direct = keep.filter(pl.col("entity").str.starts_with("endpoint:")).select("file", "metric").unique()
    flows = flows.join(direct, on=["file", "metric"], how="anti")  # the parser already summed them
    if flows.height:
        server = pl.concat_str(pl.lit("endpoint:"), pl.col("entity").str.extract(r">(.+:\d+)$"))
        summed = flows.with_columns(server.alias("entity")).drop_nulls("entity").group_by(
            "source", "host", "entity", "metric", "ts").agg(
            pl.col("value").sum(), pl.col("file").first(), pl.col("line").min())
    keep = keep.filter(~pl.col("entity").str.starts_with("flow:"))
    if flows.height:
        keep = pl.concat([keep, summed.select(keep.columns)], how="vertical")
    return pl.concat([keep, derived.select(keep.columns)], how="vertical") if derived.height else keep


def _as_utc(value: Any) -> dt.datetime:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value


@dataclass(frozen=True)
class Scored:
    """Judged samples in a slim frame (``_sid``, ``ts``, ``value``, ``line``, ``base``,
    ``scale``, ``z``, ``anomalous``, ``reason``) plus one row per series with its names and
    policy: string columns are not repeated on millions of rows."""

    samples: pl.DataFrame
    series: pl.DataFrame

    def full(self, samples: pl.DataFrame | None = None) -> pl.DataFrame:
        """``samples`` (default: all) with their series' columns, in :data:`SCORED_COLUMNS` order."""
        part = self.samples if samples is None else samples
        return part.join(self.series, on="_sid", how="left", maintain_order="left").select(SCORED_COLUMNS)

    def of(self, metric: str, *, entity: str | None = None, file: str | None = None) -> pl.DataFrame:
        """Full rows of the series with this metric (and entity / file)."""
        sel = self.series.filter(pl.col("metric") == metric)
        if entity is not None:
            sel = sel.filter(pl.col("entity") == entity)
        if file is not None:
            sel = sel.filter(pl.col("file") == file)
        return self.full(self.samples.filter(pl.col("_sid").is_in(sel.get_column("_sid").implode())))


def score(metrics: pl.DataFrame, *, window: str = "10m", baseline: tuple[Any, Any] | None = None,
          spans: pl.DataFrame | None = None) -> pl.DataFrame:
    """Every judged sample with its baseline, scale, robust z-score and verdict.

    ``spans`` (``file``, ``start``, ``end``: e.g. the timeline's ``sources``) says how long each
    file observed; a sparse series (absent = zero) covering less than half of its file's
    sampling grid gets a zero baseline.

    Columns: the metric columns plus ``interval_s``, ``base``, ``scale``, ``z``, ``anomalous``
    and ``reason`` (``baseline`` or ``threshold``)."""
    return judge(metrics, window=window, baseline=baseline, spans=spans).full()


def judge(metrics: pl.DataFrame, *, window: str = "10m", baseline: tuple[Any, Any] | None = None,
          spans: pl.DataFrame | None = None) -> Scored:
    """:func:`score` without repeating the series' names on every sample."""
    m = prepare(metrics)
    if m.height == 0:
        empty = _empty_scored().with_columns(pl.lit(0, dtype=pl.UInt64).alias("_sid"),
                                             pl.lit(False).alias("sparse"), pl.lit(0.0).alias("_coverage"))
        return Scored(empty.select(SLIM_COLUMNS), empty.select(SERIES_COLUMNS))
    # one integer per series: sorting and windowing over five string keys is slow
    m = m.with_columns(pl.struct(SERIES).hash(seed=7).alias("_sid"))
    # by time, then stably by series: four times cheaper than one sort on both keys
    slim = m.select("_sid", "ts", "value", "line").sort("ts").sort("_sid", maintain_order=True)
    series = m.group_by("_sid").agg(*[pl.col(c).first() for c in SERIES], pl.len().alias("_n"))
    slim = _rolling_baseline(slim, _duration_ns(window))
    if baseline is not None:
        slim = _user_baseline(slim, baseline)
    series = _with_grid(slim, series, spans).join(policy_frame().rename({"z": "z_policy"}), on="metric",
                                                  how="left")
    per_sample = series.select("_sid", "sparse", "_coverage", "floor", "rel_floor", "z_policy", "threshold",
                               "min_value")
    s = slim.join(per_sample, on="_sid", how="left", maintain_order="left")
    sparse_idle = pl.col("sparse") & (pl.col("_coverage") < 0.5)
    s = s.with_columns(
        pl.when(sparse_idle).then(0.0).otherwise(pl.col("base")).alias("base"),
        pl.when(sparse_idle).then(0.0).otherwise(pl.col("mad")).alias("mad"))
    s = s.with_columns(pl.max_horizontal(1.4826 * pl.col("mad"), pl.col("floor"),
                                         pl.col("rel_floor") * pl.col("base").abs()).alias("scale"))
    s = s.with_columns(((pl.col("value") - pl.col("base")) / pl.col("scale")).alias("z"))
    by_base = pl.col("z") >= pl.col("z_policy")
    by_threshold = pl.col("value") > pl.col("threshold")
    passes = pl.col("value") >= pl.col("min_value")
    s = s.with_columns(
        (passes & (by_base | by_threshold)).alias("anomalous"),
        pl.when(passes & by_base).then(pl.lit("baseline"))
        .when(passes & by_threshold).then(pl.lit("threshold")).otherwise(None).alias("reason"),
    ).select(SLIM_COLUMNS)
    return Scored(s, series.select(SERIES_COLUMNS))


def _with_grid(slim: pl.DataFrame, series: pl.DataFrame, spans: pl.DataFrame | None) -> pl.DataFrame:
    """Per series: its file's sampling interval and grid size, and its coverage of that grid."""
    per = slim.group_by("_sid").agg(
        pl.col("ts").min().alias("_first"), pl.col("ts").max().alias("_last"),
        (pl.col("ts").diff().dt.total_microseconds().median() / 1e6).alias("_step"))
    series = series.join(per, on="_sid", how="left")
    # the densest series of a file shows its sampling interval; sparse ones only show gaps
    grid = series.group_by("file").agg(pl.col("_first").min(), pl.col("_last").max(),
                                       pl.col("_step").min().fill_null(1.0).alias("interval_s"))
    if spans is not None and spans.height:
        known = spans.select("file", pl.col("start").cast(UTC_NS).alias("_s"), pl.col("end").cast(UTC_NS)
                             .alias("_e")).drop_nulls().unique(subset=["file"])
        grid = grid.join(known, on="file", how="left").with_columns(
            pl.min_horizontal("_first", "_s").alias("_first"), pl.max_horizontal("_last", "_e").alias("_last"))
    grid = grid.with_columns(((pl.col("_last") - pl.col("_first")).dt.total_microseconds() / 1e6
                              / pl.col("interval_s") + 1).alias("_grid_n"))
    series = series.drop("_first", "_last", "_step").join(grid.select("file", "interval_s", "_grid_n"),
                                                          on="file", how="left")
    return series.with_columns((pl.col("_n") / pl.col("_grid_n")).alias("_coverage"))


SCORED_COLUMNS = [*SERIES, "ts", "value", "line", "interval_s", "base", "scale", "z",
                  "anomalous", "reason", "gauge", "level", "threshold", "floor", "rel_floor"]
SLIM_COLUMNS = ["_sid", "ts", "value", "line", "base", "scale", "z", "anomalous", "reason"]
SERIES_COLUMNS = ["_sid", *SERIES, "interval_s", "gauge", "level", "threshold", "floor", "rel_floor",
                  "sparse", "_coverage"]


def _duration_ns(window: str) -> int:
    units = {"ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9, "d": 86400 * 10**9}
    match = re.fullmatch(r"(\d+)(ms|s|m|h|d)", window)
    if not match:
        raise ValueError(f"expected a window such as 10m or 30s, got {window!r}")
    return int(match.group(1)) * units[match.group(2)]


def _rolling_baseline(m: pl.DataFrame, window_ns: int) -> pl.DataFrame:
    """``base`` (median) and ``mad`` (median absolute deviation) over a centred window.

    A series no longer than the window uses its whole length. Longer series are cut into
    buckets of 1/60 of the window; the centred rolling median of the bucket medians stands
    for the window's median, that of the buckets' own MADs for its MAD (a day of 1 s
    samples: 1 440 buckets per series instead of 86 400 windows of 600 samples)."""
    bucket_ns = max(window_ns // 60, 10**9)
    span = (pl.col("ts").max() - pl.col("ts").min()).over("_sid").dt.total_nanoseconds()
    m = m.with_columns((span > window_ns).alias("_long"))
    short = m.filter(~pl.col("_long"))
    long = m.filter(pl.col("_long"))
    parts = []
    if short.height:
        median = pl.col("value").median().over("_sid")
        parts.append(short.with_columns(median.alias("base"))
                     .with_columns((pl.col("value") - pl.col("base")).abs().median().over("_sid").alias("mad")))
    if long.height:
        # rows are sorted by series then time: a bucket is a run of rows, numbered in order
        bucket = pl.col("ts").dt.truncate(f"{bucket_ns}ns")
        starts = (bucket != bucket.shift()) | (pl.col("_sid") != pl.col("_sid").shift())
        long = long.with_columns(bucket.alias("_bucket"), (starts.fill_null(True).cum_sum() - 1).alias("_run"))
        centred = pl.col("_b").rolling_median(61, center=True, min_samples=1).over("_sid")
        spread = pl.col("_d").rolling_median(61, center=True, min_samples=1).over("_sid")
        buckets = long.group_by("_run", maintain_order=True).agg(
            pl.col("_sid").first(),
            pl.col("value").median().alias("_b"),
            (pl.col("value") - pl.col("value").median()).abs().median().alias("_d"),
        ).with_columns(centred.alias("base"), spread.alias("_spread"))
        # a level that moves across the window widens the spread around the window's median
        buckets = buckets.with_columns(
            pl.max_horizontal("_spread", (pl.col("_b") - pl.col("base")).abs().rolling_median(
                61, center=True, min_samples=1).over("_sid")).alias("mad"))
        run = long.get_column("_run")
        parts.append(long.drop("_bucket", "_run").with_columns(
            buckets.get_column("base").gather(run).alias("base"),
            buckets.get_column("mad").gather(run).alias("mad")))
    out = pl.concat(parts, how="vertical") if len(parts) > 1 else parts[0]
    return out.drop("_long")


def _user_baseline(m: pl.DataFrame, baseline: tuple[Any, Any]) -> pl.DataFrame:
    start, end = (_as_utc(b) for b in baseline)
    quiet = m.filter(pl.col("ts").is_between(start, end)).group_by("_sid").agg(
        pl.col("value").median().alias("_qbase"),
        (pl.col("value") - pl.col("value").median()).abs().median().alias("_qmad"))
    m = m.join(quiet, on="_sid", how="left", maintain_order="left")
    return m.with_columns(pl.coalesce("_qbase", "base").alias("base"),
                          pl.coalesce("_qmad", "mad").alias("mad")).drop("_qbase", "_qmad")


def _empty_scored() -> pl.DataFrame:
    return pl.DataFrame(schema={
        "source": pl.Utf8, "host": pl.Utf8, "entity": pl.Utf8, "metric": pl.Utf8, "ts": UTC_NS,
        "value": pl.Float64, "file": pl.Utf8, "line": pl.Int64, "interval_s": pl.Float64,
        "base": pl.Float64, "scale": pl.Float64, "z": pl.Float64, "anomalous": pl.Boolean,
        "reason": pl.Utf8, "gauge": pl.Boolean, "level": pl.Boolean, "threshold": pl.Float64,
        "floor": pl.Float64, "rel_floor": pl.Float64})


SEGMENT_SCHEMA: dict[str, pl.DataType] = {
    "source": pl.Utf8(), "host": pl.Utf8(), "entity": pl.Utf8(), "metric": pl.Utf8(),
    "origin": pl.Utf8(),  # metric | event
    "start": UTC_NS, "end": UTC_NS, "peak": pl.Float64(), "peak_ts": UTC_NS, "base": pl.Float64(),
    "scale": pl.Float64(), "z_max": pl.Float64(), "samples": pl.Int64(), "total": pl.Float64(),
    "file": pl.Utf8(), "line": pl.Int64(), "reason": pl.Utf8(),
}


def segments(scored: pl.DataFrame, *, min_gap_s: float = 2.0, gap_factor: float = 2.5) -> pl.DataFrame:
    """Runs of anomalous samples per series: one row per run with its window, peak and baseline.

    Two anomalous samples of a series belong to one run when they are at most
    ``max(gap_factor × sampling interval, min_gap_s)`` apart. A run of interval averages
    starts one interval before its first sample (the sample's ``ts`` is the interval end)."""
    a = scored.filter(pl.col("anomalous"))
    if a.height == 0:
        return pl.DataFrame(schema=SEGMENT_SCHEMA)
    a = a.sort([*SERIES, "ts"])
    tol_us = (pl.max_horizontal(pl.col("interval_s") * gap_factor, pl.lit(min_gap_s)) * 1e6)
    gap = pl.col("ts").diff().over(SERIES).dt.total_microseconds()
    a = a.with_columns((gap.is_null() | (gap > tol_us)).cum_sum().alias("_run"))
    at_peak = pl.col("value").arg_max()
    runs = a.group_by([*SERIES, "_run"]).agg(
        pl.lit("metric").alias("origin"),
        pl.when(pl.col("gauge").first()).then(pl.col("ts").min())
        .otherwise(pl.col("ts").min() - pl.duration(microseconds=(pl.col("interval_s").first() * 1e6)
                                                     .cast(pl.Int64))).alias("start"),
        pl.col("ts").max().alias("end"),
        pl.col("value").max().alias("peak"),
        pl.col("ts").get(at_peak).alias("peak_ts"),
        pl.col("base").get(at_peak).alias("base"),
        pl.col("scale").get(at_peak).alias("scale"),
        pl.col("z").max().alias("z_max"),
        pl.len().cast(pl.Int64).alias("samples"),
        pl.col("value").sum().alias("total"),
        pl.col("line").get(at_peak).alias("line"),
        pl.col("reason").get(at_peak).alias("reason"),
    )
    return runs.select(list(SEGMENT_SCHEMA)).cast(SEGMENT_SCHEMA).sort("start", *SERIES)  # type: ignore[arg-type]


def change_points(scored: pl.DataFrame, *, k: int = 5, z: float = 6.0) -> pl.DataFrame:
    """Level shifts in series whose policy asks for them (thread counts, active backends).

    At each sample the median of the ``k`` samples before is compared with the median of
    the ``k`` samples from it on; a shift is kept where its robust score is at least ``z``
    and is the largest within ``k`` samples either side.
    Columns: series, ``ts``, ``before``, ``after``, ``shift``, ``score``, ``file``, ``line``."""
    s = scored.filter(pl.col("level")).sort([*SERIES, "ts"])
    if s.height == 0:
        return pl.DataFrame(schema={**{c: pl.Utf8 for c in SERIES}, "ts": UTC_NS, "before": pl.Float64,
                                    "after": pl.Float64, "shift": pl.Float64, "score": pl.Float64,
                                    "line": pl.Int64})
    med = pl.col("value").rolling_median(k, min_samples=k)
    s = s.with_columns(med.shift(1).over(SERIES).alias("before"),
                       med.shift(-(k - 1)).over(SERIES).alias("after"))
    s = s.with_columns((pl.col("after") - pl.col("before")).alias("shift"))
    # measured against the lower level: after a lasting shift the rolling baseline sits on the
    # new level and its relative floor would hide the step that led there
    lower = pl.min_horizontal(pl.col("before").abs(), pl.col("after").abs())
    step_scale = pl.max_horizontal(pl.col("floor"), pl.col("rel_floor") * lower, pl.lit(1e-9))
    s = s.with_columns((pl.col("shift") / step_scale).alias("score"))
    # medians decide whether there is a step (robust to spikes); means say where it is (a
    # median jumps up to k/2 samples early)
    mean = pl.col("value").rolling_mean(k, min_samples=k)
    s = s.with_columns((mean.shift(-(k - 1)).over(SERIES) - mean.shift(1).over(SERIES)).abs().alias("_mshift"))
    peak = pl.col("_mshift").rolling_max(2 * k + 1, center=True, min_samples=1).over(SERIES)
    s = s.filter((pl.col("score").abs() >= z) & (pl.col("_mshift") >= peak))
    # a plateau of equal scores yields several maxima: keep the first of each run
    s = s.filter(pl.col("ts").diff().over(SERIES).is_null()
                 | (pl.col("ts").diff().over(SERIES) > pl.duration(seconds=1) * k))
    return s.select(*SERIES, "ts", "before", "after", "shift", "score", "line")


def event_bursts(events: pl.DataFrame) -> pl.DataFrame:
    """Clusters of notable events of one kind (slow callbacks, resets, pool errors, kernel
    limits ...) as segments: ``samples`` = how many, ``total`` = summed duration (s),
    ``peak`` = the longest."""
    pol = pl.DataFrame([{"kind": k, "gap_s": p.gap_s, "min_count": p.min_count,
                         "min_total_s": p.min_total_s} for k, p in EVENT_POLICIES.items()])
    e = events.filter(pl.col("kind").is_in(list(EVENT_POLICIES)) | pl.col("kind").str.starts_with("kernel."))
    if e.height == 0:
        return pl.DataFrame(schema=SEGMENT_SCHEMA)
    e = e.join(pol, on="kind", how="left").with_columns(
        pl.col("gap_s").fill_null(10.0), pl.col("min_count").fill_null(1), pl.col("min_total_s").fill_null(0.0),
        pl.coalesce("end", "ts").alias("_end")).sort(["host", "kind", "ts"])
    reach = pl.col("_end").cum_max().shift(1).over(["host", "kind"])
    gap = (pl.col("ts") - reach).dt.total_microseconds()
    e = e.with_columns((reach.is_null() | (gap > pl.col("gap_s") * 1e6)).cum_sum().alias("_run"))
    at_peak = pl.col("value").fill_null(0.0).arg_max()
    runs = e.group_by(["host", "kind", "_run"]).agg(
        pl.col("source").mode().sort().first().alias("source"),
        pl.col("entity").drop_nulls().mode().sort().first().alias("entity"),
        pl.lit("event").alias("origin"),
        pl.col("ts").min().alias("start"), pl.col("_end").max().alias("end"),
        pl.col("value").max().alias("peak"), pl.col("ts").get(at_peak).alias("peak_ts"),
        pl.lit(None, dtype=pl.Float64).alias("base"), pl.lit(None, dtype=pl.Float64).alias("scale"),
        pl.lit(None, dtype=pl.Float64).alias("z_max"), pl.len().cast(pl.Int64).alias("samples"),
        pl.col("value").fill_null(0.0).sum().alias("total"),
        pl.col("file").get(at_peak).alias("file"), pl.col("line").get(at_peak).alias("line"),
        pl.lit("event").alias("reason"),
        pl.col("min_count").first().alias("_min_count"), pl.col("min_total_s").first().alias("_min_total"),
    ).filter((pl.col("samples") >= pl.col("_min_count")) & (pl.col("total") >= pl.col("_min_total")))
    return runs.rename({"kind": "metric"}).select(list(SEGMENT_SCHEMA)) \
        .cast(SEGMENT_SCHEMA).sort("start", *SERIES)  # type: ignore[arg-type]


def detect(metrics: pl.DataFrame, events: pl.DataFrame, *, window: str = "10m",
           baseline: tuple[Any, Any] | None = None,
           spans: pl.DataFrame | None = None) -> tuple[Scored, pl.DataFrame, pl.DataFrame]:
    """(scored samples, anomaly segments from metrics and events, change points)."""
    scored = judge(metrics, window=window, baseline=baseline, spans=spans)
    anomalous = scored.full(scored.samples.filter(pl.col("anomalous")))
    levels = scored.series.filter(pl.col("level")).get_column("_sid")
    stepping = scored.full(scored.samples.filter(pl.col("_sid").is_in(levels.implode())))
    segs = pl.concat([segments(anomalous), event_bursts(events)], how="vertical").sort("start", *SERIES)
    return scored, segs, change_points(stepping)
