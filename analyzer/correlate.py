"""Correlation engine entry point: timeline → findings (plain dicts).

The diagnosis rules live in ``analyzer.rules``; with no rule module present the
engine reports no findings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from analyzer.timeline import Timeline


def correlate(timeline: Timeline) -> list[dict[str, Any]]:
    """Findings for ``timeline``, most severe first."""
    import importlib

    try:
        rules = importlib.import_module("analyzer.rules")
    except ModuleNotFoundError as exc:
        if exc.name != "analyzer.rules":
            raise
        return []
    return rules.diagnose(timeline)
