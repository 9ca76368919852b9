"""sysstat ``iostat`` reports, text and ``-o JSON``, every column set (FORMATS.md §2).

Text: the classic (≤ 11.x, ``Device:``, avgrq-sz in sectors, svctm), intermediate (11.5–12.0)
and current (12.x, d/s f/s) ``-x`` layouts, the basic ``-d`` report in kB, MB (``-m``) or
512-byte blocks (``POSIXLY_CORRECT``), ``-s`` short, ``-p`` partitions, ``-N`` names, ``-z``,
``-h``/``--pretty``/``--human`` (Device last, ``617.4M``, ``2.0%``), ``-g`` group rows, colours.
Columns are mapped by header name, values split on whitespace (they overflow their columns).

Times: ``-t`` lines in every locale form (C ``11/28/26 05:28:10``, 12-hour, en_CA, ISO with
offset → UTC, CJK, ``Time: 07:55:39 AM`` + header date with midnight roll-over). Without
``-t`` there is no time at all: given ``--interval`` and the file's mtime, the last report is
placed at the mtime and earlier ones ``interval`` apart (``times_inferred`` diagnostic);
otherwise the value rows are skipped as ``no_timestamp``.

Accounting: one record per physical line. The value rows (avg-cpu values, device rows) of
the first report after a ``Linux`` header are ``since_boot_sample`` (iostat without ``-y``
cannot be told apart from iostat with ``-y``; a file that starts mid-stream, without the
header, has no since-boot report). Headers, time lines and blank lines are parsed structure.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
from typing import Any, BinaryIO

import polars as pl

from parsers import _sysstat as ss
from parsers import _sysstat_iostat_fast as fast
from parsers._sysstat_batches import iter_batches
from parsers._sysstat_iostat import STAMP, TextEngine
from parsers.base import Accounting, ParseContext, ParseResult, accounted_lines
from parsers.lines import head_lines

NAME = "iostat"
DESCRIPTION = "sysstat iostat reports (text, every -x column set, -o JSON)"
SAMPLES = "iostat"
NAME_HINTS = ("*iostat*",)
BATCH_BYTES = 8 << 20

_DEV_HDR_RE = re.compile(r"^\s*Device:?\s+(?:\S+\s+)*?(?:tps|r/s|w/s|rrqm/s|[kM]B_read/s|Blk_read/s|rkB/s|"
                         r"rMB/s|rsec/s)(?:\s|$)|(?:^|\s)(?:r/s|w/s|d/s|f/s|tps|%util)\s.*\sDevice\s*$")


def sniff(head: bytes) -> float:
    lines = head_lines(head, 80)
    text = "\n".join(lines)
    if '"sysstat"' in text[:200] and ('"disk"' in text or '"avg-cpu"' in text or '"statistics"' in text):
        return 0.95 if '"disk' in text or '"avg-cpu"' in text else 0.7
    devs = sum(1 for ln in lines if _DEV_HDR_RE.search(ln))
    cpu = sum(1 for ln in lines if ln.lstrip().startswith("avg-cpu:"))
    header = any(ss.HEADER_RE.match(ln) for ln in lines[:3])
    if devs or cpu:
        return 0.95 if header or devs else 0.85
    return 0.0


def parse(stream: BinaryIO, *, ctx: ParseContext) -> ParseResult:
    head = stream.read(4096)
    rest_is_json = head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{")
    if stream.seekable():
        stream.seek(0)
    else:
        stream = io.BufferedReader(_Prefixed(head, stream))  # type: ignore[assignment]
    if rest_is_json:
        return _parse_json(stream, ctx)
    return _parse_text(stream, ctx)


# -- text ------------------------------------------------------------------------------------

def _parse_text(stream: BinaryIO, ctx: ParseContext) -> ParseResult:
    acct = Accounting(ctx.file)
    placeable = ctx.interval_s is not None and ctx.interval_s > 0 and ctx.file_mtime is not None
    engine = TextEngine(acct, timeless_ok=placeable)
    total = 0  # lines of the batches read so far
    for first, block, ends in iter_batches(stream, BATCH_BYTES):
        total = first - 1 + len(ends) + (0 if block[-1] == 10 else 1)  # an unterminated last line counts
        fast.feed(engine, first, block, primed=first > 1, ends=ends)
        del block  # a view into the reader's buffer, which the next batch overwrites
        if acct.should_abandon and acct.parsed_count == 0:
            remaining = sum(1 for _ in stream)
            acct.total = total + remaining
            acct.abandon(total, remaining)
            break
    else:
        acct.total = total
    if acct.total == 0:
        acct.total = total
    metrics = _concat(engine.frames)
    engine.frames.clear()
    if engine.pretty:
        metrics = _pretty_await(metrics)
    result = ParseResult(metrics=pl.DataFrame(), events=pl.DataFrame(), accounting=acct)
    timeless = engine.marker is not None and engine.marker[0] != STAMP
    if timeless:
        metrics = _place_untimed(metrics, engine.rep, ctx, acct, result, engine.untimed_rows)
    elif engine.aware:
        metrics = metrics.with_columns(pl.col("ts").dt.replace_time_zone("UTC"))
        result.tz_reason, result.tz_name = "ISO-8601 offset in every report time (S_TIME_FORMAT=ISO)", "UTC"
    result.metrics = metrics.select(pl.col("ts").cast(pl.Datetime("ns", metrics.schema["ts"].time_zone)),  # type: ignore[union-attr]
                                    "entity", "metric", "value", "line")
    result.host = engine.header.host if engine.header else ""
    result.variant = _variant(engine, timeless)
    result.entities = _entities(sorted(engine.entity_names) if result.metrics.height else [])
    return result


def _concat(frames: list[pl.DataFrame]) -> pl.DataFrame:
    """The engine's frames as one (no copy). Rows of timed reports may come without their report
    number (the fast path leaves it out when nothing needs it): then it is dropped everywhere,
    or, where something does need it (--pretty), null for those rows."""
    if not frames:
        return pl.DataFrame(schema={"line": pl.Int64, "ts": pl.Datetime("ns"), "rep": pl.Int32,
                                    "entity": pl.Utf8, "metric": pl.Utf8, "value": pl.Float64})
    with_rep = ["rep" in f.columns for f in frames]
    if all(with_rep):
        return pl.concat(frames)
    if not any(with_rep):
        return pl.concat(frames).with_columns(pl.lit(None, pl.Int32).alias("rep"))
    return pl.concat(frames, how="diagonal")


def _pretty_await(metrics: pl.DataFrame) -> pl.DataFrame:
    """--pretty splits r/s, r_await and w/s, w_await into separate sub-tables: derive the
    combined await per report and device after the fact."""
    need = ["disk.r_per_s", "disk.w_per_s", "disk.r_await_ms", "disk.w_await_ms"]
    if metrics.filter(pl.col("metric") == "disk.await_ms").height:
        return metrics
    parts = metrics.filter(pl.col("metric").is_in(need) & pl.col("rep").is_not_null())
    if parts.height == 0:
        return metrics
    wide = parts.pivot(on="metric", index=["rep", "entity"], values="value", aggregate_function="first")
    if not set(need) <= set(wide.columns):
        return metrics
    keys = parts.group_by(["rep", "entity"]).agg(pl.col("ts").first(), pl.col("line").min())
    r, w = pl.col("disk.r_per_s"), pl.col("disk.w_per_s")
    derived = wide.join(keys, on=["rep", "entity"]).select(
        "line", "ts", "rep", "entity", pl.lit("disk.await_ms").alias("metric"),
        pl.when(r + w > 0).then((r * pl.col("disk.r_await_ms") + w * pl.col("disk.w_await_ms")) / (r + w))
        .otherwise(0.0).alias("value")).drop_nulls("value").sort("line", "entity")  # a repeatable order
    return pl.concat([metrics, derived.select(metrics.columns)])


def _place_untimed(metrics: pl.DataFrame, n_reports: int, ctx: ParseContext, acct: Accounting,
                   result: ParseResult, untimed_rows: int) -> pl.DataFrame:
    """No -t: the last report ends at the file's mtime, earlier ones ``interval`` apart."""
    if untimed_rows or ctx.interval_s is None or ctx.file_mtime is None:
        result.hints["untimed_reports"] = n_reports
        return metrics.clear().with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))
    interval = float(ctx.interval_s)
    end = ctx.file_mtime.astimezone(dt.timezone.utc).replace(tzinfo=None)
    metrics = metrics.with_columns(
        (pl.lit(end, pl.Datetime("us")) - pl.duration(microseconds=((n_reports - pl.col("rep")) * interval
                                                                    * 1e6).cast(pl.Int64)))
        .dt.replace_time_zone("UTC").alias("ts"))
    acct.note("times_inferred", f"iostat without -t: {n_reports} reports placed {interval:g} s apart, the "
              f"last one at the file's modification time {ctx.file_mtime.isoformat()} (--interval)",
              level="warning")
    result.tz_reason, result.tz_name = "times inferred from the file's modification time (UTC)", "UTC"
    return metrics


def _variant(engine: TextEngine, timeless: bool) -> str:
    dev_names: set[str] = set()
    for lay in engine.by_id:
        if lay.kind == "dev":
            dev_names.update(lay.names)
    kinds = ["avg-cpu"] if any(lay.kind == "cpu" for lay in engine.by_id) else []
    if "f/s" in dev_names or "d/s" in dev_names:
        kinds.append("-x sysstat 12.x")
    elif "areq-sz" in dev_names:
        kinds.append("-s short")
    elif "rareq-sz" in dev_names:
        kinds.append("-x sysstat 11.5-12.0")
    elif "avgrq-sz" in dev_names or "avgqu-sz" in dev_names:
        kinds.append("-x classic (sysstat <= 11" + (", sectors" if "rsec/s" in dev_names else "") + ")")
    elif "tps" in dev_names:
        unit = "MB" if "MB_read/s" in dev_names else "512-byte blocks" if "Blk_read/s" in dev_names else "kB"
        kinds.append(f"-d basic ({unit}{', sysstat 12.x' if 'kB_dscd/s' in dev_names else ''})")
    if engine.pretty:
        kinds.append("--pretty")
    if engine.human:
        kinds.append("--human")
    parts = ["iostat " + ", ".join(kinds) if kinds else "iostat"]
    parts.append("no -t (no report times)" if timeless else f"-t {engine.stamp_form}")
    return "; ".join(parts)


def _entities(ents: list[str]) -> pl.DataFrame:
    return pl.DataFrame({"entity": ents, "label": [e.split(":", 1)[1] for e in ents],
                         "attrs": [json.dumps({"kind": "device" if e.startswith("dev:") else "cpu"})
                                   for e in ents]}, schema={"entity": pl.Utf8, "label": pl.Utf8, "attrs": pl.Utf8})


# -- JSON ------------------------------------------------------------------------------------
# iostat -o JSON prints one statistics object over several lines, with "avg-cpu" and each disk
# on one line; read it line by line so that a collector killed mid-run (no closing brackets)
# still parses, and a one-line (re-serialised) document falls back to json.loads.

JSON_KEYS = {"r/s": "disk.r_per_s", "w/s": "disk.w_per_s", "d/s": "disk.d_per_s", "f/s": "disk.f_per_s",
             "rrqm/s": "disk.rrqm_per_s", "wrqm/s": "disk.wrqm_per_s", "r_await": "disk.r_await_ms",
             "w_await": "disk.w_await_ms", "d_await": "disk.d_await_ms", "f_await": "disk.f_await_ms",
             "await": "disk.await_ms", "aqu-sz": "disk.aqu_sz", "avgqu-sz": "disk.aqu_sz",
             "util": "disk.util_pct", "tps": "disk.tps", "svctm": "disk.svctm_ms"}
JSON_SCALED = {"rkB/s": ("disk.read_kbps", 1.0), "rMB/s": ("disk.read_kbps", 1024.0),
               "wkB/s": ("disk.write_kbps", 1.0), "wMB/s": ("disk.write_kbps", 1024.0),
               "dkB/s": ("disk.discard_kbps", 1.0), "dMB/s": ("disk.discard_kbps", 1024.0),
               "kB_read/s": ("disk.read_kbps", 1.0), "MB_read/s": ("disk.read_kbps", 1024.0),
               "Blk_read/s": ("disk.read_kbps", 0.5), "kB_wrtn/s": ("disk.write_kbps", 1.0),
               "MB_wrtn/s": ("disk.write_kbps", 1024.0), "Blk_wrtn/s": ("disk.write_kbps", 0.5),
               "kB_dscd/s": ("disk.discard_kbps", 1.0), "MB_dscd/s": ("disk.discard_kbps", 1024.0),
               "rareq-sz": ("disk.rareq_kb", 1.0), "wareq-sz": ("disk.wareq_kb", 1.0),
               "areq-sz": ("disk.areq_kb", 1.0), "avgrq-sz": ("disk.areq_kb", 0.5)}
JSON_CPU = {"user": "cpu.user_pct", "nice": "cpu.nice_pct", "system": "cpu.system_pct",
            "iowait": "cpu.iowait_pct", "steal": "cpu.steal_pct", "idle": "cpu.idle_pct"}
_KV_RE = re.compile(r'^\s*"(?P<key>[\w-]+)"\s*:\s*(?P<value>.*?)\s*,?\s*$')
_STRUCT_RE = re.compile(r"^\s*(?:[{}\[\]],?\s*)*$")
_OPEN_RE = re.compile(r'^\s*\{\s*"sysstat"\s*:\s*\{\s*$')


def _parse_json(stream: BinaryIO, ctx: ParseContext) -> ParseResult:
    acct = Accounting(ctx.file)
    rows: list[tuple[int, int, str, str, float]] = []  # (line, report, entity, metric, value)
    stamps: dict[int, str] = {}
    host = date_text = ""
    report = 0
    in_stats = False
    for number, text in accounted_lines(stream, acct):
        if _STRUCT_RE.match(text) or _OPEN_RE.match(text):
            if in_stats and text.strip().startswith("{"):
                report += 1
            acct.parsed()
            continue
        m = _KV_RE.match(text)
        if text.lstrip().startswith('{"disk_device"') or (m and m.group("key") == "avg-cpu"):
            body = m.group("value") if m and m.group("key") == "avg-cpu" else text.strip().rstrip(",")
            try:
                values = _json_values(json.loads(body))
            except ValueError:
                values = None
            if values is None:
                acct.skip("unparsed_line", number, text,
                          f"{ctx.file}:{number}: expected a JSON object with numeric fields")
            elif report <= 1:
                acct.skip("since_boot_sample", number, text,
                          "first report holds averages since boot (iostat without -y), not an interval sample")
            else:
                rows.extend((number, report, ent, metric, v) for ent, metric, v in values)
            continue  # value lines are counted as parsed once their report time is known
        if m:
            key, value = m.group("key"), m.group("value").strip().rstrip(",").strip()
            if key == "statistics":
                in_stats = True
            elif key == "timestamp":
                stamps[report] = value.strip('"')
            elif key == "nodename":
                host = value.strip('"')
            elif key == "date":
                date_text = value.strip('"')
            acct.parsed()
            continue
        if text.lstrip().startswith('{"sysstat"'):
            report = _json_document(text, number, rows, acct, stamps)
            host = host or _json_host(text)
            continue
        acct.skip("unparsed_line", number, text, f"{ctx.file}:{number}: expected iostat -o JSON output")
    return _json_result(rows, stamps, report, host, date_text, ctx, acct)


def _json_values(obj: Any) -> list[tuple[str, str, float]] | None:
    if not isinstance(obj, dict):
        return None
    out: list[tuple[str, str, float]] = []
    if "disk_device" in obj:
        entity = f"dev:{obj['disk_device']}"
        vals: dict[str, float] = {}
        for key, value in obj.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            if key in JSON_KEYS:
                vals[JSON_KEYS[key]] = float(value)
            elif key in JSON_SCALED:
                metric, factor = JSON_SCALED[key]
                vals[metric] = float(value) * factor
        r, w = vals.get("disk.r_per_s"), vals.get("disk.w_per_s")
        if "disk.await_ms" not in vals and r is not None and w is not None \
                and "disk.r_await_ms" in vals and "disk.w_await_ms" in vals:
            vals["disk.await_ms"] = (r * vals["disk.r_await_ms"] + w * vals["disk.w_await_ms"]) / (r + w) \
                if r + w > 0 else 0.0
        out = [(entity, m, v) for m, v in vals.items()]
    else:
        out = [("cpu:all", JSON_CPU[k], float(v)) for k, v in obj.items()
               if k in JSON_CPU and isinstance(v, (int, float))]
    return out or None


def _json_document(text: str, number: int, rows: list, acct: Accounting, stamps: dict[int, str]) -> int:
    """A whole iostat JSON document on one line: its since-boot report is dropped, the line parsed."""
    try:
        doc = json.loads(text)
        stats = doc["sysstat"]["hosts"][0]["statistics"]
    except (ValueError, KeyError, IndexError, TypeError):
        acct.skip("unparsed_line", number, text, f"{acct.file}:{number}: expected a sysstat JSON document")
        return 0
    for report, stat in enumerate(stats, start=1):
        if not isinstance(stat, dict) or report == 1:
            continue
        if "timestamp" in stat:
            stamps[report] = str(stat["timestamp"])
        for obj in [stat.get("avg-cpu"), *(stat.get("disk") or [])]:
            values = _json_values(obj) if obj else None
            rows.extend((number, report, e, m, v) for e, m, v in values or [])
    if not any(r[0] == number for r in rows[-1:]):
        acct.parsed()  # nothing but the since-boot report: the rows will not count this line
    return len(stats)


def _json_host(text: str) -> str:
    m = re.search(r'"nodename"\s*:\s*"([^"]*)"', text)
    return m.group(1) if m else ""


def _json_result(rows: list, stamps: dict[int, str], n_reports: int, host: str, date_text: str,
                 ctx: ParseContext, acct: Accounting) -> ParseResult:
    frame = pl.DataFrame(rows, schema={"line": pl.Int64, "rep": pl.Int64, "entity": pl.Utf8, "metric": pl.Utf8,
                                       "value": pl.Float64}, orient="row")
    result = ParseResult(metrics=pl.DataFrame(), events=pl.DataFrame(), accounting=acct, host=host)
    form = "no -t (no report times)"
    if stamps:
        samples = list(stamps.values())
        twelve = any(re.search(r"[AaPp][Mm]\s*$", s) for s in samples)
        order = ss.date_order(samples[:20], date_text, twelve)
        parsed = {rep: ss.parse_stamp(text, prefer=order) for rep, text in stamps.items()}
        aware = any(p is not None and p.aware for p in parsed.values())
        when = {rep: (p.when.astimezone(dt.timezone.utc).replace(tzinfo=None) if p.aware else p.when)
                for rep, p in parsed.items() if p is not None and p.when is not None}
        frame = frame.with_columns(pl.col("rep").replace_strict(list(when), list(when.values()), default=None,
                                                                return_dtype=pl.Datetime("us")).alias("ts"))
        missing = frame.filter(pl.col("ts").is_null())
        if missing.height:
            acct.skip("bad_timestamp", int(missing["line"][0]), None, "report without a readable timestamp",
                      n=missing.get_column("line").n_unique())
            frame = frame.filter(pl.col("ts").is_not_null())
        acct.parsed(frame.get_column("line").n_unique())
        if aware:
            frame = frame.with_columns(pl.col("ts").dt.replace_time_zone("UTC"))
            result.tz_reason, result.tz_name = "ISO-8601 offset in every report time (S_TIME_FORMAT=ISO)", "UTC"
        form = "-t " + ("ISO 8601 with offset" if aware else "12-hour clock" if twelve else "locale date")
    else:
        untimed = frame.get_column("line").n_unique()
        placeable = ctx.interval_s is not None and ctx.interval_s > 0 and ctx.file_mtime is not None
        if untimed and not placeable:
            acct.skip("no_timestamp", int(frame["line"][0]), None,
                      "iostat -o JSON without -t prints no per-report time: pass --interval GLOB=SECONDS "
                      "(and keep the file's modification time) to place these reports", n=untimed)
            result.hints["untimed_reports"] = n_reports
            frame = frame.clear().with_columns(pl.lit(None, pl.Datetime("us", "UTC")).alias("ts"))
        else:
            acct.parsed(untimed)
            frame = _place_untimed(frame.with_columns(pl.lit(None, pl.Datetime("us")).alias("ts")),
                                   n_reports, ctx, acct, result, 0)
    result.metrics = frame.select(pl.col("ts").cast(pl.Datetime("ns", frame.schema["ts"].time_zone)),  # type: ignore[union-attr]
                                  "entity", "metric", "value", "line")
    result.variant = f"iostat -o JSON; {form}"
    result.entities = _entities(result.metrics.get_column("entity").unique().sort().to_list())
    return result


class _Prefixed(io.RawIOBase):
    """A non-seekable stream with its already-read head put back."""

    def __init__(self, head: bytes, stream: BinaryIO) -> None:
        self.head, self.stream = head, stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.head[: len(buffer)] if self.head else self.stream.read(len(buffer))
        self.head = self.head[len(data):] if self.head else b""
        buffer[: len(data)] = data
        return len(data)
