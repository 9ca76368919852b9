"""The report's timeline lanes: which metrics and events go in which lane (USE order:
utilisation, saturation, errors), min/max-per-bucket downsampling, gaps, and the coverage lane.

Lanes are built from the vocabulary, not from parser names: any metric that no lane claims
gets its own lane under "More metrics", so a new source shows up without report changes.
Times are integer milliseconds relative to ``t0`` (UTC epoch ms) to keep the JSON small;
strings that plotly draws are pre-escaped (plotly reads entities, never tags from them).
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from parsers import schema

BUCKETS = 1200  # min/max buckets across the window: ~one per pixel of a wide lane
MAX_EVENT_BARS = 1500  # largest slow callbacks drawn as intervals
MAX_MARKERS_PER_KIND = 600
TEXT_CHARS = 160


@dataclass(frozen=True)
class LaneSpec:
    key: str
    title: str
    use: str  # utilisation | saturation | errors
    metrics: tuple[str, ...] = ()
    unit: str = ""
    top: int = 8  # series (metric × entity) drawn at most
    core: bool = False  # shown with a "no data" note when empty
    needs: str = ""  # which artifacts would fill this lane
    events: tuple[str, ...] = ()


LANES: tuple[LaneSpec, ...] = (
    LaneSpec("cpu", "CPU", "utilisation", ("cpu.busy_pct", "cpu.user_pct", "cpu.system_pct",
             "cpu.iowait_pct", "cpu.steal_pct"), "%", top=6, core=True,
             needs="iostat (avg-cpu), pidstat, top, sar or vmstat"),
    LaneSpec("proc_cpu", "CPU per process / thread", "utilisation", ("proc.cpu_pct",), "% of one CPU"),
    LaneSpec("disk_util", "Disk utilisation", "utilisation", ("disk.util_pct",), "%", core=True,
             needs="iostat -x"),
    LaneSpec("disk_io", "Disk throughput", "utilisation", ("disk.read_kbps", "disk.write_kbps"), "KiB/s"),
    LaneSpec("net_tput", "Network throughput", "utilisation", ("net.bytes_per_s",), "bytes/s", top=6),
    LaneSpec("db_time", "Database time per second (top queries)", "utilisation", ("pg.exec_ms_per_s",),
             "ms/s", core=True, needs="pg_stat_statements snapshots"),
    LaneSpec("threads", "Threads", "saturation", ("proc.threads", "sys.tasks"), "threads", core=True,
             needs="a thread monitor log, ps -T, top -H or pidstat -t"),
    LaneSpec("loop", "Event-loop stalls", "saturation", ("loop.stall_ms",), "ms", core=True,
             needs="an application log with asyncio slow-callback warnings", events=("loop.slow_callback",)),
    LaneSpec("disk_latency", "Disk request time", "saturation", ("disk.await_ms", "disk.r_await_ms",
             "disk.w_await_ms"), "ms", core=True, needs="iostat -x"),
    LaneSpec("disk_queue", "Disk queue length", "saturation", ("disk.aqu_sz",), "requests"),
    LaneSpec("db_backends", "Database backends", "saturation", ("pg.active", "pg.idle_in_tx", "pg.waiting"),
             "backends"),
    LaneSpec("db_latency", "Database latency", "saturation", ("pg.wire_latency_ms", "pg.wire_latency_p99_ms",
             "pg.wire_latency_max_ms", "pg.mean_exec_ms"), "ms", top=8),
    LaneSpec("http_latency", "HTTP latency", "saturation", ("http.latency_ms", "http.latency_p99_ms",
             "http.latency_max_ms"), "ms"),
    LaneSpec("net_rtt", "Network round-trip time", "saturation", ("net.ack_rtt_ms", "net.ack_rtt_max_ms"),
             "ms", top=6),
    LaneSpec("net_errors", "TCP retransmissions and resets", "errors", ("net.retransmits", "net.rsts",
             "net.zero_window", "net.dup_acks", "net.lost_segments", "net.syns"), "per s", core=True,
             needs="a packet capture (pcap/pcapng)", events=("tcp.rst",)),
    LaneSpec("http_errors", "HTTP errors", "errors", ("http.errors_per_s",), "per s"),
    LaneSpec("events", "Errors and events", "errors", (), "", core=True,
             needs="application, server or kernel logs", events=("*",)),
)

# high-volume informational events: summarised elsewhere, not drawn as markers
QUIET_EVENTS = frozenset({"loop.slow_callback", "tcp.rst", "pg.snapshot", "host.fact", "http.request",
                          "pg.query", "tcp.connection", "tcp.handshake", "loop.poll_slow"})
SEVERITY_RANK = {s: i for i, s in enumerate(schema.SEVERITIES)}


def plot_text(value: Any, limit: int = TEXT_CHARS) -> str:
    """Text plotly will draw: escaped (so tags stay text) and cut to ``limit`` characters."""
    text = "" if value is None else str(value)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return html.escape(text, quote=False).replace("\n", " ")


def short_metric(name: str) -> str:
    return name.split(".", 1)[-1]


def _to_ms(col: str, t0_ms: int) -> pl.Expr:
    return (pl.col(col).dt.epoch("ms") - t0_ms).alias(col)


def downsample(df: pl.DataFrame, key: str, t_span: int, buckets: int = BUCKETS) -> pl.DataFrame:
    """Min and max value (with their times) per time bucket and ``key``, so spikes survive.

    Buckets split ``t_span`` evenly (pixel columns, not sample counts): a series with at most
    one sample per bucket comes back unchanged. ``df`` has ``key``, ``t`` (Int64 ms), ``value``.
    """
    if df.height == 0:
        return df
    width = max(1, -(-max(t_span, 1) // buckets))
    bucket = (pl.col("t") // width).alias("_b")
    agg = (df.with_columns(bucket).group_by(key, "_b")
           .agg(pl.col("t").get(pl.col("value").arg_min()).alias("t_lo"), pl.col("value").min().alias("v_lo"),
                pl.col("t").get(pl.col("value").arg_max()).alias("t_hi"), pl.col("value").max().alias("v_hi")))
    lo = agg.select(key, pl.col("t_lo").alias("t"), pl.col("v_lo").alias("value"))
    hi = agg.select(key, pl.col("t_hi").alias("t"), pl.col("v_hi").alias("value"))
    return pl.concat([lo, hi]).unique([key, "t"]).sort(key, "t")


def _with_gaps(t: np.ndarray, y: np.ndarray, typical: float, bucket: float) -> tuple[list[int], list[Any]]:
    """Insert a null after any step much longer than the series' sampling interval, so
    plotly does not draw a line across missing data."""
    if t.size > 1:
        threshold = max(3.0 * typical, 2.5 * bucket, 1.0)
        cut = np.nonzero(np.diff(t) > threshold)[0] + 1
        if cut.size:
            t = np.insert(t, cut, t[cut - 1] + 1)
            y = np.insert(y.astype(float), cut, np.nan)
    values = [None if v != v else v for v in y.tolist()]  # NaN → null
    return t.tolist(), values


class LaneBuilder:
    """Turns the timeline frames into the JSON-ready lane dicts."""

    def __init__(self, metrics: pl.DataFrame, events: pl.DataFrame, labels: dict[str, str],
                 t0_ms: int, t1_ms: int) -> None:
        self.t0_ms = t0_ms
        self.span = max(1, t1_ms - t0_ms)
        self.bucket = -(-self.span // BUCKETS)
        self.labels = labels
        valid = metrics.filter(pl.col("value").is_not_null() & pl.col("value").is_not_nan())
        if not valid.get_column("ts").is_sorted():
            valid = valid.sort("ts")
        # one pass to split by metric: every lane then reads only its own rows (in time order)
        self.by_metric = {str(k[0]): part for k, part in _with_busy(valid).partition_by(
            "metric", as_dict=True).items()} if valid.height else {}
        self.present = set(self.by_metric)
        self.events = events
        self.multi_host = metrics.get_column("host").n_unique() > 1 if metrics.height else False
        self.empty = schema.empty_metrics()

    # -- public -----------------------------------------------------------------------
    def lanes(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(main lanes in USE order, extra lanes for metrics no main lane claims)."""
        claimed: set[str] = set()
        main = []
        for spec in LANES:
            claimed.update(spec.metrics)
            lane = self.lane(spec)
            if lane["traces"] or spec.core:
                main.append(lane)
        extra = []
        for metric in sorted(self.present - claimed):
            desc = schema.METRICS.get(metric, "not in the vocabulary")
            spec = LaneSpec(f"m-{metric}", f"{metric} — {desc}", "more", (metric,), _unit(metric))
            extra.append(self.lane(spec))
        return main, extra

    def lane(self, spec: LaneSpec) -> dict[str, Any]:
        traces: list[dict[str, Any]] = []
        hidden = 0
        metrics = [m for m in spec.metrics if m in self.present]
        if spec.key == "disk_latency" and "disk.await_ms" in metrics:
            metrics = ["disk.await_ms"]  # r/w await only when the combined value is missing
        if metrics:
            lines, hidden = self._lines(metrics, spec.top, len(metrics) > 1)
            traces.extend(lines)
        if spec.events == ("*",):
            traces.extend(self._markers())
        else:
            for kind in spec.events:
                traces.extend(self._spans(kind) if kind == "loop.slow_callback" else self._instants(kind))
        note = f"{hidden} more series not drawn (all are in the exports)." if hidden else ""
        copies = sorted({f for t in traces for f in t.pop("also", [])})
        if copies:
            note += (" The same series also came from " + ", ".join(copies) + " (drawn once, from the file"
                     " with the most samples).")
        empty = "" if traces else (f"No data: no artifact in this bundle provided {spec.title.lower()}"
                                   + (f" (needs {spec.needs})." if spec.needs else ".")
                                   + " Absence of evidence here is not evidence of absence.")
        return {"id": "lane-" + _slug(spec.key), "key": spec.key, "title": spec.title, "use": spec.use,
                "unit": spec.unit, "traces": traces, "note": note, "empty": empty,
                "categorical": spec.events == ("*",)}

    def series(self, metric: str, entity: str | None, t_from: int, t_to: int,
               buckets: int = 300) -> list[dict[str, Any]]:
        """One metric (optionally one entity) between two relative times — for evidence charts."""
        rows = self.rows([metric])
        if entity:
            rows = rows.filter(pl.col("entity") == entity)
        rows = rows.with_columns(_to_ms("ts", self.t0_ms)).filter(pl.col("ts").is_between(t_from, t_to))
        if rows.height == 0:
            return []
        rows, _copies = _one_file_per_series(rows)
        top = self._rank(rows.rename({"ts": "t"}), 4)
        return self._line_traces(rows.rename({"ts": "t"}), top, False, max(1, t_to - t_from), buckets)

    def rows(self, metrics: list[str]) -> pl.DataFrame:
        """The samples of ``metrics`` (each metric's rows in time order)."""
        parts = [self.by_metric[m] for m in metrics if m in self.by_metric]
        if not parts:
            return self.empty
        return parts[0] if len(parts) == 1 else pl.concat(parts)

    # -- lines ------------------------------------------------------------------------
    def _lines(self, metrics: list[str], top: int, name_metric: bool) -> tuple[list[dict[str, Any]], int]:
        rows = self.rows(metrics)
        if "cpu.busy_pct" in metrics and rows.filter(pl.col("entity") == "cpu:all").height:
            rows = rows.filter(pl.col("entity") == "cpu:all")
        rows, copies = _one_file_per_series(rows)
        rows = rows.with_columns(_to_ms("ts", self.t0_ms)).rename({"ts": "t"})
        ranked = self._rank(rows, top)
        total = rows.select(pl.struct("metric", "entity", "host", "file").n_unique()).item()
        traces = self._line_traces(rows, ranked, name_metric, self.span, BUCKETS)
        if copies and traces:
            traces[0]["also"] = copies
        return traces, max(0, total - len(ranked))

    def _rank(self, rows: pl.DataFrame, top: int) -> list[tuple[str, str, str, str]]:
        """The ``top`` series by area (sum of values), then peak; kept in metric order."""
        stats = (rows.group_by("metric", "entity", "host", "file")
                 .agg(pl.col("value").sum().alias("area"), pl.col("value").max().alias("peak"))
                 .sort("area", "peak", "metric", "entity", "file", descending=[True, True, False, False, False])
                 .head(top))
        order = stats.sort("metric", "area", "peak", "entity", "file", descending=[False, True, True, False, False])
        return [(r["metric"], r["entity"], r["host"], r["file"]) for r in order.iter_rows(named=True)]

    def _line_traces(self, rows: pl.DataFrame, keys: list[tuple[str, str, str, str]], name_metric: bool,
                     span: int, buckets: int) -> list[dict[str, Any]]:
        cols = ["metric", "entity", "host", "file"]
        wanted = pl.DataFrame(keys, schema=cols, orient="row").with_row_index("_k")
        rows = rows.join(wanted, on=cols, how="inner", nulls_equal=True).select("_k", "t", "value")
        # rows are in time order within each series, and group_by keeps that order
        typical = dict(rows.group_by("_k").agg(pl.col("t").diff().filter(pl.col("t").diff() > 0).median()
                                               .alias("d")).iter_rows())
        small = downsample(rows, "_k", span, buckets)
        bucket = -(-span // buckets)
        by_key = {k[0]: part for k, part in small.partition_by("_k", as_dict=True).items()}
        files_per_series: dict[tuple[str, str], int] = {}
        for metric, entity, _host, _file in keys:
            files_per_series[(metric, entity)] = files_per_series.get((metric, entity), 0) + 1
        traces = []
        for key, (metric, entity, host, file) in enumerate(keys):
            part = by_key.get(key)
            if part is None:
                continue
            t, y = _with_gaps(part.get_column("t").to_numpy(), part.get_column("value").round_sig_figs(5)
                              .to_numpy(), float(typical.get(key) or 0.0), bucket)
            name = self.labels.get(entity) or entity
            if name_metric:
                name = f"{short_metric(metric)} · {name}"
            if self.multi_host and host:
                name = f"{host}: {name}"
            if files_per_series[(metric, entity)] > 1:
                name = f"{name} [{file}]"
            traces.append({"kind": "line", "name": plot_text(name, 70), "metric": metric, "entity": entity,
                           "file": plot_text(file), "t": t, "y": y})
        return traces

    # -- events -----------------------------------------------------------------------
    def _event_rows(self, kinds: list[str]) -> pl.DataFrame:
        rows = self.events.filter(pl.col("kind").is_in(kinds))
        return rows.with_columns(_to_ms("ts", self.t0_ms), _to_ms("end", self.t0_ms))

    def _hover(self, rows: pl.DataFrame) -> list[str]:
        out = []
        for entity, message, file, line in rows.select("entity", "message", "file", "line").iter_rows():
            label = self.labels.get(entity or "") or entity or ""
            where = f"{file}:{line}" if line is not None else (file or "")
            out.append("<br>".join(plot_text(x) for x in (label, message, where) if x))
        return out

    def _spans(self, kind: str) -> list[dict[str, Any]]:
        rows = self._event_rows([kind])
        if rows.height == 0:
            return []
        rows = rows.with_columns(pl.coalesce("end", "ts").alias("end"))
        rows = rows.with_columns(pl.max_horizontal(pl.col("end") - pl.col("ts"), pl.lit(1)).alias("w"))
        rows = rows.sort("w", "ts", descending=[True, False]).head(MAX_EVENT_BARS).sort("ts", maintain_order=True)
        return [{"kind": "span", "name": plot_text(kind if rows.height == 1 else f"{kind} ({rows.height})"),
                 "t": rows.get_column("ts").to_list(), "w": rows.get_column("w").to_list(),
                 "y": (rows.get_column("w").cast(pl.Float64)).to_list(), "text": self._hover(rows)}]

    def _instants(self, kind: str) -> list[dict[str, Any]]:
        rows = self._event_rows([kind])
        if rows.height == 0:
            return []
        rows = rows.with_columns((pl.col("ts") // 1000 * 1000 + 500).alias("ts"))  # per second
        counts = (rows.group_by("ts").agg(pl.len().alias("n"), pl.col("message").first(),
                                          pl.col("entity").first(), pl.col("file").first(),
                                          pl.col("line").first()).sort("ts"))
        counts = _thin(counts, MAX_MARKERS_PER_KIND, "n")
        return [{"kind": "marker", "name": plot_text(f"{kind} per second"), "t": counts.get_column("ts").to_list(),
                 "y": counts.get_column("n").cast(pl.Float64).to_list(), "text": self._hover(counts),
                 "axis": "y2"}]

    def _markers(self) -> list[dict[str, Any]]:
        rows = self.events.filter(~pl.col("kind").is_in(list(QUIET_EVENTS)))
        if rows.height == 0:
            return []
        rows = rows.with_columns(_to_ms("ts", self.t0_ms), _to_ms("end", self.t0_ms))
        traces = []
        for (kind,), part in sorted(rows.partition_by("kind", as_dict=True).items()):
            part = part.with_columns(pl.col("severity").replace_strict(SEVERITY_RANK, default=1,
                                                                      return_dtype=pl.Int64).alias("rank"))
            part = _thin(part.sort("ts"), MAX_MARKERS_PER_KIND, "rank")
            worst = max(part.get_column("rank").to_list() or [1])
            traces.append({"kind": "marker", "name": plot_text(kind), "category": plot_text(kind),
                           "severity": schema.SEVERITIES[worst], "t": part.get_column("ts").to_list(),
                           "text": self._hover(part), "count": part.height})
        return traces


def _with_busy(metrics: pl.DataFrame) -> pl.DataFrame:
    """cpu.busy_pct = 100 - cpu.idle_pct where a source gave idle but not busy (display only)."""
    idle = metrics.filter(pl.col("metric") == "cpu.idle_pct")
    if idle.height == 0:
        return metrics
    have = metrics.filter(pl.col("metric") == "cpu.busy_pct").select("file", "entity").unique()
    busy = idle.join(have, on=["file", "entity"], how="anti").with_columns(
        pl.lit("cpu.busy_pct").alias("metric"), (100.0 - pl.col("value")).clip(0, 100).alias("value"))
    return pl.concat([metrics, busy]) if busy.height else metrics


def _one_file_per_series(rows: pl.DataFrame) -> tuple[pl.DataFrame, list[str]]:
    """Keep one file per (metric, entity, host) — the one with the most samples — when the same
    counters were recorded twice (iostat text and JSON of one run)."""
    per_file = rows.group_by("metric", "entity", "host", "file").len()
    best = per_file.sort("len", "file", descending=[True, False]).unique(["metric", "entity", "host"],
                                                                          keep="first")
    if best.height == per_file.height:
        return rows, []
    dropped = per_file.join(best.select("metric", "entity", "host", "file"),
                            on=["metric", "entity", "host", "file"], how="anti")
    kept = rows.join(best.select("metric", "entity", "host", "file"), on=["metric", "entity", "host", "file"],
                     how="semi")
    return kept, sorted(dropped.get_column("file").unique().to_list())


def _thin(rows: pl.DataFrame, limit: int, rank: str) -> pl.DataFrame:
    """At most ``limit`` rows: the highest-ranked half plus an even spread of the rest."""
    if rows.height <= limit:
        return rows
    keep = rows.with_row_index("_i")
    best = keep.sort(rank, "_i", descending=[True, False]).head(limit // 2)
    rest = keep.join(best, on="_i", how="anti")
    step = max(1, rest.height // (limit - best.height))
    spread = rest.gather_every(step)
    return pl.concat([best, spread]).sort("_i").drop("_i")


def coverage(metrics: pl.DataFrame, events: pl.DataFrame, sources: list[dict[str, Any]],
             t0_ms: int) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """The coverage lane (one bar row per file, broken where a sampled source has gaps) and
    the gaps per file (for the data-quality table)."""
    segments: dict[str, list[tuple[int, int, int]]] = {}
    if metrics.height:
        per_file = metrics.select("file", _to_ms("ts", t0_ms)).partition_by("file", as_dict=True)
        for (file,), part in per_file.items():
            ts = np.unique(part.get_column("ts").to_numpy())
            steps = np.diff(ts)
            typical = float(np.median(steps[steps > 0])) if steps.size and (steps > 0).any() else 0.0
            cut = np.nonzero(steps > max(5 * typical, 5000))[0] + 1
            bounds = np.concatenate(([0], cut, [ts.size]))
            segments[file] = [(int(ts[a]), int(ts[b - 1]), int(b - a)) for a, b in zip(bounds, bounds[1:],
                                                                                          strict=False)]
    if events.height:
        e = (events.group_by("file").agg(pl.col("ts").min().alias("a"),
                                         pl.coalesce("end", "ts").max().alias("b"), pl.len().alias("n"))
             .with_columns(_to_ms("a", t0_ms), _to_ms("b", t0_ms)))
        for file, a, b, n in e.iter_rows():
            if file not in segments:  # a log writes only when something happens: its span is its coverage
                segments[file] = [(a, b, n)]
    files = [s["file"] for s in sources if s["file"] in segments]
    gaps: dict[str, list[dict[str, Any]]] = {}
    t, w, y, text = [], [], [], []
    for file in files:
        segs = segments[file]
        for a, b, n in segs:
            t.append(a)
            w.append(max(b - a, 1000))
            y.append(plot_text(file, 60))
            text.append(plot_text(f"{file}: {n} samples"))
        gaps[file] = [{"from_ms": prev[1], "to_ms": nxt[0], "seconds": round((nxt[0] - prev[1]) / 1000, 1)}
                      for prev, nxt in zip(segs, segs[1:], strict=False)]
    lane = {"id": "lane-coverage", "key": "coverage", "title": "Data coverage per file (gaps = no data)",
            "use": "quality", "unit": "", "categorical": True, "note": "", "traces":
            [{"kind": "coverage", "name": "covered", "t": t, "w": w, "y": y, "text": text}] if t else [],
            "empty": "" if t else "No file produced timed data."}
    return lane, gaps


def labels_of(entities: pl.DataFrame) -> dict[str, str]:
    """entity → short label (first non-empty label, else a hint from attrs)."""
    out: dict[str, str] = {}
    if entities.height == 0:
        return out
    for entity, label, attrs in entities.select("entity", "label", "attrs").iter_rows():
        if not entity or entity in out:
            continue
        if label:
            label = label if len(label) <= 48 else label[:47] + "…"
            if entity.startswith(("pid:", "tid:")) and label != entity:
                label = f"{label} ({entity})"
            elif entity.startswith("cpu:"):
                label = entity
            out[entity] = label
        elif attrs:
            try:
                data = json.loads(attrs)
            except ValueError:
                continue
            hint = data.get("command") or data.get("comm") or data.get("name") if isinstance(data, dict) else None
            if hint:
                out[entity] = f"{entity} ({str(hint)[:32]})"
    return out


def _unit(metric: str) -> str:
    for suffix, unit in (("_pct", "%"), ("_ms_per_s", "ms/s"), ("_ms", "ms"), ("_kbps", "KiB/s"),
                         ("_per_s", "per s"), ("_kb", "KiB")):
        if metric.endswith(suffix):
            return unit
    return ""


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text)
