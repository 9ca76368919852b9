"""HTTP requests as evidence: route normalisation and "which request was in flight across
this stall" (the request whose handler blocked the loop ends exactly when the stall does)."""

from __future__ import annotations

import polars as pl

_ID_SEGMENT = r"/(?:\d+|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|[0-9a-fA-F]{16,})(/|$)"


def route_expr(entity: pl.Expr) -> pl.Expr:
    """``http:GET /api/items/42?x=1`` → ``http:GET /api/items/{id}``."""
    # twice: adjacent id segments share the slash between them
    return entity.str.replace(r"\?.*$", "").str.replace_all(_ID_SEGMENT, "/{id}$1") \
        .str.replace_all(_ID_SEGMENT, "/{id}$1")


def requests(events: pl.DataFrame) -> pl.DataFrame:
    """HTTP requests with ``req_start`` (null when only the completion is known), ``req_end``
    and the normalised ``route``."""
    r = events.filter((pl.col("kind") == "http.request") & pl.col("entity").str.starts_with("http:"))
    return r.with_columns(
        pl.when(pl.col("end").is_not_null()).then(pl.col("ts")).otherwise(None).alias("req_start"),
        pl.coalesce("end", "ts").alias("req_end"),
        route_expr(pl.col("entity")).alias("route"))


def guilty(stalls: pl.DataFrame, reqs: pl.DataFrame, *, tolerance_s: float = 0.3) -> pl.DataFrame:
    """For each stall (``ts`` = start, ``end``), the request that best explains it: finished
    within ``tolerance_s`` of the stall's end and, when its start is known, already running
    when the stall began. Returns one row per attributed stall: stall ``ts``/``end``/``value``,
    ``route``, ``fit_s`` (how far the request's edges sit from the stall's) and provenance."""
    if stalls.height == 0 or reqs.height == 0:
        return pl.DataFrame(schema={"stall_ts": pl.Datetime("ns", "UTC"), "stall_end": pl.Datetime("ns", "UTC"),
                                    "stall_s": pl.Float64, "route": pl.Utf8, "fit_s": pl.Float64,
                                    "file": pl.Utf8, "line": pl.Int64, "source": pl.Utf8})
    tol = pl.duration(microseconds=int(tolerance_s * 1e6))
    s = stalls.select(pl.col("ts").alias("stall_ts"), pl.col("end").alias("stall_end"),
                      pl.col("value").alias("stall_s"), pl.col("file").alias("_sfile"),
                      pl.col("line").alias("_sline")).with_row_index("_stall").with_columns(
        (pl.col("stall_end") - tol).alias("_lo"), (pl.col("stall_end") + tol).alias("_hi"))
    r = reqs.select("req_start", "req_end", "route", "file", "line", "source")
    pairs = s.join_where(r, pl.col("req_end") >= pl.col("_lo"), pl.col("req_end") <= pl.col("_hi"))
    pairs = pairs.filter(pl.col("req_start").is_null() | (pl.col("req_start") <= pl.col("stall_ts") + tol))
    edge = (pl.col("req_end") - pl.col("stall_end")).dt.total_microseconds().abs() / 1e6
    start_edge = ((pl.col("req_start") - pl.col("stall_ts")).dt.total_microseconds().abs() / 1e6) \
        .fill_null(tolerance_s)
    # the guilty handler's own log line is written inside the blocking step, before the
    # slow-callback warning; requests finishing after the stall only queued behind it
    after = pl.when((pl.col("file") == pl.col("_sfile")) & pl.col("line").is_not_null()
                    & pl.col("_sline").is_not_null()).then(pl.col("line") > pl.col("_sline")) \
        .otherwise(pl.col("req_end") > pl.col("stall_end"))
    pairs = pairs.with_columns((edge + start_edge + pl.when(after).then(0.05).otherwise(0.0)).alias("fit_s"))
    best = pairs.sort("fit_s", "route", "req_end").group_by("_stall", maintain_order=True).first()
    return best.select("stall_ts", "stall_end", "stall_s", "route", "fit_s", "file", "line", "source").sort("stall_ts")


def votes(attributed: pl.DataFrame) -> pl.DataFrame:
    """Stall seconds explained per route, most first."""
    return attributed.group_by("route").agg(
        pl.len().alias("stalls"), pl.col("stall_s").sum().alias("stall_s"),
        pl.col("fit_s").median().alias("fit_s"), pl.col("file").first(), pl.col("line").first(),
        pl.col("source").first()).sort(["stall_s", "stalls", "route"], descending=[True, True, False])
