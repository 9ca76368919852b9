"""pg_stat_statements snapshots → per-interval deltas, in polars, streaming.

Counters are cumulative since an entry was created, so an interval's activity is
``snap[i] - snap[i-1]`` per key ``(userid, dbid, toplevel, queryid)``; the sample's ``ts`` is the
later snapshot's time. What breaks the subtraction (FORMATS.md §5.3):

- a **reset** (``pg_stat_statements_reset()``, whole or per entry): a counter decreases or
  ``stats_since`` changes. Everything the entry holds afterwards happened inside the interval,
  so the delta is the current counters (a lower bound), never a negative number. When most
  entries of the previous snapshot vanish or shrink and the total call count drops, it is one
  global reset (one ``pg.stats_reset`` event on ``query:all``), else one event per entry.
- an **eviction** (``pg_stat_statements.max`` exceeded): the key disappears and comes back
  with smaller counters → a per-entry reset event; delta = current counters.
- a **new entry** (absent before): its counters all accrued inside the interval, unless the
  dump is partial (``ORDER BY ... LIMIT``), recognised by a key that comes back with *larger*
  counters after being absent — then first appearances give no delta at all.

Mean and stddev of the interval are recomputed from Σx = total and Σx² = (stddev² + mean²)·calls.

Feed snapshots in time order with ``DeltaEngine.push`` (any number of whole snapshots per call);
memory stays bounded by the number of distinct keys plus the output.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import polars as pl

KEY = ("userid", "dbid", "toplevel", "queryid")
# cumulative counters: name in the snapshot → delta column
COUNTERS = ("calls", "total_exec_time", "total_plan_time", "rows", "shared_blks_hit", "shared_blks_read",
            "temp_blks_written", "shared_blk_read_time", "shared_blk_write_time")
RESET_COUNTERS = ("calls", "total_exec_time", "rows", "shared_blks_hit", "shared_blks_read")
# metric name → (numerator delta column, per second?)
RATE_METRICS = {
    "pg.calls_per_s": "calls",
    "pg.exec_ms_per_s": "total_exec_time",
    "pg.plan_ms_per_s": "total_plan_time",
    "pg.rows_per_s": "rows",
    "pg.shared_blks_hit_per_s": "shared_blks_hit",
    "pg.shared_blks_read_per_s": "shared_blks_read",
    "pg.temp_blks_written_per_s": "temp_blks_written",
    "pg.blk_read_time_ms_per_s": "shared_blk_read_time",
    "pg.blk_write_time_ms_per_s": "shared_blk_write_time",
}
# per-query series dropped when zero everywhere (tracking off): plan/I/O timing, temp files
SPARSE_METRICS = ("pg.plan_ms_per_s", "pg.temp_blks_written_per_s", "pg.blk_read_time_ms_per_s",
                  "pg.blk_write_time_ms_per_s")
GLOBAL_RESET_SHARE = 0.5
TOP_PER_INTERVAL = 10  # queries with their own series: the heaviest of every interval ...
TOP_OVERALL = 50  # ... and of the whole file
KEEP_HEAVIEST = 200  # per-key rows kept while streaming: the heaviest so far (+ every interval's top)
EPS = 1e-6


@dataclass
class DeltaResult:
    deltas: pl.DataFrame  # one row per key and interval with a valid delta (d_* columns)
    totals: pl.DataFrame  # one row per interval: sums over top-level statements
    events: list[dict[str, Any]] = field(default_factory=list)
    partial_dump: bool = False
    dropped_new: int = 0
    snapshots: int = 0


class DeltaEngine:
    """Consecutive-snapshot deltas. ``push`` frames need: ``snap`` (Int64, increasing across
    pushes), ``ts`` (Datetime), the key columns (Utf8), any of ``COUNTERS`` (Float64),
    optional ``mean_exec_time``/``stddev_exec_time``/``stats_since``, ``line`` (Int64)."""

    def __init__(self) -> None:
        self.state: pl.DataFrame | None = None  # last seen counters of every key (by kid)
        self.latest: pl.DataFrame | None = None  # last seen full row of every key, for tables
        self.key_ids: pl.DataFrame | None = None  # k, userid, dbid, toplevel, queryid → kid
        self.snap_ts: dict[int, Any] = {}
        self.order: list[int] = []
        self.outputs: list[pl.DataFrame] = []
        self.events: list[dict[str, Any]] = []
        self.partial_evidence = 0
        self.first_snap: int | None = None
        self.reset_snaps: list[int] = []
        self.duplicates = 0
        self.total_parts: list[pl.DataFrame] = []
        self.unsure_parts: list[pl.DataFrame] = []
        self.load: pl.DataFrame | None = None
        self.present: set[str] = set()

    # -------------------------------------------------------------------------------
    def push(self, chunk: pl.DataFrame) -> None:
        if chunk.height == 0:
            return
        chunk = self._with_key_ids(_prepare(chunk))
        unique = chunk.unique(subset=["snap", "kid"], keep="first", maintain_order=True)
        if unique.height < chunk.height:  # a dump without toplevel/userid/dbid, or a joined dump:
            self.duplicates += chunk.height - unique.height  # the entries' counters add up
            sums = chunk.group_by("snap", "kid", maintain_order=True).agg(
                *[pl.col(c).sum() for c in (*COUNTERS, "s2")])
            unique = unique.drop(*COUNTERS, "s2").join(sums, on=["snap", "kid"], how="left",
                                                        maintain_order="left")
        self.present |= {c for c in (*COUNTERS, "s2") if unique.get_column(c).null_count() < unique.height}
        latest = unique.unique(subset="kid", keep="last", maintain_order=True).drop("k")
        self.latest = latest if self.latest is None else pl.concat([self.latest, latest], how="diagonal_relaxed") \
            .unique(subset="kid", keep="last", maintain_order=True)
        chunk = unique.select("kid", "snap", "ts", "line", *COUNTERS, "s2", "stats_since_ts")
        snaps = chunk.group_by("snap").agg(pl.col("ts").first()).sort("snap")
        for snap, ts in snaps.iter_rows():
            self.snap_ts[snap] = ts
            self.order.append(snap)
        if self.first_snap is None:
            self.first_snap = int(snaps.get_column("snap")[0])
        ts_frame = pl.DataFrame({"snap": self.order, "ts_snap": [self.snap_ts[s] for s in self.order]},
                                schema_overrides={"ts_snap": chunk.schema["ts"]})
        ts_frame = ts_frame.with_columns(pl.col("ts_snap").shift(1).alias("prev_ts"),
                                         pl.col("snap").shift(1).alias("prev_snap_global"))
        new_snaps = snaps.get_column("snap")
        chunk = chunk.with_columns(pl.lit(False).alias("carried"), pl.lit(False).alias("active"))
        frame = chunk if self.state is None else pl.concat(
            [self.state.with_columns(pl.lit(True).alias("carried")), chunk], how="diagonal_relaxed")
        frame = frame.sort(["kid", "snap"])
        same = pl.col("kid") == pl.col("kid").shift(1)
        same_next = pl.col("kid") == pl.col("kid").shift(-1)
        frame = frame.with_columns(
            pl.when(same).then(pl.col("snap").shift(1)).alias("p_snap"),
            pl.when(same_next).then(pl.col("snap").shift(-1)).alias("n_snap"),
            *[pl.when(same).then(pl.col(c).shift(1)).alias(f"p_{c}") for c in (*COUNTERS, "s2")],
            pl.when(same).then(pl.col("stats_since_ts").shift(1)).alias("p_stats_since"),
            pl.when(same).then(pl.col("active").shift(1)).alias("p_active"),
        )
        frame = frame.join(ts_frame.select("snap", "prev_ts", "prev_snap_global"), on="snap", how="left")
        decreased = pl.any_horizontal([(pl.col(c) < pl.col(f"p_{c}") - EPS).fill_null(False)
                                       for c in RESET_COUNTERS])
        since_changed = ((pl.col("stats_since_ts") != pl.col("p_stats_since")).fill_null(False))
        consecutive = pl.col("p_snap") == pl.col("prev_snap_global")
        frame = frame.with_columns(
            decreased.alias("decreased"), since_changed.alias("since_changed"),
            consecutive.fill_null(False).alias("consecutive"),
        )
        # snapshot-level view: how much of the previous snapshot vanished or shrank
        new_rows = frame.filter(~pl.col("carried"))
        targets = ts_frame.filter(pl.col("snap").is_in(new_snaps.implode()) & pl.col("prev_snap_global").is_not_null())
        per_prev = frame.join(targets.select(pl.col("prev_snap_global").alias("snap"), pl.col("snap").alias("target")),
                              on="snap", how="inner")
        vanished = per_prev.group_by("target").agg(
            pl.len().alias("n_prev"),
            (pl.col("n_snap") != pl.col("target")).fill_null(True).sum().alias("vanished"),
            pl.col("calls").sum().alias("prev_calls"))
        shrunk = new_rows.group_by("snap").agg(
            (pl.col("decreased") & pl.col("consecutive")).sum().alias("shrunk"),
            pl.col("calls").sum().alias("cur_calls"), pl.col("ts").first().alias("ts"),
            pl.col("prev_ts").first().alias("prev_ts"), pl.col("line").min().alias("line"))
        snap_view = shrunk.join(vanished.rename({"target": "snap"}), on="snap", how="left").with_columns(
            ((pl.col("n_prev").fill_null(0) >= 2)
             & (pl.col("shrunk") + pl.col("vanished").fill_null(0) >= GLOBAL_RESET_SHARE * pl.col("n_prev"))
             & (pl.col("cur_calls").fill_null(0) < pl.col("prev_calls").fill_null(0))).alias("global_reset"))
        for row in snap_view.filter(pl.col("global_reset")).iter_rows(named=True):
            self.events.append({
                "ts": row["prev_ts"], "end": row["ts"], "entity": "query:all", "line": row["line"],
                "message": f"pg_stat_statements was reset between two snapshots: {row['shrunk']} of "
                           f"{row['n_prev']} entries shrank and {row['vanished']} vanished",
                "attrs": {"scope": "all", "entries_before": row["n_prev"], "shrunk": row["shrunk"],
                          "vanished": row["vanished"]}})
        self.reset_snaps += snap_view.filter(pl.col("global_reset")).get_column("snap").to_list()
        new_rows = new_rows.join(snap_view.select("snap", "global_reset"), on="snap", how="left")
        # an entry last seen before a global reset comes back as a new one, not as an eviction
        after_reset = pl.any_horizontal([(pl.col("p_snap") < r) & (pl.lit(r) <= pl.col("snap"))
                                         for r in self.reset_snaps]).fill_null(False) \
            if self.reset_snaps else pl.lit(False)
        is_first = pl.col("snap") == self.first_snap
        gap_return = pl.col("p_snap").is_not_null() & ~pl.col("consecutive")
        since_new = (pl.col("stats_since_ts") > pl.col("prev_ts")).fill_null(False)
        new_rows = new_rows.with_columns(
            (pl.col("consecutive") & (pl.col("decreased") | pl.col("since_changed"))).alias("reset"),
            (gap_return & pl.col("decreased") & ~after_reset).alias("evicted"),
            (gap_return & ~pl.col("decreased") & ~after_reset).alias("partial"),
            ((pl.col("p_snap").is_null() & ~is_first) | (gap_return & after_reset)).alias("is_new"),
        ).with_columns(
            (pl.col("reset") | pl.col("evicted") | pl.col("is_new")).alias("base0"),
            (~is_first & (pl.col("consecutive") | pl.col("evicted") | pl.col("is_new"))
             & pl.col("prev_ts").is_not_null()).alias("valid"),
            (pl.col("is_new") & since_new).alias("surely_new"),
        )
        self.partial_evidence += int(new_rows.get_column("partial").sum())
        flagged = new_rows.filter((pl.col("reset") & ~pl.col("global_reset").fill_null(False)) | pl.col("evicted"))
        for row in flagged.join(self.key_ids, on="kid", how="left").iter_rows(named=True):
            why = "evicted and re-created" if row["evicted"] else (
                "stats_since changed" if row["since_changed"] else "counters decreased")
            self.events.append({
                "ts": row["prev_ts"], "end": row["ts"], "entity": f"query:{row['queryid']}", "line": row["line"],
                "message": f"pg_stat_statements entry {row['queryid']} was reset ({why})",
                "attrs": {"scope": "entry", "reason": why, "userid": row["userid"], "dbid": row["dbid"],
                          "toplevel": row["toplevel"], "queryid": row["queryid"]}})
        base = pl.col("base0")
        dsec = (pl.col("ts") - pl.col("prev_ts")).dt.total_microseconds() / 1e6
        out = new_rows.filter(pl.col("valid")).with_columns(
            *[(pl.col(c) - pl.when(base).then(0.0).otherwise(pl.col(f"p_{c}"))).clip(lower_bound=0.0)
              .alias(f"d_{c}") for c in (*COUNTERS, "s2")],
            dsec.alias("dt_s"),
        ).filter(pl.col("dt_s") > 0)
        out = out.with_columns((pl.col("d_calls") > 0).alias("active")).select(
            "kid", "snap", "ts", "line", "dt_s", "is_new", "surely_new", "p_active", "active",
            *[f"d_{c}" for c in (*COUNTERS, "s2")])
        self._keep(out)
        # new state: the last row of every key, remembering whether it was active
        update = new_rows.select(chunk.columns).drop("active").join(out.select("kid", "snap", "active"),
                                                                    on=["kid", "snap"], how="left") \
            .with_columns(pl.col("active").fill_null(False))
        parts = [update] if self.state is None else [self.state, update]
        self.state = pl.concat(parts, how="diagonal_relaxed").sort(["kid", "snap"]) \
            .unique(subset="kid", keep="last", maintain_order=True)

    def _keep(self, out: pl.DataFrame) -> None:
        """Totals over every key now; per-key rows only for keys that may get a series (the
        heaviest of an interval or among the heaviest so far), so memory does not grow with
        the number of statements times snapshots."""
        out = out.join(self.key_ids.select("kid", "toplevel"), on="kid", how="left")
        sums = [pl.col(f"d_{c}").sum() for c in (*COUNTERS, "s2")]
        top_level = out.filter(pl.col("toplevel") != "f")
        self.total_parts.append(top_level.group_by("snap").agg(*sums, pl.col("line").min()))
        self.unsure_parts.append(top_level.filter(pl.col("is_new") & ~pl.col("surely_new"))
                                 .group_by("snap").agg(*sums))
        loads = out.group_by("kid").agg(pl.col("d_total_exec_time").sum().alias("load"))
        self.load = loads if self.load is None else pl.concat([self.load, loads]).group_by("kid").agg(
            pl.col("load").sum())
        heavy = self.load.sort("load", descending=True).head(KEEP_HEAVIEST).select("kid")
        burst = out.filter(pl.col("d_total_exec_time") > 0).with_columns(
            pl.col("d_total_exec_time").rank("ordinal", descending=True).over("snap").alias("rank")) \
            .filter(pl.col("rank") <= 2 * TOP_PER_INTERVAL).select("kid").unique()
        keep = pl.concat([heavy, burst]).unique()
        self.outputs.append(out.join(keep, on="kid", how="semi").drop("toplevel"))

    def _with_key_ids(self, chunk: pl.DataFrame) -> pl.DataFrame:
        """Small integer ids for keys: sorting and joining on them is cheap."""
        keys = chunk.select("k", *KEY).unique(subset="k", keep="first")
        known = self.key_ids
        if known is not None:
            keys = keys.join(known.select("k"), on="k", how="anti")
        start = 0 if known is None else known.height
        keys = keys.with_columns((pl.int_range(pl.len(), dtype=pl.Int64) + start).alias("kid"))
        self.key_ids = keys if known is None else pl.concat([known, keys])
        return chunk.join(self.key_ids.select("k", "kid"), on="k", how="left", maintain_order="left")

    # -------------------------------------------------------------------------------
    def finish(self) -> DeltaResult:
        schema_ts = self.state.schema["ts"] if self.state is not None else pl.Datetime("ns")
        deltas = pl.concat(self.outputs, how="diagonal_relaxed") if self.outputs else pl.DataFrame()
        dropped = 0
        partial = self.partial_evidence > 0
        if deltas.height and partial:
            keep = ~pl.col("is_new") | pl.col("surely_new")
            dropped = deltas.height - deltas.filter(keep).height
            deltas = deltas.filter(keep)
        intervals = pl.DataFrame({"snap": self.order, "ts": [self.snap_ts[s] for s in self.order]},
                                 schema_overrides={"ts": schema_ts}).with_columns(
            ((pl.col("ts") - pl.col("ts").shift(1)).dt.total_microseconds() / 1e6).alias("dt_s")
        ).filter(pl.col("dt_s") > 0)
        if deltas.height:
            deltas = deltas.join(self.key_ids.select("kid", "toplevel", "queryid"), on="kid", how="left")
        zero = [pl.lit(0.0).alias(f"d_{c}") for c in (*COUNTERS, "s2")]
        sums = pl.concat(self.total_parts) if self.total_parts else pl.DataFrame(schema={"snap": pl.Int64})
        if partial and self.unsure_parts:  # first appearances in a partial dump are not activity
            unsure = pl.concat(self.unsure_parts)
            sums = sums.join(unsure, on="snap", how="left", suffix="_u").with_columns(
                *[(pl.col(f"d_{c}") - pl.col(f"d_{c}_u").fill_null(0.0)) for c in (*COUNTERS, "s2")])
        if sums.height:
            totals = intervals.join(sums.select("snap", "line", *[f"d_{c}" for c in (*COUNTERS, "s2")]),
                                    on="snap", how="left").with_columns(
                *[pl.col(f"d_{c}").fill_null(0.0) for c in (*COUNTERS, "s2")])
        else:
            totals = intervals.with_columns(*zero, pl.lit(None, pl.Int64).alias("line"))
        return DeltaResult(deltas=deltas, totals=totals, events=self.events, partial_dump=partial,
                           dropped_new=dropped, snapshots=len(self.order))

    def last_rows(self) -> pl.DataFrame | None:
        """The last seen row of every key, with ``ts`` of its snapshot and ``snap``."""
        return self.latest


def _prepare(chunk: pl.DataFrame) -> pl.DataFrame:
    missing = [pl.lit(None, pl.Float64).alias(c) for c in COUNTERS if c not in chunk.columns]
    if "stats_since_ts" not in chunk.columns:
        missing.append(pl.lit(None, pl.Datetime("ns")).alias("stats_since_ts"))
    for name in KEY:
        if name not in chunk.columns:
            missing.append(pl.lit("", pl.Utf8).alias(name))
    chunk = chunk.with_columns(missing) if missing else chunk
    has_sd = "mean_exec_time" in chunk.columns and "stddev_exec_time" in chunk.columns
    s2 = ((pl.col("stddev_exec_time") ** 2 + pl.col("mean_exec_time") ** 2) * pl.col("calls")) if has_sd \
        else pl.lit(None, pl.Float64)
    return chunk.with_columns(
        *[pl.col(k).fill_null("") for k in KEY],
        pl.concat_str([pl.col(k).fill_null("") for k in KEY], separator="\x1f").alias("k"),
        s2.alias("s2"),
    )


def to_metrics(result: DeltaResult, present: set[str], *, top_per_interval: int = TOP_PER_INTERVAL,
               top_overall: int = TOP_OVERALL) -> tuple[pl.DataFrame, int]:
    """Long metric rows (ts, entity, metric, value, line) on ``query:<queryid>`` and ``query:all``,
    and how many queries got no series of their own.

    A query gets its own series when it is among the ``top_overall`` by execution time over the
    file or among the ``top_per_interval`` of any interval (a burst), so a dump of thousands of
    statements stays bounded; the others still count in ``query:all`` and the statement table.
    """
    frames = []
    left_out = 0
    if result.deltas.height:
        qnums = result.deltas.select("queryid").unique(maintain_order=True) \
            .with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias("qnum"))
        per_query = result.deltas.join(qnums, on="queryid", how="left").group_by("snap", "qnum", maintain_order=True).agg(
            pl.col("ts").first(), pl.col("dt_s").first(), pl.col("line").min(),
            pl.col("active").any(), pl.col("p_active").fill_null(False).any(),
            *[pl.col(f"d_{c}").sum() for c in COUNTERS],
            pl.col("d_s2").sum(), pl.col("d_s2").null_count().alias("s2_nulls"))
        burst = per_query.filter(pl.col("d_total_exec_time") > 0).with_columns(
            pl.col("d_total_exec_time").rank("ordinal", descending=True).over("snap").alias("rank")) \
            .filter(pl.col("rank") <= top_per_interval).select("qnum")
        heavy = per_query.group_by("qnum", maintain_order=True).agg(pl.col("d_total_exec_time").sum().alias("load")) \
            .sort("load", "qnum", descending=[True, False]).head(top_overall).select("qnum")
        chosen = pl.concat([burst, heavy]).unique()
        left_out = qnums.height - chosen.height
        # a query shows up while it runs and once more with zeros when it stops
        per_query = per_query.join(chosen, on="qnum", how="semi") \
            .filter(pl.col("active") | pl.col("p_active")).join(qnums, on="qnum", how="left").with_columns(
                pl.when(pl.col("s2_nulls") > 0).then(None).otherwise(pl.col("d_s2")).alias("d_s2"),
                pl.concat_str(pl.lit("query:"), pl.col("queryid")).alias("entity"))
        frames.append(_long(per_query, present, sparse=True))
    frames.append(_long(result.totals.with_columns(pl.lit("query:all").alias("entity"),
                                                   pl.col("line").cast(pl.Int64)), present, sparse=False))
    frames = [f for f in frames if f.height]
    if not frames:
        return pl.DataFrame(schema={"ts": pl.Datetime("ns"), "entity": pl.Utf8, "metric": pl.Utf8,
                                    "value": pl.Float64, "line": pl.Int64}), left_out
    # one order and, to 12 significant digits, one value, whatever the threads did (sums of
    # floats taken in another order differ in the last bit)
    metrics = pl.concat(frames, how="vertical_relaxed").sort("ts", "entity", "metric")
    return metrics.with_columns(pl.col("value").round_sig_figs(12)), left_out


def _long(df: pl.DataFrame, present: set[str], *, sparse: bool) -> pl.DataFrame:
    calls = pl.col("d_calls")
    exprs: dict[str, pl.Expr] = {}
    for metric, column in RATE_METRICS.items():
        if column in present:
            exprs[metric] = pl.col(f"d_{column}") / pl.col("dt_s")
    if "total_exec_time" in present:
        mean = pl.col("d_total_exec_time") / calls
        exprs["pg.mean_exec_ms"] = pl.when(calls > 0).then(mean)
        var = pl.col("d_s2") / calls - mean ** 2
        if "s2" in present:
            exprs["pg.stddev_exec_ms"] = pl.when(calls > 0).then(var.clip(lower_bound=0.0).sqrt())
    if not exprs:
        return pl.DataFrame()
    wide = df.select("ts", "entity", "line", *[e.alias(m) for m, e in exprs.items()])
    if sparse:
        zero = [m for m in SPARSE_METRICS if m in wide.columns
                and (wide.get_column(m).fill_null(0.0).abs().max() or 0.0) == 0.0]
        wide = wide.drop(zero)
    metric_names = [c for c in wide.columns if c.startswith("pg.")]
    long = wide.unpivot(index=["ts", "entity", "line"], on=metric_names, variable_name="metric",
                        value_name="value")
    return long.filter(pl.col("value").is_not_null() & pl.col("value").is_finite()) \
        .select("ts", "entity", "metric", "value", "line")


def utc_now() -> dt.datetime:  # pragma: no cover - used by benchmarks only
    return dt.datetime.now(dt.timezone.utc)
