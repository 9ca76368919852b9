"""Every parser's real samples sniff as that parser (and no other), parse with no
unparsed_line, keep the accounting invariant and emit only schema vocabulary."""

from __future__ import annotations

from pathlib import Path

import pytest

from analyzer.bundle import open_inputs
from parsers import registry, schema
from parsers.base import ParseContext

from .conftest import SAMPLES

SIDECAR_SUFFIXES = (".md", ".provenance", ".cmd", ".json.expected")


def sample_files() -> list[tuple[str, Path]]:
    out = []
    for module in registry.PARSERS:
        folder = SAMPLES / getattr(module, "SAMPLES", module.NAME)
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.name.endswith(SIDECAR_SUFFIXES) and not path.name.startswith("."):
                out.append((module.NAME, path))
    return out


def test_every_parser_has_samples():
    missing = [m.NAME for m in registry.PARSERS
               if not (SAMPLES / getattr(m, "SAMPLES", m.NAME)).is_dir()]
    assert missing == []


def test_registry_names_unique_and_documented():
    names = registry.names()
    assert len(names) == len(set(names))
    for module in registry.PARSERS:
        assert module.NAME.islower() and module.DESCRIPTION


@pytest.mark.parametrize(("parser_name", "path"), sample_files(),
                         ids=lambda v: v if isinstance(v, str) else str(v.relative_to(SAMPLES)))
def test_sample_contract(parser_name: str, path: Path):
    with open_inputs([path]) as bundle:
        assert len(bundle.members) == 1
        member = bundle.members[0]
        with member.open() as fh:
            head = fh.read(registry.SNIFF_BYTES)
        detection = registry.detect(head, member.name)
        assert detection.parser is not None and detection.parser.NAME == parser_name, detection.scores
        others = {n: s for n, s in detection.scores.items()
                  if n != parser_name and s >= registry.MIN_CONFIDENCE}
        assert others == {}, f"also claimed by {others}"
        with member.open() as fh:
            result = registry.run(detection.parser, fh, ParseContext(file=member.name))
    acct = result.accounting
    assert not result.hints.get("failed"), acct.all_diagnostics()
    assert acct.skipped.get("unparsed_line", 0) == 0, [str(d) for d in acct.diagnostics][:5]
    assert acct.parsed_count + acct.skipped_count == acct.total
    assert acct.total > 0
    assert list(result.metrics.schema.items()) == list(schema.METRIC_COLUMNS.items())
    assert list(result.events.schema.items()) == list(schema.EVENT_COLUMNS.items())
    assert schema.unknown_names(result.metrics, "metric", schema.METRICS) == []
    assert schema.unknown_names(result.events, "kind", schema.EVENTS) == []
    assert schema.bad_entities(result.metrics) == []
    assert schema.bad_entities(result.events) == []
    assert result.metrics.height + result.events.height + len(result.tables) + len(result.hints) > 0
    if result.events.height:
        assert set(result.events.get_column("severity").unique().to_list()) <= set(schema.SEVERITIES)
