"""procps ``ps`` listings, thread views first: ``ps -eLf``/``-eLF``, ``ps -T -p PID``,
``ps -L -o ...``/``ps -eLo ...`` with any column list, and process listings that carry
``NLWP`` (``ps -eo pid,nlwp,...``) or just ``%CPU``/``RSS`` (``ps aux``).

Columns are mapped by header name. Values are whitespace-separated except the free-text
columns (``CMD``/``COMMAND``, ``STARTED``): one free-text column absorbs the surplus tokens; with
two (``comm`` and ``args``), the row is cut at the later column's header start first.

Output per snapshot:
- ``proc.threads`` for ``pid:<PID>``: ``NLWP`` when the listing has it (the kernel's count,
  right even for a filtered listing such as ``ps -eLf | grep app``); else the number of distinct
  thread rows (``LWP``/``SPID``/``TID``) of that PID. NLWP repeats on every thread row: it is
  never summed; ps reads the threads one by one, so when NLWP changes within one listing (threads
  created meanwhile, seen in real captures) the last row's value is the latest. Row/NLWP
  disagreements are noted (``thread_rows_mismatch``).
- ``proc.cpu_pct`` from ``%CPU`` (or ``C``) per thread ``tid:<PID>/<LWP>`` on thread rows, per
  ``pid:<PID>`` otherwise. ps's %CPU is CPU time over the task's lifetime, not an interval rate.
- ``proc.rss_kb``, ``proc.vsz_kb``, ``proc.mem_pct`` once per PID; the command → ``entities``.

ps prints no time: a snapshot takes the time line printed before it (``date``, ``date -Is``,
``# <time>``, ``date +%s``); without one the last snapshot takes the file's mtime
(``time_from_mtime``); otherwise its samples go to the ``undated_metrics`` table.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import BinaryIO

from parsers import _snapshot as snap
from parsers.base import (
    Accounting,
    ParseContext,
    ParseResult,
    accounted_lines,
    attrs_json,
    entity_builder,
    event_builder,
)
from parsers.lines import head_lines, is_binary

NAME = "ps_threads"
DESCRIPTION = "procps ps listings: ps -eLf, ps -T -p, ps -L -o/-eLo ..., ps -eo with NLWP, ps aux"
SAMPLES = "threads/ps"
NAME_HINTS = ("ps*", "*ps_*", "*threads*")

THREAD_COLS = ("LWP", "SPID", "TID")
TEXT_COLS = ("CMD", "COMMAND", "ARGS", "STARTED")
KNOWN_COLS = frozenset((
    "PID", "PPID", "PGID", "PGRP", "SID", "SESS", "TGID", "TPGID", "LWP", "SPID", "TID", "NLWP", "THCNT",
    "UID", "USER", "RUSER", "EUSER", "RUID", "EUID", "GID", "GROUP", "RGROUP", "%CPU", "C", "CP",
    "%MEM", "VSZ", "VSIZE", "RSS", "RSZ", "SZ", "SIZE", "DRS", "TRS", "STAT", "S", "STIME", "START",
    "STARTED", "TIME", "ELAPSED", "TTY", "TT", "CMD", "COMMAND", "ARGS", "PSR", "PRI", "PR", "NI",
    "CLS", "POL", "RTPRIO", "WCHAN", "ADDR", "F", "LABEL", "MAJFL", "MINFL", "CGROUP", "ENVIRONMENT",
    "NWCHAN", "SCH", "BLOCKED", "CAUGHT", "IGNORED", "PENDING", "LXC", "CPUID", "SLICE", "UNIT", "MACHINE",
    "ETIME", "ETIMES", "TIMES", "PSS", "USS", "SWAP", "OOM", "OOMADJ", "IPCNS", "MNTNS", "NETNS", "PIDNS",
))
ID_COLS = ("PID", "TGID")
ELISION_RE = re.compile(r"^\s*(?:\[\s*(?:\.{3}|…|snip|truncated)\s*\]|\.{3}|…)\s*$", re.I)
INT_RE = re.compile(r"^\d+$")


def _header(text: str) -> list[str] | None:
    """The column names if ``text`` is a ps header line."""
    if "PID" not in text:  # cheap pre-check: every data row passes through here
        return None
    tokens = text.split()
    if len(tokens) < 2 or not any(t in ID_COLS for t in tokens):
        return None
    if "TIME+" in tokens or "VIRT" in tokens:  # top's task header
        return None
    known = sum(1 for t in tokens if t in KNOWN_COLS)
    if tokens[0] not in KNOWN_COLS or known < max(2, len(tokens) * 0.7):
        return None
    return tokens


def sniff(head: bytes) -> float:
    if is_binary(head):
        return 0.0
    lines = [ln for ln in head_lines(head, 60) if ln.strip()]
    for i, text in enumerate(lines[:8]):
        cols = _header(text)
        if cols is None:
            continue
        rows = lines[i + 1:i + 6]
        good = sum(1 for r in rows if _row_shape_ok(r.split(), cols))
        if not rows or good < len(rows) * 0.6:
            return 0.0
        threaded = any(c in THREAD_COLS or c == "NLWP" for c in cols)
        return 0.9 if threaded else 0.7
    return 0.0


def _row_shape_ok(tokens: list[str], cols: list[str]) -> bool:
    if len(tokens) < len(cols) - 1:
        return False
    pid_at = cols.index("PID") if "PID" in cols else -1
    return pid_at < 0 or pid_at >= len(tokens) or INT_RE.match(tokens[pid_at]) is not None


@dataclass
class Table:
    cols: list[str]
    spans: list[tuple[int, int, str]]
    text_cols: list[int]

    @classmethod
    def from_header(cls, text: str, cols: list[str]) -> Table:
        return cls(cols, snap.spans(text), [i for i, c in enumerate(cols) if c.split("#")[0] in TEXT_COLS])

    def split(self, text: str) -> list[str] | None:
        """Row → one value per column, or None when the row does not fit the header."""
        n = len(self.cols)
        if len(self.text_cols) <= 1:
            return _split_segment(text.split(), n, self.text_cols[0] if self.text_cols else None)
        # several free-text columns: cut the row at the header start of each later one
        cut_cols = self.text_cols[1:]
        cuts = [self.spans[i][0] for i in cut_cols]
        bounds = [0, *cuts, None]
        values: list[str] = []
        for k in range(len(bounds) - 1):
            seg = _slice_display(text, bounds[k], bounds[k + 1])
            first_col = 0 if k == 0 else cut_cols[k - 1]
            last_col = (cut_cols[k] if k < len(cut_cols) else n)
            width = last_col - first_col
            text_in = [i - first_col for i in self.text_cols if first_col <= i < last_col]
            part = _split_segment(seg.split(), width, text_in[0] if len(text_in) == 1 else None)
            if part is None:
                return None
            values.extend(part)
        return values


def _slice_display(text: str, start: int, end: int | None) -> str:
    out, col = [], 0
    for ch in text:
        if col >= start and (end is None or col < end):
            out.append(ch)
        col += snap.display_width(ch)
    return "".join(out)


def _split_segment(tokens: list[str], n: int, text_at: int | None) -> list[str] | None:
    if len(tokens) == n:
        return tokens
    if len(tokens) < n:
        # a free-text column cut away entirely (narrow terminal) or empty
        return tokens + [""] * (n - len(tokens)) if text_at == n - 1 and len(tokens) == n - 1 else None
    if text_at is None:
        return None
    tail = n - text_at - 1
    end = len(tokens) - tail
    return tokens[:text_at] + [" ".join(tokens[text_at:end])] + tokens[end:]


@dataclass
class Snapshot:
    start_line: int
    stamp: dt.datetime | None
    table: Table
    rows: list[tuple[int, dict[str, str]]] = field(default_factory=list)


class _State:
    def __init__(self, ctx: ParseContext) -> None:
        self.ctx = ctx
        self.acct = Accounting(ctx.file)
        self.metrics = snap.MetricColumns()
        self.entities: dict[str, tuple[str, str]] = {}
        self.undated = snap.UndatedRows()
        self.snapshots = 0
        self.dated = 0
        self.mtime_used = False
        self.mismatch_noted = False
        self.full_format = False
        self._seen: set[tuple[str | None, ...]] = set()

    def emit(self, shot: Snapshot, stamp: dt.datetime | None) -> None:
        self.snapshots += 1
        cols = shot.table.cols
        # -f (UID ... STIME ... CMD) and BSD u (USER ... START ... COMMAND) print the command line
        self.full_format = ("STIME" in cols and "UID" in cols) or ("START" in cols and "USER" in cols)
        thread_col = next((c for c in THREAD_COLS if c in cols), None)
        cpu_col = "%CPU" if "%CPU" in cols else "C" if "C" in cols else None
        rows_per_pid: dict[str, set[str]] = {}
        first_row: dict[str, tuple[int, dict[str, str]]] = {}
        nlwp_seen: dict[str, list[float]] = {}
        out: list[tuple[str, str, float, int]] = []
        for number, row in shot.rows:
            pid = row.get("PID") or row.get("TGID") or ""
            if not INT_RE.match(pid):
                continue
            first_row.setdefault(pid, (number, row))
            nlwp = snap.number(row.get("NLWP") or row.get("THCNT"))
            if nlwp is not None:
                nlwp_seen.setdefault(pid, []).append(nlwp)
            tid = row.get(thread_col, "") if thread_col else ""
            if thread_col and INT_RE.match(tid):
                rows_per_pid.setdefault(pid, set()).add(tid)
            cpu = snap.number(row.get(cpu_col)) if cpu_col else None
            if cpu is not None:
                entity = f"tid:{pid}/{tid}" if thread_col and INT_RE.match(tid) else f"pid:{pid}"
                out.append((entity, "proc.cpu_pct", cpu, number))
            self._entities(pid, tid if thread_col else "", row)
        for pid, (number, row) in first_row.items():
            readings = nlwp_seen.get(pid, [])
            counted = len(rows_per_pid.get(pid, ()))
            if readings:
                # ps reads threads one after another: the last row's NLWP is the latest count
                nlwp = readings[-1]
                out.append((f"pid:{pid}", "proc.threads", nlwp, number))
                if (counted and counted != nlwp or len(set(readings)) > 1) and not self.mismatch_noted:
                    self.mismatch_noted = True
                    self.acct.note("thread_rows_mismatch", f"pid {pid}: NLWP read {sorted(set(readings))} "
                                   f"with {counted} thread rows listed (a filtered listing, or threads came "
                                   "and went while ps read them); the last NLWP is used", line=number)
            elif counted:
                out.append((f"pid:{pid}", "proc.threads", float(counted), number))
            for col, metric, conv in (("RSS", "proc.rss_kb", snap.kib), ("RSZ", "proc.rss_kb", snap.kib),
                                      ("VSZ", "proc.vsz_kb", snap.kib), ("%MEM", "proc.mem_pct", snap.number)):
                value = conv(row.get(col))
                if value is not None:
                    out.append((f"pid:{pid}", metric, value, number))
        if stamp is None:
            snap.note_undated(self.acct, shot.start_line, "this ps snapshot")
            for entity, metric, value, number in out:
                self.undated.add(self.snapshots, None, entity, metric, value, number)
            return
        self.dated += 1
        for entity, metric, value, number in out:
            self.metrics.add(ts=stamp, entity=entity, metric=metric, value=value, line=number)

    def _entities(self, pid: str, tid: str, row: dict[str, str]) -> None:
        comm, args = _command(row, self.full_format)
        user = row.get("USER") or row.get("UID") or row.get("RUSER") or ""
        key = (pid, tid, comm, args, user, row.get("PPID"))
        if key in self._seen:  # unchanged since the last snapshot: skip the JSON work
            return
        self._seen.add(key)
        label = comm or (_basename(args) if args else "")
        if tid and tid != pid:
            self.entities[f"tid:{pid}/{tid}"] = (label, attrs_json({"comm": comm, "user": user}))
            return
        if tid:
            self.entities[f"tid:{pid}/{tid}"] = (label, attrs_json({"comm": comm}))
        self.entities[f"pid:{pid}"] = (label, attrs_json({"comm": comm, "cmdline": args, "user": user,
                                                          "ppid": row.get("PPID")}))


def _command(row: dict[str, str], full_format: bool) -> tuple[str, str]:
    """(comm, args). With two COMMAND columns the first is comm. A lone CMD/COMMAND is the
    command line in the full (-f) and BSD user (u) formats, or when it is longer than a comm can
    be (15 characters) or starts with a path; otherwise it is the comm (``ps -T``'s CMD, ``-o comm``),
    which may contain spaces."""
    comm = row.get("COMMAND", "") or row.get("CMD", "")
    args = row.get("COMMAND#2", "") or row.get("ARGS", "") or ""
    if not args and comm and not comm.startswith("[") and (
            full_format or len(comm) > 15 or "/" in comm.split(" ", 1)[0]):
        args, comm = comm, ""
    return comm, args


def _basename(args: str) -> str:
    first = args.split(" ", 1)[0]
    return first.rsplit("/", 1)[-1] or first


def _unique_names(cols: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for c in cols:
        seen[c] = seen.get(c, 0) + 1
        out.append(c if seen[c] == 1 else f"{c}#{seen[c]}")
    return out


def parse(stream: BinaryIO, *, ctx: ParseContext) -> ParseResult:
    st = _State(ctx)
    acct = st.acct
    current: Snapshot | None = None
    pending_stamp: dt.datetime | None = None  # a time line not yet used by a header
    elided = 0
    for number, text in accounted_lines(stream, acct):
        if not text.strip():
            acct.parsed()
            continue
        cols = _header(text)
        if cols is not None:
            if current is not None:
                st.emit(current, current.stamp)
            current = Snapshot(number, pending_stamp, Table.from_header(text, _unique_names(cols)))
            pending_stamp = None
            acct.parsed()
            continue
        if current is not None:
            values = current.table.split(text)
            if values is not None and INT_RE.match(values[current.table.cols.index("PID")]
                                                    if "PID" in current.table.cols else "0"):
                current.rows.append((number, dict(zip(current.table.cols, values, strict=False))))
                acct.parsed()
                continue
        stamp = snap.time_line(text, ctx)
        if stamp is not None:
            pending_stamp = stamp
            if current is not None:  # a time line closes the snapshot before it
                st.emit(current, current.stamp)
                current = None
            acct.parsed()
            continue
        if snap.is_prompt(text):
            acct.parsed()
            continue
        if ELISION_RE.match(text):
            elided += 1
            acct.parsed()
            continue
        if text.lstrip().startswith("#"):
            acct.skip("comment", number, text, "comment line")
            continue
        expected = (f"a row with {len(current.table.cols)} columns under the header "
                    f"'{' '.join(current.table.cols)}'" if current else "a ps header such as "
                    "'UID PID PPID LWP C NLWP STIME TTY TIME CMD'")
        acct.skip("unparsed_line", number, text, f"{ctx.file}:{number}: expected {expected}")
    if current is not None:
        stamp = current.stamp
        if stamp is None:
            stamp = snap.mtime_local(ctx)
            if stamp is not None:
                snap.note_mtime(acct, current.start_line, "this ps snapshot")
                st.mtime_used = True
        st.emit(current, stamp)
    if elided:
        acct.note("elided_rows", f"{elided} elision line(s) such as '[...]': rows were cut from this "
                  "listing, thread counts come from NLWP where present", level="info")
    ents = entity_builder()
    for entity, (label, attrs) in st.entities.items():
        ents.add(entity=entity, label=label, attrs=attrs)
    result = ParseResult(metrics=st.metrics.build(), events=event_builder().build(), accounting=acct,
                         variant=_variant(st), entities=ents.build())
    if st.undated.rows:
        result.tables[snap.UNDATED_TABLE] = st.undated.frame()
    return result


def _variant(st: _State) -> str:
    when = "time from file mtime" if st.mtime_used else "time lines" if st.dated else "no time"
    return f"{st.snapshots} snapshot(s), {when}"
