"""Tests of a module marked `in_one_process` really run in one test process (tests/support/grouping.py says
why this can silently stop working)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

MODULE = """
import os

import pytest

from tests.support.grouping import in_one_process

pytestmark = in_one_process(__name__)


@pytest.fixture(scope="module")
def stack():
    return os.environ["PYTEST_XDIST_WORKER"]


@pytest.mark.parametrize("index", range(8))
def test_shares_the_stack(stack, index):
    with open(os.environ["GROUPING_RECORD"], "a") as record:
        record.write(f"{stack} {os.environ['PYTEST_XDIST_WORKER']}\\n")
"""
UNGROUPED = """
import os
import time

import pytest


@pytest.mark.parametrize("index", range(8))
def test_elsewhere(index):
    time.sleep(0.05)
"""


def test_the_tests_of_a_module_marked_in_one_process_run_in_one_process(tmp_path: Path) -> None:
    (tmp_path / "test_grouped.py").write_text(MODULE)
    (tmp_path / "test_ungrouped.py").write_text(UNGROUPED)
    record = tmp_path / "record.txt"
    # xdist alone: the other installed plugins (hypothesis, schemathesis, faker...) would only add to each of
    # the three processes' start.
    environment = {**os.environ, "GROUPING_RECORD": str(record), "PYTHONPATH": str(REPO),
                   "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}  # fmt: skip
    command = [sys.executable, "-m", "pytest", "-q", "-p", "xdist.plugin", "-p", "no:cacheprovider",
               "-n", "2", "--dist", "loadgroup", "--rootdir", str(tmp_path), "-c", os.devnull,
               str(tmp_path)]  # fmt: skip

    finished = subprocess.run(
        command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=120
    )

    assert finished.returncode == 0, finished.stdout + finished.stderr
    runs = [line.split() for line in record.read_text().splitlines()]
    assert len(runs) == 8
    # Built once, in the process that ran every test of the module.
    assert {tuple(run) for run in runs} == {(runs[0][0], runs[0][0])}, runs
