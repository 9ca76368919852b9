"""procps ``top`` batch output: ``top -b`` and ``top -H -b`` (threads), several iterations per
file, any locale procps translates (German ``%CPU(s):``/``ZEIT+``, French ``ut``/``UTIL.``,
Chinese ``进程号`` with a blank ``S`` header, decimal commas), procps 3.2's
``Cpu(s):  0.3%us,`` and ``Mem:  4147888k total`` header, and loops of ``top -b -n 1``.

Per iteration ("frame"):
- clock line ``top - 23:06:21 up ..., load average: a, b, c`` → time and ``cpu.load1`` (``cpu:all``).
  top prints no date: it comes from a time line printed before the frame (``date``), else the
  bundle's reference date, else the file's mtime (the last frame is placed at or before it), with a
  ``date_from_mtime`` diagnostic; without any of these the samples go to ``undated_metrics``.
  Midnight roll-over advances the date.
- ``Tasks:``/``Threads:`` line (any translation) → ``sys.tasks`` for ``host:tasks`` or, in -H
  mode, ``host:threads`` — the authoritative thread total: a -H listing shows thread rows whose
  process (TGID) is not printed, so rows are never counted into a per-process thread number.
- ``%Cpu(s):`` → ``cpu.user_pct`` (us), ``cpu.system_pct`` (sy), ``cpu.nice_pct`` (ni),
  ``cpu.idle_pct`` (id), ``cpu.busy_pct`` (100-id), ``cpu.iowait_pct`` (wa), ``cpu.steal_pct`` (st)
  for ``cpu:all`` (per-CPU lines ``%Cpu0 :`` for ``cpu:<n>``); fields are taken by their English
  labels or, when translated, by procps' fixed order us, sy, ni, id, wa, hi, si, st.
- task rows, columns by header name (translations included) or display position: ``%CPU`` →
  ``proc.cpu_pct``, ``%MEM`` → ``proc.mem_pct``, ``RES`` (KiB or ``21.4g``) → ``proc.rss_kb``,
  ``nTH`` → ``proc.threads`` for ``pid:<PID>``. In -H mode each row is a thread: ``tid:<TGID>/<TID>``
  when a TGID column is shown, else ``tid:?/<TID>`` (the process is unknown), CPU only.

The first frame of each top run is not an interval sample (procps ≤ 3.2: averages since boot;
procps-ng: a few clock ticks after start): its ``%Cpu`` lines are skipped as
``since_boot_sample`` and its task rows give memory but no CPU. A run starts at the file's
first frame, after a time line, or when top's own PID changes (``top -b -n 1`` in a loop).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import BinaryIO

import polars as pl

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
from parsers.timeutil import DayRoller, parse_clock

NAME = "top"
DESCRIPTION = "procps top batch output (top -b, top -H -b), any locale, procps 3.2 headers"
SAMPLES = "threads/top"
NAME_HINTS = ("top*", "*top.*", "*_top*")

CLOCK_RE = re.compile(r"^\s*top\s+-\s+(?P<clock>\d{1,2}:\d{2}:\d{2})(?:\s|$)(?P<rest>.*)$")
LOAD_RE = re.compile(r"(\d+[.,]\d+),?\s+(\d+[.,]\d+),?\s+(\d+[.,]\d+)\s*$")
COUNT_RE = re.compile(r"^\s*(?P<label>[^\d:：]+?)\s*[:：]\s*(?P<n>\d+)\s+\S")
PAIR_RE = re.compile(r"(\d+(?:[.,]\d+)?)\s*%?\s*([^\W\d_]+(?:-[^\W\d_]+)?)")
CPU_LABEL_RE = re.compile(r"cpu|проц|процессор", re.I)
PER_CPU_RE = re.compile(r"(\d+)\s*$")

THREADS_LABELS = frozenset({"Threads", "Hilos", "ნაკადები", "스레드", "Wątki", "Fire exec", "Trådar",
                            "Потоки", "Tuyến trình"})
CPU_FIELDS = {"us": "cpu.user_pct", "user": "cpu.user_pct", "sy": "cpu.system_pct", "system": "cpu.system_pct",
              "ni": "cpu.nice_pct", "nice": "cpu.nice_pct", "id": "cpu.idle_pct", "idle": "cpu.idle_pct",
              "wa": "cpu.iowait_pct", "iowait": "cpu.iowait_pct", "io-wait": "cpu.iowait_pct",
              "st": "cpu.steal_pct", "hi": "", "si": "", "irq": "", "softirq": ""}
CPU_ORDER = ("cpu.user_pct", "cpu.system_pct", "cpu.nice_pct", "cpu.idle_pct", "cpu.iowait_pct", "", "",
             "cpu.steal_pct")
# column header names: canonical → procps translations (from procps-ng's message catalogues)
ALIASES = {
    "PID": ("PID", "进程号", "进程"),
    "TGID": ("TGID",),
    "USER": ("USER", "UTIL.", "UŻYTK.", "USUARIO", "UTILIZ.", "ANVÄNDARE", "КОР.", "NG_DÙNG", "მომხმარებელი"),
    "PR": ("PR", "PRI"), "NI": ("NI",),
    "VIRT": ("VIRT", "WIRT"), "RES": ("RES", "REZ"), "SHR": ("SHR", "WSP", "M.PART", "DELT"),
    "S": ("S", "日", "კ"),
    "%CPU": ("%CPU",), "%MEM": ("%MEM", "%PAM", "%MIN"),
    "TIME+": ("TIME+", "ZEIT+", "TEMPS+", "CZAS+", "TEMPO+", "TIMP+", "TID+", "THGIAN+"),
    "TIME": ("TIME", "ZEIT", "TEMPS", "CZAS", "TEMPO", "TIMP", "GIỜ", "时间", "დრო"),
    "COMMAND": ("COMMAND", "BEFEHL", "COM.", "KOMENDA", "COMANDO", "COMANDA", "KOMMANDO", "LỆNH", "ბრძანება"),
    "nTH": ("nTH", "nWT", "aTR"), "PPID": ("PPID", "FPID"), "UID": ("UID", "AID"),
}
CANONICAL = {alias: name for name, aliases in ALIASES.items() for alias in aliases}


_HEADER_CACHE: dict[str, list[tuple[int, int, str]] | None] = {}


def _column_header(text: str) -> list[tuple[int, int, str]] | None:
    """The task header's columns with display spans (cached: it repeats in every frame)."""
    if text in _HEADER_CACHE:
        return _HEADER_CACHE[text]
    if len(_HEADER_CACHE) > 64:
        _HEADER_CACHE.clear()
    _HEADER_CACHE[text] = header = _find_header(text)
    return header


def _find_header(text: str) -> list[tuple[int, int, str]] | None:
    cols = snap.spans(text)
    names = [CANONICAL.get(c[2], "") for c in cols]
    if len(cols) < 4 or sum(1 for n in names if n) < 4 or ("%CPU" not in names and "PID" not in names):
        return None
    return [(s, e, CANONICAL.get(name, name)) for s, e, name in cols]


def sniff(head: bytes) -> float:
    if is_binary(head):
        return 0.0
    lines = head_lines(head, 80)
    clock = next((i for i, ln in enumerate(lines[:20]) if CLOCK_RE.match(ln)), None)
    if clock is None:
        return 0.0
    after = lines[clock + 1:clock + 12]
    has_count = any(COUNT_RE.match(ln) for ln in after[:2])
    has_header = any(_column_header(ln) for ln in after)
    if "load average" in lines[clock] or "up" in lines[clock]:
        return 0.95 if has_count and has_header else 0.8 if has_count or has_header else 0.5
    return 0.7 if has_count and has_header else 0.0


@dataclass
class Frame:
    line: int
    clock: dt.time
    clock_text: str
    load1: float | None
    tasks: tuple[int, float, bool] | None = None  # (line, count, threads-mode)
    cpu_lines: list[tuple[int, str, dict[str, float]]] = field(default_factory=list)
    rows: list[tuple[int, dict[str, str | None]]] = field(default_factory=list)
    header: list[tuple[int, int, str]] | None = None
    top_pid: str | None = None
    new_run: bool = False
    stamp: dt.datetime | None = None


class _State:
    def __init__(self, ctx: ParseContext) -> None:
        self.ctx = ctx
        self.acct = Accounting(ctx.file)
        self.dated = snap.MetricColumns()  # rows whose date is known
        self.provisional = snap.MetricColumns()  # rows dated from a provisional day, anchored later
        self.prov_clocks: list[str] = []
        self.entities: dict[str, tuple[str, str]] = {}
        self.roller: DayRoller | None = DayRoller(ctx.reference_date) if ctx.reference_date else None
        self.prov_roller = DayRoller(dt.date(2000, 1, 1))
        self.prov_last: dt.datetime | None = None
        self.last_top_pid: str | None = None
        self.frames = 0
        self.threads_mode = False
        self.old_header = False
        self.first_noted = False
        self.dating = "reference date" if ctx.reference_date else ""
        self.anchored: list[pl.DataFrame] = []
        self._entity_src: dict[str, str] = {}

    # -- dates ----------------------------------------------------------------------------
    def time_line(self, stamp: dt.datetime) -> None:
        self._anchor(stamp, "a time line")
        self.roller = DayRoller(stamp.date())
        self.roller.at(stamp.time())
        self.dating = self.dating or "time lines"

    def _anchor(self, anchor: dt.datetime, what: str) -> None:
        """Give the provisional rows (frames before any known date) their real date: the last
        of them is at or before ``anchor``."""
        if self.prov_last is None:
            return
        days = (anchor.date() - self.prov_last.date()).days
        if self.prov_last + dt.timedelta(days=days) > anchor + dt.timedelta(minutes=1):
            days -= 1
        frame = self.provisional.build().with_columns(pl.col("ts") + pl.duration(days=days))
        self.anchored.append(frame)
        self.acct.note("date_from_mtime" if what == "mtime" else "date_from_time_line",
                       f"top prints only a clock time; the date of {len(self.prov_clocks)} frame(s) comes "
                       f"from {'the file modification time' if what == 'mtime' else what} after them",
                       level="warning" if what == "mtime" else "info")
        self.provisional = snap.MetricColumns()
        self.prov_clocks = []
        self.prov_last = None

    def finish_dates(self) -> pl.DataFrame:
        mtime = snap.mtime_local(self.ctx)
        if self.prov_last is not None and mtime is not None:
            self._anchor(mtime, "mtime")
            self.dating = self.dating or "file mtime"
        frames = [self.dated.build(), *self.anchored]
        if self.prov_last is not None:  # no date anywhere: keep the samples off the timeline
            self.acct.note("time_unknown", "top prints only a clock time and neither a time line, a "
                           "reference date nor a file time gives the date: samples are kept in the "
                           f"'{snap.UNDATED_TABLE}' table", level="warning")
        return pl.concat(frames, how="vertical_relaxed") if len(frames) > 1 else frames[0]

    # -- frames ---------------------------------------------------------------------------
    def emit(self, frame: Frame) -> None:
        self.frames += 1
        first = frame.new_run or (frame.top_pid is not None and self.last_top_pid is not None
                                  and frame.top_pid != self.last_top_pid)
        if frame.top_pid is not None:
            self.last_top_pid = frame.top_pid
        if self.roller is not None:
            stamp, builder = self.roller.at(frame.clock), self.dated
        else:
            stamp = self.prov_last = self.prov_roller.at(frame.clock)
            builder = self.provisional
            self.prov_clocks.append(frame.clock_text)
        out: list[tuple[str, str, float, int]] = []
        if frame.load1 is not None:
            out.append(("cpu:all", "cpu.load1", frame.load1, frame.line))
        if frame.tasks is not None:
            line, count, threads = frame.tasks
            out.append(("host:threads" if threads else "host:tasks", "sys.tasks", count, line))
        for line, entity, values in frame.cpu_lines:
            if first:
                self.acct.skip("since_boot_sample", line, None, "first frame of a top run: CPU figures "
                               "cover no real interval (since boot in procps <= 3.2, a few ticks in "
                               "procps-ng)")
                continue
            self.acct.parsed()
            out.extend((entity, metric, value, line) for metric, value in values.items())
        if first and frame.rows and not self.first_noted:
            self.first_noted = True
            self.acct.note("first_frame_cpu", "per-task %CPU of a run's first frame is not an interval "
                           "sample and is not used; memory columns are", line=frame.rows[0][0])
        threads_mode = frame.tasks[2] if frame.tasks else self.threads_mode
        for line, row in frame.rows:
            out.extend(self._row(line, row, threads_mode, first))
        for entity, metric, value, line in out:
            builder.add(ts=stamp, entity=entity, metric=metric, value=value, line=line)

    def _row(self, line: int, row: dict[str, str | None], threads_mode: bool,
             first: bool) -> list[tuple[str, str, float, int]]:
        pid = row.get("PID") or ""
        command = row.get("COMMAND") or ""
        user = row.get("USER") or ""
        out = []
        cpu = None if first else snap.number(row.get("%CPU"))
        if threads_mode:
            tgid = row.get("TGID")
            entity = f"tid:{tgid if tgid and tgid.isdigit() else '?'}/{pid}"
            if self.entities.get(entity, ("",))[0] != command:
                self.entities[entity] = (command, attrs_json({"comm": command, "user": user}))
            if cpu is not None:
                out.append((entity, "proc.cpu_pct", cpu, line))
            return out
        entity = f"pid:{pid}"
        if self._entity_src.get(entity) != command:
            self._entity_src[entity] = command
            label = command.split(" ", 1)[0].rsplit("/", 1)[-1] if " " in command else command
            self.entities[entity] = (label, attrs_json({"command": command, "user": user}))
        if cpu is not None:
            out.append((entity, "proc.cpu_pct", cpu, line))
        for col, metric, conv in (("%MEM", "proc.mem_pct", snap.number), ("RES", "proc.rss_kb", snap.kib),
                                  ("nTH", "proc.threads", snap.number)):
            value = conv(row.get(col))
            if value is not None:
                out.append((entity, metric, value, line))
        return out


def _cpu_values(text: str) -> dict[str, float] | None:
    body = re.split(r"[:：]", text, maxsplit=1)[1] if re.search(r"[:：]", text) else ""
    pairs = PAIR_RE.findall(body)
    if len(pairs) < 4:
        return None
    if len(pairs) > len(CPU_ORDER):  # two CPUs abreast ('4' toggle): structural, no sample
        return {}
    values: dict[str, float] = {}
    labels = [lab.lower() for _, lab in pairs]
    by_label = all(lab in CPU_FIELDS for lab in labels)
    for i, (num, lab) in enumerate(pairs):
        metric = CPU_FIELDS[lab.lower()] if by_label else (CPU_ORDER[i] if i < len(CPU_ORDER) else "")
        value = snap.number(num)
        if metric and value is not None:
            values[metric] = value
    if "cpu.idle_pct" in values:
        values["cpu.busy_pct"] = round(100.0 - values["cpu.idle_pct"], 6)
    return values


def parse(stream: BinaryIO, *, ctx: ParseContext) -> ParseResult:
    st = _State(ctx)
    acct = st.acct
    frame: Frame | None = None
    state = "between"  # between | summary | header | rows
    header: list[tuple[int, int, str]] | None = None
    boundary = True  # the next frame starts a new top run
    for number, text in accounted_lines(stream, acct):
        clock = CLOCK_RE.match(text)
        if clock:
            if frame is not None:
                st.emit(frame)
            frame = _new_frame(number, clock, boundary)
            boundary = False
            state = "summary"
            acct.parsed()
            continue
        if not text.strip():
            if state == "summary":
                state = "header"
            elif state == "rows":
                state = "between"
            acct.parsed()
            continue
        if frame is not None and state in ("summary", "header"):
            cols = _column_header(text)
            if cols is not None:
                header, frame.header, state = cols, cols, "rows"
                acct.parsed()
                continue
            if state == "summary" and _summary_line(text, frame, number, st):
                continue
        if frame is not None and state == "rows" and header is not None:
            row = _row_values(text, header)
            if row is not None:
                frame.rows.append((number, row))
                if (row.get("COMMAND") or "").split(" ", 1)[0] in ("top", "/usr/bin/top"):
                    frame.top_pid = row.get("PID")
                acct.parsed()
                continue
        if snap.is_prompt(text):
            acct.parsed()
            continue
        stamp = snap.time_line(text, ctx)
        if stamp is not None:
            if frame is not None:
                st.emit(frame)
                frame, state = None, "between"
            st.time_line(stamp)
            boundary = True
            acct.parsed()
            continue
        expected = {"summary": "a summary line such as 'Tasks: 245 total, ...' or '%Cpu(s): ...'",
                    "header": "the task header 'PID USER PR NI VIRT RES SHR S %CPU %MEM TIME+ COMMAND'",
                    "rows": "a task row under the header",
                    "between": "a clock line 'top - HH:MM:SS up ...'"}[state]
        acct.skip("unparsed_line", number, text, f"{ctx.file}:{number}: expected {expected}")
    if frame is not None:
        st.emit(frame)
    metrics = st.finish_dates()
    ents = entity_builder()
    for entity, (label, attrs) in st.entities.items():
        ents.add(entity=entity, label=label, attrs=attrs)
    result = ParseResult(metrics=metrics, events=event_builder().build(), accounting=acct,
                         variant=_variant(st), entities=ents.build())
    if st.prov_last is not None:
        undated = st.provisional.build()
        result.tables[snap.UNDATED_TABLE] = undated.select(
            pl.lit(None, dtype=pl.Int64).alias("snapshot"),
            pl.col("ts").dt.strftime("%H:%M:%S").alias("clock"), "entity", "metric", "value", "line")
    return result


def _new_frame(number: int, clock: re.Match[str], boundary: bool) -> Frame:
    when = parse_clock(clock.group("clock")) or dt.time(0, 0)
    load = LOAD_RE.search(clock.group("rest"))
    load1 = snap.number(load.group(1)) if load else None
    return Frame(number, when, clock.group("clock"), load1, new_run=boundary)


def _summary_line(text: str, frame: Frame, number: int, st: _State) -> bool:
    """Tasks/Threads count, CPU lines (deferred: the first frame's are skipped), memory and
    other summary lines (structural). False when the line is not summary-shaped."""
    label = re.split(r"[:：]", text, maxsplit=1)[0] if re.search(r"[:：]", text) else None
    if label is None:
        return False
    count = COUNT_RE.match(text)
    if frame.tasks is None and count and not frame.cpu_lines and "." not in text.split(",", 1)[0]:
        threads = count.group("label").strip() in THREADS_LABELS
        st.threads_mode = st.threads_mode or threads
        frame.tasks = (number, float(count.group("n")), threads)
        st.acct.parsed()
        return True
    values = _cpu_values(text) if CPU_LABEL_RE.search(label) or len(PAIR_RE.findall(text)) >= 6 else None
    if values is not None and not re.search(r"mem|swap|spch|kib|mib|gib", label, re.I):
        cpu_no = PER_CPU_RE.search(label.strip())
        if label.strip().startswith("Cpu"):
            st.old_header = True
        frame.cpu_lines.append((number, f"cpu:{cpu_no.group(1)}" if cpu_no else "cpu:all", values))
        return True  # accounted when the frame is emitted
    st.acct.parsed()  # memory/swap and other summary lines: structural
    return True


def _row_values(text: str, header: list[tuple[int, int, str]]) -> dict[str, str | None] | None:
    tokens = text.split()
    names = [h[2] for h in header]
    values: list[str | None]
    if len(tokens) == len(header):
        values = list(tokens)
    else:  # a COMMAND with spaces, or a column without a header (zh_CN's blank S)
        values = snap.assign_by_position(header, snap.spans(text), names[-1] == "COMMAND")
    row = dict(zip(names, values, strict=False))
    pid = row.get("PID")
    if not pid or not pid.isdigit():
        return None
    return row


def _variant(st: _State) -> str:
    mode = "top -H -b (threads)" if st.threads_mode else "top -b"
    old = ", procps 3.2 header" if st.old_header else ""
    return f"{mode}{old}, {st.frames} frame(s), date from {st.dating or 'nowhere'}"
