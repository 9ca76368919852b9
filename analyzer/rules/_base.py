"""What a diagnosis rule is made of, and the shared view of the timeline rules read from.

A rule is a record: its ``key``, the signals that open it (``triggers``), the findings it
can explain when they overlap (``explains``), a ``find`` function that turns the context
into candidates with evidence, and its wording: a jinja2 sentence template and
recommendation templates, rendered with the candidate's ``params``.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, cast

import polars as pl

from analyzer import anomaly, windows

SEVERITY_ORDER = ("info", "low", "medium", "high", "critical")


@dataclass
class Candidate:
    """A finding before it gets its id, relations and sentences."""

    start: dt.datetime
    end: dt.datetime
    severity: str
    confidence: float
    confidence_reason: str
    entities: list[str]  # the root cause first
    evidence: list[dict[str, Any]]
    params: dict[str, Any] = field(default_factory=dict)
    precision_s: float = 1.0  # how exactly the window is known (snapshot interval for coarse sources)


@dataclass(frozen=True)
class Rule:
    key: str
    title: str  # jinja2 sentence; variables: the candidate's params
    recommendations: tuple[str, ...]  # jinja2 templates, same variables
    find: Callable[[Context], list[Candidate]]
    triggers: tuple[str, ...] = ()  # metric names / event kinds that can open the finding
    explains: tuple[str, ...] = ()  # keys of findings this cause can produce when they overlap
    # optional narrower condition: (this candidate, the other's key, the other candidate) -> bool
    relates: Callable[[Candidate, str, Candidate], bool] | None = None
    merge_gap_s: float = 5.0  # candidates of one root closer than this become one finding


def grade(value: float | None, steps: Iterable[tuple[float, str]], default: str = "low") -> str:
    """The severity of the highest step ``value`` reaches; ``steps`` = (at least, severity).

    >>> grade(120, [(20, "medium"), (100, "high")])
    'high'
    """
    out = default
    for at_least, severity in steps:
        if value is not None and value >= at_least:
            out = severity
    return out


def num(value: Any, default: float = 0.0) -> float:
    """A polars scalar (typed as anything) as a float."""
    return default if value is None else float(value)


def tmin(series: pl.Series) -> dt.datetime:
    """Earliest instant of a datetime column (polars types its scalars loosely)."""
    return cast(dt.datetime, series.min())


def tmax(series: pl.Series) -> dt.datetime:
    return cast(dt.datetime, series.max())


def worse(a: str, b: str) -> str:
    return a if SEVERITY_ORDER.index(a) >= SEVERITY_ORDER.index(b) else b


def utc(value: Any) -> dt.datetime:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def seconds(td: dt.timedelta) -> float:
    return td.total_seconds()


_ENDPOINT_OF_FLOW = re.compile(r"^flow:.*>(?P<server>.+:\d+)$")


def endpoint_of(entity: str | None) -> str | None:
    """``flow:c:cp>s:sp`` → ``endpoint:s:sp``; endpoints stay; anything else → None."""
    if not entity:
        return None
    if entity.startswith("endpoint:"):
        return entity
    m = _ENDPOINT_OF_FLOW.match(entity)
    return f"endpoint:{m.group('server')}" if m else None


class Context:
    """The timeline as rules see it: raw frames, scored samples, anomaly segments grouped
    into incident windows, level shifts, entity labels. Built once per diagnosis."""

    def __init__(self, metrics: pl.DataFrame, events: pl.DataFrame, entities: pl.DataFrame,
                 *, baseline: tuple[Any, Any] | None = None, window: str = "10m",
                 sources: pl.DataFrame | None = None) -> None:
        self.metrics = metrics
        self.events = events
        self.entities = entities
        self.baseline = baseline
        spans = sources.select("file", "start", "end") if sources is not None and sources.height else None
        self.scored, segs, self.changes = anomaly.detect(metrics, events, window=window, baseline=baseline,
                                                         spans=spans)
        self.segments = windows.merge(segs)

    # -- selections ------------------------------------------------------------------
    def segs(self, names: Iterable[str], *, prefix: str | None = None,
             start: dt.datetime | None = None, end: dt.datetime | None = None,
             pad_s: float = 0.0) -> pl.DataFrame:
        """Anomaly segments of the given metrics/event kinds, optionally only those whose
        window overlaps [start - pad, end + pad]."""
        s = self.segments.filter(pl.col("metric").is_in(list(names)))
        if prefix:
            s = s.filter(pl.col("entity").str.starts_with(prefix))
        if start is not None and end is not None:
            pad = dt.timedelta(seconds=pad_s)
            s = s.filter((pl.col("end") >= start - pad) & (pl.col("start") <= end + pad))
        return s

    def events_of(self, kinds: Iterable[str], start: dt.datetime | None = None,
                  end: dt.datetime | None = None, pad_s: float = 0.0) -> pl.DataFrame:
        e = self.events.filter(pl.col("kind").is_in(list(kinds)))
        if start is not None and end is not None:
            pad = dt.timedelta(seconds=pad_s)
            e = e.filter((pl.coalesce("end", "ts") >= start - pad) & (pl.col("ts") <= end + pad))
        return e

    def samples(self, metric: str, *, entity: str | None = None, prefix: str | None = None,
                start: dt.datetime | None = None, end: dt.datetime | None = None) -> pl.DataFrame:
        m = self.metrics.filter(pl.col("metric") == metric)
        if entity is not None:
            m = m.filter(pl.col("entity") == entity)
        if prefix is not None:
            m = m.filter(pl.col("entity").str.starts_with(prefix))
        if start is not None:
            m = m.filter(pl.col("ts") >= start)
        if end is not None:
            m = m.filter(pl.col("ts") <= end)
        return m.sort("ts")

    @cached_property
    def _labels(self) -> dict[str, tuple[str, dict[str, Any]]]:
        out: dict[str, tuple[str, dict[str, Any]]] = {}
        for row in self.entities.unique(subset=["entity"], keep="last").iter_rows(named=True):
            try:
                attrs = json.loads(row["attrs"] or "{}")
            except ValueError:
                attrs = {}
            out[row["entity"]] = (row["label"] or "", attrs if isinstance(attrs, dict) else {})
        return out

    def label(self, entity: str) -> str:
        return self._labels.get(entity, ("", {}))[0]

    def attrs(self, entity: str) -> dict[str, Any]:
        return self._labels.get(entity, ("", {}))[1]

    # -- evidence --------------------------------------------------------------------
    def comove(self, cause: dict[str, Any], others: list[dict[str, Any]], start: dt.datetime,
               end: dt.datetime) -> list[dict[str, Any]]:
        """Rank correlation and lag of ``others`` against ``cause`` (segment rows or dicts)."""
        if not others:
            return []
        return windows.pairwise(self.metrics, cause, others, start=start, end=end)


def segment_evidence(row: dict[str, Any], *, unit: str = "", role: str = "signal",
                     **extra: Any) -> dict[str, Any]:
    """One evidence record from an anomaly segment row."""
    ev: dict[str, Any] = {"role": role, "source": row["source"],
                          ("kind" if row["origin"] == "event" else "metric"): row["metric"],
                          "entity": row["entity"], "start": iso(row["start"]), "end": iso(row["end"]),
                          "baseline": _round(row["base"]), "peak": _round(row["peak"]), "unit": unit,
                          "peak_at": iso(row["peak_ts"]), "file": row["file"], "line": row["line"]}
    if row["origin"] == "event":
        ev["count"] = row["samples"]
    if row.get("window") is not None:  # which incident window, and what moved first in it
        ev["incident_window"], ev["onset_rank"] = row["window"], row.get("onset")
    ev.update(extra)
    return ev


def event_evidence(row: dict[str, Any], *, role: str = "signal", **extra: Any) -> dict[str, Any]:
    ev = {"role": role, "source": row["source"], "kind": row["kind"], "entity": row["entity"],
          "at": iso(row["ts"]), "end": iso(row["end"]), "value": _round(row["value"]), "unit": "s",
          "file": row["file"], "line": row["line"], "excerpt": (row["message"] or "")[:200]}
    ev.update(extra)
    return ev


def iso(value: Any) -> str | None:
    if value is None:
        return None
    return utc(value).astimezone(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 3)
    return value


def merge_intervals(rows: list[tuple[dt.datetime, dt.datetime]], gap_s: float) -> list[tuple[dt.datetime, dt.datetime]]:
    """Union of intervals that overlap or lie within ``gap_s`` (few rows: a rule's triggers)."""
    out: list[tuple[dt.datetime, dt.datetime]] = []
    for start, end in sorted(rows):
        if out and seconds(start - out[-1][1]) <= gap_s:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out
