"""Turns one logical application-log record (a line plus its continuation lines) into
timeline events: slow callbacks, asyncio exception-handler records, access lines, server
lifecycle, EMFILE, database pool errors and ERROR records with their traceback collapsed.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict
from dataclasses import dataclass, field

from parsers import _asyncio_repr as ar
from parsers._logprefix import Prefix
from parsers.base import attrs_json, event_builder

ACCESS_RE = re.compile(
    r"(?P<client>[\w.:\[\]%-]+) - \"(?P<method>[A-Z]{3,10}) (?P<target>\S+) HTTP/(?P<version>[\d.]+)\" "
    r"(?P<status>\d{3})(?: (?P<reason>[A-Za-z][\w '-]*))?\s*$"
)
HANDLER_RE = re.compile(
    r"(?P<what>Task was destroyed but it is pending!|(?P<cls>\w+) exception was never retrieved)"
)
EXC_LINE_RE = re.compile(r"^(?P<type>[A-Za-z_][\w.]*)(?::\s?(?P<msg>.*))?$")
KEY_LINE_RE = re.compile(
    r"^(?P<key>task|future|handle|exception|message|transport|protocol|socket|asyncgen|"
    r"callback|source_traceback): (?P<value>.*)$"
)
WORKER_TIMEOUT_RE = re.compile(r"WORKER TIMEOUT \(pid:(?P<pid>\d+)\)")
WORKER_BOOT_RE = re.compile(r"Booting worker with pid: (?P<pid>\d+)")
WORKER_EXIT_RE = re.compile(
    r"Worker \(pid:(?P<pid>\d+)\) (?P<how>was sent \S+|exited with code \d+)|"
    r"Worker exiting \(pid: (?P<pid2>\d+)\)"
)
SERVER_START_RE = re.compile(r"Started server process \[(?P<pid>\d+)\]|Starting gunicorn (?P<ver>\S+)")
SERVER_STOP_RE = re.compile(r"Finished server process \[(?P<pid>\d+)\]|Shutting down: Master")
EMFILE_RE = re.compile(r"\[Errno 24\]|Too many open files|EMFILE")
DB_POOL_RE = re.compile(
    r"TooManyConnectionsError|ConnectionDoesNotExistError|too many clients already|"
    r"remaining connection slots are reserved|InterfaceError: pool is closing|"
    r"InterfaceError: cannot perform operation: another operation is in progress|"
    r"connection was closed in the middle of operation|PoolTimeout|QueuePool limit"
)
DB_CONTEXT_RE = re.compile(r"asyncpg|psycopg|sqlalchemy|aiopg|databases/|[Pp]ool\b|acquire")
TIMEOUT_TYPES = (
    "TimeoutError",
    "asyncio.TimeoutError",
    "asyncio.exceptions.TimeoutError",
    "concurrent.futures._base.TimeoutError",
    "CancelledError",
    "asyncio.exceptions.CancelledError",
)
POLL_RE = re.compile(
    r"\bpoll (?:(?P<timeout>\d+\.\d+) ms )?took (?P<took>\d+\.\d+) ms: (?P<events>\d+) events"
)
ERROR_LEVELS = ("ERROR", "CRITICAL")


@dataclass
class Record:
    line: int
    ts: dt.datetime | None
    prefix: Prefix
    cont: list[str] = field(default_factory=list)
    wrap: bool = False  # a slow-callback warning hard-wrapped over several lines
    last_line: int = 0


def _severity_for_took(took: float) -> str:
    return "high" if took >= 1.0 else "medium" if took >= 0.3 else "low"


class Emitter:
    """Collects events: timed ones into the event builder, untimed ones aside."""

    def __init__(self) -> None:
        self.events = event_builder()
        self.untimed = event_builder()
        self.slow_callbacks = 0
        self.kinds: dict[str, int] = defaultdict(int)
        self._last_slow: tuple[dt.datetime | None, float] | None = None

    def add(
        self,
        rec: Record,
        *,
        kind: str,
        entity: str,
        severity: str,
        message: str,
        attrs: dict,
        value: float | None = None,
        start: dt.datetime | None = None,
    ) -> None:
        if rec.prefix.logger:
            attrs.setdefault("logger", rec.prefix.logger)
        if rec.prefix.pid:
            attrs.setdefault("pid", int(rec.prefix.pid))
        if rec.prefix.level:
            attrs.setdefault("level", rec.prefix.level)
        row = dict(
            ts=start or rec.ts,
            end=rec.ts if start is not None else None,
            entity=entity,
            kind=kind,
            severity=severity,
            value=value,
            message=message[:500],
            attrs=attrs_json(attrs),
            line=rec.line,
        )
        (self.events if rec.ts is not None else self.untimed).add(**row)
        self.kinds[kind] += 1

    # -- the record kinds --------------------------------------------------------------
    def record(self, rec: Record) -> None:
        prefix = rec.prefix
        msg = prefix.message
        if rec.wrap:
            msg = msg + "".join(_unindent(c) for c in rec.cont)
        lane = f"loop:{prefix.pid}" if prefix.pid else "loop:main"
        if "took" in msg and ("Executing" in msg or "Long-running" in msg) and self._slow(rec, msg, lane):
            return
        if rec.wrap:
            return  # an "Executing <...>" that never said how long it took (e.g. Airflow): not ours
        if "poll" in msg and "took" in msg:
            pm = POLL_RE.search(msg)
            if pm:
                took = float(pm.group("took")) / 1000.0
                self.add(
                    rec,
                    kind="loop.poll_slow",
                    entity=lane,
                    severity="info",
                    message=msg.strip(),
                    value=took,
                    attrs={"timeout_ms": pm.group("timeout"), "events": int(pm.group("events"))},
                )
                return
        hm = HANDLER_RE.search(msg) if "retrieved" in msg or "destroyed" in msg else None
        if hm:
            self._handler(rec, msg, hm, lane)
            return
        if " HTTP/" in msg:
            am = ACCESS_RE.search(msg)
            if am:
                self._access(rec, am)
                return
        if self._server(rec, msg):
            return
        text = msg + "\n" + "\n".join(rec.cont) if rec.cont else msg
        has_tb = any(c.startswith("Traceback (most recent call last)") for c in rec.cont) or msg.startswith(
            "Traceback (most recent call last)"
        )
        exc_type, exc_msg = _exception(rec.cont) if rec.cont else ("", "")
        if not exc_type and msg.startswith("Traceback"):
            exc_type, exc_msg = _exception([msg, *rec.cont])
        if "Errno 24" in text or "Too many open files" in text or "EMFILE" in text:
            listener = _listener(text)
            self.add(
                rec,
                kind="os.too_many_open_files",
                entity=listener or _proc(prefix),
                severity="high",
                message=_one_line(msg, exc_type, exc_msg),
                attrs={"exception_type": exc_type, "exception_message": exc_msg,
                       "process": _proc(prefix) if listener else None},
            )
            return
        is_error = prefix.level in ERROR_LEVELS or (has_tb and prefix.level in ("", "ERROR", "CRITICAL"))
        if not is_error:
            return
        kind = "log.error"
        if DB_POOL_RE.search(text):
            kind = "db.pool_error"
        elif exc_type in TIMEOUT_TYPES and DB_CONTEXT_RE.search(text):
            kind = "db.timeout"
        severity = "high" if prefix.level == "CRITICAL" else "medium"
        self.add(
            rec,
            kind=kind,
            entity=_proc(prefix),
            severity=severity,
            message=_one_line(msg, exc_type, exc_msg),
            attrs={
                "exception_type": exc_type,
                "exception_message": exc_msg,
                "traceback_lines": len(rec.cont) if has_tb else 0,
            },
        )

    def _slow(self, rec: Record, msg: str, lane: str) -> bool:
        m = ar.SLOW_RE.search(msg)
        if m:
            repr_text = m.group("repr") or ""
            if repr_text and not repr_text.startswith(("<", "Handle(", "TimerHandle(")):
                return False  # "Executing query took 3 s": someone else's wording
            info = ar.parse_repr(repr_text)
        else:
            m = ar.LONG_RUNNING_RE.search(msg)
            if not m:
                return False
            info = ar.ReprInfo(family="long-running", callback=m.group("name").strip())
        took = float(m.group("took"))
        if not repr_text_present(m) and self._last_slow is not None and self._last_slow == (rec.ts, took):
            return True  # OSPARC's bare duplicate of the line just counted
        self._last_slow = (rec.ts, took)
        entity = ar.coro_entity(info) or lane
        attrs = info.attrs()
        attrs["lane"] = lane
        start = rec.ts - dt.timedelta(seconds=took) if rec.ts is not None else None
        label = info.coro or info.callback or info.family
        self.add(
            rec,
            kind="loop.slow_callback",
            entity=entity,
            severity=_severity_for_took(took),
            message=f"event loop blocked {m.group('took')} s by {label}",
            attrs=attrs,
            value=took,
            start=start,
        )
        self.slow_callbacks += 1
        return True

    def _handler(self, rec: Record, msg: str, hm: re.Match, lane: str) -> None:
        keys: dict[str, str] = {}
        for c in rec.cont:
            km = KEY_LINE_RE.match(c)
            if km and km.group("key") not in keys:
                keys[km.group("key")] = km.group("value")
        obj = keys.get("task") or keys.get("future") or ""
        info = ar.parse_repr(obj)
        exc_type, exc_msg = _exception(rec.cont)
        if not exc_type:
            exc_type, exc_msg = info.exception_type, info.exception_message
        destroyed = hm.group("what").startswith("Task was destroyed")
        attrs = info.attrs()
        attrs.update(
            {
                "exception_type": exc_type,
                "exception_message": exc_msg,
                "object_class": hm.group("cls") or "Task",
                "has_source_traceback": "source_traceback" in keys,
            }
        )
        label = info.coro or hm.group("cls") or "task"
        tail = f": {exc_type}: {exc_msg}" if exc_type else ""
        self.add(
            rec,
            kind="asyncio.task_destroyed" if destroyed else "asyncio.exception_never_retrieved",
            entity=ar.coro_entity(info) or lane,
            severity="medium",
            message=f"{hm.group('what')} ({label}){tail}",
            attrs=attrs,
        )

    def _access(self, rec: Record, am: re.Match) -> None:
        target = am.group("target")
        path = target.split("?", 1)[0]
        status = int(am.group("status"))
        self.add(
            rec,
            kind="http.request",
            entity=f"http:{am.group('method')} {path}",
            severity="medium" if status >= 500 else "info",
            message=f"{am.group('method')} {target} {status}",
            attrs={
                "method": am.group("method"),
                "path": path,
                "target": target if target != path else None,
                "status": status,
                "client": am.group("client"),
            },
        )

    def _server(self, rec: Record, msg: str) -> bool:
        for rx, kind, severity in (
            (WORKER_TIMEOUT_RE, "server.worker_timeout", "high"),
            (WORKER_BOOT_RE, "server.worker_boot", "info"),
            (WORKER_EXIT_RE, "server.worker_exit", "low"),
            (SERVER_START_RE, "server.start", "info"),
            (SERVER_STOP_RE, "server.stop", "info"),
        ):
            m = rx.search(msg)
            if m:
                pid = next((v for k, v in m.groupdict().items() if k.startswith("pid") and v), None)
                entity = (
                    f"pid:{pid}" if pid else (f"pid:{rec.prefix.pid}" if rec.prefix.pid else "proc:server")
                )
                attrs = {"worker_pid": int(pid)} if pid else {}
                if m.groupdict().get("how"):
                    attrs["how"] = m.group("how")
                if kind == "server.worker_exit" and "SIGKILL" in msg:
                    severity = "medium"
                self.add(rec, kind=kind, entity=entity, severity=severity, message=msg.strip(), attrs=attrs)
                return True
        return False


def repr_text_present(m: re.Match) -> bool:
    return bool(m.groupdict().get("repr")) or m.re is ar.LONG_RUNNING_RE


def _unindent(piece: str) -> str:
    # a hard-wrapped piece keeps its characters; only the wrapper's indent is dropped
    return piece.lstrip(" \t") if piece[:1] in " \t" else piece


def _exception(lines: list[str]) -> tuple[str, str]:
    """The final ``Type: message`` line of the last traceback in ``lines``."""
    seen_tb = False
    last: tuple[str, str] = ("", "")
    after_frame = False
    for c in lines:
        if c.startswith("Traceback (most recent call last)"):
            seen_tb, after_frame = True, True
            continue
        if not seen_tb:
            continue
        if c[:1] in (" ", "\t"):
            after_frame = True
            continue
        if after_frame and c:
            m = EXC_LINE_RE.match(c)
            if m:
                last = (m.group("type"), (m.group("msg") or "").strip())
            after_frame = False
    if not seen_tb:  # "OSError: [Errno 24] ..." printed under the message without a traceback
        for c in lines:
            m = EXC_LINE_RE.match(c)
            if m and m.group("type").endswith(("Error", "Exception", "Exit", "Interrupt")):
                last = (m.group("type"), (m.group("msg") or "").strip())
    return last


# asyncio's "socket.accept() out of system resource" names the listening socket:
# socket: <asyncio.TransportSocket fd=11, family=2, type=1, proto=6, laddr=('127.0.0.1', 8000)>
LADDR_RE = re.compile(r"laddr=\('([0-9A-Fa-f.:%]+)', (\d{1,5})")


def _listener(text: str) -> str | None:
    """``endpoint:<ip>:<port>`` of the listening socket whose accept() failed, if the record names it."""
    if "accept" not in text:
        return None
    m = LADDR_RE.search(text)
    if not m:
        return None
    host, port = m.group(1), m.group(2)
    return f"endpoint:[{host}]:{port}" if ":" in host else f"endpoint:{host}:{port}"


def _proc(prefix: Prefix) -> str:
    if prefix.pid:
        return f"pid:{prefix.pid}"
    return f"proc:{prefix.logger}" if prefix.logger else "proc:app"


def _one_line(msg: str, exc_type: str, exc_msg: str) -> str:
    msg = msg.strip()
    if exc_type and exc_type not in msg:
        return f"{msg} ({exc_type}: {exc_msg})" if exc_msg else f"{msg} ({exc_type})"
    return msg
