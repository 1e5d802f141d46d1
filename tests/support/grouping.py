"""Run a module's tests in one test process, so that what the module builds once is built once per run.

`make test` hands tests out one by one (xdist's `loadgroup`). A module-scoped fixture (a module's shared
live stack, the demo, the Postgres-restart product, a local RunPod stand-in) is built again in every process
that runs one of the module's tests, and again each time a process comes back to the module after another
module's test: the demo's three builds cost over three minutes of the run. A module whose tests all share
what it builds marks itself `in_one_process(__name__)`, and xdist hands all its tests to one process.

A module that mixes `shared_stack` and `stack_factory` tests must not: every stack's Celery worker in a
test process reads the process's one queue, so the module's shared stack, kept up while its own-stack
tests run, would take their tasks (tests/integration/conftest.py).

Upstream decides two things this needs, and `tests/test_suite_grouping.py` proves both on every run:
- The mark is in the module's `pytestmark`, there before xdist's own `pytest_collection_modifyitems` reads
  the marks (xdist/remote.py:236-254 at 3.8.0); a mark added by a hook of ours would come too late.
- xdist turns the mark into a suffix of the test's node id, which pytest 9.2 no longer lets it change
  (pytest-dev/pytest-xdist#1386): with it, `loadgroup` silently hands grouped tests to any process.
  requirements-dev.txt pins pytest 9.1.1 until xdist carries the fix (pytest-dev/pytest-xdist#1388).
"""

from __future__ import annotations

import pytest


def in_one_process(module: str) -> pytest.MarkDecorator:
    """The mark that keeps the tests of `module` (its `__name__`) in one test process."""
    return pytest.mark.xdist_group(module)
