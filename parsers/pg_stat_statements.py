"""PostgreSQL ``pg_stat_statements`` dumps → per-interval rates per query, reset events,
query texts, and a per-query table.

Reads every dump form of ``parsers._psql_table`` (CSV/``\\copy``, COPY text, psql aligned,
unaligned, expanded, JSON/JSON lines/``json_agg``), one or many snapshots per file, and the
column sets of extension versions 1.0 (PG 9.2) to 1.12 (PG 18): old names are mapped to the
current ones (``total_time``→``total_exec_time`` when there are no plan columns,
``mean_time``→``mean_exec_time``, ``blk_read_time``→``shared_blk_read_time`` ...), unknown columns
are kept for the table and otherwise ignored.

Snapshot time, first found: a time column (``snapshot_time``, ``now``, ``ts``, ``captured_at`` ...),
a ``SELECT now()`` table or a bare timestamp line (``\\echo``, ``date``) before the table, or —
for files without any time — the file's mtime spaced back by ``--interval``. A dump with no
time at all gives no timeline: its rows become ``tables["pg_statements"]`` and a diagnostic
says why. Deltas: ``parsers._pgss_delta``. ``<insufficient privilege>`` rows are skipped with
their own reason. pg_stat_monitor output (bucketed) is not read as pg_stat_statements.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from typing import Any, BinaryIO

import polars as pl

from parsers import _pgss_delta as delta
from parsers._psql_table import SnapshotClock, Table, head_columns, read_tables
from parsers.base import Accounting, ParseContext, ParseResult, attrs_json, entity_builder, event_builder
from parsers.lines import head_lines, is_binary

NAME = "pg_stat_statements"
DESCRIPTION = "PostgreSQL pg_stat_statements dumps (CSV, psql aligned/expanded, JSON), snapshot deltas"
SAMPLES = "pg_stat_statements"
NAME_HINTS = ("*pgss*", "*pg_stat_statements*", "*statements*")

TIME_COLUMNS = ("snapshot_time", "snapshot_ts", "snap_time", "snapshot", "captured_at", "collected_at",
                "sample_time", "sampled_at", "ts", "time", "timestamp", "now", "clock_timestamp",
                "current_timestamp", "statement_timestamp", "ts_utc", "created_at")
ALIASES = {
    "mean_time": "mean_exec_time", "min_time": "min_exec_time", "max_time": "max_exec_time",
    "stddev_time": "stddev_exec_time", "blk_read_time": "shared_blk_read_time",
    "blk_write_time": "shared_blk_write_time", "query_id": "queryid",
}
KEY_ALIASES = {"userid": ("usename", "rolname", "username", "user_name", "user"),
               "dbid": ("datname", "dbname", "database", "db")}
NUMERIC = ("calls", "plans", "total_exec_time", "min_exec_time", "max_exec_time", "mean_exec_time",
           "stddev_exec_time", "total_plan_time", "min_plan_time", "max_plan_time", "mean_plan_time",
           "stddev_plan_time", "rows", "shared_blks_hit", "shared_blks_read", "shared_blks_dirtied",
           "shared_blks_written", "local_blks_hit", "local_blks_read", "local_blks_dirtied",
           "local_blks_written", "temp_blks_read", "temp_blks_written", "shared_blk_read_time",
           "shared_blk_write_time", "local_blk_read_time", "local_blk_write_time", "temp_blk_read_time",
           "temp_blk_write_time", "wal_records", "wal_fpi", "wal_bytes", "wal_buffers_full")
INSUFFICIENT = "<insufficient privilege>"
TOTAL_NAMES = ("total_exec_time", "total_time", "total_plan_time")
PGSM_MARKERS = ("bucket", "bucket_start_time", "resp_calls", "bucket_done")
FILE_TIME_RE = re.compile(r"(20\d{2})-?(\d{2})-?(\d{2})[T_ -]?(\d{2})[:_.-]?(\d{2})[:_.-]?(\d{2})")


def normalise_columns(columns: list[str]) -> list[str]:
    """Map every extension version's names onto one vocabulary (see module doc)."""
    names = [c.strip().lower() for c in columns]
    has_split = "total_exec_time" in names or "total_plan_time" in names
    out = []
    for name in names:
        if name == "total_time" and not has_split:
            name = "total_exec_time"
        elif name in ALIASES and ALIASES[name] not in names:
            name = ALIASES[name]
        out.append(name)
    for key, alternatives in KEY_ALIASES.items():
        if key not in out:
            for alt in alternatives:
                if alt in out:
                    out[out.index(alt)] = key
                    break
    return out


def is_pgss(columns: list[str]) -> bool:
    names = set(normalise_columns(columns))
    return "calls" in names and bool(names & {"queryid", "query"}) and bool(names & set(TOTAL_NAMES)) \
        and not names & set(PGSM_MARKERS)


def sniff(head: bytes) -> float:
    if not head or is_binary(head):
        return 0.0
    lines = head_lines(head, 200)
    for columns in head_columns(lines):
        names = set(normalise_columns(columns))
        if names & set(PGSM_MARKERS):
            return 0.0  # pg_stat_monitor: bucketed, not cumulative
        if is_pgss(columns):
            return 0.9
    return 0.0


def version_guess(columns: list[str]) -> str:
    raw = {c.strip().lower() for c in columns}
    for marks, label in ((("wal_buffers_full", "parallel_workers_to_launch"), "PG 18 (ext 1.12)"),
                         (("stats_since", "shared_blk_read_time", "jit_deform_count"), "PG 17 (ext 1.11)"),
                         (("jit_functions", "temp_blk_read_time"), "PG 15-16 (ext 1.10)"),
                         (("toplevel",), "PG 14 (ext 1.9)"),
                         (("total_exec_time", "total_plan_time", "wal_records"), "PG 13 (ext 1.8)"),
                         (("mean_time", "stddev_time"), "PG 9.5-12 (ext 1.3-1.7)"),
                         (("queryid",), "PG 9.4 (ext 1.2)")):
        if raw & set(marks):
            return label
    return "PG 9.2-9.3 (ext 1.0-1.1)"


class _Snapshots:
    """Turns table chunks into numbered snapshots with times and feeds the delta engine."""

    def __init__(self, acct: Accounting, ctx: ParseContext) -> None:
        self.acct = acct
        self.ctx = ctx
        self.engine = delta.DeltaEngine()
        self.buffer: list[pl.DataFrame] = []
        self.untimed: list[pl.DataFrame] = []
        self.next_snap = 0
        self.snap_ids: dict[tuple[int, str], int] = {}
        self.last_ts: dt.datetime | None = None
        self.clock = SnapshotClock(ctx.tz)
        self.snapshot_rows: list[tuple[Any, int, int]] = []  # (ts, entries, line)
        self.dropped_snapshots = 0
        self.columns_seen: list[str] = []
        self.forms: set[str] = set()

    def add(self, table: Table) -> None:
        frame = self._frame(table)
        if frame is None:
            return
        self.forms.add(table.form)
        self.buffer.append(frame)
        pending = pl.concat(self.buffer, how="diagonal_relaxed")
        self.buffer = []
        if not table.final:  # the last snapshot of an unfinished table may go on
            last = pending.get_column("snap_key")[-1]
            self.buffer = [pending.filter(pl.col("snap_key") == last)]
            pending = pending.filter(pl.col("snap_key") != last)
        self._push(pending)

    def _frame(self, table: Table) -> pl.DataFrame | None:
        columns = normalise_columns(table.columns)
        if not self.columns_seen:
            self.columns_seen = list(table.columns)
        seen: set[str] = set()
        unique = []
        for i, name in enumerate(columns):
            unique.append(name if name not in seen else f"{name}__{i}")
            seen.add(name)
        frame = pl.DataFrame([list(col) for col in zip(*table.rows, strict=False)] if table.rows else None,
                             schema={c: pl.Utf8 for c in unique}, orient="col") if table.rows else \
            pl.DataFrame(schema={c: pl.Utf8 for c in unique})
        frame = frame.with_columns(pl.Series("line", table.lines, pl.Int64), pl.Series("span", table.spans, pl.Int64))
        if frame.height == 0:
            return None
        query = pl.col("query") if "query" in frame.columns else pl.lit(None, pl.Utf8)
        numeric = [c for c in NUMERIC if c in frame.columns]
        frame = frame.with_columns(
            *[pl.col(c).str.strip_chars().cast(pl.Float64, strict=False).alias(c) for c in numeric],
            *[pl.col(c).str.strip_chars().alias(c) for c in ("userid", "dbid", "queryid", "toplevel")
              if c in frame.columns],
            query.alias("query"),
        )
        if "toplevel" in frame.columns:
            frame = frame.with_columns(pl.col("toplevel").str.to_lowercase().replace(
                {"true": "t", "false": "f", "1": "t", "0": "f"}))
        hidden = (frame.get_column("query").str.strip_chars() == INSUFFICIENT).fill_null(False)
        self._skip(frame.filter(hidden), "insufficient_privilege",
                   "row of another user, hidden without pg_read_all_stats (query is <insufficient privilege>)")
        frame = frame.filter(~hidden)
        queryid_ok = pl.col("queryid").str.contains(r"^-?\d{1,20}$").fill_null(True) \
            if "queryid" in frame.columns else pl.lit(True)
        bad = (pl.col("calls").is_null() | ~pl.col("calls").is_finite() | ~queryid_ok).fill_null(True)
        self._skip(frame.filter(bad), "bad_value", "expected numeric calls and a bigint queryid")
        frame = frame.filter(~bad)
        self.acct.parsed(int(frame.get_column("span").sum()))
        if frame.height == 0:
            return None
        frame = self._fill_queryid(frame)
        return self._times(frame, table)

    def _skip(self, rows: pl.DataFrame, code: str, message: str) -> None:
        if rows.height == 0:
            return
        lines = int(rows.get_column("span").sum())
        first = rows.row(0, named=True)
        if lines:
            self.acct.skip(code, first["line"], first.get("query"),
                           f"{message} ({rows.height} rows)", n=lines)
        else:
            self.acct.note(code, f"{rows.height} rows: {message}", line=first["line"])
        zero = rows.filter(pl.col("span") == 0).height
        if lines and zero:
            self.acct.note(code, f"{zero} more rows on shared JSON lines: {message}", line=first["line"])

    def _fill_queryid(self, frame: pl.DataFrame) -> pl.DataFrame:
        if "queryid" not in frame.columns:
            frame = frame.with_columns(pl.lit(None, pl.Utf8).alias("queryid"))
        missing = frame.get_column("queryid").is_null()
        if not missing.any():
            return frame
        texts = frame.filter(missing).get_column("query").unique().to_list()
        ids = {t: "h" + hashlib.md5((t or "").encode()).hexdigest()[:16] for t in texts}
        return frame.with_columns(pl.when(pl.col("queryid").is_null())
                                  .then(pl.col("query").replace_strict(ids, default=None, return_dtype=pl.Utf8))
                                  .otherwise(pl.col("queryid")).alias("queryid"))

    def _times(self, frame: pl.DataFrame, table: Table) -> pl.DataFrame:
        time_col = next((c for c in TIME_COLUMNS if c in frame.columns), None)
        if time_col is not None:
            texts = frame.get_column(time_col).str.strip_chars()
            frame = frame.with_columns(texts.alias("_time_text")).drop(time_col)
        elif table.time_hint is not None:
            hint = table.time_hint[0].isoformat()
            self.clock.cache.setdefault(hint, table.time_hint[0])
            frame = frame.with_columns(pl.lit(hint).alias("_time_text"))
        else:
            frame = frame.with_columns(pl.lit(None, pl.Utf8).alias("_time_text"))
        frame = frame.with_columns(pl.concat_str(pl.lit(f"{table.seq}\x1f"), pl.col("_time_text").fill_null(""))
                                   .alias("snap_key"))
        if "stats_since" in frame.columns:
            frame = frame.with_columns(pl.col("stats_since").str.strip_chars())
        return frame

    def _push(self, frame: pl.DataFrame) -> None:
        if frame.height == 0:
            return
        keys = frame.select("snap_key", "_time_text").unique(subset="snap_key", maintain_order=True)
        timed: list[pl.DataFrame] = []
        mapping: dict[str, tuple[int, dt.datetime]] = {}
        for key, text in keys.iter_rows():
            stamp = self.clock.to_ts(text)
            part = frame.filter(pl.col("snap_key") == key) if keys.height > 1 else frame
            if stamp is None:
                if text is not None:
                    first = part.row(0, named=True)
                    self.acct.note("bad_timestamp", f"snapshot time {text!r} is not a timestamp; snapshot "
                                   "left out of the timeline", line=first["line"], level="warning")
                self.untimed.append(part)
                continue
            if self.last_ts is not None and stamp <= self.last_ts:
                self.dropped_snapshots += 1
                self.acct.note("snapshot_order", f"snapshot at {stamp} is not after the previous one "
                               f"({self.last_ts}); left out of the deltas", line=part.get_column("line").min(),
                               level="warning")
                continue
            self.last_ts = stamp
            mapping[key] = (self.next_snap, stamp)
            self.snapshot_rows.append((stamp, part.height, int(part.get_column("line").min())))
            self.next_snap += 1
            timed.append(part)
        if not timed:
            return
        chunk = pl.concat(timed, how="diagonal_relaxed")
        lookup = pl.DataFrame({"snap_key": list(mapping), "snap": [v[0] for v in mapping.values()],
                               "ts": [v[1] for v in mapping.values()]},
                              schema={"snap_key": pl.Utf8, "snap": pl.Int64, "ts": pl.Datetime("ns")})
        chunk = chunk.join(lookup, on="snap_key", how="inner")
        if "stats_since" in chunk.columns:
            since = {t: self.clock.to_ts(t) for t in chunk.get_column("stats_since").drop_nulls().unique().to_list()}
            chunk = chunk.with_columns(pl.col("stats_since").replace_strict(
                since, default=None, return_dtype=pl.Datetime("ns")).alias("stats_since_ts"))
        self.engine.push(chunk.drop("_time_text", "span", "snap_key"))

    def finish(self) -> None:
        if self.buffer:
            pending = pl.concat(self.buffer, how="diagonal_relaxed")
            self.buffer = []
            self._push(pending)


def parse(stream: BinaryIO, *, ctx: ParseContext) -> ParseResult:
    acct = Accounting(ctx.file)
    snaps = _Snapshots(acct, ctx)
    events = event_builder()
    info_resets: set[str] = set()
    for table in read_tables(stream, acct):
        if is_pgss(table.columns):
            snaps.add(table)
            continue
        names = set(normalise_columns(table.columns))
        lines = sum(table.spans)
        first = table.lines[0] if table.lines else None
        if {"dealloc", "stats_reset"} <= names:  # pg_stat_statements_info
            _info_events(table, events, info_resets, snaps.clock)
            acct.parsed(lines)
        elif lines:
            what = "pg_stat_monitor output (bucketed, not cumulative)" if names & set(PGSM_MARKERS) \
                else f"a table with columns {', '.join(table.columns[:6])}"
            acct.skip("not_applicable", first, None, f"{ctx.file}:{first}: {what} is not a "
                      "pg_stat_statements dump", n=lines)
    snaps.finish()
    return _result(snaps, acct, ctx, events)


def _info_events(table: Table, events: Any, seen: set[str], clock: SnapshotClock) -> None:
    columns = normalise_columns(table.columns)
    at = columns.index("stats_reset")
    for row, line in zip(table.rows, table.lines, strict=False):
        text = (row[at] or "").strip()
        stamp = clock.to_ts(text) if text else None
        if stamp is None or text in seen:
            continue
        seen.add(text)
        events.add(ts=stamp,
                   entity="query:all", kind="pg.stats_reset", severity="low",
                   message="pg_stat_statements_info.stats_reset: counters were reset",
                   attrs=attrs_json({"scope": "all", "source": "pg_stat_statements_info"}), line=line)


def _result(snaps: _Snapshots, acct: Accounting, ctx: ParseContext, events: Any) -> ParseResult:
    engine = snaps.engine
    tables: dict[str, pl.DataFrame] = {}
    if snaps.untimed and snaps.next_snap == 0:
        _time_untimed(snaps, acct, ctx)
    result_delta = engine.finish()
    metrics, left_out = delta.to_metrics(result_delta, engine.present)
    if left_out:
        acct.note("queries_without_series", f"{left_out} light queries (never among the {delta.TOP_OVERALL} "
                  f"heaviest of the file nor the {delta.TOP_PER_INTERVAL} heaviest of an interval) have no "
                  "series of their own; they count in query:all and pg_statements", level="info")
    state = engine.last_rows()
    if state is not None and state.height:
        tables["pg_statements"] = _statement_table(
            state.rename({"ts": "snapshot_time"}))
    elif snaps.untimed:
        last = snaps.untimed[-1]
        last = last.filter(pl.col("snap_key") == last.get_column("snap_key")[-1])
        tables["pg_statements"] = _statement_table(last.drop([c for c in TIME_COLUMNS if c in last.columns])
                                                   .with_columns(pl.lit(None, pl.Datetime("ns")).alias("snapshot_time")))
        acct.note("no_snapshot_time", "no snapshot time found (no time column such as snapshot_time, no "
                  "SELECT now() or timestamp line before the table, and no --interval to space "
                  f"{len(snaps.untimed)} snapshot(s) back from the file's mtime): per-query totals only, "
                  "no timeline", level="warning")
    if snaps.untimed and snaps.next_snap > 0:
        acct.note("untimed_snapshot", f"{len(snaps.untimed)} table(s) without a snapshot time were left "
                  "out of the deltas", level="warning")
    for row in result_delta.events:
        events.add(ts=row["ts"], end=row["end"], entity=row["entity"], kind="pg.stats_reset", severity="low",
                   message=row["message"], attrs=attrs_json(row["attrs"]), line=row["line"])
    for ts, entries, line in snaps.snapshot_rows:
        events.add(ts=ts, entity="query:all", kind="pg.snapshot", severity="debug",
                   message=f"pg_stat_statements snapshot with {entries} entries",
                   attrs=attrs_json({"entries": entries}), line=line)
    if snaps.next_snap == 1:
        acct.note("single_snapshot", "only one snapshot: pg_stat_statements counters are cumulative, so "
                  "rates need two; per-query totals are in pg_statements", level="info")
    if engine.duplicates:
        acct.note("duplicate_record", f"{engine.duplicates} rows repeat a key (userid, dbid, toplevel, queryid) "
                  "of their snapshot (columns missing from the dump?); their counters were added up", level="info")
    if result_delta.partial_dump:
        acct.note("partial_dump", f"entries came back with larger counters after being absent: the dump "
                  f"holds only some entries (ORDER BY ... LIMIT?); {result_delta.dropped_new} first "
                  "appearances give no delta", level="info")
    event_frame = events.build()
    result = ParseResult(metrics=metrics, events=event_frame, accounting=acct,
                         variant=_variant(snaps), entities=_entities(state if state is not None and state.height
                                                                     else tables.get("pg_statements")),
                         tables=tables)
    snaps.clock.finish(result, acct, ctx.tz_reason)
    table = tables.get("pg_statements")
    if snaps.clock.mode == "utc" and table is not None:
        tables["pg_statements"] = table.with_columns(pl.col("snapshot_time").dt.replace_time_zone("UTC"))
    return result


def _time_untimed(snaps: _Snapshots, acct: Accounting, ctx: ParseContext) -> None:
    """Files without any time: the last snapshot at the file's mtime (or a time in the file
    name), earlier ones ``--interval`` seconds apart."""
    frames = snaps.untimed
    keys = pl.concat([f.select("snap_key") for f in frames]).unique(maintain_order=True).get_column("snap_key")
    end = _file_name_time(ctx.file)
    how = "the time in the file name"
    if end is None and ctx.file_mtime is not None:
        end, how = ctx.file_mtime.astimezone(dt.timezone.utc), "the file's mtime"
    if end is None or (keys.len() > 1 and not ctx.interval_s) or (keys.len() == 1 and how != "the time in the file name"):
        return  # an mtime alone (often the time of unpacking) would place a single dump wrongly
    step = dt.timedelta(seconds=ctx.interval_s or 0)
    times = {k: end - step * (keys.len() - 1 - i) for i, k in enumerate(keys.to_list())}
    acct.note("time_from_file", f"no snapshot time in the file: the last of {keys.len()} snapshot(s) is "
              f"placed at {how} ({end})" + (f", earlier ones {ctx.interval_s:g} s apart" if keys.len() > 1 else ""),
              level="warning")
    snaps.untimed = []
    for frame in frames:
        frame = frame.with_columns(pl.col("snap_key").replace_strict(
            {k: v.isoformat() for k, v in times.items()}, default=None).alias("_time_text"))
        for text in frame.get_column("_time_text").unique().to_list():
            snaps.clock.cache[text] = dt.datetime.fromisoformat(text)
        snaps._push(frame)


def _file_name_time(name: str) -> dt.datetime | None:
    m = FILE_TIME_RE.search(name.rsplit("/", 1)[-1])
    if not m:
        return None
    try:
        return dt.datetime(*map(int, m.groups()))
    except ValueError:
        return None


TABLE_COLUMNS = ("snapshot_time", "queryid", "userid", "dbid", "toplevel", "query", "calls",
                 "total_exec_time", "mean_exec_time", "stddev_exec_time", "min_exec_time", "max_exec_time",
                 "plans", "total_plan_time", "rows", "shared_blks_hit", "shared_blks_read",
                 "shared_blks_dirtied", "shared_blks_written", "temp_blks_read", "temp_blks_written",
                 "shared_blk_read_time", "shared_blk_write_time", "wal_records", "wal_bytes", "line")


def _statement_table(frame: pl.DataFrame) -> pl.DataFrame:
    cols = [c for c in TABLE_COLUMNS if c in frame.columns]
    out = frame.select(cols)
    if "total_exec_time" in out.columns:
        out = out.sort("total_exec_time", descending=True, nulls_last=True)
    return out


def label(text: str | None) -> str:
    """A short single-line label (≤ 60 characters) for charts."""
    flat = " ".join((text or "").split())
    return flat if len(flat) <= 60 else flat[:59] + "…"


def _entities(frame: pl.DataFrame | None) -> pl.DataFrame | None:
    if frame is None or frame.height == 0 or "queryid" not in frame.columns:
        return None
    order = "snap" if "snap" in frame.columns else "line"
    cols = [c for c in ("userid", "dbid", "toplevel") if c in frame.columns]
    grouped = frame.sort(order).group_by("queryid", maintain_order=True).agg(
        pl.col("query").last(), *[pl.col(c).unique().sort().alias(c) for c in cols])
    builder = entity_builder()
    for row in grouped.iter_rows(named=True):
        builder.add(entity=f"query:{row['queryid']}", label=label(row["query"]),
                    attrs=attrs_json({"query": row["query"], "queryid": row["queryid"],
                                      **{c: row[c] for c in cols}}))
    return builder.build()


def _variant(snaps: _Snapshots) -> str:
    forms = "+".join(sorted(snaps.forms)) or "empty"
    return f"{forms}; {version_guess(snaps.columns_seen)} columns; {snaps.next_snap} timed snapshot(s)"
