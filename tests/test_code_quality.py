"""Lint and types: ruff over the project, mypy over the package and the adapters (versions pinned in the test
extra, configuration in pyproject.toml). Skipped where the tools are not installed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed (pip install -e '.[test]')")
    return subprocess.run([tool, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_finds_nothing() -> None:
    done = _run("ruff", "check", "vsp_assert", "plugins", "tests", "benchmarks", "conftest.py")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def test_mypy_finds_nothing() -> None:
    done = _run("mypy", "--no-incremental", "--python-executable", sys.executable)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
