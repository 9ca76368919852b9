"""PostgreSQL ``pg_stat_activity`` snapshots → backends per state and per wait event.

Reads the dump forms of ``parsers._psql_table`` (CSV/``COPY``, psql aligned/expanded, JSON), a
snapshot being one table or one value of a time column (``snapshot_time``, ``now`` ...; else a
``SELECT now()``/timestamp line before the table). Per snapshot, counting client backends only
(``backend_type = 'client backend'``; before PG 10, rows with a database):

- ``pg.active``, ``pg.idle``, ``pg.idle_in_tx`` (``idle in transaction`` and its ``(aborted)``
  form) on ``pool:<datname>`` — the database's server connections seen as one pool — and on
  ``pool:all``; zero where a database had none, so exhaustion and recovery both show;
- ``pg.waiting`` on ``wait:<wait_event_type>/<wait_event>``: non-idle backends waiting on that
  event (lock waits show as ``wait:Lock/transactionid``, ``wait:Lock/tuple`` ...); PG 9.2-9.5's
  boolean ``waiting`` counts as ``wait:Lock/lock``.

The dumping session itself (an active query reading ``pg_stat_activity``) is left out of the
counts. PG 9.0/9.1 (``procpid``, ``current_query`` with ``<IDLE>``) are read too.
"""

from __future__ import annotations

from typing import BinaryIO

import polars as pl

from parsers._psql_table import SnapshotClock, Table, head_columns, read_tables
from parsers.base import Accounting, ParseContext, ParseResult, attrs_json, event_builder
from parsers.lines import head_lines, is_binary
from parsers.pg_stat_statements import TIME_COLUMNS

NAME = "pg_stat_activity"
DESCRIPTION = "PostgreSQL pg_stat_activity snapshots: backends per state and wait event"
SAMPLES = "pg_stat_activity"
NAME_HINTS = ("*pgsa*", "*pg_stat_activity*", "*activity*")

ALIASES = {"procpid": "pid", "current_query": "query"}
STATE_METRICS = {"active": "pg.active", "idle": "pg.idle", "idle in transaction": "pg.idle_in_tx",
                 "idle in transaction (aborted)": "pg.idle_in_tx"}


def normalise_columns(columns: list[str]) -> list[str]:
    names = [c.strip().lower() for c in columns]
    return [ALIASES[n] if n in ALIASES and ALIASES[n] not in names else n for n in names]


def is_pgsa(columns: list[str]) -> bool:
    names = set(normalise_columns(columns))
    return "pid" in names and bool(names & {"state", "wait_event", "waiting"}) and "calls" not in names \
        and ("query" in names or "datname" in names)


def sniff(head: bytes) -> float:
    if not head or is_binary(head):
        return 0.0
    return 0.9 if any(is_pgsa(cols) for cols in head_columns(head_lines(head, 200))) else 0.0


def parse(stream: BinaryIO, *, ctx: ParseContext) -> ParseResult:
    acct = Accounting(ctx.file)
    clock = SnapshotClock(ctx.tz)
    frames: list[pl.DataFrame] = []
    forms: set[str] = set()
    for table in read_tables(stream, acct):
        lines = sum(table.spans)
        if not is_pgsa(table.columns):
            if lines:
                acct.skip("not_applicable", table.lines[0], None, f"{ctx.file}:{table.lines[0]}: a table with "
                          f"columns {', '.join(table.columns[:6])} is not a pg_stat_activity dump", n=lines)
            continue
        forms.add(table.form)
        frame = _frame(table)
        acct.parsed(lines)
        if frame is not None:
            frames.append(frame)
    events = event_builder()
    metrics = pl.DataFrame(schema={"ts": pl.Datetime("ns"), "entity": pl.Utf8, "metric": pl.Utf8,
                                   "value": pl.Float64, "line": pl.Int64})
    snapshots = 0
    if frames:
        rows = pl.concat(frames, how="diagonal_relaxed")
        rows, snapshots = _timed(rows, clock, acct)
        if rows.height:
            metrics = _counts(rows)
            for ts, entries, line in rows.group_by("snap").agg(
                    pl.col("ts").first(), pl.len(), pl.col("line").min()).sort("snap").drop("snap").iter_rows():
                events.add(ts=ts, entity="pool:all", kind="pg.snapshot", severity="debug",
                           message=f"pg_stat_activity snapshot with {entries} backends",
                           attrs=attrs_json({"backends": entries, "view": "pg_stat_activity"}), line=line)
    result = ParseResult(metrics=metrics, events=events.build(), accounting=acct,
                         variant=f"{'+'.join(sorted(forms)) or 'empty'}; {snapshots} snapshot(s)")
    clock.finish(result, acct, ctx.tz_reason)
    return result


def _frame(table: Table) -> pl.DataFrame | None:
    if not table.rows:
        return None
    columns = normalise_columns(table.columns)
    seen: set[str] = set()
    unique = []
    for i, name in enumerate(columns):
        unique.append(name if name not in seen else f"{name}__{i}")
        seen.add(name)
    frame = pl.DataFrame([list(col) for col in zip(*table.rows, strict=False)], schema={c: pl.Utf8 for c in unique},
                         orient="col").with_columns(pl.Series("line", table.lines, pl.Int64))
    time_col = next((c for c in TIME_COLUMNS if c in frame.columns), None)
    hint = table.time_hint[0].isoformat() if table.time_hint else None
    text = pl.col(time_col).str.strip_chars() if time_col else pl.lit(hint, pl.Utf8)
    keep = [c for c in ("datname", "state", "wait_event_type", "wait_event", "waiting", "backend_type",
                        "query") if c in frame.columns]
    frame = frame.select(
        text.alias("_time_text"), pl.lit(table.seq).alias("seq"), "line",
        *[pl.col(c).str.strip_chars().alias(c) if c != "query" else pl.col(c) for c in keep])
    for name in ("datname", "state", "wait_event_type", "wait_event", "waiting", "backend_type", "query"):
        if name not in frame.columns:
            frame = frame.with_columns(pl.lit(None, pl.Utf8).alias(name))
    return frame


def _timed(rows: pl.DataFrame, clock: SnapshotClock, acct: Accounting) -> tuple[pl.DataFrame, int]:
    keys = rows.select("seq", "_time_text").unique(maintain_order=True)
    stamps = {}
    untimed = 0
    for seq, text in keys.iter_rows():
        stamp = clock.to_ts(text)
        if stamp is None:
            untimed += 1
            continue
        stamps[(seq, text)] = stamp
    if untimed:
        acct.note("no_snapshot_time", f"{untimed} pg_stat_activity snapshot(s) without a time column or "
                  "a SELECT now()/timestamp line before them: not on the timeline", level="warning")
    if not stamps:
        return rows.clear(), 0
    lookup = pl.DataFrame({"seq": [k[0] for k in stamps], "_time_text": [k[1] for k in stamps],
                           "ts": list(stamps.values())},
                          schema={"seq": pl.Int64, "_time_text": pl.Utf8, "ts": pl.Datetime("ns")})
    lookup = lookup.with_columns(pl.int_range(pl.len()).alias("snap"))
    rows = rows.with_columns(pl.col("seq").cast(pl.Int64)).join(lookup, on=["seq", "_time_text"], how="inner")
    return rows, lookup.height


def _counts(rows: pl.DataFrame) -> pl.DataFrame:
    state = pl.col("state").fill_null("").str.to_lowercase()
    query = pl.col("query").fill_null("")
    legacy_state = pl.when(query.str.starts_with("<IDLE> in transaction")).then(pl.lit("idle in transaction")) \
        .when(query.str.starts_with("<IDLE>")).then(pl.lit("idle")).when(query != "").then(pl.lit("active"))
    has_state = rows.get_column("state").null_count() < rows.height
    rows = rows.with_columns((state if has_state else legacy_state.fill_null("")).alias("st"))
    client = (pl.col("backend_type") == "client backend") if rows.get_column("backend_type").null_count() \
        < rows.height else (pl.col("datname").fill_null("") != "")
    self_query = (pl.col("st") == "active") & query.str.contains("(?i)pg_stat_activity")
    clients = rows.filter(client & ~self_query).with_columns(
        pl.col("st").replace_strict(STATE_METRICS, default=None).alias("metric"),
        pl.concat_str(pl.lit("pool:"), pl.col("datname").fill_null("")).alias("entity"))
    snaps = rows.group_by("snap").agg(pl.col("ts").first(), pl.col("line").min()).sort("snap")
    frames = []
    counted = clients.filter(pl.col("metric").is_not_null())
    for entity_expr in (pl.col("entity"), pl.lit("pool:all")):
        per = counted.with_columns(entity_expr.alias("entity")).group_by("snap", "entity", "metric").len()
        entities = clients.select(entity_expr.alias("entity")).unique()
        grid = snaps.join(entities, how="cross").join(pl.DataFrame({"metric": sorted(set(STATE_METRICS.values()))}),
                                                      how="cross")
        frames.append(grid.join(per, on=["snap", "entity", "metric"], how="left")
                      .with_columns(pl.col("len").fill_null(0).cast(pl.Float64).alias("value")))
    if "waiting" in rows.columns and rows.get_column("wait_event_type").null_count() == rows.height:
        waiting = clients.filter(pl.col("waiting").fill_null("").str.to_lowercase().is_in(["t", "true"])) \
            .with_columns(pl.lit("wait:Lock/lock").alias("entity"))
    else:
        waiting = clients.filter(pl.col("wait_event_type").fill_null("") != "").filter(pl.col("st") != "idle") \
            .with_columns(pl.concat_str(pl.lit("wait:"), pl.col("wait_event_type"), pl.lit("/"),
                                        pl.col("wait_event").fill_null("")).alias("entity"))
    if waiting.height:
        per = waiting.group_by("snap", "entity").len()
        grid = snaps.join(per.select("entity").unique(), how="cross")
        frames.append(grid.join(per, on=["snap", "entity"], how="left").with_columns(
            pl.lit("pg.waiting").alias("metric"), pl.col("len").fill_null(0).cast(pl.Float64).alias("value")))
    out = pl.concat([f.select("ts", "entity", "metric", "value", "line") for f in frames], how="vertical_relaxed")
    return out.sort("ts", "entity", "metric")
