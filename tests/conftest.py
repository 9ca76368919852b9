import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
REQUIRE_TOOLS = os.environ.get("STALLSCOPE_REQUIRE_TOOLS") == "1"


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch):
    # docstring examples and tests use paths relative to the repository
    monkeypatch.chdir(ROOT)


def require_tool(name: str) -> str:
    """Path of an external tool; skip when missing, fail when STALLSCOPE_REQUIRE_TOOLS=1."""
    path = shutil.which(name)
    if path is None:
        if REQUIRE_TOOLS:
            pytest.fail(f"{name} is required (STALLSCOPE_REQUIRE_TOOLS=1) but not installed")
        pytest.skip(f"{name} not installed")
    return path
