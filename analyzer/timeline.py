"""The unified timeline: every artifact's metrics and events on one UTC axis, plus what
was read from where (``sources``) and everything that went wrong (``diagnostics``).

Column lists and dtypes are owned by :mod:`parsers.schema`.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from parsers import schema

if TYPE_CHECKING:
    import pandas as pd

EXIT_COMPLETE, EXIT_USAGE, EXIT_DEGRADED, EXIT_NOTHING = 0, 2, 3, 4
DEGRADED_FAILURE_SHARE = 0.01


@dataclass
class Timeline:
    """All parsed artifacts of one analysis.

    Frames (polars): ``metrics``, ``events``, ``sources``, ``diagnostics``, ``entities``;
    ``tables`` holds per-source extras such as ``flows`` or ``pg_statements``.

    >>> import analyzer
    >>> tl = analyzer.load("samples/thread_monitor/monitor_sleep_threads.log")
    >>> tl.metrics.select("metric").unique().item()
    'proc.threads'
    >>> tl.metrics.schema["ts"]
    Datetime(time_unit='ns', time_zone='UTC')
    """

    metrics: pl.DataFrame
    events: pl.DataFrame
    sources: pl.DataFrame
    diagnostics: pl.DataFrame
    entities: pl.DataFrame = field(default_factory=schema.empty_entities)
    tables: dict[str, pl.DataFrame] = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)
    display_tz: str = "UTC"  # the bundle's local zone for display ("UTC" when unknown)
    options: dict[str, Any] = field(default_factory=dict)

    # -- views ------------------------------------------------------------------------
    @property
    def window(self) -> tuple[Any, Any]:
        """(first, last) UTC instant over metrics and events, or (None, None)."""
        starts: list[Any] = [df.get_column("ts").min() for df in (self.metrics, self.events) if df.height]
        ends: list[Any] = [df.get_column("ts").max() for df in (self.metrics, self.events) if df.height]
        ends += [self.events.get_column("end").max()] if self.events.height else []
        ends = [e for e in ends if e is not None]
        return (min(starts) if starts else None, max(ends) if ends else None)

    def slice(self, start: Any = None, end: Any = None) -> Timeline:
        """The same timeline restricted to ``[start, end]`` (UTC datetimes or ISO strings)."""
        def cut(df: pl.DataFrame) -> pl.DataFrame:
            if start is not None:
                df = df.filter(pl.col("ts") >= _instant(start)) if "end" not in df.columns else \
                    df.filter(pl.coalesce("end", "ts") >= _instant(start))
            if end is not None:
                df = df.filter(pl.col("ts") <= _instant(end))
            return df
        return Timeline(cut(self.metrics), cut(self.events), self.sources, self.diagnostics,
                        self.entities, self.tables, self.inputs, self.display_tz, self.options)

    def packets(self, *, flow: str | None = None, start: Any = None, end: Any = None, limit: int = 1000,
                engine: str = "auto") -> list[Any]:
        """Capture packets of ``flow`` between ``start`` and ``end`` (pyshark packets; scapy
        packets when tshark is absent). See ``analyzer.packets``."""
        from analyzer.packets import packets
        return packets(self, flow=flow, start=start, end=end, limit=limit, engine=engine)

    def to_pandas(self) -> dict[str, pd.DataFrame]:
        """Every frame as pandas (``ts`` stays tz-aware UTC).

        >>> import analyzer
        >>> frames = analyzer.load("samples/thread_monitor/monitor_sleep_threads.log").to_pandas()
        >>> str(frames["metrics"]["ts"].dt.tz)
        'UTC'
        """
        out = {"metrics": self.metrics.to_pandas(), "events": self.events.to_pandas(),
               "sources": self.sources.to_pandas(), "diagnostics": self.diagnostics.to_pandas(),
               "entities": self.entities.to_pandas()}
        out.update({name: df.to_pandas() for name, df in self.tables.items()})
        return out

    def findings(self) -> list[dict[str, Any]]:
        """Diagnosed findings as plain dicts (see ``analyzer.correlate``)."""
        from analyzer.correlate import correlate

        return correlate(self)

    def report(self, path: str | Path, *, title: str | None = None) -> Path:
        """Write the self-contained HTML report to ``path`` and return it."""
        from analyzer.report import write_report

        return write_report(self, Path(path), title=title)

    def export(self, directory: str | Path, *, fmt: str = "parquet") -> list[Path]:
        """Write metrics, events, sources, diagnostics (and per-source tables) to ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        frames = {"metrics": self.metrics, "events": self.events, "sources": self.sources,
                  "diagnostics": self.diagnostics, "entities": self.entities, **self.tables}
        written = []
        for name, df in frames.items():
            target = directory / f"{name}.{fmt}"
            if fmt == "parquet":
                df.write_parquet(target)
            elif fmt == "csv":
                _csv_ready(df).write_csv(target)
            else:
                raise ValueError(f"unknown export format {fmt!r}: expected parquet or csv")
            written.append(target)
        return written

    # -- status -----------------------------------------------------------------------
    def exit_code(self) -> int:
        """0 complete, 3 degraded (a file failed, or >1 % of its records failed), 4 nothing recognised."""
        recognised = self.sources.filter(pl.col("parser").is_not_null()
                                         & (pl.col("status") != "duplicate"))
        if recognised.height == 0:
            return EXIT_NOTHING
        if recognised.filter(pl.col("status").is_in(["failed", "degraded"])).height:
            return EXIT_DEGRADED
        if self.diagnostics.filter(pl.col("code").is_in(list(REFUSAL_CODES))).height:
            return EXIT_DEGRADED
        return EXIT_COMPLETE

    def summary(self) -> dict[str, Any]:
        start, end = self.window
        return {"sources": self.sources.height,
                "recognised": self.sources.filter(pl.col("parser").is_not_null()).height,
                "metrics": self.metrics.height, "events": self.events.height,
                "start": start, "end": end}

    def _repr_html_(self) -> str:
        s = self.summary()
        rows = "".join(
            f"<tr><td>{html.escape(str(r['file']))}</td><td>{html.escape(str(r['parser'] or '—'))}</td>"
            f"<td>{r['records_parsed']}/{r['records_total']}</td><td>{html.escape(str(r['tz']))}</td></tr>"
            for r in self.sources.head(50).iter_rows(named=True))
        return (f"<div><b>stallscope Timeline</b>: {s['metrics']} metric rows, {s['events']} events, "
                f"{s['recognised']}/{s['sources']} files recognised; window {s['start']} → {s['end']} "
                f"(UTC)<table><tr><th>file</th><th>parser</th><th>parsed/total</th><th>tz</th></tr>"
                f"{rows}</table></div>")

    def __repr__(self) -> str:
        s = self.summary()
        return (f"Timeline({s['metrics']} metrics, {s['events']} events, {s['recognised']}/{s['sources']} "
                f"files recognised, {s['start']} → {s['end']} UTC)")


REFUSAL_CODES = frozenset({"bomb_refused", "limit_exceeded", "corrupt_archive", "corrupt_member",
                           "unsafe_path"})


def source_status(total: int, skipped_by_reason: dict[str, int], failed: bool) -> str:
    if failed:
        return "failed"
    failures = sum(n for code, n in skipped_by_reason.items() if schema.is_failure(code))
    if total and failures / total > DEGRADED_FAILURE_SHARE:
        return "degraded"
    return "ok"


def _instant(value: Any) -> Any:
    import datetime as dt

    if isinstance(value, str):
        from parsers.timeutil import parse_iso

        parsed = parse_iso(value)
        if parsed is None:
            raise ValueError(f"expected an ISO-8601 time such as 2026-01-02T10:00:00Z, got {value!r}")
        value = parsed
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value


def _csv_ready(df: pl.DataFrame) -> pl.DataFrame:
    """Datetimes as ISO-8601 UTC with Z; nested values as JSON text."""
    exprs = []
    for name, dtype in df.schema.items():
        if isinstance(dtype, pl.Datetime):
            exprs.append(pl.col(name).dt.convert_time_zone("UTC").dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
                         if dtype.time_zone else pl.col(name).dt.strftime("%Y-%m-%dT%H:%M:%S%.6f"))
        elif isinstance(dtype, (pl.List, pl.Struct)):
            exprs.append(pl.col(name).map_elements(lambda v: json.dumps(v, default=str),
                                                   return_dtype=pl.Utf8))
    return df.with_columns(exprs) if exprs else df
