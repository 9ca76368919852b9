"""Correlation engine entry point: timeline → findings.

Per-series anomalies (:mod:`analyzer.anomaly`) are merged into incident windows
(:mod:`analyzer.windows`) and the diagnosis rules (:mod:`analyzer.rules`) turn them into
findings with evidence. Findings are plain dicts (the JSON records of ``--json``) or, with
:func:`findings_frame`, one polars DataFrame.

>>> import analyzer
>>> tl = analyzer.load("samples/thread_monitor/monitor_sleep_threads.log")
>>> correlate(tl) == tl.findings()
True
>>> findings_frame(tl).columns[:4]
['id', 'key', 'title', 'start']
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import polars as pl

if TYPE_CHECKING:
    from analyzer.timeline import Timeline

FINDING_COLUMNS: dict[str, pl.DataType] = {
    "id": pl.Utf8(), "key": pl.Utf8(), "title": pl.Utf8(),
    "start": pl.Datetime("ns", "UTC"), "end": pl.Datetime("ns", "UTC"),
    "severity": pl.Utf8(), "confidence": pl.Float64(), "confidence_reason": pl.Utf8(),
    "entities": pl.List(pl.Utf8()), "evidence": pl.Utf8(),  # JSON list of evidence records
    "recommendations": pl.List(pl.Utf8()), "upstream": pl.List(pl.Utf8()), "downstream": pl.List(pl.Utf8()),
}


def correlate(timeline: Timeline, *, baseline: tuple[Any, Any] | None = None) -> list[dict[str, Any]]:
    """Findings for ``timeline``, most severe first.

    ``baseline``: a quiet reference period ``(start, end)`` (UTC datetimes or ISO strings)
    used instead of rolling baselines; defaults to ``timeline.options["baseline"]``."""
    from analyzer import rules

    if baseline is None:
        baseline = timeline.options.get("baseline")
    return rules.diagnose(timeline, baseline=baseline)


def findings_frame(timeline: Timeline, *, baseline: tuple[Any, Any] | None = None,
                   findings: list[dict[str, Any]] | None = None) -> pl.DataFrame:
    """The findings as one polars DataFrame (``evidence`` as JSON text)."""
    found = correlate(timeline, baseline=baseline) if findings is None else findings
    if not found:
        return pl.DataFrame(schema=FINDING_COLUMNS)
    rows = [{**{k: f.get(k) for k in FINDING_COLUMNS}, "evidence": json.dumps(f["evidence"], default=str)}
            for f in found]
    df = pl.DataFrame(rows, schema_overrides={k: v for k, v in FINDING_COLUMNS.items()
                                              if k not in ("start", "end")})
    return df.with_columns(pl.col("start").str.to_datetime(time_zone="UTC", time_unit="ns"),
                           pl.col("end").str.to_datetime(time_zone="UTC", time_unit="ns"))


def anomalies(timeline: Timeline, *, baseline: tuple[Any, Any] | None = None) -> pl.DataFrame:
    """Every anomaly segment (one row per run of anomalous samples or burst of events) with
    its incident ``window`` and its ``onset`` rank inside it: what moved first."""
    from analyzer.rules import Context

    ctx = Context(timeline.metrics, timeline.events, timeline.entities,
                  baseline=baseline if baseline is not None else timeline.options.get("baseline"),
                  sources=timeline.sources)
    return ctx.segments


def incidents(timeline: Timeline, *, baseline: tuple[Any, Any] | None = None) -> pl.DataFrame:
    """Incident windows: anomalies of all sources merged in time, with their first movers."""
    from analyzer import windows

    return windows.windows(anomalies(timeline, baseline=baseline))
