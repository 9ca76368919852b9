"""Bundle → Timeline: detection, the time policy, parsing, accounting, offsets."""

from __future__ import annotations

import dataclasses
import datetime as dt
import fnmatch
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from analyzer import pgss_files
from analyzer.bundle import Bundle, Limits, Member, open_inputs
from analyzer.timeline import Timeline, source_status
from parsers import registry, schema
from parsers.base import Accounting, Diagnostic, ParseContext, ParseResult
from parsers.timeutil import TimePolicy, resolve_zone, shift, zone_label

Progress = Callable[[str, int, int], None]


@dataclass
class LoadOptions:
    tz: str | None = None
    tz_for: list[tuple[str, str]] = field(default_factory=list)
    offsets: list[tuple[str, float]] = field(default_factory=list)
    as_parser: list[tuple[str, str]] = field(default_factory=list)  # (parser, glob)
    interval: list[tuple[str, float]] = field(default_factory=list)
    pg_port: int | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    limits: Limits = field(default_factory=Limits)
    extra: dict[str, Any] = field(default_factory=dict)


def _pairs(value: Any, what: str) -> list[tuple[str, Any]]:
    """Accept a dict, a list of pairs, or 'GLOB=VALUE' strings."""
    if value is None:
        return []
    if isinstance(value, dict):
        return list(value.items())
    out = []
    for item in value:
        if isinstance(item, str):
            if "=" not in item:
                raise ValueError(f"{what}: expected GLOB=VALUE, got {item!r}")
            key, val = item.rsplit("=", 1)
            out.append((key, val))
        else:
            out.append(tuple(item))
    return out  # type: ignore[return-value]


def load(*inputs: str | os.PathLike[str], tz: str | None = None,
         tz_for: dict[str, str] | Sequence[Any] | None = None,
         offsets: dict[str, float] | Sequence[Any] | None = None,
         as_parser: dict[str, str] | Sequence[Any] | None = None,
         interval: dict[str, float] | Sequence[Any] | None = None,
         pg_port: int | None = None, since: Any = None, until: Any = None,
         progress: Progress | None = None) -> Timeline:
    """Parse every artifact of the given inputs (directories, archives, files) into one
    UTC timeline.

    ``tz``: zone for artifacts without one; ``tz_for``: ``{glob: zone}`` per file;
    ``offsets``: ``{glob: seconds}`` added to a file's clock; ``as_parser``: ``{parser: glob}``.

    >>> import analyzer
    >>> tl = analyzer.load("samples/thread_monitor/monitor_sleep_threads.log", tz="UTC")
    >>> tl.sources.select("parser", "tz").row(0)
    ('thread_monitor', 'UTC')
    """
    if not inputs:
        raise ValueError("load() needs at least one input path")
    opts = LoadOptions(
        tz=tz,
        tz_for=[(g, z) for g, z in _pairs(tz_for, "tz_for")],
        offsets=[(g, float(s)) for g, s in _pairs(offsets, "offsets")],
        as_parser=_as_pairs(as_parser),
        interval=[(g, float(s)) for g, s in _pairs(interval, "interval")],
        pg_port=pg_port, since=since, until=until)
    return load_with(list(inputs), opts, progress=progress)


def _as_pairs(value: Any) -> list[tuple[str, str]]:
    pairs = [(str(a), str(b)) for a, b in _pairs(value, "as_parser")]
    for name, _glob in pairs:
        registry.get(name)  # raises KeyError with the known names
    return pairs


def load_with(inputs: list[Any], opts: LoadOptions, progress: Progress | None = None) -> Timeline:
    if opts.tz:
        resolve_zone(opts.tz)
    for _glob, zone in opts.tz_for:
        resolve_zone(zone)
    with open_inputs(inputs, opts.limits) as bundle:
        return _parse_bundle(bundle, [str(i) for i in inputs], opts, progress)


@dataclass
class _Planned:
    member: Member
    parser: Any  # module or None
    how: str  # "sniffed" | "--as" | ""


def _parse_bundle(bundle: Bundle, inputs: list[str], opts: LoadOptions,
                  progress: Progress | None) -> Timeline:
    plans: list[_Planned] = []
    for member in bundle.members:
        if member.duplicate_of:
            plans.append(_Planned(member, None, "duplicate"))
            continue
        forced = registry.forced_parser(member.name, opts.as_parser)
        if forced is not None:
            plans.append(_Planned(member, forced, "--as"))
            continue
        with member.open(bundle.budget) as fh:
            head = fh.read(registry.SNIFF_BYTES)
        detection = registry.detect(head, member.name)
        plans.append(_Planned(member, detection.parser, "sniffed" if detection.parser else ""))

    # host facts first: they decide the bundle's zone for everything else
    order = sorted(range(len(plans)), key=lambda i: 0 if plans[i].parser is not None
                   and plans[i].parser.NAME == "host_facts" else 1)
    policy = TimePolicy(tz=opts.tz, tz_for=opts.tz_for, offsets=opts.offsets)
    host = ""
    bundle_tz_rank = 0
    reference_date: dt.date | None = None
    rows: list[dict[str, Any]] = []
    metrics: list[pl.DataFrame] = []
    events: list[pl.DataFrame] = []
    entities: list[pl.DataFrame] = []
    tables: dict[str, list[pl.DataFrame]] = {}
    diags: list[Diagnostic] = list(bundle.diagnostics)
    singles = pgss_files.SingleSnapshots()
    deferred: list[tuple[_Planned, Any, ParseContext, ParseResult]] = []
    total = len(plans)
    for done, index in enumerate(order):
        plan = plans[index]
        member = plan.member
        if progress:
            progress(member.name, done, total)
        if plan.how == "duplicate":
            rows.append(_source_row(member, None, status="duplicate", duplicate_of=member.duplicate_of))
            continue
        if plan.parser is None:
            rows.append(_source_row(member, None, status="unrecognised",
                                    records_total=_count_lines(member, bundle)))
            continue
        decision = policy.decide(member.name)
        ctx = ParseContext(file=member.name, tz=decision.tz, tz_reason=decision.reason,
                           interval_s=_interval_for(member.name, opts.interval), pg_port=opts.pg_port,
                           file_mtime=_mtime(member), reference_date=reference_date, options={"host": host, **opts.extra})
        with member.open(bundle.budget) as fh:
            result = registry.run(plan.parser, fh, ctx)
        refusal = member.refusal()
        if refusal:
            result.accounting.note("bomb_refused" if "ratio" in refusal else "truncated_input",
                                   f"stopped reading: {refusal}", level="error")
            result.hints["failed"] = True
        if result.hints.get("untimed_reports") and ctx.interval_s is None and not refusal:
            # no per-report times and no --interval: try again once every other file is read,
            # with the sampling interval of a neighbouring collector
            deferred.append((plan, decision, ctx, result))
            continue
        if plan.parser.NAME == "host_facts":
            rank = int(result.hints.get("tz_rank", 0))
            if result.hints.get("tz") and rank > bundle_tz_rank:
                policy.bundle_tz, bundle_tz_rank = result.hints["tz"], rank
                policy.bundle_tz_source = f"{member.name}: {result.hints.get('tz_source', '')}"
            host = host or result.hints.get("host", "")
            if result.hints.get("date") and reference_date is None:
                reference_date = dt.date.fromisoformat(result.hints["date"])
        rows.append(_finish(result, member, plan, decision, policy, metrics, events, entities, tables))
        diags.extend(result.accounting.all_diagnostics())
        if plan.parser.NAME == pgss_files.PARSER:
            table = result.tables.get("pg_statements")
            offset = policy.offset_for(member.name)
            if table is not None and offset and "snapshot_time" in table.columns:
                table = table.with_columns(pl.col("snapshot_time") + dt.timedelta(seconds=offset))
            singles.offer(member.name, result.host or "", result.metrics.height, table)
    for plan, decision, ctx, result in deferred:
        interval, origin = neighbour_interval(metrics)
        if interval is not None:
            with plan.member.open(bundle.budget) as fh:
                result = registry.run(plan.parser, fh, dataclasses.replace(ctx, interval_s=interval))
            result.accounting.note("interval_inferred", f"{plan.member.name} prints no time per report and no "
                                   f"--interval was given: {interval:g} s, the sampling interval of {origin}, was "
                                   "used (give --interval to override)", level="warning")
        rows.append(_finish(result, plan.member, plan, decision, policy, metrics, events, entities, tables))
        diags.extend(result.accounting.all_diagnostics())
    if progress:
        progress("", total, total)
    more_metrics, more_events, more_diags = singles.combine()
    metrics += more_metrics
    events += more_events
    diags += more_diags
    # sources that were parsed before the host name was known get it now
    tl = Timeline(
        metrics=_concat(metrics, schema.METRIC_COLUMNS),
        events=_concat(events, schema.EVENT_COLUMNS),
        sources=_sources_frame(rows, bundle),
        diagnostics=_diag_frame(diags),
        entities=_concat(entities, schema.ENTITY_COLUMNS),
        tables={name: pl.concat(frames, how="diagonal_relaxed") for name, frames in tables.items()},
        inputs=inputs,
        display_tz=policy.bundle_tz or opts.tz or "UTC",
        options={"tz": opts.tz, "pg_port": opts.pg_port},
    )
    if host:
        tl.metrics = tl.metrics.with_columns(pl.when(pl.col("host") == "").then(pl.lit(host))
                                             .otherwise(pl.col("host")).alias("host"))
        tl.events = tl.events.with_columns(pl.when(pl.col("host") == "").then(pl.lit(host))
                                           .otherwise(pl.col("host")).alias("host"))
        tl.sources = tl.sources.with_columns(pl.when(pl.col("parser").is_not_null() & (pl.col("host") == ""))
                                             .then(pl.lit(host)).otherwise(pl.col("host")).alias("host"))
    tl.metrics = tl.metrics.sort("ts", maintain_order=True)
    tl.events = tl.events.sort("ts", maintain_order=True)
    if opts.since is not None or opts.until is not None:
        tl = tl.slice(opts.since, opts.until)
    return tl


# collectors that sample at a fixed interval, whose interval a sibling without times likely shares
INTERVAL_SOURCES = ("iostat", "pidstat")


def neighbour_interval(metrics: list[pl.DataFrame]) -> tuple[float | None, str]:
    """The sampling interval of the timed sysstat source with the most samples: the median gap
    between its distinct sample times, rounded to whole seconds (sysstat takes whole seconds)."""
    best: tuple[int, float, str] | None = None
    for frame in metrics:
        if frame.height == 0 or frame.get_column("source")[0] not in INTERVAL_SOURCES:
            continue
        times = frame.get_column("ts").unique().sort()
        if times.len() < 3:
            continue
        gap = times.diff().drop_nulls().dt.total_microseconds().median()
        if gap is None or gap < 500_000:
            continue
        candidate = (times.len(), float(round(gap / 1e6)), str(frame.get_column("file")[0]))
        if best is None or candidate[0] > best[0]:
            best = candidate
    return (best[1], best[2]) if best else (None, "")


def _finish(result: ParseResult, member: Member, plan: _Planned, decision: Any, policy: TimePolicy,
            metrics: list[pl.DataFrame], events: list[pl.DataFrame], entities: list[pl.DataFrame],
            tables: dict[str, list[pl.DataFrame]]) -> dict[str, Any]:
    acct: Accounting = result.accounting
    used_policy = result.tz_reason == decision.reason
    has_rows = result.metrics.height + result.events.height > 0
    if used_policy and decision.assumed and has_rows:
        acct.note("tz_assumed", "timestamps carry no zone and none was given (--tz/--tz-for) or found "
                  "in the bundle; read as UTC", level="warning")
    offset = policy.offset_for(member.name)
    m, e = result.metrics, result.events
    null_ts = m.get_column("ts").null_count() + e.get_column("ts").null_count()
    if null_ts:
        acct.note("tz_gap", f"{null_ts} local times fall into a DST gap of {zone_label(decision.tz)} "
                  "and were dropped", level="warning")
        m, e = m.filter(pl.col("ts").is_not_null()), e.filter(pl.col("ts").is_not_null())
    if offset:
        m, e = shift(m, offset), shift(e, offset)
    metrics.append(m)
    events.append(e)
    if result.entities is not None and result.entities.height:
        entities.append(result.entities)
    for name, table in result.tables.items():
        tables.setdefault(name, []).append(table.with_columns(pl.lit(member.name).alias("file"))
                                           if "file" not in table.columns else table)
    starts: list[Any] = [df.get_column("ts").min() for df in (m, e) if df.height]
    ends: list[Any] = [df.get_column("ts").max() for df in (m, e) if df.height]
    total = acct.total
    if acct.parsed_count + acct.skipped_count != total and not result.hints.get("failed"):
        acct.note("accounting_mismatch", f"{total} records but {acct.parsed_count} parsed + "
                  f"{acct.skipped_count} skipped", level="error")
    failed = bool(result.hints.get("failed"))
    return _source_row(
        member, plan.parser.NAME, variant=result.variant, host=result.host,
        tz=result.tz_name or zone_label(decision.tz),
        tz_reason=(result.tz_reason or decision.reason) + (" (forced with --as)" if plan.how == "--as" else ""),
        clock_offset_s=offset, start=min(starts) if starts else None, end=max(ends) if ends else None,
        records_total=total, records_parsed=acct.parsed_count, records_skipped=acct.skipped_count,
        skipped_by_reason=dict(sorted(acct.skipped.items())),
        status=source_status(total, dict(acct.skipped), failed))


def _source_row(member: Member, parser: str | None, **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"file": member.name, "parser": parser, "variant": "", "host": "", "tz": None,
                           "tz_reason": None, "clock_offset_s": 0.0, "start": None, "end": None,
                           "records_total": 0, "records_parsed": 0, "records_skipped": 0,
                           "skipped_by_reason": {}, "size_bytes": member.size, "duplicate_of": None,
                           "status": "ok"}
    row.update(fields)
    return row


def _sources_frame(rows: list[dict[str, Any]], bundle: Bundle) -> pl.DataFrame:
    for name, code in bundle.refused:
        rows.append({"file": name, "parser": None, "status": "refused",
                     "skipped_by_reason": {code: 1}, "records_total": 0, "records_parsed": 0,
                     "records_skipped": 0, "size_bytes": None})
    data = [{**r, "skipped_by_reason": json.dumps(r.get("skipped_by_reason") or {})} for r in rows]
    df = pl.DataFrame(data, schema_overrides={k: v for k, v in schema.SOURCE_COLUMNS.items()
                                              if k not in ("start", "end")}, strict=False) \
        if data else pl.DataFrame(schema=schema.SOURCE_COLUMNS)
    return schema.conform(df, schema.SOURCE_COLUMNS).sort("file")


def _diag_frame(diags: Iterable[Diagnostic]) -> pl.DataFrame:
    rows = [{"code": d.code, "level": d.level, "file": d.file, "line": d.line, "offset": d.offset,
             "excerpt": d.excerpt, "message": d.message, "count": d.count} for d in diags]
    if not rows:
        return pl.DataFrame(schema=schema.DIAGNOSTIC_COLUMNS)
    return schema.conform(pl.DataFrame(rows, infer_schema_length=None), schema.DIAGNOSTIC_COLUMNS)


def _concat(frames: list[pl.DataFrame], columns: dict[str, pl.DataType]) -> pl.DataFrame:
    frames = [f for f in frames if f.height]
    if not frames:
        return pl.DataFrame(schema=columns)
    return pl.concat([schema.conform(f, columns) for f in frames], how="vertical")


def _interval_for(name: str, pairs: list[tuple[str, float]]) -> float | None:
    base = name.rsplit("/", 1)[-1]
    for glob, seconds in pairs:
        if fnmatch.fnmatchcase(name, glob) or fnmatch.fnmatchcase(base, glob):
            return seconds
    return None


def _mtime(member: Member) -> dt.datetime | None:
    try:
        return dt.datetime.fromtimestamp(member.path.stat().st_mtime, tz=dt.timezone.utc)
    except OSError:
        return None


def _count_lines(member: Member, bundle: Bundle) -> int:
    count = 0
    last = b"\n"
    with member.open(bundle.budget) as fh:
        while chunk := fh.read(1 << 20):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (1 if last != b"\n" else 0)
