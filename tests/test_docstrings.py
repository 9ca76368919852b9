"""Docstring examples of the public API really run."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["analyzer", "analyzer.load", "analyzer.timeline", "parsers.timeutil"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
    if name != "parsers.timeutil":
        assert result.attempted > 0
