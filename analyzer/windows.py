"""Incident windows: anomalies of all sources merged in time, ordered by onset, and scored
for co-movement (rank correlation and lead/lag) so causes stand apart from bystanders.

>>> import datetime as dt, polars as pl
>>> from analyzer.windows import merge
>>> t = lambda s: dt.datetime(2026, 1, 1, 10, 0, s, tzinfo=dt.timezone.utc)
>>> segs = pl.DataFrame({"start": [t(0), t(3), t(30)], "end": [t(2), t(8), t(31)],
...                      "metric": ["disk.await_ms", "pg.exec_ms_per_s", "loop.stall_ms"]})
>>> merge(segs, tolerance_s=5).get_column("window").to_list()
[0, 0, 1]
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import polars as pl

from analyzer.anomaly import SERIES


def merge(segments: pl.DataFrame, *, tolerance_s: float = 5.0) -> pl.DataFrame:
    """``segments`` with a ``window`` id (0, 1, ...): anomalies that overlap or lie within
    ``tolerance_s`` of each other share a window; ``onset`` ranks them by start inside it."""
    if segments.height == 0:
        return segments.with_columns(pl.lit(0, dtype=pl.Int64).alias("window"),
                                     pl.lit(0, dtype=pl.Int64).alias("onset"))
    s = segments.sort("start", maintain_order=True)
    reach = pl.col("end").cum_max().shift(1)
    gap_us = (pl.col("start") - reach).dt.total_microseconds()
    s = s.with_columns(((reach.is_null() | (gap_us > tolerance_s * 1e6)).cum_sum() - 1)
                       .cast(pl.Int64).alias("window"))
    return s.with_columns(pl.col("start").rank("ordinal").over("window").cast(pl.Int64).alias("onset"))


def windows(merged: pl.DataFrame) -> pl.DataFrame:
    """One row per incident window: start, end, how many signals and which metrics moved first."""
    return merged.group_by("window").agg(
        pl.col("start").min(), pl.col("end").max(), pl.len().alias("signals"),
        pl.col("source").n_unique().alias("sources"),
        pl.col("metric").sort_by("start").head(5).alias("first_movers"),
    ).sort("window")


def grid_series(metrics: pl.DataFrame, *, start: Any, end: Any, step_s: float = 1.0) -> pl.DataFrame:
    """Wide frame: one column per series (``source|entity|metric``) on a regular grid over
    [start, end]; a bucket holds the mean of its samples, gaps carry the last value."""
    step = dt.timedelta(seconds=step_s)
    grid = pl.DataFrame({"ts": pl.datetime_range(start, end, step, time_zone="UTC", eager=True)
                         .dt.cast_time_unit("ns")})
    part = metrics.filter(pl.col("ts").is_between(start, end))
    if part.height == 0:
        return grid
    part = part.with_columns(pl.col("ts").dt.truncate(f"{int(step_s * 1000)}ms").alias("ts"),
                             pl.concat_str([pl.col(c) for c in ("source", "entity", "metric")],
                                           separator="|").alias("_series"))
    wide = part.group_by("ts", "_series").agg(pl.col("value").mean()).pivot(
        on="_series", index="ts", values="value")
    return grid.join(wide, on="ts", how="left").sort("ts").fill_null(strategy="forward")


def comovement(a: np.ndarray, b: np.ndarray, *, max_lag: int = 10) -> dict[str, float | int | None]:
    """Rank correlation of two equally spaced series and the lag (in steps) at which it peaks.

    A positive ``lag`` means ``b`` follows ``a``.

    >>> import numpy as np
    >>> x = np.r_[np.zeros(20), np.ones(10), np.zeros(20)]
    >>> comovement(x, np.roll(x, 3))["lag"]
    3
    """
    mask = ~(np.isnan(a) | np.isnan(b))
    a, b = a[mask], b[mask]
    if a.size < 5 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return {"rho": None, "lag": None, "rho_at_lag": None}
    ra, rb = _ranks(a), _ranks(b)
    best_lag, best = 0, -2.0
    for lag in range(-max_lag, max_lag + 1):
        x, y = (ra[: ra.size - lag], rb[lag:]) if lag >= 0 else (ra[-lag:], rb[: rb.size + lag])
        if x.size < 5 or np.ptp(x) == 0 or np.ptp(y) == 0:
            continue
        r = float(np.corrcoef(x, y)[0, 1])
        if r > best + 1e-9 or (abs(r - best) <= 1e-9 and abs(lag) < abs(best_lag)):
            best_lag, best = lag, r
    rho = float(np.corrcoef(ra, rb)[0, 1])
    return {"rho": round(rho, 3), "lag": best_lag, "rho_at_lag": round(best, 3) if best > -2 else None}


def _ranks(x: np.ndarray) -> np.ndarray:
    order = x.argsort(kind="stable")
    ranks = np.empty(x.size, dtype=float)
    ranks[order] = np.arange(x.size, dtype=float)
    # average ranks of ties so a flat stretch does not fake a trend
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


def pairwise(metrics: pl.DataFrame, cause: dict[str, str], others: list[dict[str, str]], *,
             start: Any, end: Any, pad_s: float = 20.0, max_lag: int = 10) -> list[dict[str, Any]]:
    """Co-movement of the ``cause`` series with each of ``others`` around [start, end].

    Series are dicts with ``source``, ``entity`` and ``metric``. Returns one dict per other
    series: ``rho`` (rank correlation at lag 0), ``lag_s`` and ``rho_at_lag``."""
    pad = dt.timedelta(seconds=pad_s)
    keys = [cause, *others]
    want = pl.DataFrame([{c: k[c] for c in ("source", "entity", "metric")} for k in keys]).unique()
    part = metrics.join(want, on=["source", "entity", "metric"], how="semi")
    wide = grid_series(part, start=start - pad, end=end + pad)
    name = lambda k: f"{k['source']}|{k['entity']}|{k['metric']}"  # noqa: E731
    out: list[dict[str, Any]] = []
    if name(cause) not in wide.columns:
        return out
    base = wide.get_column(name(cause)).to_numpy().astype(float)
    for other in others:
        if name(other) not in wide.columns:
            continue
        result = comovement(base, wide.get_column(name(other)).to_numpy().astype(float), max_lag=max_lag)
        out.append({**{c: other[c] for c in ("source", "entity", "metric")}, "rho": result["rho"],
                    "lag_s": result["lag"], "rho_at_lag": result["rho_at_lag"]})
    return out


__all__ = ["merge", "windows", "grid_series", "comovement", "pairwise", "SERIES"]
