"""The report's view-model: timeline frames + finding dicts → plain dicts and lists for the
template (``view``) and for the charts (``view["data"]``, embedded as safe JSON).

This is the only place that reads DataFrames for the report. Findings come from another
module and evolve: every key except ``title`` is optional here.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from analyzer import report_tables as tables
from analyzer.report_lanes import LANES, LaneBuilder, coverage, labels_of, plot_text
from analyzer.report_time import display_zone, iso

if TYPE_CHECKING:
    from analyzer.timeline import Timeline

SEVERITY_ORDER = {"critical": 5, "high": 4, "medium": 3, "low": 2, "info": 1, "debug": 0}
CHARTS_PER_FINDING = 3
# the series that show a finding best when its evidence names none
KEY_METRICS = {
    "event_loop_blocked": ("loop.stall_ms",), "thread_exhaustion": ("proc.threads",),
    "slow_query": ("pg.exec_ms_per_s", "pg.mean_exec_ms"), "db_pool_exhaustion": ("pg.active", "pg.waiting"),
    "disk_saturation": ("disk.util_pct", "disk.await_ms"), "cpu_saturation": ("cpu.busy_pct",),
    "network_retransmissions": ("net.retransmits", "net.ack_rtt_ms"), "connection_resets": ("net.rsts",),
    "syn_backlog_overflow": ("net.syns",),
}
TEXT_KEYS = ("sentence", "summary", "text", "description", "message", "what", "detail")
WHY_KEYS = ("confidence_reason", "confidence_why", "why", "reasons", "rationale", "explanation")


def build_view(tl: Timeline, findings: list[dict[str, Any]], title: str | None) -> dict[str, Any]:
    start, end = tl.window
    zone = display_zone(tl.display_tz, start, end)
    t0_ms = int(start.timestamp() * 1000) if start is not None else 0
    t1_ms = int(end.timestamp() * 1000) if end is not None else t0_ms + 1000
    labels = labels_of(tl.entities)
    builder = LaneBuilder(tl.metrics, tl.events, labels, t0_ms, t1_ms)
    lanes, extra = builder.lanes()
    sources = tables.sources(tl)
    coverage_lane, gaps = coverage(tl.metrics, tl.events, sources, t0_ms)
    for source in sources:
        source["gaps"] = [{"from": _abs_iso(g["from_ms"], t0_ms), "to": _abs_iso(g["to_ms"], t0_ms),
                           "seconds": g["seconds"]} for g in gaps.get(source["file"], [])]
    ordered = sorted((f for f in findings if isinstance(f, dict)),
                     key=lambda f: (-SEVERITY_ORDER.get(str(f.get("severity", "")).lower(), 0),
                                    str(f.get("start") or "")))
    evidence_charts: list[dict[str, Any]] = []
    finding_views = [_finding(f, n, builder, labels, t0_ms, evidence_charts) for n, f in enumerate(ordered, 1)]
    anchors: set[str] = set()
    for f in finding_views:
        if f["anchor"] in anchors:  # two findings with one id: keep anchors unique
            f["anchor"] += f"-{f['num']}"
        anchors.add(f["anchor"])
    by_id = {f["id"]: f for f in finding_views}
    for f in finding_views:
        for rel in ("upstream", "downstream"):
            f[rel] = [{"id": r, "anchor": by_id[r]["anchor"] if r in by_id else "",
                       "label": f"F{by_id[r]['num']}" if r in by_id else r,
                       "title": by_id[r]["title"] if r in by_id else ""} for r in f[rel]]
    missing = [{"title": lane["title"], "needs": next((s.needs for s in LANES if s.key == lane["key"]), "")}
               for lane in lanes if not lane["traces"]]
    name = bundle_name(tl.inputs)
    data = {
        "t0": t0_ms, "span": max(1, t1_ms - t0_ms),
        "zone": {"name": zone.name, "label": zone.label, "transitions": zone.transitions, "utc": zone.is_utc},
        "lanes": lanes + [coverage_lane], "extra": extra, "evidence": evidence_charts,
        "windows": [{"id": f["anchor"], "num": f["num"], "severity": f["severity"], "t0": f["t0"], "t1": f["t1"]}
                    for f in finding_views if f["t0"] is not None],
    }
    counts = {"metrics": tl.metrics.height, "events": tl.events.height, "files": len(sources),
              "recognised": sum(1 for s in sources if s["parser"] != "—"),
              "degraded": sum(1 for s in sources if s["status"] in ("degraded", "failed"))}
    return {
        "title": title or (f"stallscope incident report — {name}" if name else "stallscope incident report"),
        "bundle": name, "inputs": tl.inputs,
        "hosts": sorted({s["host"] for s in sources if s["host"]}),
        "window": {"start": iso(start), "end": iso(end), "duration": _duration(start, end)},
        "zone": {"name": zone.name, "label": zone.label, "utc": zone.is_utc, "valid": zone.valid,
                 "requested": tl.display_tz, "changes": _zone_changes(zone)},
        "lanes": [_lane_head(lane) for lane in lanes] + [_lane_head(coverage_lane)],
        "extra_lanes": [_lane_head(lane) for lane in extra],
        "findings": finding_views, "missing": missing, "counts": counts,
        "sources": sources, "unrecognised": [s for s in sources if s["status"] == "unrecognised"],
        "refused": [s for s in sources if s["status"] == "refused"],
        "diagnostics": tables.diagnostics(tl.diagnostics), "clock_skew": tables.clock_skew(tl.options), "diagnostics_total": tl.diagnostics.height,
        "detail": tables.per_source(tl, labels),
        "generated": iso(dt.datetime.now(dt.timezone.utc)),
        "data": data,
    }


def bundle_name(inputs: list[str]) -> str:
    names = []
    for item in inputs:
        base = PurePosixPath(str(item).replace("\\", "/").rstrip("/")).name
        base = re.sub(r"\.(tar\.gz|tgz|tar|zip|gz)$", "", base)
        names.append(base)
    return ", ".join(n for n in names if n)


def _lane_head(lane: dict[str, Any]) -> dict[str, Any]:
    return {k: lane[k] for k in ("id", "key", "title", "use", "unit", "note", "empty")} | {
        "has_data": bool(lane["traces"])}


def _zone_changes(zone: Any) -> list[dict[str, Any]]:
    """UTC-offset changes inside the window (DST), for the header."""
    out = []
    for (_t, before, abbr0), (t, after, abbr1) in zip(zone.transitions, zone.transitions[1:], strict=False):
        out.append({"at": iso(dt.datetime.fromtimestamp(t / 1000, tz=dt.timezone.utc)),
                    "change": f"{abbr0 or _hm(before)} → {abbr1 or _hm(after)}",
                    "forward": after > before, "minutes": abs(after - before) // 60000})
    return out


def _hm(offset_ms: int) -> str:
    minutes = offset_ms // 60000
    return f"UTC{'-' if minutes < 0 else '+'}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _abs_iso(rel_ms: int, t0_ms: int) -> str | None:
    return iso(dt.datetime.fromtimestamp((rel_ms + t0_ms) / 1000, tz=dt.timezone.utc))


def _duration(start: Any, end: Any) -> str:
    if start is None or end is None:
        return ""
    seconds = max(0.0, (end - start).total_seconds())
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


# -- findings --------------------------------------------------------------------------------
def _finding(f: dict[str, Any], num: int, builder: LaneBuilder, labels: dict[str, str], t0_ms: int,
             charts: list[dict[str, Any]]) -> dict[str, Any]:
    from analyzer.report_time import as_utc

    start, end = as_utc(f.get("start")), as_utc(f.get("end"))
    end = end or start
    fid = str(f.get("id") or f"F{num}")
    t0 = int(start.timestamp() * 1000) - t0_ms if start else None
    t1 = int(end.timestamp() * 1000) - t0_ms if end else None
    entities = [str(e) for e in _as_list(f.get("entities"))]
    evidence = [_evidence(item) for item in _as_list(f.get("evidence"))]
    chart_refs: list[dict[str, str]] = []
    view: dict[str, Any] = {
        "id": fid, "anchor": "finding-" + re.sub(r"[^A-Za-z0-9_-]", "-", fid), "num": num,
        "key": str(f.get("key") or ""), "title": str(f.get("title") or f.get("key") or f"Finding {num}"),
        "severity": str(f.get("severity") or "unknown").lower(),
        "confidence": _confidence(f.get("confidence")),
        "why": _why(f, evidence), "start": iso(start), "end": iso(end), "duration": _duration(start, end),
        "t0": t0, "t1": t1, "text": _first_text(f),
        "entities": [{"entity": e, "label": labels.get(e, "")} for e in entities],
        "evidence": evidence,
        "recommendations": [_rec_text(r) for r in _as_list(f.get("recommendations")) if _rec_text(r)],
        "charts": chart_refs,
        "upstream": [str(x) for x in _as_list(f.get("upstream"))],
        "downstream": [str(x) for x in _as_list(f.get("downstream"))],
    }
    if t0 is not None and t1 is not None:
        pad = max(30_000, (t1 - t0) // 2)
        for metric, entity in _chart_series(f, evidence, entities, builder):
            traces = builder.series(metric, entity, t0 - pad, t1 + pad)
            if not traces:
                continue
            chart_id = f"ev-{num}-{len(chart_refs) + 1}"
            label = labels.get(entity or "", entity or "all entities")
            charts.append({"id": chart_id, "title": plot_text(f"{metric} — {label}"), "traces": traces,
                           "range": [t0 - pad, t1 + pad], "window": [t0, t1], "severity": view["severity"]})
            chart_refs.append({"id": chart_id, "title": f"{metric} — {label}"})
            if len(chart_refs) >= CHARTS_PER_FINDING:
                break
    return view


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _first_text(item: dict[str, Any]) -> str:
    for key in TEXT_KEYS:
        if item.get(key):
            return str(item[key])
    return ""


def _confidence(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:.0%}" if 0 <= value <= 1 else f"{value:g}"
    return str(value) if value not in (None, "") else "not stated"


def _why(f: dict[str, Any], evidence: list[dict[str, Any]]) -> list[str]:
    for key in WHY_KEYS:
        if f.get(key):
            return [str(x) for x in _as_list(f[key])]
    if evidence:
        files = sorted({e["file"] for e in evidence if e["file"]})
        return [f"{len(evidence)} evidence item(s)" + (f" from {', '.join(files)}" if files else "")]
    return []


def _rec_text(item: Any) -> str:
    if isinstance(item, dict):
        return _first_text(item) or str(item.get("title") or item.get("action") or "")
    return str(item) if item is not None else ""


def _evidence(item: Any) -> dict[str, Any]:
    if not isinstance(item, dict):
        return {"text": str(item), "file": "", "line": None, "where": "", "excerpt": "", "ts": None, "end": None,
                "extras": [], "metric": "", "entity": "", "kind": "", "role": "", "start": None}
    file = str(item.get("file") or "")
    line = item.get("line")
    where = f"{file}:{line}" if file and line is not None else file
    when = next((item[k] for k in ("ts", "at", "peak_at", "start") if item.get(k)), None)
    shown = {"file", "line", "excerpt", "ts", "at", "metric", "entity", "kind", "type", "role", "start", "end",
             "peak_at", *TEXT_KEYS}
    extras = [(str(k), _cell(v)) for k, v in item.items() if k not in shown and v not in (None, "", [], {})]
    return {"text": _first_text(item), "file": file, "line": line, "where": where,
            "excerpt": str(item.get("excerpt") or ""), "ts": iso(when) if when else None,
            "start": iso(item.get("start")) if item.get("start") else None,
            "end": iso(item.get("end")) if item.get("end") else None,
            "metric": str(item.get("metric") or ""), "entity": str(item.get("entity") or ""),
            "kind": str(item.get("kind") or item.get("type") or ""), "role": str(item.get("role") or ""),
            "extras": extras[:10]}


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        text = json.dumps(value, default=str, ensure_ascii=False)
        return text if len(text) <= 200 else text[:199] + "…"
    return str(value)


def _chart_series(f: dict[str, Any], evidence: list[dict[str, Any]], entities: list[str],
                  builder: LaneBuilder) -> list[tuple[str, str | None]]:
    """(metric, entity) pairs to chart: the evidence's own, else the finding key's usual series."""
    wanted: list[tuple[str, str | None]] = []
    for e in evidence:
        if e["metric"] and e["metric"] in builder.present:
            wanted.append((e["metric"], e["entity"] or None))
    for metric in KEY_METRICS.get(str(f.get("key") or ""), ()):
        if metric not in builder.present:
            continue
        have = set(builder.rows([metric]).get_column("entity").unique().to_list())
        mine = [e for e in entities if e in have]
        if mine:
            wanted.extend((metric, e) for e in mine[:2])
        elif not any(m == metric for m, _e in wanted):
            wanted.append((metric, None))
    return list(dict.fromkeys(wanted))
