"""Chrome trace JSON export of the timeline (opens in Perfetto's UI or chrome://tracing).

One trace "process" per input file, one "thread" per entity: metric samples become counter
events, events with an end become complete spans, the rest instants; findings are spans on a
separate "stallscope findings" process. Times are microseconds since the epoch (UTC).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from analyzer.report_time import as_utc

if TYPE_CHECKING:
    from analyzer.timeline import Timeline

FINDINGS_PID = 0


def _us(col: str) -> pl.Expr:
    return pl.col(col).dt.epoch("us")


def trace_events(tl: Timeline, findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``traceEvents`` list (small timelines; ``write_trace`` streams large ones)."""
    out: list[dict[str, Any]] = []
    for chunk in _chunks(tl, findings):
        out.extend(json.loads("[" + chunk.rstrip(",\n") + "]") if chunk.strip() else [])
    return out


def write_trace(tl: Timeline, path: str | Path, findings: list[dict[str, Any]] | None = None) -> Path:
    """Write the Chrome trace JSON for ``tl`` (and ``findings``) to ``path``."""
    path = Path(path)
    with path.open("w", encoding="utf-8") as fh:
        fh.write('{"displayTimeUnit": "ms", "traceEvents": [\n')
        first = True
        for chunk in _chunks(tl, findings or []):
            if not chunk:
                continue
            fh.write(("" if first else ",\n") + chunk.rstrip(",\n"))
            first = False
        fh.write("\n]}\n")
    return path


def _chunks(tl: Timeline, findings: list[dict[str, Any]]):  # type: ignore[no-untyped-def]
    files = sorted(set(tl.metrics.get_column("file").drop_nulls().unique().to_list())
                   | set(tl.events.get_column("file").drop_nulls().unique().to_list()))
    pids = {f: i + 1 for i, f in enumerate(files)}
    entities = sorted(set(tl.metrics.get_column("entity").drop_nulls().unique().to_list())
                      | set(tl.events.get_column("entity").drop_nulls().unique().to_list()))
    tids = {e: i + 1 for i, e in enumerate(entities)}
    meta = [{"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": file}}
            for file, pid in pids.items()]
    meta.append({"ph": "M", "name": "process_name", "pid": FINDINGS_PID, "tid": 0,
                 "args": {"name": "stallscope findings"}})
    used = set(tl.metrics.select("file", "entity").unique().iter_rows()) | set(
        tl.events.select("file", "entity").unique().iter_rows())
    meta += [{"ph": "M", "name": "thread_name", "pid": pids[f], "tid": tids[e], "args": {"name": e}}
             for f, e in sorted(used, key=str) if f in pids and e in tids]
    yield ",\n".join(json.dumps(m) for m in meta)
    fid_map = pl.DataFrame({"file": list(pids), "pid": list(pids.values())}, schema={"file": pl.Utf8,
                                                                                      "pid": pl.Int64})
    eid_map = pl.DataFrame({"entity": list(tids), "tid": list(tids.values())}, schema={"entity": pl.Utf8,
                                                                                        "tid": pl.Int64})
    for part in tl.metrics.iter_slices(200_000):
        rows = (part.join(fid_map, on="file", how="left").join(eid_map, on="entity", how="left")
                .select(pl.struct(pl.lit("C").alias("ph"),
                                  pl.concat_str("metric", pl.lit(" "), pl.col("entity").fill_null("")).alias("name"),
                                  _us("ts").alias("ts"), pl.col("pid").fill_null(0),
                                  pl.col("tid").fill_null(0),
                                  pl.struct(pl.col("value").alias("value")).alias("args"))
                        .struct.json_encode().alias("j")))
        yield ",\n".join(rows.get_column("j").to_list())
    events = tl.events.join(fid_map, on="file", how="left").join(eid_map, on="entity", how="left")
    args = pl.struct(pl.col("entity"), pl.col("message"), pl.col("severity"),
                     pl.concat_str(pl.col("file"), pl.lit(":"), pl.col("line").cast(pl.Utf8)).alias("source"))
    for part in events.iter_slices(100_000):
        spans_part = part.filter(pl.col("end").is_not_null()).select(pl.struct(
            pl.lit("X").alias("ph"), pl.col("kind").alias("name"), _us("ts").alias("ts"),
            pl.max_horizontal(_us("end") - _us("ts"), pl.lit(1)).alias("dur"), pl.col("pid").fill_null(0),
            pl.col("tid").fill_null(0), args.alias("args")).struct.json_encode().alias("j"))
        instants = part.filter(pl.col("end").is_null()).select(pl.struct(
            pl.lit("i").alias("ph"), pl.col("kind").alias("name"), _us("ts").alias("ts"), pl.lit("t").alias("s"),
            pl.col("pid").fill_null(0), pl.col("tid").fill_null(0), args.alias("args"))
            .struct.json_encode().alias("j"))
        yield ",\n".join(spans_part.get_column("j").to_list() + instants.get_column("j").to_list())
    spans = []
    for n, f in enumerate(findings, 1):
        if not isinstance(f, dict):
            continue
        start, end = as_utc(f.get("start")), as_utc(f.get("end"))
        if start is None:
            continue
        end = end or start
        spans.append({"ph": "X", "name": str(f.get("title") or f.get("key") or f"finding {n}"),
                      "ts": int(start.timestamp() * 1e6), "dur": max(1, int((end - start).total_seconds() * 1e6)),
                      "pid": FINDINGS_PID, "tid": n, "args": {k: str(f.get(k)) for k in
                                                             ("id", "key", "severity", "confidence") if k in f}})
    yield ",\n".join(json.dumps(s) for s in spans)
