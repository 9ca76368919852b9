"""The same file gives the same rows in the same order on every run: parsers aggregate on
threads, and an unordered group or a float sum in another order must not leak into results."""

from __future__ import annotations

import gzip
import io

import pytest

from parsers import registry
from parsers.base import ParseContext

from .conftest import SAMPLES

FILES = sorted(
    p for p in SAMPLES.rglob("*")
    if p.is_file() and p.suffix not in (".md", ".json", ".png")
    and not {"generate", "screenshots", "bundles"} & set(p.relative_to(SAMPLES).parts)
)


def _parse_twice(path):
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        data = gzip.decompress(data)
    module = registry.detect(data[:65536], path.name).parser
    if module is None:
        return None
    out = []
    for _ in range(2):
        ctx = ParseContext(file=path.name)
        out.append(registry.finalize(registry.run(module, io.BytesIO(data), ctx), module.NAME, ctx))
    return out


@pytest.mark.parametrize("folder", sorted({p.relative_to(SAMPLES).parts[0] for p in FILES}))
def test_same_input_same_output(folder):
    checked = 0
    for path in (p for p in FILES if p.relative_to(SAMPLES).parts[0] == folder):
        runs = _parse_twice(path)
        if runs is None:
            continue
        first, second = runs
        for name in ("metrics", "events", "entities"):
            a, b = getattr(first, name), getattr(second, name)
            assert (a is None) == (b is None) and (a is None or a.equals(b)), f"{path.name}: {name} differ"
        assert first.tables.keys() == second.tables.keys()
        for key, table in first.tables.items():
            assert table.equals(second.tables[key]), f"{path.name}: table {key} differs"
        checked += 1
    assert checked > 0
