"""Keep the tests that share a module-scoped fixture in one test process.

`make test` hands tests out one by one (xdist's `loadgroup`); a module-scoped fixture (a live stack, the
demo) would be built again in every process that runs one of its module's tests, so such a module's tests
are marked `xdist_group(<module path>)` and go to one process together.

Two things upstream decides make this work, and `tests/test_suite_grouping.py` proves both on every run:
- The mark must be added before xdist's own `pytest_collection_modifyitems` reads the marks
  (xdist/remote.py:236-254 at 3.8.0): xdist's worker plugin is registered after the conftests, so its hook
  would run first; ours asks to run first.
- xdist turns the mark into a suffix of the test's node id, which pytest 9.2 no longer lets it change
  (pytest-dev/pytest-xdist#1386): with it, `loadgroup` silently hands grouped tests to any process.
  requirements-dev.txt pins pytest 9.1.1 until xdist carries the fix (pytest-dev/pytest-xdist#1388).
"""

from __future__ import annotations

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        fixture_info = getattr(item, "_fixtureinfo", None)
        if fixture_info is None or item.get_closest_marker("xdist_group"):
            continue
        # Our own fixtures only: plugins' (baseid "") are per process by design.
        scopes = {d.scope for defs in fixture_info.name2fixturedefs.values() for d in defs if d.baseid}
        if scopes & {"module", "package", "class"}:
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::", 1)[0]))
