"""pg_stat_statements dumps written one snapshot per file → one series across the files.

A collector that runs ``psql -c 'SELECT now(), * FROM pg_stat_statements' > pgss_$(date +%s).csv``
every minute leaves many files of one snapshot each. Each alone gives no rate (counters are
cumulative); together they are the same sequence of snapshots a single file would hold. After
every file is parsed, the per-file statement tables (``pg_statements``, already UTC) of such
files are put in time order per host and fed to the same delta engine, and the metrics and reset
events it makes are added to the timeline. Each delta row names the file of its later snapshot
(the end of its interval; a reset event spans the interval and names the same file), like a
sample of a single file names its own line.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import polars as pl

from parsers import _pgss_delta as delta
from parsers import schema
from parsers.base import Diagnostic, attrs_json, event_builder

PARSER = "pg_stat_statements"


@dataclass
class SingleSnapshots:
    """Per-file statement tables of pg_stat_statements files that held exactly one timed snapshot."""

    tables: dict[str, list[tuple[str, pl.DataFrame]]] = field(default_factory=dict)  # host → [(file, table)]

    def offer(self, file: str, host: str, metrics_rows: int, table: pl.DataFrame | None) -> None:
        if table is None or metrics_rows or "snapshot_time" not in table.columns or table.height == 0:
            return
        times = table.get_column("snapshot_time").drop_nulls().unique()
        if times.len() == 1 and table.get_column("snapshot_time").null_count() == 0:
            self.tables.setdefault(host, []).append((file, table))

    def combine(self) -> tuple[list[pl.DataFrame], list[pl.DataFrame], list[Diagnostic]]:
        metrics, events, diags = [], [], []
        for host, items in sorted(self.tables.items()):
            if len(items) < 2:
                continue
            try:
                m, e, d = _combine(host, items)
            except Exception as exc:  # noqa: BLE001 - one odd set of files must not stop the load
                diags.append(Diagnostic(code="parser_error", level="error", file=items[-1][0],
                                        message=f"pg_stat_statements snapshots across {len(items)} files could "
                                                f"not be combined ({type(exc).__name__}: {exc}); each file "
                                                "keeps its own statement table"))
                continue
            metrics.append(m)
            events.append(e)
            diags += d
        return metrics, events, diags


def _combine(host: str, items: list[tuple[str, pl.DataFrame]]
             ) -> tuple[pl.DataFrame, pl.DataFrame, list[Diagnostic]]:
    ordered = sorted(items, key=lambda it: (it[1].get_column("snapshot_time")[0], it[0]))
    diags: list[Diagnostic] = []
    engine = delta.DeltaEngine()
    files: dict[dt.datetime, str] = {}
    last: dt.datetime | None = None
    for file, table in ordered:
        stamp = table.get_column("snapshot_time")[0]
        if last is not None and stamp <= last:
            diags.append(Diagnostic(code="snapshot_order", file=file, level="warning",
                                    message=f"snapshot at {stamp} is not after the one of {files[last]}; "
                                            "left out of the series across files"))
            continue
        last = stamp
        naive = stamp.astimezone(dt.timezone.utc).replace(tzinfo=None) if stamp.tzinfo else stamp
        files[naive] = file
        chunk = table.drop("file", strict=False).with_columns(
            pl.lit(len(files) - 1, pl.Int64).alias("snap"),
            pl.col("snapshot_time").dt.replace_time_zone(None).cast(pl.Datetime("ns")).alias("ts"),
            *[pl.col(c).cast(pl.Utf8) for c in delta.KEY if c in table.columns],
        ).drop("snapshot_time")
        engine.push(chunk)
    result = engine.finish()
    rows, _ = delta.to_metrics(result, engine.present)
    names = pl.DataFrame({"ts": list(files), "file": list(files.values())},
                         schema={"ts": pl.Datetime("ns"), "file": pl.Utf8})
    rows = rows.join(names, on="ts", how="left").with_columns(
        pl.col("ts").dt.replace_time_zone("UTC").cast(pl.Datetime("ns", "UTC")),
        pl.lit(PARSER).alias("source"), pl.lit(host).alias("host"))
    metrics = schema.conform(rows, schema.METRIC_COLUMNS)
    ev = event_builder()
    for row in result.events:
        ev.add(ts=row["ts"], end=row["end"], entity=row["entity"], kind="pg.stats_reset", severity="low",
               message=row["message"] + " (across snapshot files)", attrs=attrs_json(row["attrs"]), line=None)
    events = ev.build()
    if events.height:
        events = events.with_columns(
            pl.col("ts").dt.replace_time_zone("UTC"), pl.col("end").dt.replace_time_zone("UTC"),
            pl.coalesce("end", "ts").dt.replace_time_zone(None).cast(pl.Datetime("ns")).alias("_k")
        ).join(names.rename({"ts": "_k"}), on="_k", how="left").drop("_k").with_columns(
            pl.lit(PARSER).alias("source"), pl.lit(host).alias("host"))
    events = schema.conform(events, schema.EVENT_COLUMNS)
    first, final = ordered[0][0], ordered[-1][0]
    diags.append(Diagnostic(
        code="snapshots_across_files", level="info", file=final,
        message=f"{len(files)} files of one pg_stat_statements snapshot each ({first} … {final}) were read as "
                f"one sequence: {max(len(files) - 1, 0)} intervals, {metrics.height} metric rows"))
    return metrics, events, diags
