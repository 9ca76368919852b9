"""Timeline (+ findings) → one self-contained HTML file.

Two steps, as everywhere in stallscope: ``build_view`` turns frames into plain dicts and
lists (the only place that reads DataFrames), then jinja2 renders ``templates/report.html.j2``
with autoescape on and ``StrictUndefined``. Data for the charts is embedded as JSON made
safe for a ``<script>`` element.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
import polars as pl

from parsers.timeutil import ZoneError, resolve_zone

if TYPE_CHECKING:
    from analyzer.timeline import Timeline

MAX_POINTS_PER_SERIES = 2000


def templates_dir() -> Path:
    here = Path(__file__).resolve().parent
    for candidate in (here / "templates", here.parent / "templates"):
        if (candidate / "report.html.j2").is_file():
            return candidate
    raise FileNotFoundError("report templates not found next to the analyzer package")


def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates_dir())),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["script_json"] = script_json
    return env


def script_json(value: Any) -> str:
    """JSON that cannot end a <script> element or open a comment, marked safe for jinja2."""
    text = json.dumps(value, default=str, separators=(",", ":"))
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return jinja2.utils.markupsafe.Markup(text)


def plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")
    return str(value)


def downsample(df: pl.DataFrame, max_points: int = MAX_POINTS_PER_SERIES) -> pl.DataFrame:
    """Keep min and max per bucket so spikes survive; ``df`` has ts, value sorted by ts."""
    if df.height <= max_points:
        return df
    buckets = max_points // 2
    return (df.with_row_index("_i")
            .with_columns((pl.col("_i") * buckets // df.height).alias("_b"))
            .group_by("_b", maintain_order=True)
            .agg(pl.all().sort_by("value").first().alias("lo"), pl.all().sort_by("value").last().alias("hi"))
            .select(pl.concat_list("lo", "hi").alias("p")).explode("p").unnest("p")
            .sort("ts").drop("_i", "_b"))


def _series(metrics: pl.DataFrame, metric: str, limit: int = 12) -> list[dict[str, Any]]:
    rows = metrics.filter(pl.col("metric") == metric)
    if rows.height == 0:
        return []
    top = (rows.group_by("entity").agg(pl.col("value").max().alias("peak"))
           .sort("peak", descending=True).head(limit).get_column("entity").to_list())
    out = []
    for entity in top:
        part = downsample(rows.filter(pl.col("entity") == entity).select("ts", "value").sort("ts"))
        out.append({"name": entity,
                    "x": [_iso(t) for t in part.get_column("ts").to_list()],
                    "y": part.get_column("value").to_list()})
    return out


def build_view(tl: Timeline, findings: list[dict[str, Any]], title: str | None) -> dict[str, Any]:
    start, end = tl.window
    try:
        local = resolve_zone(tl.display_tz)
        local_name = tl.display_tz
    except ZoneError:
        local, local_name = dt.timezone.utc, "UTC"
    offset_min = int((local.utcoffset(start) if start else dt.timedelta(0)).total_seconds() // 60) \
        if start else 0
    sources = []
    for r in tl.sources.iter_rows(named=True):
        reasons = json.loads(r["skipped_by_reason"] or "{}")
        sources.append({
            "file": r["file"], "parser": r["parser"] or "—", "variant": r["variant"] or "",
            "host": r["host"] or "", "tz": r["tz"] or "", "tz_reason": r["tz_reason"] or "",
            "start": _iso(r["start"]), "end": _iso(r["end"]), "total": r["records_total"] or 0,
            "parsed": r["records_parsed"] or 0, "skipped": r["records_skipped"] or 0,
            "reasons": ", ".join(f"{k}: {v}" for k, v in reasons.items()),
            "status": r["status"] or "", "duplicate_of": r["duplicate_of"] or "",
            "offset": r["clock_offset_s"] or 0.0,
        })
    diagnostics = [
        {"code": d["code"], "level": d["level"],
         "where": f"{d['file']}:{d['line']}" if d["line"] is not None else (d["file"] or ""),
         "message": d["message"], "excerpt": d["excerpt"] or "", "count": d["count"] or 1}
        for d in tl.diagnostics.head(500).iter_rows(named=True)]
    charts = []
    thread_series = _series(tl.metrics, "proc.threads")
    if thread_series:
        charts.append({"id": "chart-threads", "title": "Threads per process", "unit": "threads",
                       "series": thread_series})
    hosts = sorted({s["host"] for s in sources if s["host"]})
    return {
        "title": title or "stallscope incident report",
        "inputs": tl.inputs, "hosts": hosts,
        "window": {"start": _iso(start), "end": _iso(end)},
        "display_tz": {"local": local_name, "local_offset_min": offset_min},
        "sources": sources, "diagnostics": diagnostics,
        "diagnostics_total": tl.diagnostics.height,
        "charts": charts, "findings": findings,
        "counts": {"metrics": tl.metrics.height, "events": tl.events.height,
                   "files": len(sources), "recognised": sum(1 for s in sources if s["parser"] != "—")},
        "generated": _iso(dt.datetime.now(dt.timezone.utc)),
    }


def render(tl: Timeline, findings: list[dict[str, Any]] | None = None, title: str | None = None) -> str:
    view = build_view(tl, findings or [], title)
    return environment().get_template("report.html.j2").render(view=view, plotly_js=jinja2.utils.markupsafe.Markup(
        plotly_js().replace("</script", "<\\/script")))


def write_report(tl: Timeline, path: Path, title: str | None = None,
                 findings: list[dict[str, Any]] | None = None) -> Path:
    if findings is None:
        findings = tl.findings()
    path.write_text(render(tl, findings, title), encoding="utf-8")
    return path
