"""Column-wise handling of the common case of the slow-callback warning: one line with its own
timestamp, ``... Executing <REPR> took N.NNN seconds``. Mirrors what ``_asyncio_repr`` does
per line (the per-line path still handles JSON, unprefixed, wrapped and historic forms), and
turns all slow callbacks into the per-second ``loop.stall_ms`` / ``loop.slow_callbacks``."""

from __future__ import annotations

import datetime as dt
import json
import threading
from contextlib import nullcontext

import polars as pl

from parsers import _logprefix as lp
from parsers.lines import ANSI_RE

# a line that can take the column-wise path (its own time, the warning closing the line)
FAST_RX = r"Executing <.*> took \d+(?:\.\d+)? seconds\s*$"
_SUFFIX_RX = r"( took \d+(?:\.\d+)? seconds\s*)$"
# the time at the head of a line; what follows it up to "Executing" names level, logger, pid
TS_HEAD_RX = (
    r"^(?:\x1b\[[0-9;]*m)*\[?\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d{1,9})?(?: ?(?:Z|[+-]\d\d:?\d\d))?\]?"
)


def _engine() -> str | None:
    """The in-memory engine: these plans are small and many, and its fixed cost per call is
    about half the streaming engine's. None where polars predates the choice."""
    try:
        pl.LazyFrame({"a": [1]}).collect(engine="in-memory")
    except (TypeError, ValueError):
        return None
    return "in-memory"


ENGINE = _engine()


def collect(plan: pl.LazyFrame) -> pl.DataFrame:
    return plan.collect(engine=ENGINE) if ENGINE else plan.collect()


def collect_all(plans: list[pl.LazyFrame]) -> list[pl.DataFrame]:
    """Several plans in one call; their shared part runs once."""
    try:
        return pl.collect_all(plans, engine=ENGINE) if ENGINE else pl.collect_all(plans)
    except TypeError:  # a polars whose collect_all has no engine choice
        return pl.collect_all(plans)


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


def escape_flag(columns: list[str]) -> pl.Expr:
    """Whether any value of ``columns`` holds a quote, backslash or control character (one
    row, column ``esc``)."""
    return pl.any_horizontal([pl.col(c).str.contains(r'["\\\x00-\x1f]').any() for c in columns]).alias("esc")


def has_zone(df: pl.DataFrame) -> bool:
    """Whether the time texts carry an offset (checked on a few rows: a file keeps one format)."""
    ts = df.get_column("ts")
    n = ts.len()
    picks = [ts[k] for k in sorted({0, n // 2, n - 1})] if n else []
    if any(text is None for text in picks):
        texts = ts.drop_nulls()
        picks = [texts[k] for k in sorted({0, texts.len() // 2, texts.len() - 1})] if texts.len() else []
    for text in picks:
        stamp = lp.parse_stamp(lp.ts_text_of(lp_clean(text)))
        if stamp is not None and stamp.tzinfo is not None:
            return True
    return False


_COMMON_SECONDS = "%Y-%m-%d %H:%M:%S"  # logging's default asctime, before its ",%03d" millis


def time_exprs(zone: bool) -> list[pl.Expr]:
    """``wall`` and ``off_min`` from the ``ts`` text column. ``wall`` here is read for
    logging's default asctime (milliseconds not followed by another digit); the other
    formats are left null for ``fill_wall`` (``missing_flag`` says whether there are any).
    ``zone``: whether the texts print an offset (``has_zone``)."""
    tsx = pl.col("ts").str.strip_chars_start("[")
    # the seconds repeat from line to line: parsed once per distinct text (cache), millis added
    wall = pl.when((tsx.str.slice(19, 1) == ",") & ~tsx.str.slice(23, 1).is_in(list("0123456789"))).then(
        tsx.str.slice(0, 19).str.to_datetime(_COMMON_SECONDS, time_unit="ns", strict=False, cache=True)
        + pl.duration(milliseconds=tsx.str.slice(20, 3).cast(pl.Int64, strict=False), time_unit="ns")
    )
    off = _offset(tsx) if zone else pl.lit(None, pl.Int64)
    return [wall.alias("wall"), off.alias("off_min")]


def missing_flag() -> pl.Expr:
    """Whether some row has a time text that ``time_exprs`` did not read (one row)."""
    return (pl.col("wall").is_null() & pl.col("ts").is_not_null()).any().alias("missing")


def fill_wall(df: pl.DataFrame) -> pl.DataFrame:
    """``wall`` of the rows ``time_exprs`` left null, by the general slicer ``_wall``."""
    rows = (df.get_column("wall").is_null() & df.get_column("ts").is_not_null()).arg_true()
    if rows.len() == 0:
        return df
    tsx = df.select(pl.col("ts").gather(rows).str.strip_chars_start("[").alias("tsx"))
    slow = tsx.select(_wall(pl.col("tsx")).cast(df.schema["wall"])).to_series()
    return df.with_columns(df.get_column("wall").scatter(rows, slow))


# what varies between warnings of one callback and never reaches an attribute: the task's
# name (taken per row first), a timer's due time, object addresses. Masked, the reprs of a log
# collapse to a few distinct ones, and the regex work runs once per distinct repr.
_NAME_RX = r"\bname=(?:'[^']*'|\"[^\"]*\")"
_VARYING_RX = r"\bwhen=[-+.0-9eE]+| at 0x[0-9a-fA-F]+"
_FACTS_KEPT = 20_000  # distinct reprs remembered across batches (memory stays bounded)


def slow_frame(
    rows: pl.DataFrame,
    first_line: int,
    facts: dict[str, dict] | None = None,
    lock: threading.Lock | None = None,
) -> pl.DataFrame:
    """``rows``: i, line, ts (the line's own time text). Same columns as access frames.
    ``facts``: a dict the caller keeps across batches (what each distinct repr says), guarded
    by ``lock`` when batches run in parallel.
    Few polars calls, whatever the number of rows: each call has a fixed cost."""
    line = pl.col("line")
    # literal splits and an end-anchored regex: a capture around ".*" costs ~10x more
    plan = (
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
            pl.col("full_head").str.replace(TS_HEAD_RX, "").alias("head"),
            pl.coalesce(
                pl.col("repr").str.extract(r"\bname='([^']*)'", 1),
                pl.col("repr").str.extract(r"\bname=\"([^\"]*)\"", 1),
            ).alias("task_name"),
            pl.col("repr").str.replace_all(_NAME_RX, "name=?").str.replace_all(_VARYING_RX, "").alias("key"),
            *time_exprs(has_zone(rows)),
        )
        .select("i", "ts", "took_text", "full_head", "head", "task_name", "key", "wall", "off_min")
    )
    frame, pairs, flags = collect_all(
        [
            plan,
            plan.unique(subset=["key", "head"], keep="first", maintain_order=True).select(
                "key", "head", "full_head"
            ),
            plan.select(escape_flag(["task_name"]), missing_flag()),
        ]
    )
    with lock or nullcontext():
        kinds = _kinds(pairs, {} if facts is None else facts)
    if flags.get_column("missing")[0]:
        frame = fill_wall(frame)
    took = pl.col("took_text").cast(pl.Float64)
    task = frag("task_name", pl.col("task_name"), not flags.get_column("esc")[0])
    out = (
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
                [
                    pl.lit("{"),
                    pl.concat_str(["pre", task, "post"], separator=",", ignore_nulls=True),
                    pl.lit("}"),
                ]
            ).alias("attrs"),
            (pl.col("i").cast(pl.Int64) + first_line).alias("line"),
            "fmt",  # the line's log format (counted for the file's variant, then dropped)
        )
        .sort("line")
    )
    return collect(out)


def _kinds(pairs: pl.DataFrame, facts: dict[str, dict]) -> pl.DataFrame:
    """Per distinct (masked repr, line head) pair (``pairs``: key, head, full_head): entity,
    label and the attribute fragments before (``pre``) and after (``post``) the per-row task
    name, as JSON text. The pairs are few, so this part is plain Python (a polars plan would
    cost more than the work). ``facts``: what each masked repr says, carried from batch to
    batch (reprs recur)."""
    triples = pairs.rows()
    keys = list(dict.fromkeys(key for key, _, _ in triples))
    todo = [key for key in keys if key not in facts]
    if todo:
        if len(facts) + len(todo) > _FACTS_KEPT:
            facts.clear()
            todo = keys
        known = _repr_facts(pl.DataFrame({"key": todo}, schema={"key": pl.Utf8}))
        facts.update((row["key"], row) for row in known.iter_rows(named=True))
    heads: dict[str, lp.Prefix] = {}
    out = []
    for key, head, full_head in triples:
        f = facts[key]
        prefix = heads.get(head)
        if prefix is None:  # few distinct heads: one per logger/process
            prefix = heads[head] = line_prefix((full_head or "") + "Executing <x> took 1.000 seconds")
        pid = prefix.pid or None
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
                (
                    "defined_at",
                    where if coro is not None and state is not None and state != "running" else None,
                ),
                ("source", where if coro is None else None),
                ("lane", lane),
            )
        )
        post = ",".join(filter(None, [post, prefix_attrs(prefix)]))
        label = name if name is not None else f["family"]
        out.append((key, head, entity, label, pre or None, post or None, prefix.kind))
    return pl.DataFrame(
        out,
        schema={c: pl.Utf8 for c in ("key", "head", "entity", "label", "pre", "post", "fmt")},
        orient="row",
    )


def line_prefix(line: str) -> lp.Prefix:
    """The logging prefix of a line (its ``kind`` is the log format: asctime, gunicorn, …)."""
    return lp.split(lp_clean(line))


def prefix_attrs(prefix: lp.Prefix) -> str | None:
    """``"logger":…,"pid":…,"level":…`` (those present) of a logging prefix, as the per-line
    path adds them to every event's attributes."""
    parts = [_frag("logger", prefix.logger)] if prefix.logger else []
    if prefix.pid:
        parts.append(f'"pid":{int(prefix.pid)}')
    if prefix.level:
        parts.append(_frag("level", prefix.level))
    return ",".join(parts) or None


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
    return collect(
        reprs.lazy()
        .with_columns(
            repr_text.str.replace(r"^<(?:TimerHandle|Handle)\s+(?:cancelled\s+)?(?:when=\S+\s+)?", "").alias(
                "body"
            ),
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
    )


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
