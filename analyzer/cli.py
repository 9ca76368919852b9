"""The ``stallscope`` command line. Logic-free: parses options, calls the API, prints."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from analyzer.bundle import InputError
from analyzer.load import LoadOptions, load_with
from analyzer.timeline import EXIT_USAGE, Timeline
from parsers import registry
from parsers.timeutil import ZoneError, parse_iso


class UsageError(Exception):
    pass


def _pair(kind: Callable[[str], Any], what: str) -> Callable[[str], tuple[str, Any]]:
    def convert(text: str) -> tuple[str, Any]:
        if "=" not in text:
            raise argparse.ArgumentTypeError(f"{what}: expected GLOB=VALUE, got {text!r}")
        key, value = text.rsplit("=", 1)
        try:
            return key, kind(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{what}: bad value {value!r}: {exc}") from exc
    return convert


def _instant(text: str) -> dt.datetime:
    value = parse_iso(text)
    if value is None:
        raise argparse.ArgumentTypeError(f"expected an ISO-8601 time such as 2026-01-02T10:00:00Z, got {text!r}")
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def _period(text: str) -> tuple[dt.datetime, dt.datetime]:
    start, sep, end = text.partition("..")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected START..END such as 2026-01-02T10:00:00Z..2026-01-02T10:05:00Z, "
                                         f"got {text!r}")
    return _instant(start), _instant(end)


def _input_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="directory, archive or file")
    p.add_argument("--tz", help="time zone for artifacts without one (IANA name or +HH:MM)")
    p.add_argument("--tz-for", action="append", default=[], type=_pair(str, "--tz-for"),
                   metavar="GLOB=ZONE", help="time zone for matching files")
    p.add_argument("--offset", action="append", default=[], type=_pair(float, "--offset"),
                   metavar="GLOB=SECONDS", help="seconds to add to matching files' clocks")
    p.add_argument("--as", dest="as_parser", action="append", default=[], type=_pair(str, "--as"),
                   metavar="PARSER=GLOB", help="force a parser for matching files")
    p.add_argument("--interval", action="append", default=[], type=_pair(float, "--interval"),
                   metavar="GLOB=SECONDS", help="sampling interval for artifacts without per-sample time")
    p.add_argument("--pg-port", type=int, help="PostgreSQL port in captures (default 5432)")
    p.add_argument("--pcap-engine", choices=["fast", "tshark"], default="fast",
                   help="read captures with the built-in engine or with tshark's dissectors (slower)")
    p.add_argument("--since", type=_instant, help="only keep data from this UTC time on")
    p.add_argument("--until", type=_instant, help="only keep data up to this UTC time")
    p.add_argument("--baseline", type=_period, metavar="START..END",
                   help="quiet reference period (UTC) for anomaly baselines instead of rolling ones")
    p.add_argument("--auto-offset", action="store_true",
                   help="shift files by their estimated clock skew (estimates are always shown)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stallscope", description="Offline incident analyzer: one UTC "
                                     "timeline from thread, sysstat, asyncio, PostgreSQL and capture artifacts.")
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("report", help="write the HTML incident report")
    _input_options(rep)
    rep.add_argument("-o", "--output", required=True, help="HTML file to write")
    rep.add_argument("--json", dest="json_out", help="also write findings as JSON")
    rep.add_argument("--title", help="report title")
    rep.add_argument("--trace", dest="trace_out", help="also write the timeline as Chrome trace JSON (Perfetto)")
    tl = sub.add_parser("timeline", help="export the unified timeline")
    _input_options(tl)
    tl.add_argument("-o", "--output", required=True, help="directory to write")
    tl.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    ins = sub.add_parser("inspect", help="list every file, its parser, zone and accounting")
    _input_options(ins)
    ins.add_argument("--json", action="store_true", help="machine-readable output")
    sub.add_parser("formats", help="list the registered parsers")
    return parser


@contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[str, int, int], None] | None]:
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("[bold]parsing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.description}"), transient=True, console=None) as bar:
        task = bar.add_task("", total=None)

        def update(name: str, done: int, total: int) -> None:
            bar.update(task, completed=done, total=total, description=name[-60:])
        yield update


def _load(args: argparse.Namespace) -> Timeline:
    opts = LoadOptions(tz=args.tz, tz_for=args.tz_for, offsets=args.offset,
                       as_parser=[(name, glob) for name, glob in args.as_parser],
                       interval=args.interval, pg_port=args.pg_port, since=args.since, until=args.until,
                       extra={"pcap_engine": args.pcap_engine})
    for name, _glob in opts.as_parser:
        try:
            registry.get(name)
        except KeyError as exc:
            raise UsageError(str(exc.args[0])) from exc
    with _progress(sys.stderr.isatty()) as progress:
        tl = load_with(args.inputs, opts, progress=progress)
    if args.baseline:
        tl.options["baseline"] = args.baseline
    from analyzer import skew

    tl = skew.annotate(tl, auto_offset=args.auto_offset)
    for entry in tl.options["clock_skew"]:
        if abs(entry["offset_s"]) >= 1.0:
            print(f"clock skew: {skew.describe(entry)}", file=sys.stderr)
    return tl


def source_records(tl: Timeline) -> list[dict[str, Any]]:
    """The stable ``inspect --json`` record per file."""
    out = []
    for r in tl.sources.iter_rows(named=True):
        out.append({
            "file": r["file"], "parser": r["parser"], "variant": r["variant"], "host": r["host"],
            "tz": r["tz"], "tz_reason": r["tz_reason"], "start": _iso(r["start"]), "end": _iso(r["end"]),
            "records_total": r["records_total"], "records_parsed": r["records_parsed"],
            "records_skipped": r["records_skipped"],
            "skipped_by_reason": json.loads(r["skipped_by_reason"] or "{}"),
            "status": r["status"], "duplicate_of": r["duplicate_of"], "clock_offset_s": r["clock_offset_s"],
        })
    return out


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    return value.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")


def cmd_formats() -> int:
    for module in registry.PARSERS:
        print(f"{module.NAME}\t{module.DESCRIPTION}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    tl = _load(args)
    records = source_records(tl)
    if args.json:
        print(json.dumps({"sources": records}, indent=2, ensure_ascii=False))
    else:
        for r in records:
            reasons = ", ".join(f"{k}={v}" for k, v in sorted(r["skipped_by_reason"].items(),
                                                              key=lambda kv: -kv[1])[:3])
            print(f"{r['file']}\t{r['parser'] or 'none'}\t{r['variant'] or ''}\t{r['host'] or ''}\t"
                  f"tz={r['tz'] or ''} ({r['tz_reason'] or ''})\t{r['start'] or ''}..{r['end'] or ''}\t"
                  f"total={r['records_total']} parsed={r['records_parsed']} skipped={r['records_skipped']}"
                  f"{' [' + reasons + ']' if reasons else ''}\t{r['status']}")
        _print_problems(tl)
    return tl.exit_code()


def _print_problems(tl: Timeline) -> None:
    import polars as pl

    serious = tl.diagnostics.filter(pl.col("level").is_in(["warning", "error"]))
    for d in serious.head(20).iter_rows(named=True):
        where = f"{d['file']}:{d['line']}" if d["line"] is not None else d["file"]
        print(f"{where}: {d['message']} [{d['code']}]", file=sys.stderr)
    if serious.height > 20:
        print(f"... and {serious.height - 20} more diagnostics", file=sys.stderr)


def findings_document(tl: Timeline, findings: list[dict[str, Any]]) -> dict[str, Any]:
    start, end = tl.window
    return {"version": 1, "window": {"start": _iso(start), "end": _iso(end)},
            "sources": source_records(tl), "findings": findings}


def cmd_report(args: argparse.Namespace) -> int:
    from analyzer.report import write_report

    tl = _load(args)
    findings = tl.findings()
    write_report(tl, Path(args.output), title=args.title, findings=findings)
    if getattr(args, "trace_out", None):
        from analyzer.report_trace import write_trace

        write_trace(tl, args.trace_out, findings)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(findings_document(tl, findings), indent=2,
                                                  ensure_ascii=False, default=str), encoding="utf-8")
    code = tl.exit_code()
    print(f"wrote {args.output}: {len(findings)} finding(s), {tl.sources.height} file(s)", file=sys.stderr)
    _print_problems(tl)
    return code


def cmd_timeline(args: argparse.Namespace) -> int:
    tl = _load(args)
    written = tl.export(args.output, fmt=args.format)
    print(f"wrote {len(written)} files to {args.output}", file=sys.stderr)
    _print_problems(tl)
    return tl.exit_code()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed the usage error
        return int(exc.code or 0) and EXIT_USAGE
    try:
        if args.command == "formats":
            return cmd_formats()
        if args.command == "inspect":
            return cmd_inspect(args)
        if args.command == "report":
            return cmd_report(args)
        return cmd_timeline(args)
    except (InputError, UsageError, ZoneError) as exc:
        print(f"stallscope: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"stallscope: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("stallscope: interrupted", file=sys.stderr)
        return 130
