"""The suite's processes really do share a module's stack: tests of a module with a module-scoped fixture
run in one process (tests/support/grouping.py says why this can silently stop working)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

MODULE = """
import os

import pytest


@pytest.fixture(scope="module")
def stack():
    return os.environ["PYTEST_XDIST_WORKER"]


@pytest.mark.parametrize("index", range(8))
def test_shares_the_stack(stack, index, tmp_path_factory):
    with open(os.environ["GROUPING_RECORD"], "a") as record:
        record.write(f"{stack} {os.environ['PYTEST_XDIST_WORKER']}\\n")
"""


def test_tests_sharing_a_module_fixture_run_in_one_process(tmp_path: Path) -> None:
    (tmp_path / "test_module.py").write_text(MODULE)
    record = tmp_path / "record.txt"
    environment = {**os.environ, "GROUPING_RECORD": str(record), "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:django",
               "-p", "tests.support.grouping", "-n", "2", "--dist", "loadgroup", "--rootdir", str(tmp_path),
               "-c", os.devnull, str(tmp_path)]  # fmt: skip

    finished = subprocess.run(
        command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=120
    )

    assert finished.returncode == 0, finished.stdout + finished.stderr
    runs = [line.split() for line in record.read_text().splitlines()]
    assert len(runs) == 8
    assert {tuple(run) for run in runs} == {(runs[0][0], runs[0][0])}, runs
