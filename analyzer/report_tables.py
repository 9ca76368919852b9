"""Tables of the report: data quality (files, diagnostics) and the per-source detail sections
(slow callbacks by coroutine, top queries by execution time, flows, devices, thread peaks,
events, and any extra per-source table a parser provides).

A cell is a plain value or a dict: ``{"ts": iso}`` (shown in the display zone), ``{"code": s}``,
``{"pre": s}`` (long text, folded), ``{"num": x}``.
"""

from __future__ import annotations

import datetime as dt
import json
import zlib
from typing import TYPE_CHECKING, Any

import polars as pl

from analyzer.report_time import iso

if TYPE_CHECKING:
    from analyzer.timeline import Timeline

TOP_ROWS = 25
MAX_DIAGNOSTICS = 500


def sources(tl: Timeline) -> list[dict[str, Any]]:
    out = []
    for r in tl.sources.iter_rows(named=True):
        try:
            reasons = json.loads(r["skipped_by_reason"] or "{}")
        except ValueError:
            reasons = {}
        out.append({
            "file": r["file"] or "", "anchor": "src-" + _slug(r["file"] or ""), "parser": r["parser"] or "—",
            "variant": r["variant"] or "", "host": r["host"] or "", "tz": r["tz"] or "",
            "tz_reason": r["tz_reason"] or "", "start": iso(r["start"]), "end": iso(r["end"]),
            "total": r["records_total"] or 0, "parsed": r["records_parsed"] or 0,
            "skipped": r["records_skipped"] or 0,
            "reasons": sorted(((str(k), v) for k, v in reasons.items()), key=lambda kv: -int(kv[1] or 0)),
            "status": r["status"] or "", "duplicate_of": r["duplicate_of"] or "",
            "offset": r["clock_offset_s"] or 0.0, "size": r["size_bytes"],
        })
    return out


def diagnostics(df: pl.DataFrame) -> list[dict[str, Any]]:
    order = {"error": 0, "warning": 1, "info": 2}
    rows = sorted(df.head(MAX_DIAGNOSTICS * 4).iter_rows(named=True),
                  key=lambda d: (order.get(d["level"] or "", 3), d["file"] or "", d["line"] or 0))
    return [{"code": d["code"] or "", "level": d["level"] or "",
             "where": f"{d['file']}:{d['line']}" if d["line"] is not None else (d["file"] or ""),
             "message": d["message"] or "", "excerpt": d["excerpt"] or "", "count": d["count"] or 1}
            for d in rows[:MAX_DIAGNOSTICS]]


def clock_skew(options: dict[str, Any]) -> list[dict[str, Any]]:
    """Estimated clock offsets between files (``options["clock_skew"]``), when they were estimated."""
    out = []
    for entry in options.get("clock_skew") or []:
        if not isinstance(entry, dict):
            continue
        offset, unc = entry.get("offset_s"), entry.get("uncertainty_s")
        out.append({"file": str(entry.get("file", "")), "reference": str(entry.get("reference", "")),
                    "offset": f"{offset:+.1f} s" if isinstance(offset, (int, float)) else str(offset),
                    "uncertainty": f"± {unc:.1f} s" if isinstance(unc, (int, float)) else "",
                    "method": str(entry.get("method", "")), "support": entry.get("support", ""),
                    "applied": "yes" if entry.get("applied") else "no"})
    return out


def per_source(tl: Timeline, labels: dict[str, str]) -> list[dict[str, Any]]:
    texts = _entity_texts(tl.entities)
    sections = [
        _slow_callbacks(tl.events, labels),
        _queries(tl.metrics, labels, texts),
        _flows(tl, labels),
        _devices(tl.metrics),
        _threads(tl.metrics, labels),
        _process_cpu(tl.metrics, labels),
        _events(tl.events),
    ]
    for name, df in sorted(tl.tables.items()):
        if name != "flows" and df.height:
            sections.append(_generic(f"table-{_slug(name)}", f"Table “{name}”", df) | {"collapsed": True})
    return sections


def _section(sid: str, title: str, columns: list[str], rows: list[list[Any]], empty: str,
             note: str = "") -> dict[str, Any]:
    return {"id": sid, "title": title, "columns": columns, "rows": rows, "empty": empty, "note": note,
            "collapsed": False}


def _where(file: Any, line: Any) -> dict[str, str]:
    return {"code": f"{file}:{line}" if line is not None else str(file or "")}


def _slow_callbacks(events: pl.DataFrame, labels: dict[str, str]) -> dict[str, Any]:
    rows = events.filter(pl.col("kind") == "loop.slow_callback")
    out = []
    if rows.height:
        agg = (rows.group_by("entity").agg(
            pl.len().alias("n"), pl.col("value").sum().alias("total"), pl.col("value").max().alias("max"),
            pl.col("ts").min().alias("first"), pl.col("ts").max().alias("last"),
            pl.col("file").first(), pl.col("line").first(), pl.col("message").first())
            .sort("total", "n", "entity", descending=[True, True, False]).head(TOP_ROWS))
        for r in agg.iter_rows(named=True):
            entity = r["entity"] or "(no coroutine named)"
            out.append([{"code": labels.get(entity, entity)}, r["n"], _secs(r["total"]), _secs(r["max"]),
                        {"ts": iso(r["first"])}, {"ts": iso(r["last"])}, _where(r["file"], r["line"]),
                        {"pre": r["message"] or ""}])
    return _section("detail-slow-callbacks", "Slow callbacks by coroutine / location",
                    ["coroutine / location", "count", "total", "max", "first", "last", "first seen at",
                     "example"], out, "No slow-callback warnings: either the loop never stalled over the "
                    "threshold, or no application log with asyncio debug warnings was provided.",
                    f"{rows.height} slow callbacks in total." if rows.height else "")


def _integrated(metrics: pl.DataFrame, metric: str) -> pl.DataFrame:
    """Per entity: sum of rate × sampling interval (the first sample uses the median interval)."""
    rows = metrics.filter(pl.col("metric") == metric).sort("entity", "ts")
    if rows.height == 0:
        return pl.DataFrame(schema={"entity": pl.Utf8, "total": pl.Float64, "peak": pl.Float64,
                                    "peak_ts": metrics.schema["ts"]})
    rows = rows.with_columns((pl.col("ts").diff().over("entity").dt.total_milliseconds() / 1000).alias("dt"))
    rows = rows.with_columns(pl.col("dt").fill_null(pl.col("dt").median().over("entity")).fill_null(1.0))
    return (rows.group_by("entity").agg((pl.col("value") * pl.col("dt")).sum().alias("total"),
                                        pl.col("value").max().alias("peak"),
                                        pl.col("ts").get(pl.col("value").arg_max()).alias("peak_ts"))
            .sort("total", "entity", descending=[True, False]))


def _queries(metrics: pl.DataFrame, labels: dict[str, str], texts: dict[str, str]) -> dict[str, Any]:
    exec_time = _integrated(metrics, "pg.exec_ms_per_s")
    calls = {e: t for e, t, _p, _ts in _integrated(metrics, "pg.calls_per_s").iter_rows()}
    everything = exec_time.filter(pl.col("entity") == "query:all")  # a total some dumps add: last
    exec_time = pl.concat([exec_time.filter(pl.col("entity") != "query:all").head(TOP_ROWS), everything])
    out = []
    for entity, total, peak, peak_ts in exec_time.iter_rows():
        n = calls.get(entity)
        mean = (total / n) if n else None
        out.append([{"code": entity}, _secs(total / 1000), round(n) if n is not None else "",
                    f"{mean:.1f} ms" if mean is not None else "", f"{peak:.0f} ms/s", {"ts": iso(peak_ts)},
                    {"pre": texts.get(entity) or labels.get(entity, "")
                     or ("(all statements together)" if entity == "query:all" else "")}])
    return _section("detail-queries", "Top queries by execution time in the window",
                    ["query", "exec time", "calls", "mean", "peak", "peak at", "query text"], out,
                    "No per-query database statistics (needs pg_stat_statements snapshots).",
                    "Execution time is the snapshot deltas summed over the window.")


def _flows(tl: Timeline, labels: dict[str, str]) -> dict[str, Any]:
    flows = tl.tables.get("flows")
    if flows is not None and flows.height:
        order = [c for c in ("retransmits", "retransmissions", "rsts", "resets", "rtt_max_ms", "bytes",
                             "packets") if c in flows.columns and flows.schema[c].is_numeric()]
        if order:
            flows = flows.sort(order[0], descending=True, nulls_last=True, maintain_order=True)
        return _generic("detail-flows", "Top TCP flows", flows, note=f"{flows.height} flows; sorted by "
                        f"{order[0] if order else 'capture order'}.")
    rows = tl.metrics.filter(pl.col("metric").is_in(["net.retransmits", "net.rsts", "net.ack_rtt_ms"])
                             & (pl.col("entity").str.starts_with("flow:")
                                | pl.col("entity").str.starts_with("endpoint:")))
    out = []
    if rows.height:
        agg = (rows.group_by("entity").agg(
            pl.col("value").filter(pl.col("metric") == "net.retransmits").sum().alias("rtx"),
            pl.col("value").filter(pl.col("metric") == "net.rsts").sum().alias("rst"),
            pl.col("value").filter(pl.col("metric") == "net.ack_rtt_ms").max().alias("rtt"))
            .sort("rtx", "rst", "entity", descending=[True, True, False]).head(TOP_ROWS))
        out = [[{"code": e}, _num(a), _num(b), _num(c)] for e, a, b, c in agg.iter_rows()]
    return _section("detail-flows", "Top TCP flows and endpoints",
                    ["flow / endpoint", "retransmissions", "resets", "max ACK RTT ms"], out,
                    "No per-flow network data (needs a packet capture).")


def _devices(metrics: pl.DataFrame) -> dict[str, Any]:
    rows = metrics.filter(pl.col("entity").str.starts_with("dev:"))
    out = []
    if rows.height:
        def stat(metric: str, how: str) -> pl.Expr:
            col = pl.col("value").filter(pl.col("metric") == metric)
            return (col.mean() if how == "mean" else col.quantile(0.95) if how == "p95" else col.max()).alias(
                f"{metric}:{how}")
        agg = (rows.group_by("entity").agg(
            stat("disk.util_pct", "mean"), stat("disk.util_pct", "max"), stat("disk.await_ms", "p95"),
            stat("disk.await_ms", "max"), stat("disk.aqu_sz", "max"), stat("disk.write_kbps", "max"),
            stat("disk.read_kbps", "max"))
            .sort("disk.util_pct:mean", "entity", descending=[True, False], nulls_last=True).head(TOP_ROWS))
        out = [[{"code": r[0]}, *(_num(v) for v in r[1:])] for r in agg.iter_rows()]
    return _section("detail-devices", "Busiest devices",
                    ["device", "%util mean", "%util max", "await p95 ms", "await max ms", "queue max",
                     "write KiB/s max", "read KiB/s max"], out, "No block-device statistics (needs iostat -x).")


def _threads(metrics: pl.DataFrame, labels: dict[str, str]) -> dict[str, Any]:
    rows = metrics.filter(pl.col("metric") == "proc.threads").sort("ts")
    out = []
    if rows.height:
        agg = (rows.group_by("entity", "file").agg(
            pl.col("value").first().alias("first"), pl.col("value").min().alias("min"),
            pl.col("value").max().alias("max"), pl.col("ts").get(pl.col("value").arg_max()).alias("at"),
            pl.col("value").last().alias("last"))
            .sort("max", "entity", "file", descending=[True, False, False]).head(TOP_ROWS))
        out = [[{"code": labels.get(e, e)}, {"code": f}, _num(a), _num(b), _num(c), {"ts": iso(d)}, _num(x)]
               for e, f, a, b, c, d, x in agg.iter_rows()]
    return _section("detail-threads", "Thread peaks", ["process", "file", "first", "min", "peak", "peak at",
                                                       "last"], out,
                    "No thread counts (needs a thread monitor log, ps -T, top -H or pidstat -t).")


def _process_cpu(metrics: pl.DataFrame, labels: dict[str, str]) -> dict[str, Any]:
    rows = metrics.filter(pl.col("metric") == "proc.cpu_pct").sort("entity", "ts")  # "max at": the first time
    out = []
    if rows.height:
        agg = (rows.group_by("entity").agg(pl.col("value").mean().alias("mean"), pl.col("value").max().alias("max"),
                                           pl.col("ts").get(pl.col("value").arg_max()).alias("at"))
               .sort("mean", "entity", descending=[True, False]).head(TOP_ROWS))
        out = [[{"code": labels.get(e, e)}, _num(a), _num(b), {"ts": iso(c)}] for e, a, b, c in agg.iter_rows()]
    return _section("detail-cpu", "Busiest processes and threads (CPU)", ["task", "CPU % mean", "CPU % max",
                                                                          "max at"], out,
                    "No per-task CPU data (needs pidstat or top).")


def _events(events: pl.DataFrame) -> dict[str, Any]:
    out = []
    if events.height:
        agg = (events.group_by("kind").agg(pl.len().alias("n"), pl.col("severity").mode().sort().first().alias("sev"),
                                           pl.col("ts").min().alias("first"), pl.col("ts").max().alias("last"),
                                           pl.col("file").unique().sort().head(3).alias("files"))
               .sort("n", "kind", descending=[True, False]))
        out = [[{"code": k}, n, s or "", {"ts": iso(a)}, {"ts": iso(b)}, {"code": ", ".join(f or "" for f in fs)}]
               for k, n, s, a, b, fs in agg.iter_rows()]
    return _section("detail-events", "Events by kind", ["kind", "count", "usual severity", "first", "last",
                                                        "files"], out, "No events in the timeline.")


def _generic(sid: str, title: str, df: pl.DataFrame, note: str = "") -> dict[str, Any]:
    columns = df.columns[:12]
    rows = []
    for r in df.head(TOP_ROWS).select(columns).iter_rows():
        rows.append([_any_cell(v) for v in r])
    more = f" Showing {min(df.height, TOP_ROWS)} of {df.height} rows." if df.height > TOP_ROWS else ""
    return _section(sid, title, columns, rows, "Empty.", (note + more).strip())


def _any_cell(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return {"ts": iso(value)}
    if isinstance(value, float):
        return _num(value)
    if isinstance(value, str) and len(value) > 80:
        return {"pre": value}
    if isinstance(value, (list, dict)):
        return {"pre": json.dumps(value, default=str, ensure_ascii=False)}
    return "" if value is None else value


def _entity_texts(entities: pl.DataFrame) -> dict[str, str]:
    out: dict[str, str] = {}
    for entity, attrs in entities.select("entity", "attrs").iter_rows():
        if entity in out or not attrs:
            continue
        try:
            data = json.loads(attrs)
        except ValueError:
            continue
        if isinstance(data, dict):
            text = data.get("query") or data.get("text") or data.get("statement")
            if text:
                out[entity] = str(text)
    return out


def _secs(value: Any) -> str:
    if value is None:
        return ""
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def _num(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e6 else f"{value:.3e}"
    return value


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text)[:80] + f"-{zlib.crc32(text.encode()):08x}"
