"""Small synthetic timelines for engine tests: rows in the schema of ``parsers/schema.py``."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from typing import Any

import polars as pl

from analyzer.timeline import Timeline
from parsers import schema

T0 = dt.datetime(2026, 1, 2, 10, 0, 0, tzinfo=dt.timezone.utc)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def series(metric: str, entity: str, values: Sequence[float], *, source: str = "iostat",
           file: str | None = None, start: float = 1.0, step: float = 1.0) -> list[dict[str, Any]]:
    """One metric series, a sample every ``step`` seconds from ``start``."""
    file = file or f"{source}.txt"
    return [{"ts": at(start + i * step), "source": source, "host": "h1", "entity": entity, "metric": metric,
             "value": float(v), "file": file, "line": i + 1} for i, v in enumerate(values)]


def event(kind: str, start: float, end: float | None = None, *, entity: str, value: float | None = None,
          attrs: dict[str, Any] | None = None, source: str = "applog", file: str = "app.log",
          line: int | None = None, message: str = "") -> dict[str, Any]:
    return {"ts": at(start), "end": at(end) if end is not None else None, "source": source, "host": "h1",
            "entity": entity, "kind": kind, "severity": "warning", "value": value, "message": message,
            "attrs": json.dumps(attrs or {}), "file": file, "line": line}


def level(base: float, peak: float, *, n: int, burst: range) -> list[float]:
    return [peak if i in burst else base for i in range(n)]


def timeline(metrics: Iterable[dict[str, Any]] = (), events: Iterable[dict[str, Any]] = (),
             entities: Iterable[dict[str, Any]] = ()) -> Timeline:
    m = list(metrics)
    e = list(events)
    n = list(entities)
    mdf = schema.conform(pl.DataFrame(m), schema.METRIC_COLUMNS) if m else schema.empty_metrics()
    edf = schema.conform(pl.DataFrame(e, infer_schema_length=None), schema.EVENT_COLUMNS) if e \
        else schema.empty_events()
    ndf = schema.conform(pl.DataFrame(n), schema.ENTITY_COLUMNS) if n else schema.empty_entities()
    return Timeline(mdf.sort("ts"), edf.sort("ts"), pl.DataFrame(schema=schema.SOURCE_COLUMNS),
                    pl.DataFrame(schema=schema.DIAGNOSTIC_COLUMNS), ndf)


def entity(name: str, label: str, **attrs: Any) -> dict[str, Any]:
    return {"source": "test", "host": "h1", "entity": name, "label": label, "attrs": json.dumps(attrs),
            "file": "x"}
