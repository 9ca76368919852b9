"""Access-log lines (``127.0.0.1:54321 - "GET /path HTTP/1.1" 200 OK``, uvicorn's access
format, with any logging prefix) turned into ``http.request`` events column-wise, so a log of
millions of requests never goes through per-line Python."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import polars as pl

from parsers._applog_slow import (
    TS_HEAD_RX,
    attrs_object,
    collect,
    collect_all,
    escape_flag,
    fill_wall,
    frag,
    has_zone,
    line_prefix,
    missing_flag,
    prefix_attrs,
    time_exprs,
)

# Rust-regex twin of _applog_events.ACCESS_RE
ACCESS_RX = (
    r"(?P<client>[\w.:\[\]%-]+) - \"(?P<method>[A-Z]{3,10}) (?P<target>\S+) HTTP/(?P<version>[\d.]+)\" "
    r"(?P<status>\d{3})(?: [A-Za-z][\w '-]*)?\s*$"
)


def access_frame(rows: pl.DataFrame, first_line: int) -> pl.DataFrame:
    """``rows`` has columns i, line, ts (the line's own or inherited timestamp text).
    Returns event columns plus ``wall`` (naive printed time) and ``off_min`` (printed offset);
    rows that are not access lines after all are dropped. String slicing and splitting only:
    capture-group regexes over millions of rows are the slow part otherwise."""
    quoted = pl.col("quoted")  # materialised once: every use of an expression re-runs it
    request = pl.col("request")
    tail = quoted.list.get(-1, null_on_oob=True).str.strip_chars_start(" ")
    head = quoted.list.get(-3, null_on_oob=True)
    plan = (
        rows.lazy()
        .with_columns(pl.col("line").str.split('"').alias("quoted"))
        .with_columns(
            quoted.list.get(-2, null_on_oob=True).str.split(" ").alias("request"), *time_exprs(has_zone(rows))
        )
        .with_columns(
            request.list.get(0, null_on_oob=True).alias("method"),
            request.list.get(1, null_on_oob=True).alias("target"),
            request.list.get(2, null_on_oob=True).str.strip_prefix("HTTP/").alias("version"),
            tail.str.slice(0, 3).cast(pl.Int64, strict=False).alias("status"),
            head.str.extract(r"(\S+) - $", 1).alias("client"),
        )
        .filter(
            pl.col("status").is_not_null()
            & pl.col("method").is_not_null()
            & pl.col("target").is_not_null()
            & (request.list.len() == 3)
        )
        .with_columns(
            pl.col("target").str.splitn("?", 2).struct.field("field_0").alias("path"),
            # the line's logging prefix without its time: few distinct ones, read once each
            pl.col("line")
            .str.strip_suffix(pl.format('{} - "{}"{}', "client", quoted.list.get(-2), quoted.list.get(-1)))
            .str.replace(TS_HEAD_RX, "")
            .alias("key"),
        )
    )
    # every access line holds quotes; the fields taken out of it rarely need escaping
    fields, heads, flags = collect_all(
        [
            plan,
            plan.unique(subset="key", keep="first", maintain_order=True).select("key", "line"),
            plan.select(escape_flag(["method", "path", "target", "client"]), missing_flag()),
        ]
    )
    keys = heads.get_column("key")
    prefixes = [line_prefix(line) for line in heads.get_column("line")]
    tails = pl.Series([prefix_attrs(prefix) for prefix in prefixes], dtype=pl.Utf8)
    fmts = pl.Series([prefix.kind for prefix in prefixes], dtype=pl.Utf8)
    if flags.get_column("missing")[0]:
        fields = fill_wall(fields)
    plain = not flags.get_column("esc")[0]
    return collect(
        fields.lazy().select(
            pl.col("wall"),
            pl.col("off_min"),
            pl.lit(None, dtype=pl.Float64).alias("took_s"),
            pl.format("http:{} {}", "method", "path").alias("entity"),
            pl.lit("http.request").alias("kind"),
            pl.when(pl.col("status") >= 500)
            .then(pl.lit("medium"))
            .otherwise(pl.lit("info"))
            .alias("severity"),
            pl.lit(None, dtype=pl.Float64).alias("value"),
            pl.format("{} {} {}", "method", "target", "status").alias("message"),
            # compact: one of these per request line, millions in a big log
            attrs_object(
                [
                    frag("method", pl.col("method"), plain),
                    frag("path", pl.col("path"), plain),
                    frag("target", pl.when(pl.col("target") != pl.col("path")).then(pl.col("target")), plain),
                    pl.format('"status":{}', "status"),
                    frag("client", pl.col("client"), plain),
                    pl.col("key").replace_strict(keys, tails, default=None, return_dtype=pl.Utf8),
                ]
            ).alias("attrs"),
            (pl.col("i").cast(pl.Int64) + first_line).alias("line"),
            # the line's log format (counted for the file's variant, then dropped)
            pl.col("key").replace_strict(keys, fmts, default=None, return_dtype=pl.Utf8).alias("fmt"),
        )
    )


def finish(
    frames: list[tuple[int, pl.DataFrame]], mode: str, tz: dt.tzinfo
) -> tuple[list[pl.DataFrame], str]:
    """The frames (``(line offset, frame)`` per batch, consumed) with ``line`` made absolute
    and in order, and ``ts`` in the file's time mode (naive wall clock, or UTC when the
    artifact's times carry zones); rows whose time could not be read are dropped. Converted
    one by one so only one extra batch is alive at a time."""
    if not frames:
        return [], mode
    if not mode:
        printed = (pl.col("wall").is_not_null() & pl.col("off_min").is_not_null()).any()
        mode = "aware" if any(f.select(printed).item() for _, f in frames) else "naive"
    out = []
    while frames:
        offset, frame = frames.pop(0)
        out.append(_with_times(frame, offset, mode, tz))
    return out, mode


def _with_times(df: pl.DataFrame, offset: int, mode: str, tz: dt.tzinfo) -> pl.DataFrame:
    utc_from_offset = (pl.col("wall") - pl.duration(minutes=pl.col("off_min"))).dt.replace_time_zone("UTC")
    if mode == "aware":
        if isinstance(tz, ZoneInfo):
            local = (
                pl.col("wall")
                .dt.replace_time_zone(tz.key, ambiguous="earliest", non_existent="null")
                .dt.convert_time_zone("UTC")
            )
        else:
            offset_td = tz.utcoffset(None) or dt.timedelta(0)
            local = (pl.col("wall") - offset_td).dt.replace_time_zone("UTC")
        ts = pl.when(pl.col("off_min").is_not_null()).then(utc_from_offset).otherwise(local)
    else:
        if isinstance(tz, ZoneInfo):
            back = utc_from_offset.dt.convert_time_zone(tz.key).dt.replace_time_zone(None)
        else:
            back = (utc_from_offset + (tz.utcoffset(None) or dt.timedelta(0))).dt.replace_time_zone(None)
        ts = pl.when(pl.col("off_min").is_not_null()).then(back).otherwise(pl.col("wall"))
    dtype = pl.Datetime("ns", "UTC" if mode == "aware" else None)
    end = ts.cast(dtype)
    took = pl.duration(microseconds=(pl.col("took_s") * 1e6).round(0).cast(pl.Int64))
    plan = (
        df.lazy()
        .filter(pl.col("wall").is_not_null())
        .with_columns(
            pl.when(pl.col("took_s").is_not_null()).then(end - took).otherwise(end).alias("ts"),
            pl.when(pl.col("took_s").is_not_null()).then(end).otherwise(None).cast(dtype).alias("end"),
            pl.col("line") + offset,
        )
        .drop("wall", "off_min", "took_s")
    )
    return collect(plan)
