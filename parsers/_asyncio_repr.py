"""asyncio's own texts: the slow-callback warning and the reprs of Task / Handle /
TimerHandle / Future objects it prints, across CPython 3.6-3.13, uvloop and aiodebug.

Grammar (FORMATS.md §4.1): ``Executing <REPR> took <float> seconds``; REPR nests ``<...>``,
quotes, ``cb=[...]`` lists and Windows paths, so the warning is anchored on the LAST
`` took <float> seconds`` and ``FILE:LINE`` is split on the last colon.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# greedy ``.*`` before " took " picks the last occurrence; the repr may be empty (OSPARC's
# "Executing took 4.694 seconds")
SLOW_RE = re.compile(r"Executing (?:(?P<repr>.*) )?took (?P<took>\d+(?:\.\d+)?) ?(?:seconds|secs|s)\b")
LONG_RUNNING_RE = re.compile(
    r"Long-running callback:? (?P<name>.+) took (?P<took>\d+(?:\.\d+)?) ?(?:seconds|s)\b"
)
WRAP_START_RE = re.compile(r"Executing (?:<|Handle\()")
_LOC_RE = re.compile(r"^(?P<file>.+):(?P<line>\d+)$")
_STATE_RE = re.compile(r"^<(?:_asyncio\.)?(?P<cls>\w+)\s+(?P<state>pending|finished|cancelled|cancelling)\b")
_NAME_RE = re.compile(r"\bname=(?P<q>['\"])(?P<name>.*?)(?P=q)(?= |>)")
# FILE:LINE never holds "<" or ">", so the coroutine part needs no bracket matching
_CORO_RE = re.compile(
    r"coro=<(?P<qual>[^\s()]+)\(\)(?:\s+(?P<how>running at|done, defined at|running)"
    r"(?:\s+(?P<loc>[^<>]+?:\d+))?)?>"
)
_EXC_RE = re.compile(
    r"\bexception=(?P<type>[A-Za-z_][\w.]*)\((?P<args>.*?)\)(?= created at | cb=|>$| result=|$)"
)
_CREATED_TAIL_RE = re.compile(r" created at (?P<loc>[^<>]+:\d+)>$")
_SOURCE_TAIL_RE = re.compile(r"\) at (?P<loc>[^()<>]+:\d+)$")
_WHEN_RE = re.compile(r"^when=\S+\s+")


@dataclass
class ReprInfo:
    """What a repr told us; empty strings when it did not say."""

    family: str = ""  # task | handle | timerhandle | future | handle-legacy | none
    state: str = ""
    task_name: str = ""
    coro: str = ""  # coroutine qualname
    coro_state: str = ""  # running | done
    location: str = ""  # FILE:LINE where the coroutine runs / is defined, or the callback's source
    created_at: str = ""
    callback: str = ""  # Handle callback qualname
    exception_type: str = ""
    exception_message: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    def attrs(self) -> dict[str, str]:
        out = {
            "repr_family": self.family,
            "state": self.state,
            "task_name": self.task_name,
            "coro": self.coro,
            "coro_state": self.coro_state,
            "created_at": self.created_at,
            "callback": self.callback,
        }
        if self.location:
            out["running_at" if self.coro_state == "running" else "defined_at" if self.coro else "source"] = (
                self.location
            )
        out.update(self.extra)
        return out


def split_location(loc: str) -> tuple[str, int | None]:
    """``D:\\app\\x.py:41`` → (``D:\\app\\x.py``, 41): split on the last colon."""
    m = _LOC_RE.match(loc.strip())
    if not m:
        return loc.strip(), None
    return m.group("file"), int(m.group("line"))


def _balanced(text: str, start: int) -> int:
    """Index just past the ``>`` closing the ``<`` at ``start`` (or len(text))."""
    depth = 0
    i = start
    quote = ""
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"" and i > 0 and text[i - 1] in "=( [,":
            quote = ch
        elif ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return len(text)


def parse_repr(text: str) -> ReprInfo:
    """Parse a Task/Future/Handle repr as asyncio, uvloop or a 2014 tulip prints it."""
    text = text.strip()
    info = ReprInfo()
    if not text:
        info.family = "none"
        return info
    if text.startswith("Handle(") or text.startswith("TimerHandle("):  # tulip-era
        info.family = "handle-legacy"
        m = re.search(r"<(?:function|bound method|built-in function|method) (?P<name>[^\s>]+)", text)
        info.callback = m.group("name") if m else ""
        return info
    m = _STATE_RE.match(text)
    cls = m.group("cls") if m else (re.match(r"^<(?:_asyncio\.)?(\w+)", text) or [None, ""])[1]
    if m:
        info.state = m.group("state")
    tail = _CREATED_TAIL_RE.search(text)
    if tail:
        info.created_at = tail.group("loc")
    if cls in ("Task", "_GatheringFuture", "Future") or cls.endswith(("Task", "Future")):
        info.family = "task" if cls.endswith("Task") else "future"
        nm = _NAME_RE.search(text)
        if nm:
            info.task_name = nm.group("name")
        cm = _CORO_RE.search(text)
        if cm:
            info.coro = cm.group("qual")
            how = cm.group("how") or ""
            info.coro_state = "done" if how.startswith("done") else "running" if how else ""
            info.location = (cm.group("loc") or "").strip()
        elif "coro=<" in text:
            info.coro = text.split("coro=<", 1)[1].split("(", 1)[0].strip()
        em = _EXC_RE.search(text)
        if em:
            info.exception_type = em.group("type")
            info.exception_message = em.group("args").strip("'\"")
        return info
    if cls in ("Handle", "TimerHandle"):
        info.family = cls.lower()
        body = text[len(cls) + 1 :].strip()
        if body.endswith(">"):
            body = body[:-1]
        if info.state == "cancelled":
            body = body[len("cancelled") :].strip()
        body = _WHEN_RE.sub("", body)
        if tail:
            body = body[: body.rfind(" created at ")]
        if body.startswith("<"):  # uvloop/C wrappers: <TaskSendMethWrapper object at 0x..>
            end = _balanced(body, 0)
            inner = body[1 : end - 1]
            info.callback = inner.split(" object", 1)[0].split()[0] if inner else ""
            rest = body[end:]
        else:
            # args are reprlib-shortened (unbalanced quotes and brackets), so read from both ends
            paren = body.find("(")
            space = body.find(" ")
            cut = paren if paren >= 0 and (space < 0 or paren < space) else space
            info.callback = body[:cut] if cut >= 0 else body
            rest = ""
            at = _SOURCE_TAIL_RE.search(body)
            if at:
                info.location = at.group("loc").strip()
        rest = rest.strip()
        if rest.startswith("()"):
            rest = rest[2:].strip()
        if rest.startswith("at "):
            info.location = rest[3:].strip()
        return info
    info.family = "other"
    return info


def coro_entity(info: ReprInfo) -> str | None:
    """``coro:<qualname>@<file>:<line>`` (or without location), None when the repr names
    neither a coroutine nor a Python callback."""
    name = info.coro or info.callback
    if not name or name.endswith(("MethWrapper", "Wrapper")) or name.startswith("<"):
        return None
    return f"coro:{name}@{info.location}" if info.location else f"coro:{name}"
