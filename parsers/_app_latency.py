"""PostgreSQL query and HTTP request samples (from ``_app_capture``) → timeline rows.

Metrics (``ts`` = end of the second in which the queries/requests *completed*; entity = the
server ``endpoint:<ip>:<port>``): ``pg.wire_latency_ms`` (p50), ``pg.wire_latency_p99_ms``,
``pg.wire_latency_max_ms``, ``pg.wire_queries_per_s``; ``http.latency_ms`` (p50),
``http.latency_p99_ms``, ``http.latency_max_ms``, ``http.requests_per_s``, ``http.errors_per_s``
(5xx). Latency = the request's first byte → the response's last byte: for PostgreSQL the
capture time of the first message of the query (``Q``, or the first ``P``/``B``/... of an
extended batch) → the segment completing its ``ReadyForQuery``; for HTTP the request's first
byte → the final response's last byte (TTFB is in the table and events as ``ttfb_ms``).

Events: ``pg.query`` (entity = server endpoint) for the ``TOP_QUERIES`` slowest queries, every
query taking at least ``SLOW_S`` and failed ones (up to ``MAX_ERROR_EVENTS``), with the
statement (first ``STATEMENT_CHARS`` characters as the client sent it: untrusted), command
tag, rows, SQLSTATE and message; ``http.request`` (entity ``http:<METHOD> <path>`` without the
query string) for every request when there are at most ``ALL_HTTP_EVENTS``, otherwise the
slowest, the slow and the failed (status >= 500) ones. ``line`` is the frame number of the
request's first segment.

Tables: ``pg_queries`` and ``http_requests``, one row per query/request (up to ``TABLE_MAX``); a request
without a response in the capture has no status, end or latency (its event says so).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl

from parsers._pgwire import error_fields
from parsers.base import attrs_json
from parsers.schema import UTC_NS

if TYPE_CHECKING:
    from parsers._app_capture import AppLatency

TOP_QUERIES = 200
TOP_REQUESTS = 500
SLOW_S = 1.0
MAX_ERROR_EVENTS = 1000
ALL_HTTP_EVENTS = 20_000
TABLE_MAX = 200_000
STATEMENT_CHARS = 500
NS = 1_000_000_000
MODES = {ord("Q"): "simple", ord("S"): "extended", ord("F"): "function"}  # by the sync message
TX_STATUS = {ord("I"): "I", ord("T"): "T", ord("E"): "E"}  # ReadyForQuery: idle, in transaction, failed
METRIC_COLS = {"ts": UTC_NS, "entity": pl.Utf8, "metric": pl.Utf8, "value": pl.Float64, "line": pl.Int64}
EVENT_COLS = {"ts": UTC_NS, "end": UTC_NS, "entity": pl.Utf8, "kind": pl.Utf8, "severity": pl.Utf8,
              "value": pl.Float64, "message": pl.Utf8, "attrs": pl.Utf8, "line": pl.Int64}


def _utc(col: str) -> pl.Expr:
    return pl.col(col).cast(pl.Datetime("ns")).dt.replace_time_zone("UTC")


def event_candidates(df: pl.DataFrame) -> pl.DataFrame:
    """Rows that may still become events (or are table rows): the slowest, slow and failed."""
    lat = pl.col("end") - pl.col("start")
    rank = lat.rank("ordinal", descending=True)
    err_rank = pl.when(pl.col("error").is_not_null()).then(pl.col("start").rank("ordinal")).otherwise(None)
    return df.filter(pl.col("in_table") | (rank <= TOP_QUERIES) | (lat >= SLOW_S * NS)
                     | (err_rank.over(pl.col("error").is_not_null()) <= MAX_ERROR_EVENTS))


def _per_second(samples: pl.DataFrame, names: dict[str, str]) -> pl.DataFrame:
    """samples: endpoint, end (ns), lat_ms[, err] → long metric rows per endpoint and second."""
    if samples.height == 0:
        return pl.DataFrame(schema=METRIC_COLS)
    aggs = [pl.col("lat_ms").median().alias(names["p50"]),
            pl.col("lat_ms").quantile(0.99, "linear").alias(names["p99"]),
            pl.col("lat_ms").max().alias(names["max"]), pl.len().cast(pl.Float64).alias(names["count"])]
    if "errors" in names:
        aggs.append(pl.col("err").sum().cast(pl.Float64).alias(names["errors"]))
    per = samples.with_columns(((pl.col("end") // NS + 1) * NS).alias("sec")).group_by("endpoint", "sec").agg(aggs)
    return (per.unpivot(index=["endpoint", "sec"], variable_name="metric", value_name="value")
            .select(_utc("sec").alias("ts"), ("endpoint:" + pl.col("endpoint")).alias("entity"), "metric",
                    pl.col("value").cast(pl.Float64), pl.lit(None, dtype=pl.Int64).alias("line"))
            .sort("entity", "metric", "ts"))


def pg_per_second(app: AppLatency, times: pl.DataFrame) -> pl.DataFrame:
    """(stream, start, end) of queries → metric rows per server endpoint and second."""
    times = times.join(_stream_names(app, times.get_column("stream")), on="stream", maintain_order="left")
    return _per_second(times.with_columns(((pl.col("end") - pl.col("start")) / 1e6).alias("lat_ms")),
                       {"p50": "pg.wire_latency_ms", "p99": "pg.wire_latency_p99_ms",
                        "max": "pg.wire_latency_max_ms", "count": "pg.wire_queries_per_s"})


def _stream_names(app: AppLatency, streams: pl.Series) -> pl.DataFrame:
    ids = streams.unique().sort().to_list()
    names = [app.flows.endpoints(s) if app.flows is not None else ("?", "?") for s in ids]
    return pl.DataFrame({"stream": pl.Series(ids, dtype=pl.Int64), "client": [c for c, _ in names],
                         "endpoint": [s for _, s in names]})


def build_frames(app: AppLatency) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, pl.DataFrame]]:
    metrics, events, tables = [], [], {}
    seconds = list(getattr(app, "pg_seconds", []))
    if app.pg_times:
        seconds.append(pg_per_second(app, pl.concat(app.pg_times)))
    if seconds:
        metrics.append(pl.concat(seconds).sort("entity", "metric", "ts"))
    if app.pg_detail:
        detail = pl.concat(app.pg_detail, how="diagonal_relaxed")
        detail = _pg_detail(detail, _stream_names(app, detail.get_column("stream")))
        tables["pg_queries"] = detail.filter(pl.col("in_table")).drop("in_table", "stream").sort("start")
        events.append(_pg_events(detail))
    if app.http_parts:
        reqs = pl.concat(app.http_parts)
        names = _stream_names(app, reqs.get_column("stream"))
        reqs = _http_detail(reqs.join(names, on="stream", maintain_order="left"))
        answered = reqs.filter(pl.col("end_ns").is_not_null())
        metrics.append(_per_second(answered.select("endpoint", pl.col("end_ns").alias("end"), "lat_ms",
                                                   (pl.col("status") >= 500).alias("err")),
                                   {"p50": "http.latency_ms", "p99": "http.latency_p99_ms", "max": "http.latency_max_ms",
                                    "count": "http.requests_per_s", "errors": "http.errors_per_s"}))
        tables["http_requests"] = reqs.drop("stream", "end_ns").sort("start").head(TABLE_MAX)
        events.append(_http_events(reqs))
    metric_frame = pl.concat(metrics) if metrics else pl.DataFrame(schema=METRIC_COLS)
    event_frame = pl.concat(events) if events else pl.DataFrame(schema=EVENT_COLS)
    return metric_frame, event_frame, tables


def _text(values: pl.Series, limit: int) -> pl.Series:
    """Raw protocol strings → text: UTF-8 (invalid bytes replaced), trailing NULs dropped, cut."""
    try:
        out = values.cast(pl.Utf8)  # fast path: every value is valid UTF-8
    except pl.exceptions.PolarsError:
        out = pl.Series([None if v is None else v.decode("utf-8", "replace") for v in values.to_list()],
                        dtype=pl.Utf8)
    return out.str.strip_chars_end("\0").str.slice(0, limit)


def _pg_detail(df: pl.DataFrame, names: pl.DataFrame) -> pl.DataFrame:
    errs = [error_fields(e) if e else {} for e in df.get_column("error").to_list()]
    df = df.with_columns(
        _text(df.get_column("text"), STATEMENT_CHARS).alias("statement"),
        _text(df.get_column("tag"), 100).alias("tag"),
        pl.Series("sqlstate", [e.get("sqlstate") for e in errs], dtype=pl.Utf8),
        pl.Series("error", [e.get("message", "")[:STATEMENT_CHARS] or None if e else None for e in errs],
                  dtype=pl.Utf8))
    return df.join(names, on="stream", how="left", maintain_order="left").select(
        _utc("start").alias("start"), _utc("end").alias("end"),
        ((pl.col("end") - pl.col("start")) / 1e6).alias("latency_ms"),
        ("flow:" + pl.col("client") + ">" + pl.col("endpoint")).alias("flow"),
        pl.col("endpoint").alias("server"),
        pl.col("kind").replace_strict(MODES, default="?", return_dtype=pl.Utf8).alias("mode"),
        "statement", "tag",
        # rows: the tag's last number (``SELECT 5``, ``INSERT 0 1``, ``COPY 2000``; none for ``BEGIN``)
        pl.col("tag").str.extract(r" (\d+)$", 1).cast(pl.Int64, strict=False).alias("rows"), "commands",
        "sqlstate", "error",
        pl.col("tx_status").replace_strict(TX_STATUS, default=None, return_dtype=pl.Utf8),
        "frame_start", "frame_end", "in_table", "stream")


def _pg_events(d: pl.DataFrame) -> pl.DataFrame:
    lat = pl.col("latency_ms")
    chosen = d.filter((lat.rank("ordinal", descending=True) <= TOP_QUERIES) | (lat >= SLOW_S * 1000)
                      | (pl.col("sqlstate").is_not_null()
                         & (pl.col("start").rank("ordinal").over(pl.col("sqlstate").is_not_null()) <= MAX_ERROR_EVENTS)))
    rows = []
    for r in chosen.iter_rows(named=True):
        what = r["tag"] or (f"ERROR {r['sqlstate']}" if r["sqlstate"] else "")
        stmt = " ".join((r["statement"] or "").split())
        rows.append({
            "ts": r["start"], "end": r["end"], "entity": f"endpoint:{r['server']}", "kind": "pg.query",
            "severity": "medium" if r["sqlstate"] or r["latency_ms"] >= SLOW_S * 1000 else "info",
            "value": r["latency_ms"] / 1000, "message": f"{r['latency_ms']:.1f} ms {what}: {stmt[:160]}",
            "attrs": attrs_json({"statement": r["statement"], "tag": r["tag"], "rows": r["rows"],
                                 "commands": r["commands"] if r["commands"] != 1 else None, "mode": r["mode"],
                                 "sqlstate": r["sqlstate"], "error": r["error"], "flow": r["flow"],
                                 "tx_status": r["tx_status"], "frame_end": r["frame_end"]}),
            "line": r["frame_start"]})
    return pl.DataFrame(rows, schema=EVENT_COLS) if rows else pl.DataFrame(schema=EVENT_COLS)


def _http_detail(df: pl.DataFrame) -> pl.DataFrame:
    return df.select(
        _utc("start").alias("start"), _utc("end").alias("end"), pl.col("end").alias("end_ns"),
        ((pl.col("end") - pl.col("start")) / 1e6).alias("lat_ms"),
        ((pl.col("first") - pl.col("start")) / 1e6).alias("ttfb_ms"),
        "method", pl.col("target").str.slice(0, 2000).alias("target"),
        pl.col("target").str.split("?").list.first().str.slice(0, 500).alias("path"), "status", "interim",
        ("flow:" + pl.col("client") + ">" + pl.col("endpoint")).alias("flow"), "endpoint",
        "frame_start", "frame_end", "stream")


def _http_events(reqs: pl.DataFrame) -> pl.DataFrame:
    if reqs.height > ALL_HTTP_EVENTS:
        lat = pl.col("lat_ms")
        reqs = reqs.filter((lat.rank("ordinal", descending=True) <= TOP_REQUESTS) | (lat >= SLOW_S * 1000)
                           | (pl.col("status") >= 500) | pl.col("status").is_null())
    unanswered = pl.col("status").is_null()
    return reqs.select(
        pl.col("start").alias("ts"), "end", pl.format("http:{} {}", "method", "path").alias("entity"),
        pl.lit("http.request").alias("kind"),
        pl.when((pl.col("status") >= 500) | (pl.col("lat_ms") >= SLOW_S * 1000) | unanswered)
        .then(pl.lit("medium")).otherwise(pl.lit("info")).alias("severity"),
        (pl.col("lat_ms") / 1000).alias("value"),
        pl.when(unanswered).then(pl.format("{} {}: no response in the capture", "method",
                                           pl.col("target").str.slice(0, 200)))
        .otherwise(pl.format("{} {} {} ({} ms)", "method", pl.col("target").str.slice(0, 200), "status",
                             pl.col("lat_ms").round(1))).alias("message"),
        pl.struct(pl.col("method"), pl.col("path"),
                  pl.when(pl.col("target") != pl.col("path")).then(pl.col("target")).alias("target"),
                  pl.col("status"), pl.col("ttfb_ms").round(3), pl.col("interim"), pl.col("flow"),
                  pl.col("frame_end")).struct.json_encode().alias("attrs"),
        pl.col("frame_start").alias("line")).cast(EVENT_COLS)  # type: ignore[arg-type]
