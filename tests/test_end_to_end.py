"""Findings on every committed sample bundle against its ground truth (``expected.json``).

For each bundle: every injected fault is found with the right key, the finding's window
overlaps the true window within ±5 s, and the finding names the fault's root entity; at
most one root finding matches no injected fault. A finding the engine itself marks as the
downstream symptom of another finding (``upstream`` non-empty) belongs to that finding's
story and is not counted on its own. A bundle without faults yields nothing above ``low``.
"""

from __future__ import annotations

import datetime as dt
import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest

import analyzer

ROOT = Path(__file__).resolve().parent.parent
BUNDLES = sorted(p for p in (ROOT / "samples" / "bundles").glob("*") if (p / "expected.json").is_file())
SLACK = dt.timedelta(seconds=5)
SEVERITY = ("info", "low", "medium", "high", "critical")


def _utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def root_entities(fault: dict[str, Any]) -> set[str]:
    """Entity strings that name the fault's root cause, from the ``root`` record."""
    root = fault.get("root") or {}
    names = {v for v in root.values() if isinstance(v, str) and v.split(":", 1)[0] in
             ("dev", "query", "pid", "pool", "endpoint", "coro", "http")}
    if root.get("http") and fault["key"] == "event_loop_blocked":
        names.add(f"http:{root['http']}")
    if root.get("queryid"):
        names.add(f"query:{root['queryid']}")
    if root.get("device"):
        names.add(root["device"] if root["device"].startswith("dev:") else f"dev:{root['device']}")
    if root.get("pid") is not None and fault["key"] == "thread_exhaustion":
        names.add(f"pid:{root['pid']}")
    if root.get("pool"):
        names.add(f"pool:{root['pool']}")
    return names


def match(finding: dict[str, Any], fault: dict[str, Any]) -> dict[str, bool]:
    start, end = _utc(fault["start"]), _utc(fault["end"])
    f_start, f_end = _utc(finding["start"]), _utc(finding["end"])
    return {"key": finding["key"] == fault["key"],
            "window": f_start <= end + SLACK and f_end >= start - SLACK,
            "root": bool(root_entities(fault) & set(finding["entities"]))}


def score_bundle(findings: list[dict[str, Any]], expected: dict[str, Any]) -> dict[str, Any]:
    """Per fault: the best finding and what it got right; plus the unmatched findings."""
    faults = expected.get("faults", [])
    matched_ids: set[str] = set()
    per_fault = []
    for fault in faults:
        best, best_score = None, -1
        for f in findings:
            m = match(f, fault)
            s = 4 * m["key"] + 2 * m["window"] + m["root"]
            if m["key"] and s > best_score:
                best, best_score = (f, m), s
        ok = best is not None and all(best[1].values())
        if ok:
            matched_ids.add(best[0]["id"])
        per_fault.append({"key": fault["key"], "ok": ok, "finding": best[0]["id"] if best else None,
                          "checks": best[1] if best else None})
    unmatched = [f for f in findings if f["id"] not in matched_ids and not f.get("upstream")
                 and not any(all(match(f, t).values()) for t in faults)]
    return {"faults": per_fault, "unmatched": unmatched}


@cache
def _findings(bundle: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    expected = json.loads((bundle / "expected.json").read_text())
    tl = analyzer.load(str(bundle), pg_port=(expected.get("meta", {}).get("ports") or {}).get("postgres"))
    return tl.findings(), expected


def _fault_cases():
    for bundle in BUNDLES:
        faults = json.loads((bundle / "expected.json").read_text()).get("faults", [])
        for i, fault in enumerate(faults):
            yield pytest.param(bundle, i, id=f"{bundle.name}-{i}-{fault['key']}")


@pytest.mark.parametrize(("bundle", "index"), list(_fault_cases()))
def test_injected_fault_is_found(bundle: Path, index: int) -> None:
    findings, expected = _findings(bundle)
    result = score_bundle(findings, expected)["faults"][index]
    titles = [(f["key"], f["start"], f["end"], f["entities"][:2]) for f in findings]
    assert result["ok"], f"{bundle.name}: {result} — findings: {titles}"


@pytest.mark.parametrize("bundle", [b for b in BUNDLES if json.loads((b / "expected.json").read_text())
                                    .get("faults")], ids=lambda b: b.name)
def test_at_most_one_unexplained_finding(bundle: Path) -> None:
    findings, expected = _findings(bundle)
    unmatched = score_bundle(findings, expected)["unmatched"]
    assert len(unmatched) <= 1, [(f["key"], f["start"], f["severity"], f["title"]) for f in unmatched]


@pytest.mark.parametrize("bundle", [b for b in BUNDLES if not json.loads((b / "expected.json").read_text())
                                    .get("faults")], ids=lambda b: b.name)
def test_quiet_bundle_has_nothing_above_low(bundle: Path) -> None:
    findings, _ = _findings(bundle)
    loud = [f for f in findings if SEVERITY.index(f["severity"]) > SEVERITY.index("low")]
    assert loud == [], [(f["key"], f["severity"], f["title"]) for f in loud]
