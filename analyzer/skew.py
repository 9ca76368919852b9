"""Clock-skew estimation between sources that saw the same happenings.

Two files of one bundle often observe the same thing through different clocks: HTTP
requests in the app log and in a capture, thread counts from a monitor loop and from
``pidstat -t``, the same iostat run written as text and as JSON, CPU in use seen by
``iostat`` and by ``pidstat -u``. Their shapes line up once one of them is shifted by the
clocks' difference; this module finds that shift by cross-correlation and reports it with
its uncertainty. ``apply`` shifts the files (``--auto-offset``).

Offsets follow ``load(offsets=...)``: seconds to ADD to a file's clock so it agrees with the
reference file.

>>> import analyzer
>>> from analyzer.skew import estimate
>>> tl = analyzer.load("samples/bundles/demo/iostat.txt", "samples/bundles/demo/iostat.json",
...                    offsets={"iostat.json": 37})
>>> e = next(e for e in estimate(tl, reference="iostat.txt") if e.file == "iostat.json")
>>> round(e.offset_s)
-37
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, replace
from typing import Any, cast

import numpy as np
import polars as pl

from analyzer.timeline import Timeline

MAX_LAG_S = 600.0
MAX_ZONE_GAP_S = 26 * 3600.0  # UTC-12 .. UTC+14
MIN_OVERLAP_S = 30.0


@dataclass(frozen=True)
class PairEstimate:
    """``offset_s`` added to ``other``'s clock aligns it with ``anchor``."""

    anchor: str
    other: str
    offset_s: float
    uncertainty_s: float
    method: str  # what was matched, e.g. "events:http.request" or "metrics:disk.w_per_s|dev:vda,…"
    support: int  # matched events or compared samples
    quality: float  # 0..1: how clearly the best alignment beats the others


@dataclass(frozen=True)
class SkewEstimate:
    """``offset_s`` added to ``file``'s clock aligns it with ``reference``."""

    file: str
    reference: str
    offset_s: float
    uncertainty_s: float
    method: str
    support: int
    quality: float

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}


# -- signals per file ------------------------------------------------------------------
def _metric_signals(metrics: pl.DataFrame) -> pl.DataFrame:
    """Long frame (file, signal, ts, value): every metric series, plus derived signals two
    different tools share: thread counts (a monitor's count vs pidstat -t's threads per
    process) and CPU in use (iostat's host counters vs pidstat -u's processes)."""
    # only series that more than one file has: the rest cannot be compared
    shared = metrics.group_by("file", "metric", "entity").len().group_by("metric", "entity") \
        .agg(pl.col("file").n_unique().alias("_files")).filter(pl.col("_files") >= 2).drop("_files")
    base = metrics.join(shared, on=["metric", "entity"], how="semi").select(
        "file", pl.concat_str("metric", pl.lit("|"), "entity").alias("signal"), "ts", "value")
    tids = metrics.filter(pl.col("entity").str.starts_with("tid:")).with_columns(
        pl.concat_str(pl.lit("threads|pid:"), pl.col("entity").str.extract(r"^tid:(\d+)/")).alias("signal"))
    tid_counts = tids.group_by("file", "signal", "ts").agg(pl.col("entity").n_unique().cast(pl.Float64)
                                                           .alias("value"))
    threads = metrics.filter(pl.col("metric") == "proc.threads").select(
        "file", pl.concat_str(pl.lit("threads|"), "entity").alias("signal"), "ts", "value")
    # CPU in use at the same instant: a per-process listing of the whole host (many pids)
    # adds up to what the host counters say. (Bytes written do not: pidstat counts them when
    # a process dirties the page cache, iostat when writeback reaches the disk, ~30 s later.)
    proc_cpu = metrics.filter((pl.col("metric") == "proc.cpu_pct") & pl.col("entity").str.starts_with("pid:")) \
        .filter(pl.col("entity").n_unique().over("file") >= 10) \
        .group_by("file", "ts").agg(pl.col("value").sum()).with_columns(pl.lit("cpu.in_use").alias("signal"))
    host_idle = metrics.filter((pl.col("metric").is_in(["cpu.idle_pct", "cpu.iowait_pct"]))
                               & (pl.col("entity") == "cpu:all")) \
        .group_by("file", "ts").agg((100.0 - pl.col("value").sum()).alias("value")) \
        .with_columns(pl.lit("cpu.in_use").alias("signal"))
    cols = ["file", "signal", "ts", "value"]
    frames = [f.select(cols) for f in (base, tid_counts, threads, proc_cpu, host_idle) if f.height]
    if not frames:  # e.g. a single file: nothing to compare
        return base.select(cols).clear()
    return pl.concat(frames, how="vertical")


def _event_trains(events: pl.DataFrame) -> pl.DataFrame:
    """(file, kind, at): when each happening completed (requests are logged and answered
    at their end; a slow callback's warning is written when it ends)."""
    return events.filter(pl.col("kind").is_in(["http.request", "loop.slow_callback", "tcp.rst",
                                               "pg.query"])) \
        .select("file", "kind", pl.coalesce("end", "ts").alias("at"))


# -- pair estimates ------------------------------------------------------------------------
def _grid(ts: np.ndarray, values: np.ndarray, t0: float, n: int, step: float) -> np.ndarray:
    idx = np.clip(((ts - t0) / step).astype(np.int64), 0, n - 1)
    sums = np.bincount(idx, weights=values, minlength=n)
    counts = np.bincount(idx, minlength=n)
    out = np.full(n, np.nan)
    has = counts > 0
    out[has] = sums[has] / counts[has]
    # carry the last value across gaps so sampling phase does not look like change
    valid = np.where(has, np.arange(n), 0)
    np.maximum.accumulate(valid, out=valid)
    out = out[valid]
    return np.nan_to_num(out, nan=0.0)


def _xcorr(x: np.ndarray, y: np.ndarray, max_lag: int) -> np.ndarray:
    """corr[k] for lag k in [-max_lag, max_lag]: sum x[t] * y[t + k]."""
    n = x.size + y.size
    size = 1 << int(np.ceil(np.log2(max(n, 2))))
    spec = np.fft.irfft(np.conj(np.fft.rfft(x, size)) * np.fft.rfft(y, size), size)
    return np.concatenate([spec[-max_lag:], spec[: max_lag + 1]]) if max_lag else spec[:1]


def _peak(corr: np.ndarray, max_lag: int) -> tuple[float, float]:
    """(lag of the maximum with parabolic refinement, quality)."""
    k = int(np.argmax(corr))
    lag = float(k - max_lag)
    if 0 < k < corr.size - 1:
        a, b, c = corr[k - 1], corr[k], corr[k + 1]
        denom = a - 2 * b + c
        if denom < 0:
            lag += float(np.clip(0.5 * (a - c) / denom, -0.5, 0.5))
    top = corr[k]
    masked = corr.copy()
    masked[max(0, k - 3): k + 4] = -np.inf
    second = float(masked.max()) if np.isfinite(masked).any() else 0.0
    quality = float(np.clip(1.0 - max(second, 0.0) / top, 0.0, 1.0)) if top > 0 else 0.0
    return lag, quality


def _reach(a: pl.Series, b: pl.Series, max_lag_s: float) -> float:
    """How far to search: ``max_lag_s``, or further when the two files' time ranges lie apart
    (a zone mistake shifts a whole file by hours), up to the widest zone difference."""
    apart = abs((cast(dt.datetime, a.min()) - cast(dt.datetime, b.min())).total_seconds())
    return min(max(max_lag_s, apart + 120.0), MAX_ZONE_GAP_S)


Series = dict[tuple[str, str], pl.DataFrame]  # (file, signal) -> its (ts, value) rows

MAX_SIGNALS = 16  # per pair of files: enough to agree, bounded on hosts with many shared series


def _metric_pair(sig: Series, a: str, b: str, *, step: float = 1.0,
                 max_lag_s: float = MAX_LAG_S) -> PairEstimate | None:
    shared = sorted({s for f, s in sig if f == a} & {s for f, s in sig if f == b})
    # the longest series first: they carry most shape
    shared = sorted(shared, key=lambda s: -min(sig[(a, s)].height, sig[(b, s)].height))[:MAX_SIGNALS]
    if not shared:
        return None
    ta = pl.concat([sig[(a, s)].get_column("ts") for s in shared])
    tb = pl.concat([sig[(b, s)].get_column("ts") for s in shared])
    t0 = cast(dt.datetime, min(ta.min(), tb.min()))  # type: ignore[type-var]
    t1 = cast(dt.datetime, max(ta.max(), tb.max()))  # type: ignore[type-var]
    n = int((t1 - t0).total_seconds() / step) + 1
    if n * step < MIN_OVERLAP_S:
        return None
    max_lag = min(int(_reach(ta, tb, max_lag_s) / step), n - 1)
    total = np.zeros(2 * max_lag + 1)
    used = []
    for name in sorted(shared):
        xs = [_prepared(sig[(f, name)], t0, n, step) for f in (a, b)]
        if xs[0] is None or xs[1] is None:
            continue
        corr = _xcorr(xs[0], xs[1], max_lag)
        if corr.max() <= 0:
            continue
        total += corr / corr.max()
        used.append(name)
    if not used:
        return None
    lag, quality = _peak(total, max_lag)
    return PairEstimate(a, b, -lag * step, float(max(0.5 * step / np.sqrt(len(used)), 0.05)),
                        "metrics:" + ",".join(used[:4]) + ("…" if len(used) > 4 else ""), n * len(used), quality)


def _prepared(s: pl.DataFrame, t0: dt.datetime, n: int, step: float) -> np.ndarray | None:
    ts = (s.get_column("ts") - t0).dt.total_microseconds().to_numpy() / 1e6
    values = s.get_column("value").fill_null(0.0).to_numpy().astype(float)
    if ts.size < 5:
        return None
    g = np.diff(_grid(ts, values, 0.0, n, step), prepend=0.0)  # changes, not levels
    g[0] = 0.0
    sd = g.std()
    if sd == 0 or not np.isfinite(sd):
        return None
    return (g - g.mean()) / sd


def _event_pair(trains: pl.DataFrame, a: str, b: str, kind: str, *, step: float = 0.05,
                max_lag_s: float = MAX_LAG_S) -> PairEstimate | None:
    ta = trains.filter((pl.col("file") == a) & (pl.col("kind") == kind)).get_column("at").sort()
    tb = trains.filter((pl.col("file") == b) & (pl.col("kind") == kind)).get_column("at").sort()
    if ta.len() < 10 or tb.len() < 10:
        return None
    t0 = min(ta.min(), tb.min())
    xa = (ta - t0).dt.total_microseconds().to_numpy() / 1e6
    xb = (tb - t0).dt.total_microseconds().to_numpy() / 1e6
    n = int(max(xa.max(), xb.max()) / step) + 1
    max_lag = min(int(_reach(ta, tb, max_lag_s) / step), n - 1)
    ca = np.bincount((xa / step).astype(np.int64), minlength=n).astype(float)
    cb = np.bincount((xb / step).astype(np.int64), minlength=n).astype(float)
    lag, quality = _peak(_xcorr(ca - ca.mean(), cb - cb.mean(), max_lag), max_lag)
    coarse = lag * step  # b happened `coarse` seconds after a on their clocks
    # refine: nearest event of b for each of a once shifted, residuals within half a second
    j = np.clip(np.searchsorted(xb, xa + coarse), 1, xb.size - 1)
    nearest = np.where(np.abs(xb[j] - xa - coarse) < np.abs(xb[j - 1] - xa - coarse), xb[j], xb[j - 1])
    resid = nearest - xa - coarse
    close = np.abs(resid) < 0.5
    if close.sum() < 5:
        return None
    r = resid[close]
    mad = float(np.median(np.abs(r - np.median(r)))) * 1.4826
    offset = -(coarse + float(np.median(r)))
    return PairEstimate(a, b, offset, float(max(mad / np.sqrt(r.size), 0.001) + step / 2), f"events:{kind}",
                        int(close.sum()), quality * float(close.mean()))


def pair_estimates(timeline: Timeline, *, max_lag_s: float = MAX_LAG_S) -> list[PairEstimate]:
    """Every pair of files that share a signal or an event kind, with its relative offset."""
    out: list[PairEstimate] = []
    if timeline.metrics.height:
        long = _metric_signals(timeline.metrics)
        sig: Series = {(str(k[0]), str(k[1])): part.select("ts", "value")
                       for k, part in long.partition_by(["file", "signal"], as_dict=True).items()}
        names: dict[str, set[str]] = {}
        for file, signal in sig:
            names.setdefault(file, set()).add(signal)
        files = sorted(names)
        for i, a in enumerate(files):
            for b in files[i + 1:]:
                if names[a] & names[b]:
                    est = _metric_pair(sig, a, b, max_lag_s=max_lag_s)
                    if est is not None:
                        out.append(est)
    if timeline.events.height:
        trains = _event_trains(timeline.events)
        kinds = trains.group_by("kind").agg(pl.col("file").unique().sort())
        for row in kinds.iter_rows(named=True):
            files = row["file"]
            for i, a in enumerate(files):
                for b in files[i + 1:]:
                    est = _event_pair(trains, a, b, row["kind"], max_lag_s=max_lag_s)
                    if est is not None:
                        out.append(est)
    return out


def _default_reference(timeline: Timeline, pairs: list[PairEstimate]) -> str | None:
    """A file whose clock carries its own zone (a capture's epoch times) if one takes part,
    else the file with the most partners."""
    involved = {p.anchor for p in pairs} | {p.other for p in pairs}
    if not involved:
        return None
    src = timeline.sources.filter(pl.col("file").is_in(sorted(involved)))
    epoch = src.filter(pl.col("parser") == "pcap").get_column("file").to_list()
    if epoch:
        return sorted(epoch)[0]
    degree = {f: sum(f in (p.anchor, p.other) for p in pairs) for f in involved}
    return sorted(involved, key=lambda f: (-degree[f], f))[0]


def estimate(timeline: Timeline, *, reference: str | None = None, min_quality: float = 0.3) -> list[SkewEstimate]:
    """The offset of every file that can be tied (directly or through others) to
    ``reference`` (default: a capture, else the best-connected file)."""
    pairs = [p for p in pair_estimates(timeline) if p.quality >= min_quality]
    reference = reference or _default_reference(timeline, pairs)
    if reference is None:
        return []
    # cheapest path from the reference (cost: uncertainty, discounted by quality); offsets
    # and uncertainties add up along it
    best: dict[frozenset[str], PairEstimate] = {}
    for p in pairs:
        key = frozenset((p.anchor, p.other))
        if key not in best or _cost(p) < _cost(best[key]):
            best[key] = p
    known: dict[str, SkewEstimate] = {}
    queue: list[tuple[float, str, float, float, PairEstimate | None]] = [(0.0, reference, 0.0, 0.0, None)]
    done: set[str] = set()
    while queue:
        queue.sort(key=lambda q: q[0])
        cost, here, off, unc, via = queue.pop(0)
        if here in done:
            continue
        done.add(here)
        if via is not None:
            known[here] = SkewEstimate(here, reference, off, unc, via.method, via.support, via.quality)
        for p in best.values():
            if here not in (p.anchor, p.other):
                continue
            there = p.other if p.anchor == here else p.anchor
            if there in done:
                continue
            rel = p.offset_s if p.anchor == here else -p.offset_s
            queue.append((cost + _cost(p), there, off + rel, unc + p.uncertainty_s, p))
    return sorted(known.values(), key=lambda e: e.file)


def _cost(p: PairEstimate) -> float:
    return float(p.uncertainty_s) / max(p.quality, 0.05)


def apply(timeline: Timeline, estimates: list[SkewEstimate], *, min_offset_s: float = 2.0) -> Timeline:
    """The timeline with each estimated file shifted by its offset (offsets smaller than
    ``min_offset_s`` or than their uncertainty are left alone). The estimates are kept in
    ``options["clock_skew"]`` so the report can show them."""
    metrics, events, sources = timeline.metrics, timeline.events, timeline.sources
    applied = []
    for e in estimates:
        if abs(e.offset_s) < max(min_offset_s, 2 * e.uncertainty_s):
            continue
        delta = dt.timedelta(seconds=e.offset_s)
        metrics = metrics.with_columns(pl.when(pl.col("file") == e.file).then(pl.col("ts") + delta)
                                       .otherwise(pl.col("ts")).alias("ts"))
        events = events.with_columns([pl.when(pl.col("file") == e.file).then(pl.col(c) + delta)
                                      .otherwise(pl.col(c)).alias(c) for c in ("ts", "end")])
        sources = sources.with_columns(
            pl.when(pl.col("file") == e.file).then(pl.col("clock_offset_s") + e.offset_s)
            .otherwise(pl.col("clock_offset_s")).alias("clock_offset_s"),
            *[pl.when(pl.col("file") == e.file).then(pl.col(c) + delta).otherwise(pl.col(c)).alias(c)
              for c in ("start", "end")])
        applied.append(e.file)
    options = {**timeline.options, "clock_skew": [{**e.as_dict(), "applied": e.file in applied}
                                                  for e in estimates]}
    return replace(timeline, metrics=metrics.sort("ts"), events=events.sort("ts"), sources=sources, options=options)


def annotate(timeline: Timeline, *, auto_offset: bool = False) -> Timeline:
    """Estimate every file's clock offset and keep the estimates in ``options["clock_skew"]``;
    with ``auto_offset`` also shift the files (what ``--auto-offset`` does)."""
    estimates = estimate(timeline)
    if auto_offset:
        return apply(timeline, estimates)
    return replace(timeline, options={**timeline.options, "clock_skew": [{**e.as_dict(), "applied": False}
                                                                          for e in estimates]})


def describe(entry: dict[str, Any]) -> str:
    """One line for humans: ``iostat.json: -37.0 ± 0.1 s against iostat.txt (metrics:…)``."""
    return (f"{entry['file']}: {entry['offset_s']:+.1f} ± {entry['uncertainty_s']:.1f} s against "
            f"{entry['reference']} ({entry['method']}){' — applied' if entry.get('applied') else ''}")
