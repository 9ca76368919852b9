"""Linux ``/proc/PID/status`` (and ``/proc/PID/task/TID/status``) dumps: one file, several
concatenated (``cat``, ``head``/``tail`` with ``==> /proc/123/status <==`` headers), ``grep -H``
output (``/proc/123/status:Threads:\\t5``), and collector loops that print a time line
(``date``, ``date -Is``, ``# <time>``) before each dump.

Every ``Key:\\tvalue`` line counts as parsed; these become samples for ``pid:<Tgid>`` (the
process, also when the record is one of its threads' task status):
``Threads`` → ``proc.threads`` (authoritative: the kernel's count), ``VmRSS`` → ``proc.rss_kb``,
``VmSize`` → ``proc.vsz_kb``, once per process and snapshot. ``voluntary_ctxt_switches`` and
``nonvoluntary_ctxt_switches`` are cumulative: they are kept as entity attributes and, when the
same task appears in two dated snapshots, turned into ``proc.cswch_per_s``/``proc.nvcswch_per_s``
over that interval (stamped at its end). ``Name`` labels the entity (a task's own comm for
``tid:<Tgid>/<Pid>``).

The time of a snapshot is the time line before it; without one the file's mtime (only for the
last snapshot, with ``time_from_mtime``), else the samples go to ``undated_metrics``.
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

NAME = "proc_status"
DESCRIPTION = "Linux /proc/PID/status dumps (cat, head/tail ==> headers, grep -H, timed loops)"
SAMPLES = "threads/proc_status"
NAME_HINTS = ("*status*",)

KEY_RE = re.compile(r"^(?P<key>[A-Za-z_][A-Za-z0-9_()]*):[\t ]*(?P<value>.*)$")
HEAD_RE = re.compile(r"^==> (?P<path>.*?) <==\s*$")
PATH_RE = re.compile(r"/proc/(?P<pid>\d+)(?:/task/(?P<tid>\d+))?/status$")
GREP_RE = re.compile(r"^(?P<path>\S*/proc/\d+(?:/task/\d+)?/status)[:-](?P<key>[A-Za-z_][A-Za-z0-9_()]*):"
                     r"[\t ]*(?P<value>.*)$")
SIGNATURE_KEYS = frozenset({"Name", "Umask", "State", "Tgid", "Ngid", "Pid", "PPid", "TracerPid", "Uid",
                            "Gid", "FDSize", "Groups", "VmPeak", "VmSize", "VmRSS", "Threads", "SigQ",
                            "voluntary_ctxt_switches", "nonvoluntary_ctxt_switches", "Cpus_allowed"})
KB_RE = re.compile(r"^\s*(\d+)\s*kB\s*$")


def sniff(head: bytes) -> float:
    if is_binary(head):
        return 0.0
    lines = [ln for ln in head_lines(head, 80) if ln.strip()]
    if not lines:
        return 0.0
    keys = set()
    shaped = 0
    for ln in lines:
        m = GREP_RE.match(ln) or KEY_RE.match(ln)
        if m:
            shaped += 1
            keys.add(m.group("key"))
        elif HEAD_RE.match(ln):
            shaped += 1
    known = len(keys & SIGNATURE_KEYS)
    if shaped < len(lines) * 0.7:
        return 0.0
    if known >= 4 and ("Pid" in keys or "Tgid" in keys or "Threads" in keys):
        return 0.9
    if any(GREP_RE.match(ln) for ln in lines[:5]) and known >= 1:
        return 0.85
    return 0.0


@dataclass
class Record:
    line: int
    path_pid: str | None = None
    path_tid: str | None = None
    values: dict[str, tuple[str, int]] = field(default_factory=dict)


class _State:
    def __init__(self, ctx: ParseContext) -> None:
        self.ctx = ctx
        self.acct = Accounting(ctx.file)
        self.metrics = snap.MetricColumns()
        self.undated = snap.UndatedRows()
        self.entities: dict[str, tuple[str, str]] = {}
        self.records: list[Record] = []
        self.by_path: dict[str, Record] = {}  # grep -H form: lines of one file are not contiguous
        self.stamp: dt.datetime | None = None
        self.snapshot_line = 1
        self.snapshots = 0
        self.dated = 0
        self.mtime_used = False
        self.last_switches: dict[str, tuple[dt.datetime, float, float]] = {}

    def close_snapshot(self, final: bool) -> None:
        if not self.records:
            return
        stamp = self.stamp
        if stamp is None and final:
            stamp = snap.mtime_local(self.ctx)
            if stamp is not None:
                self.mtime_used = True
                snap.note_mtime(self.acct, self.snapshot_line, "this /proc status dump")
        if stamp is None:
            snap.note_undated(self.acct, self.snapshot_line, "this /proc status dump")
        self.snapshots += 1
        seen: set[tuple[str, str]] = set()
        for rec in self.records:
            for entity, metric, value, line in self._samples(rec, stamp, seen):
                if stamp is None:
                    self.undated.add(self.snapshots, None, entity, metric, value, line)
                else:
                    self.metrics.add(ts=stamp, entity=entity, metric=metric, value=value, line=line)
        if stamp is not None:
            self.dated += 1
        self.records = []
        self.by_path = {}

    def _samples(self, rec: Record, stamp: dt.datetime | None,
                 seen: set[tuple[str, str]]) -> list[tuple[str, str, float, int]]:
        get = rec.values.get
        tgid = _int(get("Tgid")) or rec.path_pid or _int(get("Pid"))
        pid = _int(get("Pid")) or rec.path_tid or rec.path_pid
        if tgid is None:
            return []
        is_task = (rec.path_tid is not None) or (pid is not None and pid != tgid)
        name = (get("Name") or ("", 0))[0]
        vol, invol = (_float(get("voluntary_ctxt_switches")), _float(get("nonvoluntary_ctxt_switches")))
        attrs = {"state": (get("State") or ("", 0))[0], "ppid": _int(get("PPid")),
                 "uid": (get("Uid") or ("", 0))[0].split("\t")[0].strip() or None,
                 "voluntary_ctxt_switches": vol, "nonvoluntary_ctxt_switches": invol}
        out: list[tuple[str, str, float, int]] = []
        task_entity = f"tid:{tgid}/{pid}" if is_task else f"pid:{tgid}"
        self.entities[task_entity] = (name, attrs_json(attrs if not is_task else
                                                       {k: attrs[k] for k in ("state", "voluntary_ctxt_switches",
                                                                              "nonvoluntary_ctxt_switches")}))
        proc_entity = f"pid:{tgid}"
        for key, metric, conv in (("Threads", "proc.threads", _float), ("VmRSS", "proc.rss_kb", _kb),
                                  ("VmSize", "proc.vsz_kb", _kb)):
            item = get(key)
            value = conv(item)
            if value is not None and item is not None and (proc_entity, metric) not in seen:
                seen.add((proc_entity, metric))
                out.append((proc_entity, metric, value, item[1]))
        if stamp is not None and vol is not None and invol is not None:
            previous = self.last_switches.get(task_entity)
            self.last_switches[task_entity] = (stamp, vol, invol)
            if previous is not None:
                seconds = (stamp - previous[0]).total_seconds()
                d_vol, d_invol = vol - previous[1], invol - previous[2]
                if seconds > 0 and d_vol >= 0 and d_invol >= 0:  # negative: a new task reused the id
                    line = (get("voluntary_ctxt_switches") or ("", rec.line))[1]
                    out.append((task_entity, "proc.cswch_per_s", d_vol / seconds, line))
                    out.append((task_entity, "proc.nvcswch_per_s", d_invol / seconds, line))
        return out


def _int(item: tuple[str, int] | str | None) -> str | None:
    text = item[0] if isinstance(item, tuple) else item
    text = (text or "").strip()
    return text if text.isdigit() else None


def _float(item: tuple[str, int] | None) -> float | None:
    return snap.number(item[0].strip()) if item else None


def _kb(item: tuple[str, int] | None) -> float | None:
    if not item:
        return None
    m = KB_RE.match(item[0])
    return float(m.group(1)) if m else None


def parse(stream: BinaryIO, *, ctx: ParseContext) -> ParseResult:
    st = _State(ctx)
    acct = st.acct
    current: Record | None = None
    for number, text in accounted_lines(stream, acct):
        if not text.strip():
            acct.parsed()
            continue
        grep = GREP_RE.match(text)
        if grep:
            path = grep.group("path")
            rec = st.by_path.get(path)
            if rec is None:
                rec = _record_for(number, path)
                st.by_path[path] = rec
                st.records.append(rec)
            rec.values.setdefault(grep.group("key"), (grep.group("value"), number))
            current = None
            acct.parsed()
            continue
        m = KEY_RE.match(text)
        if m and not (m.group("key").isdigit()):
            key = m.group("key")
            if current is None or (key == "Name" and "Name" in current.values):
                current = Record(number)
                st.records.append(current)
            if key in current.values and key != "Name":
                current = Record(number)  # a second dump without a Name line first (cut by head)
                st.records.append(current)
            current.values[key] = (m.group("value"), number)
            acct.parsed()
            continue
        head = HEAD_RE.match(text)
        if head:
            current = _record_for(number, head.group("path"))
            st.records.append(current)
            acct.parsed()
            continue
        if snap.is_prompt(text):
            acct.parsed()
            continue
        stamp = snap.time_line(text, ctx)
        if stamp is not None:
            st.close_snapshot(final=False)
            st.stamp, st.snapshot_line, current = stamp, number + 1, None
            acct.parsed()
            continue
        acct.skip("unparsed_line", number, text, f"{ctx.file}:{number}: expected a 'Key:<TAB>value' line "
                  "of /proc/PID/status, a '==> /proc/PID/status <==' header or a time line")
    st.close_snapshot(final=True)
    ents = entity_builder()
    for entity, (label, attrs) in st.entities.items():
        ents.add(entity=entity, label=label, attrs=attrs)
    when = "time from file mtime" if st.mtime_used else "time lines" if st.dated else "no time"
    result = ParseResult(metrics=st.metrics.build(), events=event_builder().build(), accounting=acct,
                         variant=f"{st.snapshots} snapshot(s), {when}", entities=ents.build())
    if st.undated.rows:
        result.tables[snap.UNDATED_TABLE] = st.undated.frame()
    return result


def _record_for(number: int, path: str) -> Record:
    p = PATH_RE.search(path)
    return Record(number, p.group("pid") if p else None, p.group("tid") if p else None)
