"""A session-scoped fixture of the suite is defined in one place and reached from there.

A conftest that imports another conftest's fixture defines a second fixture of that name for its own
folder. For a session-scoped fixture with effects beyond its value, that is a second session: the browser
suite once imported the live stack's `session_broker_url`, started a second Redis and switched the Celery
app to it, so an integration test run later in the same process published its tasks to that Redis while its
stack's worker read the first, and waited for them in vain. Shared session fixtures live in a plugin
module (`pytest_plugins` in tests/conftest.py), which every folder sees once.
"""

from __future__ import annotations

import importlib
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(TESTS.parent).with_suffix("").parts)


def test_no_conftest_takes_a_session_fixture_of_another_module() -> None:
    borrowed = []
    for conftest in sorted(TESTS.rglob("conftest.py")):
        module = importlib.import_module(_module_name(conftest))
        for name, value in vars(module).items():
            marker = getattr(value, "_fixture_function_marker", None)
            if marker is None or marker.scope != "session":
                continue
            defined_in = value._get_wrapped_function().__module__
            if defined_in != module.__name__:
                borrowed.append(f"{module.__name__} imports {name} from {defined_in}")

    assert borrowed == []
