"""Column-wise handling of the common case of the slow-callback warning: one line with its own
timestamp, ``... Executing <REPR> took N.NNN seconds``. Mirrors what ``_asyncio_repr`` does
per line (the per-line path still handles JSON, unprefixed, wrapped and historic forms), and
turns all slow callbacks into the per-second ``loop.stall_ms`` / ``loop.slow_callbacks``."""

from __future__ import annotations

import datetime as dt
import json

import polars as pl

from parsers import _logprefix as lp
from parsers.lines import ANSI_RE

# a line that can take the column-wise path (its own time, the warning closing the line)
FAST_RX = r"Executing <.*> took \d+(?:\.\d+)? seconds\s*$"
_SUFFIX_RX = r"( took \d+(?:\.\d+)? seconds\s*)$"
# the time at the head of a line; what follows it up to "Executing" names level, logger, pid
_TS_RX = (
    r"^(?:\x1b\[[0-9;]*m)*\[?\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d{1,9})?(?: ?(?:Z|[+-]\d\d:?\d\d))?\]?"
)


def frag(key: str, value: pl.Expr, plain: bool = False) -> pl.Expr:
    """``"key":<json value>`` or null when the value is null/empty (as attrs_json drops them).
    ``plain``: the caller checked that no value needs escaping, so skip the JSON encoder."""
    present = value.is_not_null() & (value.cast(pl.Utf8) != "")
    if plain:
        return pl.when(present).then(pl.format('"' + key + '":"{}"', value))
    encoded = pl.struct(value.alias(key)).struct.json_encode()
    return pl.when(present).then(encoded.str.slice(1, encoded.str.len_chars() - 2))


def attrs_object(fragments: list[pl.Expr]) -> pl.Expr:
    """``{frag,frag,...}`` skipping null fragments."""
    return pl.concat_str(
        [pl.lit("{"), pl.concat_str(fragments, separator=",", ignore_nulls=True), pl.lit("}")]
    )


def needs_escape(df: pl.DataFrame, columns: list[str]) -> bool:
    """Whether any value of ``columns`` holds a quote, backslash or control character."""
    if df.height == 0:
        return False
    exprs = [pl.col(c).str.contains(r'["\\\x00-\x1f]').any() for c in columns]
    return bool(df.select(pl.any_horizontal(exprs)).item())


def has_zone(df: pl.DataFrame) -> bool:
    """Whether the time texts carry an offset (checked on a few rows: a file keeps one format)."""
    texts = df.get_column("ts").drop_nulls()
    if texts.len() == 0:
        return False
    picks = {0, texts.len() // 2, texts.len() - 1}
    for k in picks:
        stamp = lp.parse_stamp(lp.ts_text_of(lp_clean(texts[k])))
        if stamp is not None and stamp.tzinfo is not None:
            return True
    return False


def time_columns(df: pl.DataFrame) -> list[pl.Expr]:
    """``wall`` and ``off_min`` of the rows of ``df`` from its ``ts`` text column, as series
    in ``df``'s row order (add them before anything reorders or filters the rows)."""
    tsx = df.get_column("ts").str.strip_chars_start("[")
    if has_zone(df):
        off = pl.DataFrame({"tsx": tsx}).select(_offset(pl.col("tsx"))).to_series()
    else:
        off = pl.Series(values=[None] * len(tsx), dtype=pl.Int64)
    return [pl.lit(wall_series(tsx)).alias("wall"), pl.lit(off).alias("off_min")]


_COMMON_CLOCK = "%Y-%m-%d %H:%M:%S,%3f"  # logging's default asctime


def wall_series(tsx: pl.Series) -> pl.Series:
    """``_wall`` of each text, by one strptime where the text is logging's default asctime
    (milliseconds not followed by another digit) and by ``_wall`` for the rest."""
    frame = pl.DataFrame({"tsx": tsx})
    fast = frame.select(
        pl.when(~pl.col("tsx").str.slice(23, 1).str.contains(r"^\d"))
        .then(pl.col("tsx").str.slice(0, 23).str.to_datetime(_COMMON_CLOCK, time_unit="ns", strict=False))
        .alias("wall")
    ).get_column("wall")
    missing = fast.is_null() & tsx.is_not_null()
    if missing.any():
        rows = missing.arg_true()
        slow = frame.select(pl.col("tsx").gather(rows)).select(_wall(pl.col("tsx"))).to_series()
        fast = fast.scatter(rows, slow)
    return fast


# what varies between warnings of one callback and never reaches an attribute: the task's
# name (taken per row first), a timer's due time, object addresses. Masked, the reprs of a log
# collapse to a few distinct ones, and the regex work runs once per distinct repr.
_NAME_RX = r"\bname=(?:'[^']*'|\"[^\"]*\")"
_VARYING_RX = r"\bwhen=[-+.0-9eE]+| at 0x[0-9a-fA-F]+"
_FACTS_KEPT = 20_000  # distinct reprs remembered across batches (memory stays bounded)


def slow_frame(rows: pl.DataFrame, first_line: int, facts: dict[str, dict] | None = None) -> pl.DataFrame:
    """``rows``: i, line, ts (the line's own time text). Same columns as access frames.
    ``facts``: a dict the caller keeps across batches (what each distinct repr says)."""
    line = pl.col("line")
    # literal splits and an end-anchored regex: a capture around ".*" costs ~10x more
    frame = (
        rows.lazy()
        .with_columns(
            line.str.splitn("Executing <", 2).alias("parts"),
            line.str.extract(_SUFFIX_RX, 1).alias("suffix"),
        )
        .with_columns(
            pl.col("parts").struct.field("field_0").alias("full_head"),
            ("<" + pl.col("parts").struct.field("field_1")).str.strip_suffix(pl.col("suffix")).alias("repr"),
            pl.col("suffix").str.extract(r"(\d+(?:\.\d+)?)", 1).alias("took_text"),
        )
        .with_columns(
            pl.col("full_head").str.replace(_TS_RX, "").alias("head"),
            pl.coalesce(
                pl.col("repr").str.extract(r"\bname='([^']*)'", 1),
                pl.col("repr").str.extract(r"\bname=\"([^\"]*)\"", 1),
            ).alias("task_name"),
            pl.col("repr").str.replace_all(_NAME_RX, "name=?").str.replace_all(_VARYING_RX, "").alias("key"),
        )
        .select("i", "ts", "took_text", "full_head", "head", "task_name", "key")
        .collect()
    )
    kinds = _kinds(frame, {} if facts is None else facts)
    took = pl.col("took_text").cast(pl.Float64)
    task = frag("task_name", pl.col("task_name"), not needs_escape(frame, ["task_name"]))
    frame = frame.with_columns(time_columns(frame))  # before the join: ``wall`` is a series in row order
    return (
        frame.lazy()
        .join(kinds.lazy(), on=["key", "head"], how="left")
        .select(
            "wall",
            "off_min",
            took.alias("took_s"),
            "entity",
            pl.lit("loop.slow_callback").alias("kind"),
            pl.when(took >= 1.0)
            .then(pl.lit("high"))
            .when(took >= 0.3)
            .then(pl.lit("medium"))
            .otherwise(pl.lit("low"))
            .alias("severity"),
            took.alias("value"),
            pl.format("event loop blocked {} s by {}", "took_text", "label").alias("message"),
            pl.concat_str(
                [pl.lit("{"), pl.concat_str(["pre", task, "post"], separator=",", ignore_nulls=True), pl.lit("}")]
            ).alias("attrs"),
            (pl.col("i").cast(pl.Int64) + first_line).alias("line"),
        )
        .sort("line")
        .collect()
    )


def _kinds(frame: pl.DataFrame, facts: dict[str, dict]) -> pl.DataFrame:
    """Per distinct (masked repr, line head): entity, label and the attribute fragments
    before (``pre``) and after (``post``) the per-row task name, as JSON text. The pairs are
    few, so this part is plain Python (a polars plan would cost more than the work).
    ``facts``: what each masked repr says, carried from batch to batch (reprs recur)."""
    pairs = frame.select("key", "head", "full_head").unique(subset=["key", "head"], keep="first")
    keys = pairs.get_column("key").unique().to_list()
    todo = [key for key in keys if key not in facts]
    if todo:
        if len(facts) + len(todo) > _FACTS_KEPT:
            facts.clear()
            todo = keys
        known = _repr_facts(pl.DataFrame({"key": todo}, schema={"key": pl.Utf8}))
        facts.update((row["key"], row) for row in known.iter_rows(named=True))
    heads = {row["head"]: row for row in _prefix_facts(pairs).iter_rows(named=True)}
    out = []
    for key, head, _ in pairs.iter_rows():
        f, h = facts[key], heads[head]
        pid = h["pid"]
        lane = f"loop:{pid}" if pid is not None else "loop:main"
        coro, state, where = f["coro"], f["coro_state"], f["where"]
        name = coro if coro is not None else f["callback"]
        if name is not None and not name.endswith("Wrapper") and not name.startswith("<"):
            entity = f"coro:{name}@{where}" if where is not None else f"coro:{name}"
        else:
            entity = lane
        pre = _frags((("repr_family", f["family"]), ("state", f["state"])))
        post = _frags(
            (
                ("coro", coro),
                ("coro_state", state),
                ("created_at", f["created_at"]),
                ("callback", f["callback"]),
                ("running_at", where if state == "running" else None),
                ("defined_at", where if coro is not None and state is not None and state != "running" else None),
                ("source", where if coro is None else None),
                ("lane", lane),
                ("logger", h["logger"]),
            )
        )
        tail = ([f'"pid":{pid}'] if pid is not None else []) + ([_frag("level", h["level"])] if h["level"] else [])
        post = ",".join(filter(None, [post, *tail]))
        out.append((key, head, entity, name if name is not None else f["family"], pre or None, post or None))
    return pl.DataFrame(
        out, schema=["key", "head", "entity", "label", "pre", "post"], orient="row"
    ).cast(pl.Utf8)


def _frag(key: str, value: str) -> str:
    return f'"{key}":{json.dumps(value, ensure_ascii=False)}'


def _frags(pairs: tuple[tuple[str, str | None], ...]) -> str:
    """``"key":<json>`` joined by commas, skipping null and empty values (as ``frag`` does)."""
    return ",".join(_frag(k, v) for k, v in pairs if v)


def _repr_facts(reprs: pl.DataFrame) -> pl.DataFrame:
    """What each distinct (masked) repr says: family, state, coroutine, where, callback."""
    repr_text = pl.col("key")
    cls = repr_text.str.extract(r"^<(?:_asyncio\.)?(\w+)", 1)
    family = (
        pl.when(cls.str.ends_with("Task"))
        .then(pl.lit("task"))
        .when(cls.str.ends_with("Future"))
        .then(pl.lit("future"))
        .when(cls == "Handle")
        .then(pl.lit("handle"))
        .when(cls == "TimerHandle")
        .then(pl.lit("timerhandle"))
        .otherwise(pl.lit("other"))
    )
    coro_rx = (
        r"coro=<(?P<coro>[^\s()]+)\(\)(?:\s+(?P<how>running at|done, defined at|running)"
        r"(?:\s+(?P<loc>[^<>]+?:\d+))?)?>"
    )
    body = pl.col("body")
    is_handle = pl.col("family").is_in(["handle", "timerhandle"])
    return (
        reprs.lazy()
        .with_columns(
            repr_text.str.replace(r"^<(?:TimerHandle|Handle)\s+(?:cancelled\s+)?(?:when=\S+\s+)?", "")
            .alias("body"),
        )
        .with_columns(
            family.alias("family"),
            repr_text.str.extract(
                r"^<(?:_asyncio\.)?\w+\s+(pending|finished|cancelled|cancelling)\b", 1
            ).alias("state"),
            repr_text.str.extract_groups(coro_rx).alias("coro_parts"),
            repr_text.str.extract(r" created at ([^<>]+:\d+)>$", 1).alias("created_at"),
            body.str.extract(r"^([^\s(<]+)", 1).alias("cb_name"),
            body.str.extract(r"^<([A-Za-z_]\w*)", 1).alias("cb_wrapper"),
            body.str.extract(r"\) at ([^()<>]+?:\d+)(?: created at [^<>]+:\d+)?>$", 1)
            .str.strip_chars()
            .alias("src"),
        )
        .unnest("coro_parts")
        .with_columns(pl.col("loc").str.strip_chars())
        .with_columns(
            pl.when(is_handle).then(pl.coalesce("cb_name", "cb_wrapper")).alias("callback"),
            pl.when(pl.col("how").str.starts_with("done"))
            .then(pl.lit("done"))
            .when(pl.col("how").is_not_null())
            .then(pl.lit("running"))
            .alias("coro_state"),
            pl.when(is_handle).then(pl.col("src")).otherwise(pl.col("loc")).alias("where"),
        )
        .drop("body", "cb_name", "cb_wrapper", "src", "how", "loc")
        .collect()
    )


def _prefix_facts(frame: pl.DataFrame) -> pl.DataFrame:
    """Level, logger and pid of each distinct line head (few: one per logger/process)."""
    heads = frame.select("head", "full_head").unique(subset="head", keep="first")
    rows = []
    for head, full_head in heads.iter_rows():
        prefix = lp.split(lp_clean(full_head or "") + "Executing <x> took 1.000 seconds")
        rows.append(
            {
                "head": head,
                "level": prefix.level or None,
                "logger": prefix.logger or None,
                "pid": prefix.pid or None,
            }
        )
    return pl.DataFrame(rows, schema={"head": pl.Utf8, "level": pl.Utf8, "logger": pl.Utf8, "pid": pl.Utf8})


def lp_clean(text: str) -> str:
    return ANSI_RE.sub("", text) if "\x1b" in text else text


def _wall(ts: pl.Expr) -> pl.Expr:
    """``2026-01-02 10:00:05,123`` / ``2026-01-02T10:00:05.123456`` → naive datetime. The
    date part repeats, so it goes through the cached date parser; the clock is integer maths."""
    day = ts.str.slice(0, 10).str.to_date("%Y-%m-%d", strict=False, cache=True)
    frac_text = ts.str.slice(19, 10).str.strip_chars_start(".,").str.extract(r"^(\d{1,9})", 1)
    frac = (
        pl.when(ts.str.slice(19, 1).is_in([".", ","]))
        .then(frac_text.str.pad_end(9, "0").cast(pl.Int64, strict=False))
        .otherwise(0)
    )
    clock = pl.duration(
        hours=ts.str.slice(11, 2).cast(pl.Int64, strict=False),
        minutes=ts.str.slice(14, 2).cast(pl.Int64, strict=False),
        seconds=ts.str.slice(17, 2).cast(pl.Int64, strict=False),
        nanoseconds=frac.fill_null(0),
        time_unit="ns",
    )
    return day.cast(pl.Datetime("ns")) + clock


def _offset(ts: pl.Expr) -> pl.Expr:
    """Minutes east of UTC printed after the clock (``Z``, ``+0530``, ``-05:00``), else null."""
    tail = ts.str.slice(19, 16).str.strip_chars_start(".,0123456789").str.strip_chars_start("] ")
    colon = tail.str.slice(3, 1) == ":"
    hours = tail.str.slice(1, 2).cast(pl.Int64, strict=False)
    minutes = (
        pl.when(colon).then(tail.str.slice(4, 2)).otherwise(tail.str.slice(3, 2)).cast(pl.Int64, strict=False)
    )
    sign = pl.when(tail.str.starts_with("-")).then(-1).otherwise(1)
    return (
        pl.when(tail.str.starts_with("Z"))
        .then(0)
        .when(tail.str.slice(0, 1).is_in(["+", "-"]) & hours.is_not_null() & minutes.is_not_null())
        .then(sign * (hours * 60 + minutes))
    )


def stall_metrics(events: pl.DataFrame) -> pl.DataFrame:
    """Per lane and second: ``loop.stall_ms`` = length of the UNION of slow-callback spans
    inside the second (two reports of one stall count once), ``loop.slow_callbacks`` = warnings
    finishing in it; ts = END of the second. Seconds without a stall have no row."""
    spans = (
        events.lazy()
        .filter(
            (pl.col("kind") == "loop.slow_callback")
            & pl.col("ts").is_not_null()
            & pl.col("end").is_not_null()
        )
        .select(
            # lanes are ``loop:<digits>`` / ``loop:main``: no JSON escapes, a plain extract reads them
            pl.col("attrs").str.extract(r'"lane":"([^"\\]*)"', 1).fill_null("loop:main").alias("entity"),
            "ts",
            "end",
            "line",
        )
        .sort("entity", "ts", "line")
    )
    one = dt.timedelta(seconds=1)
    covered = pl.col("end").cum_max().shift(1).over("entity")
    pieces = (
        spans.with_columns(pl.max_horizontal("ts", covered).alias("from"))
        .filter(pl.col("from") < pl.col("end"))
        .with_columns(pl.datetime_ranges(pl.col("from").dt.truncate("1s"), pl.col("end"), "1s").alias("sec"))
        .explode("sec")
        .with_columns(
            (
                (
                    pl.min_horizontal("end", pl.col("sec") + one) - pl.max_horizontal("from", "sec")
                ).dt.total_microseconds()
                / 1000.0
            ).alias("ms")
        )
        .filter(pl.col("ms") > 0)
        .group_by("entity", (pl.col("sec") + one).alias("ts"))
        .agg(pl.col("ms").sum().round(3).alias("value"), pl.col("line").min())
        .with_columns(pl.lit("loop.stall_ms").alias("metric"))
    )
    counts = (
        spans.group_by("entity", (pl.col("end").dt.truncate("1s") + one).alias("ts"))
        .agg(pl.len().cast(pl.Float64).alias("value"), pl.col("line").min())
        .with_columns(pl.lit("loop.slow_callbacks").alias("metric"))
    )
    return (
        pl.concat([pieces, counts])
        .select("ts", "entity", "metric", "value", "line")
        .sort("metric", "ts", "entity", descending=[True, False, False])
        .collect()
    )
