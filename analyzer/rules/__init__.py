"""Diagnosis rules: one module per finding key in this package, each declaring ``RULE``.

Adding a rule = adding one module here (its conditions, its evidence, its sentence
template and recommendations live together in it); the package finds it by itself.
Finding keys (documented in one place, each module's docstring says when it fires):

- ``event_loop_blocked`` — a blocking call inside a coroutine stalls the asyncio loop
- ``thread_exhaustion`` — a process's threads climb to a plateau (executor at max_workers)
- ``slow_query`` — one statement gains database time per second
- ``db_pool_exhaustion`` — requests wait on an exhausted connection pool
- ``disk_saturation`` — a device's latency/queue far above its baseline, with iowait
- ``cpu_saturation`` — the host's CPUs (or one process's thread) pegged
- ``network_retransmissions`` — TCP retransmissions above baseline on an endpoint
- ``connection_resets`` — bursts of RST segments on an endpoint
- ``syn_backlog_overflow`` — SYN retries / SYN-flood messages: the listen backlog overflowed
- ``kernel_limit`` — conntrack full, too many open files, OOM kills, other kernel limits
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING, Any

import jinja2

from analyzer.rules._base import SEVERITY_ORDER, Candidate, Context, Rule, iso, seconds

if TYPE_CHECKING:
    from analyzer.timeline import Timeline


def _discover() -> list[Rule]:
    rules: list[Rule] = []
    seen: set[str] = set()
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        rule = importlib.import_module(f"{__name__}.{info.name}").RULE
        if rule.key in seen:
            raise RuntimeError(f"duplicate finding key {rule.key!r} in analyzer.rules.{info.name}")
        seen.add(rule.key)
        rules.append(rule)
    return rules


RULES: list[Rule] = _discover()
KEYS = tuple(r.key for r in RULES)

_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False,  # noqa: S701
                          trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False)
# sentences are data (JSON, report): the report escapes them where it shows them
_ENV.filters["num"] = lambda v, digits=3: ("—" if v is None else
                                            f"{v:.{digits}g}" if abs(v) < 10 ** digits else f"{v:,.0f}")
_ENV.filters["clock"] = lambda v: (iso(v) or "")[11:19]
_ENV.filters["short"] = lambda v, n=80: (v if len(v) <= n else v[: n - 1] + "…") if v else ""
_ENV.filters["human"] = lambda keys: ", ".join(k.replace("_", " ").replace("cpu ", "CPU ") for k in keys)


def diagnose(timeline: Timeline, *, baseline: tuple[Any, Any] | None = None,
             rules: list[Rule] | None = None) -> list[dict[str, Any]]:
    """Findings (plain dicts, most severe first) for ``timeline``."""
    ctx = Context(timeline.metrics, timeline.events, timeline.entities, baseline=baseline,
                  sources=timeline.sources)
    return assemble(ctx, rules or RULES)


def assemble(ctx: Context, rules: list[Rule]) -> list[dict[str, Any]]:
    found: list[tuple[Rule, Candidate]] = []
    for rule in rules:
        found += [(rule, c) for c in _merge_same_root(rule.find(ctx), rule.merge_gap_s)]
    found.sort(key=lambda rc: (rc[1].start, rc[0].key))
    counters: dict[str, int] = {}
    records: list[dict[str, Any]] = []
    for rule, cand in found:
        counters[rule.key] = counters.get(rule.key, 0) + 1
        records.append({"id": f"{rule.key}-{counters[rule.key]}", "rule": rule, "cand": cand,
                        "upstream": [], "downstream": []})
    _relate(records)
    by_id = {r["id"]: r for r in records}
    out = []
    for rec in records:
        rule, cand = rec["rule"], rec["cand"]
        variables = {**cand.params, "severity": cand.severity,
                     "downstream": [by_id[i]["rule"].key for i in rec["downstream"]],
                     "upstream": [by_id[i]["rule"].key for i in rec["upstream"]]}
        out.append({
            "id": rec["id"], "key": rule.key, "title": _render(rule.title, variables),
            "start": iso(cand.start), "end": iso(cand.end), "severity": cand.severity,
            "confidence": round(cand.confidence, 2), "confidence_reason": cand.confidence_reason,
            "entities": list(dict.fromkeys(e for e in cand.entities if e)), "evidence": _dedupe(cand.evidence),
            "recommendations": [_render(t, variables) for t in rule.recommendations],
            "upstream": rec["upstream"], "downstream": rec["downstream"],
        })
    out.sort(key=lambda f: (-SEVERITY_ORDER.index(f["severity"]), f["start"] or ""))
    return out


def _dedupe(evidence: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per signal: the same metric often arrives twice (iostat text and JSON)."""
    seen: set[tuple[Any, ...]] = set()
    out = []
    for ev in evidence:
        key = (ev.get("role"), ev.get("metric") or ev.get("kind"), ev.get("entity"), ev.get("start"),
               ev.get("end"), ev.get("peak"), ev.get("at"))
        if key not in seen:
            seen.add(key)
            out.append(ev)
    return out


def _render(template: str, variables: dict[str, Any]) -> str:
    return " ".join(_ENV.from_string(template).render(**variables).split())


def _merge_same_root(cands: list[Candidate], gap_s: float) -> list[Candidate]:
    """Candidates naming the same root whose windows touch become one (the stronger kept)."""
    cands = sorted(cands, key=lambda c: c.start)
    out: list[Candidate] = []
    for cand in cands:
        twin = next((o for o in reversed(out) if o.entities[:1] == cand.entities[:1]
                     and seconds(cand.start - o.end) <= gap_s), None)
        if twin is None:
            out.append(cand)
            continue
        twin.end = max(twin.end, cand.end)
        if SEVERITY_ORDER.index(cand.severity) > SEVERITY_ORDER.index(twin.severity):
            twin.severity, twin.params = cand.severity, {**twin.params, **cand.params}
        twin.confidence = max(twin.confidence, cand.confidence)
        twin.evidence += [e for e in cand.evidence if e not in twin.evidence]
    return out


def _relate(records: list[dict[str, Any]], *, pad_s: float = 3.0) -> None:
    """Upstream cause → downstream symptom, for overlapping findings whose rule says the
    first can produce the second and which did not start clearly later."""
    for a in records:
        for b in records:
            if a is b or b["rule"].key not in a["rule"].explains:
                continue
            relates = a["rule"].relates
            if relates is not None and not relates(a["cand"], b["rule"].key, b["cand"]):
                continue
            ca, cb = a["cand"], b["cand"]
            pad = max(pad_s, ca.precision_s, cb.precision_s)
            if seconds(cb.start - ca.end) > pad or seconds(ca.start - cb.end) > pad:
                continue
            if seconds(ca.start - cb.start) > pad:  # the cause must not start clearly after
                continue
            reverse = a["rule"].key in b["rule"].explains
            if reverse and (b["id"] in a["upstream"] or cb.start < ca.start - _td(pad)):
                continue
            if a["id"] in b["upstream"] or b["id"] in a["upstream"]:
                continue
            b["upstream"].append(a["id"])
            a["downstream"].append(b["id"])


def _td(s: float) -> Any:
    import datetime as dt

    return dt.timedelta(seconds=s)


__all__ = ["diagnose", "assemble", "RULES", "KEYS", "Rule", "Candidate", "Context"]
