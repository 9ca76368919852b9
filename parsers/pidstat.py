"""sysstat ``pidstat`` reports (FORMATS.md §3): ``-u -r -d -w -s -v -R`` blocks (several in one
run), ``-h`` (one line per task, header repeated, time or epoch ``Time``), ``-t`` (``TGID``/``TID``;
``|__`` thread rows belong to the last TGID → ``tid:<tgid>/<tid>``), ``-l`` command lines with
spaces, ``UID``/``USER``/no-UID, ``%wait``/``iodelay`` present or not, ``-1.00`` and ``-`` as
missing, decimal commas, 12-hour, CJK and ``time + zone name`` clocks.

Times: a data row carries the END of its interval; the header row carries the start. Clock-only
times take the date of the ``Linux`` header and roll over at midnight. A block whose rows carry
the same time as its header row is a since-boot report (pidstat without an interval) and is
skipped as ``since_boot_sample``; ``Average:`` rows and their translations (``Moyenne :``,
``Durchschn.:``, ``平均时间:``, ``Summary:``) are ``summary_row``.
"""

from __future__ import annotations

import datetime as dt
import operator
import re
from dataclasses import dataclass
from typing import Any, BinaryIO

import polars as pl

from parsers import _sysstat as ss
from parsers.base import Accounting, ParseContext, ParseResult, accounted_lines, attrs_json
from parsers.lines import head_lines
from parsers.timeutil import DayRoller

NAME = "pidstat"
DESCRIPTION = "sysstat pidstat reports (-u -r -d -w -s -v -R, -h, -t, -l)"
SAMPLES = "pidstat"
NAME_HINTS = ("*pidstat*",)

COLUMNS = {
    "%usr": "proc.usr_pct", "%user": "proc.usr_pct", "%system": "proc.system_pct", "%guest": "proc.guest_pct",
    "%wait": "proc.wait_pct", "%CPU": "proc.cpu_pct", "minflt/s": "proc.minflt_per_s",
    "majflt/s": "proc.majflt_per_s", "VSZ": "proc.vsz_kb", "RSS": "proc.rss_kb", "%MEM": "proc.mem_pct",
    "kB_rd/s": "proc.read_kbps", "kB_wr/s": "proc.write_kbps", "kB_ccwr/s": "proc.cancelled_write_kbps",
    "iodelay": "proc.iodelay_ticks", "cswch/s": "proc.cswch_per_s", "nvcswch/s": "proc.nvcswch_per_s",
    "threads": "proc.threads", "fd-nr": "proc.fd_nr", "StkSize": "proc.stack_size_kb",
    "StkRef": "proc.stack_ref_kb", "prio": "proc.prio",
}
ID_NAMES = ("UID", "USER", "PID", "TGID", "TID")
_HDR_RE = re.compile(r"(?:^|\s)(?:PID|TGID)\s.*\sCommand\s*$")
_MERIDIEM = {"AM", "PM", "am", "pm", "a.m.", "p.m.", "上午", "下午", "午前", "午後", "오전", "오후"}
FLUSH_ROWS = 20000


def sniff(head: bytes) -> float:
    lines = [ln for ln in head_lines(head, 60) if ln.strip()]
    headers = [ln for ln in lines if _HDR_RE.search(ln) and re.search(r"%usr|%CPU|minflt/s|kB_rd/s|cswch/s|"
                                                                       r"threads|StkSize|prio|%user", ln)]
    if not headers:
        return 0.0
    return 0.95 if any(ss.HEADER_RE.match(ln) for ln in lines[:3]) or len(headers) >= 1 else 0.6


@dataclass
class Layout:
    names: list[str]  # after the time tokens, Command last
    uid_pos: int
    pid_pos: int
    tid_pos: int  # -1 without -t
    metrics: list[tuple[int, str]]
    epoch_h: bool  # "# Time" header of -h

    def __post_init__(self) -> None:
        self.metric_names = tuple(m for _p, m in self.metrics)
        self.pick = operator.itemgetter(*[p for p, _m in self.metrics]) if self.metrics else (lambda cells: ())

    @property
    def fixed(self) -> int:
        return len(self.names) - 1  # tokens before Command


def _layout(tokens: list[str]) -> tuple[Layout, int] | None:
    """Header row tokens → layout and the number of time tokens the header row itself has."""
    first_id = next((i for i, t in enumerate(tokens) if t in ID_NAMES), None)
    if first_id is None or tokens[-1] != "Command":
        return None
    names = tokens[first_id:]
    pos = {n: i for i, n in enumerate(names)}
    uid = pos.get("UID", pos.get("USER", -1))
    pid = pos.get("PID", pos.get("TGID", -1))
    tid = pos.get("TID", -1) if "TGID" in pos else -1
    if pid < 0:
        return None
    metrics = [(i, COLUMNS[n]) for i, n in enumerate(names) if n in COLUMNS]
    return Layout(names, uid, pid, tid, metrics, tokens[:first_id] == ["#", "Time"]), first_id


class _State:
    def __init__(self, ctx: ParseContext, acct: Accounting) -> None:
        self.ctx, self.acct = ctx, acct
        self.header: ss.Header | None = None
        self.layout: Layout | None = None
        self.block_start: dt.datetime | None = None
        self.roller: DayRoller | None = None
        self.last_tgid = ""
        self.aware = False
        self.naive = False
        self.forms: set[str] = set()
        self.entities: dict[str, tuple[str, dict[str, Any]]] = {}
        self.layouts: dict[tuple, tuple[Layout, int]] = {}
        self.wide: dict[tuple[str, ...], dict[str, list]] = {}  # metric names -> buffered raw rows
        self.buffered = 0
        self.frames: list[pl.DataFrame] = []
        self.stamp_cache: tuple[str, dt.datetime | None] = ("", None)
        self.run: list[Any] = []  # a run of consecutive intentional skips: [code, first, text, message, n]
        self.run_last = 0

    def skip_run(self, code: str, number: int, text: str, message: str) -> None:
        """Consecutive summary/since-boot rows become one diagnostic with a count."""
        if self.run and self.run[0] == code and self.run_last == number - 1:
            self.run[4] += 1
        else:
            self.end_run()
            self.run = [code, number, text, message, 1]
        self.run_last = number

    def end_run(self) -> None:
        if self.run:
            code, first, text, message, n = self.run
            self.acct.skip(code, first, text, message, n=n)
            self.run = []

    def time_of(self, text: str) -> dt.datetime | None:
        if text == self.stamp_cache[0]:
            return self.stamp_cache[1]
        stamp = ss.parse_stamp(text)
        when: dt.datetime | None = None
        if stamp is not None:
            if stamp.when is not None:
                if stamp.aware:
                    self.aware = True
                    self.forms.add("epoch" if text.isdigit() else "ISO 8601")
                    when = stamp.when.astimezone(dt.timezone.utc)
                else:
                    self.naive = True
                    when = stamp.when
            elif stamp.clock is not None:
                self.naive = True
                when = self._roller().at(stamp.clock) if self._roller() else None
                self.forms.add("12-hour clock" if re.search(r"[AaPp]\.?[Mm]|午|下午|上午", text) else
                               "CJK clock" if re.search(r"[时時]", text) else "24-hour clock")
        self.stamp_cache = (text, when)
        return when

    def _roller(self) -> DayRoller | None:
        if self.roller is None:
            date = self.header.date.date if self.header and self.header.date else self.ctx.reference_date
            if date is None and self.ctx.file_mtime is not None:
                date = self.ctx.file_mtime.date()
                self.acct.note("date_inferred", "no 'Linux' header with a date: clock times are dated with "
                               "the file's modification date", level="warning")
            if date is None:
                return None
            self.roller = DayRoller(date)
        return self.roller

    def add_row(self, line: int, ts: dt.datetime, entity: str, lay: Layout, cells: list[str]) -> None:
        names = lay.metric_names
        buf = self.wide.get(names)
        if buf is None:
            buf = self.wide[names] = {"line": [], "ts": [], "entity": [], "cells": []}
        buf["line"].append(line)
        buf["ts"].append(ts)
        buf["entity"].append(entity)
        buf["cells"].append(lay.pick(cells) if len(names) > 1 else (lay.pick(cells),) if names else ())
        self.buffered += 1

    def flush(self) -> None:
        """Buffered rows → long frames, converting cells in polars: decimal commas, ``-`` and
        negative sentinels (``-1.00``) become missing and are dropped."""
        for names, buf in self.wide.items():
            if not buf["line"]:
                continue
            ts = buf["ts"]
            aware = any(t.tzinfo is not None for t in ts)
            if aware:
                ts = [t.astimezone(dt.timezone.utc).replace(tzinfo=None) if t.tzinfo else t for t in ts]
            cols = [f"c{i}" for i in range(len(names))]
            cells = pl.DataFrame(buf["cells"], schema=[(c, pl.Utf8) for c in cols], orient="row")
            values = cells.select(pl.col(c).str.replace(",", ".", literal=True).cast(pl.Float64, strict=False)
                                  .alias(name) for c, name in zip(cols, names, strict=True))
            values = values.select(pl.when(pl.col(n) >= 0).then(pl.col(n)).alias(n) for n in names) \
                if names else values
            wide = pl.DataFrame({"line": pl.Series(buf["line"], dtype=pl.Int64),
                                 "ts": pl.Series(ts, dtype=pl.Datetime("us")),
                                 "entity": pl.Series(buf["entity"], dtype=pl.Utf8)}).hstack(values)
            if aware:
                wide = wide.with_columns(pl.col("ts").dt.replace_time_zone("UTC"))
            long = wide.unpivot(on=list(names), index=["line", "ts", "entity"], variable_name="metric",
                                value_name="value").drop_nulls("value") if names else None
            if long is not None and long.height:
                self.frames.append(long.sort("line", maintain_order=True))
            for values_list in buf.values():
                values_list.clear()
        self.buffered = 0


def parse(stream: BinaryIO, *, ctx: ParseContext) -> ParseResult:
    acct = Accounting(ctx.file)
    st = _State(ctx, acct)
    for number, text in accounted_lines(stream, acct):
        _line(st, number, text)
        if st.run and st.run_last != number:
            st.end_run()
        if st.buffered >= FLUSH_ROWS:
            st.flush()
    st.end_run()
    st.flush()
    return _result(st)


def _line(st: _State, number: int, text: str) -> None:
    acct = st.acct
    stripped = text.strip()
    if not stripped:
        acct.parsed()
        return
    if len(text) > 65536:
        acct.skip("unparsed_line", number, text, f"{acct.file}:{number}: expected a pidstat row, saw a "
                  f"{len(text)}-character line")
        return
    if ss.is_summary_label(text):
        st.skip_run("summary_row", number, text, "Average (summary) rows, not interval samples")
        return
    if stripped.startswith("Linux ") or ss.HEADER_RE.match(text):
        header = ss.parse_header(text)
        if header is None:
            acct.skip("unparsed_line", number, text, f"{acct.file}:{number}: expected 'Linux <kernel> (<host>) "
                      "<date> _<arch>_ (<n> CPU)'")
            return
        st.header, st.roller, st.layout = header, None, None
        acct.parsed()
        return
    tokens = stripped.split()
    if tokens[-1] == "Command" and ("PID" in tokens or "TGID" in tokens):
        key = tuple(tokens[1:]) if tokens[0][:1].isdigit() else tuple(tokens)
        found = st.layouts.get(key) or _layout(tokens)
        if found is not None and found[1] <= 1:
            st.layouts[key] = found
        if found is None:
            acct.skip("unparsed_line", number, text, f"{acct.file}:{number}: expected a pidstat header row")
            return
        st.layout, n_time = found
        st.block_start = st.time_of(" ".join(tokens[:n_time])) if n_time and not st.layout.epoch_h else None
        acct.parsed()
        return
    lay = st.layout
    if lay is None:
        acct.skip("unparsed_line", number, text,
                  f"{acct.file}:{number}: expected a pidstat header row (... PID ... Command) before data rows")
        return
    n_time = 2 if len(tokens) > 1 and (tokens[1] in _MERIDIEM or tokens[0] in _MERIDIEM or
                                       (tokens[1].isalpha() and tokens[1].isupper() and 2 <= len(tokens[1]) <= 5
                                        and not tokens[1].startswith("|"))) else 1
    parts = stripped.split(None, n_time + lay.fixed)
    if len(parts) < n_time + lay.fixed + 1:
        acct.skip("unparsed_line", number, text, f"{acct.file}:{number}: expected {lay.fixed + 1} columns "
                  f"after the time ({' '.join(lay.names)}), saw {len(parts) - n_time}")
        return
    if n_time == 2 and tokens[1].isalpha() and tokens[1] not in _MERIDIEM:
        st.forms.add(f"clock + zone name {tokens[1][:5]} (read as local wall clock)")
    ts = st.time_of(" ".join(parts[:n_time]))
    if ts is None:
        acct.skip("bad_timestamp", number, text, f"{acct.file}:{number}: expected a time such as 05:28:11, "
                  f"05:28:11 PM or epoch seconds, saw {' '.join(parts[:n_time])!r}")
        return
    cells = parts[n_time:]
    if st.block_start is not None and ts == st.block_start:
        st.skip_run("since_boot_sample", number, text,
                    "row time equals its header's: pidstat without an interval reports averages since boot")
        return
    entity = _entity(st, lay, cells)
    if entity is None:
        acct.skip("unparsed_line", number, text, f"{acct.file}:{number}: expected a numeric PID/TGID/TID")
        return
    st.add_row(number, ts, entity, lay, cells)
    acct.parsed()


def _entity(st: _State, lay: Layout, cells: list[str]) -> str | None:
    command = cells[-1].rstrip()
    uid = cells[lay.uid_pos] if lay.uid_pos >= 0 else None
    if lay.tid_pos >= 0:
        tgid, tid = cells[lay.pid_pos], cells[lay.tid_pos]
        if tid == "-" and tgid.isdigit():
            st.last_tgid = tgid
            entity = f"pid:{tgid}"
        elif tgid == "-" and tid.isdigit() and st.last_tgid:
            entity = f"tid:{st.last_tgid}/{tid}"
            command = command[3:] if command.startswith("|__") else command
        else:
            return None
    else:
        pid = cells[lay.pid_pos]
        if not pid.isdigit():
            return None
        entity = f"pid:{pid}"
    if entity not in st.entities:
        st.entities[entity] = (command, {"command": command, "uid" if (uid or "").isdigit() else "user": uid})
    return entity


def _result(st: _State) -> ParseResult:
    frames = st.frames
    if frames:
        if st.aware:
            frames = [f.with_columns(pl.col("ts").dt.replace_time_zone("UTC")) if f.schema["ts"].time_zone is None  # type: ignore[union-attr]
                      else f for f in frames]
        metrics = pl.concat(frames)
    else:
        metrics = pl.DataFrame(schema={"line": pl.Int64, "ts": pl.Datetime("us"), "entity": pl.Utf8,
                                       "metric": pl.Utf8, "value": pl.Float64})
    tz = metrics.schema["ts"].time_zone  # type: ignore[union-attr]
    metrics = metrics.select(pl.col("ts").cast(pl.Datetime("ns", tz)), "entity", "metric", "value", "line")
    ents = sorted(st.entities.items())
    entities = pl.DataFrame({"entity": [e for e, _ in ents], "label": [v[0] for _, v in ents],
                             "attrs": [attrs_json(v[1]) for _, v in ents]},
                            schema={"entity": pl.Utf8, "label": pl.Utf8, "attrs": pl.Utf8})
    result = ParseResult(metrics=metrics, events=pl.DataFrame(), accounting=st.acct, entities=entities,
                         host=st.header.host if st.header else "")
    if metrics.height == 0 and st.acct.skipped.get("since_boot_sample"):
        result.hints["since_boot_only"] = True  # one report without an interval: nothing to plot
    if st.aware and not st.naive:
        result.tz_reason, result.tz_name = "epoch/ISO-8601 times carry their zone", "UTC"
    elif st.aware:
        st.acct.note("tz_mixed", "some times are epoch/ISO and some local clock times", level="warning")
    lay = st.layout
    flags = []
    if lay is not None:
        flags.append("-h" if lay.epoch_h else "")
        flags.append("-t" if lay.tid_pos >= 0 else "")
        flags.append("USER" if "USER" in lay.names else "UID" if "UID" in lay.names else "no UID")
    result.variant = "pidstat " + " ".join(f for f in flags if f) + (
        "; times: " + ", ".join(sorted(st.forms)) if st.forms else "")
    return result
