"""The parser registry: one ordered list, detection by content, the ``--as`` override,
and ``run`` — the one place that turns a parser's output into schema-conformant frames.

Order is specific → generic: on equal confidence the earlier parser wins; a file-name hint
only breaks ties.
"""

from __future__ import annotations

import fnmatch
import importlib
import json
from dataclasses import dataclass
from types import ModuleType
from typing import BinaryIO

import polars as pl

from parsers import schema
from parsers.base import Accounting, ParseContext, ParseResult, zone_name
from parsers.timeutil import localize

# Registration: one line per format, specific → generic.
_MODULE_NAMES = [
    "parsers.pcap",
    "parsers.host_facts",
    "parsers.iostat",
    "parsers.pidstat",
    "parsers.pg_stat_statements",
    "parsers.pg_stat_activity",
    "parsers.proc_status",
    "parsers.ps_threads",
    "parsers.top",
    "parsers.thread_monitor",
    "parsers.applog",
]

SNIFF_BYTES = 64 * 1024
MIN_CONFIDENCE = 0.5
NAME_HINT_BONUS = 0.05


class RegistryError(Exception):
    """A broken registration (duplicate name, missing attribute) — a bug, not bad input."""


def _load() -> list[ModuleType]:
    modules: list[ModuleType] = []
    seen: set[str] = set()
    for dotted in _MODULE_NAMES:
        try:
            module = importlib.import_module(dotted)
        except ModuleNotFoundError as exc:
            if exc.name == dotted:  # format not written yet
                continue
            raise
        for attr in ("NAME", "DESCRIPTION", "sniff", "parse"):
            if not hasattr(module, attr):
                raise RegistryError(f"{dotted}: parser module lacks {attr}")
        if module.NAME in seen:
            raise RegistryError(f"{dotted}: duplicate parser name {module.NAME!r}")
        seen.add(module.NAME)
        modules.append(module)
    return modules


PARSERS: list[ModuleType] = _load()


def names() -> list[str]:
    return [m.NAME for m in PARSERS]


def get(name: str) -> ModuleType:
    for module in PARSERS:
        if module.NAME == name:
            return module
    raise KeyError(f"unknown parser {name!r}; known: {', '.join(names())}")


@dataclass
class Detection:
    parser: ModuleType | None
    confidence: float
    scores: dict[str, float]


def detect(head: bytes, filename: str = "") -> Detection:
    """Pick the parser whose ``sniff`` is most confident about ``head``."""
    scores: dict[str, float] = {}
    best: ModuleType | None = None
    best_score = 0.0
    for module in PARSERS:
        try:
            score = float(module.sniff(head))
        except Exception:  # a sniffer must never take the run down; count it as "not mine"
            score = 0.0
        if score > 0 and any(fnmatch.fnmatchcase(filename.rsplit("/", 1)[-1].lower(), pat)
                             for pat in getattr(module, "NAME_HINTS", ())):
            score += NAME_HINT_BONUS
        scores[module.NAME] = score
        if score > best_score:
            best, best_score = module, score
    if best_score < MIN_CONFIDENCE:
        best = None
    return Detection(best, best_score, scores)


def forced_parser(filename: str, overrides: list[tuple[str, str]]) -> ModuleType | None:
    """``--as NAME=GLOB``: the first override whose glob matches the file."""
    base = filename.rsplit("/", 1)[-1]
    for name, glob in overrides:
        if fnmatch.fnmatchcase(filename, glob) or fnmatch.fnmatchcase(base, glob):
            return get(name)
    return None


def run(module: ModuleType, stream: BinaryIO, ctx: ParseContext) -> ParseResult:
    """Parse one stream and return schema-conformant frames (UTC, source/host/file filled).

    A bug inside a parser is contained: the file is reported as failed with the error,
    and the run goes on with the other files.
    """
    try:
        result: ParseResult = module.parse(stream, ctx=ctx)
    except Exception as exc:  # contain parser bugs to their file
        acct = Accounting(ctx.file)
        acct.note("parser_error", f"{module.NAME} failed: {type(exc).__name__}: {exc}", level="error")
        result = ParseResult(metrics=schema.empty_metrics(), events=schema.empty_events(),
                             accounting=acct)
        result.hints["failed"] = True
    return finalize(result, module.NAME, ctx)


def finalize(result: ParseResult, parser_name: str, ctx: ParseContext) -> ParseResult:
    host = result.host or ctx.options.get("host", "") or ""
    consts = {"source": parser_name, "host": host, "file": ctx.file}
    own_zone = result.tz_reason is not None

    def fill(df: pl.DataFrame | None, columns: dict[str, pl.DataType]) -> pl.DataFrame:
        if df is None:
            df = pl.DataFrame(schema={k: v for k, v in columns.items() if k not in consts})
        df = df.with_columns([pl.lit(v).alias(k) for k, v in consts.items()
                              if k in columns and k not in df.columns])
        df = localize(df, ctx.tz)
        return schema.conform(df, columns)

    result.metrics = fill(result.metrics, schema.METRIC_COLUMNS)
    result.events = fill(result.events, schema.EVENT_COLUMNS)
    ents = result.entities
    result.entities = fill(ents, schema.ENTITY_COLUMNS)
    # per-source tables: every datetime column becomes UTC like the timeline's
    for name, table in list(result.tables.items()):
        when = tuple(c for c, t in table.schema.items() if isinstance(t, pl.Datetime))
        result.tables[name] = localize(table, ctx.tz, columns=when) if when else table
    if not own_zone:
        result.tz_reason = ctx.tz_reason
        result.tz_name = zone_name(ctx.tz)
    result.host = host
    return result


def skipped_json(acct: Accounting) -> str:
    return json.dumps(dict(sorted(acct.skipped.items())), separators=(",", ":"))
