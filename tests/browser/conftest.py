"""Headless Chromium for the browser tests, and the one place that decides what a missing Chromium means.

Debian's `chromium` package (/usr/bin/chromium, or CHROMIUM_PATH) is driven by Playwright for Python;
Playwright's own browser downloads are never used. Without Chromium, `make test` on a developer machine
deselects the browser tests and says so loudly at the end; with CI=true the browser tests fail instead.
The live stack (Celery worker, S3 test server, local RunPod stand-in) is the integration suite's.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# The integration suite's own-stack fixture (the session broker it uses is a plugin: tests/support/broker.py).
from tests.integration.conftest import stack_factory  # noqa: F401

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
INSTALL_HINT = "sudo apt-get install chromium  (Debian/Ubuntu; or set CHROMIUM_PATH to a Chromium binary)"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
_NOT_RUN = pytest.StashKey[int]()


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def chromium_problem() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)) and not shutil.which(CHROMIUM):
        return f"Chromium was not found at {CHROMIUM}"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install -r requirements-dev.txt)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    browser = [item for item in items if item.get_closest_marker("browser")]
    problem = chromium_problem()
    if not browser or problem is None or in_ci():
        return  # in CI the `page` fixture fails these tests with the reason
    items[:] = [item for item in items if item not in browser]
    config.hook.pytest_deselected(items=browser)
    config.stash[_NOT_RUN] = len(browser)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"browser tests deselected: {problem}", yellow=True, bold=True)


def report_browser_tests_not_run(terminalreporter: Any, config: pytest.Config) -> None:
    """The loud end-of-run notice (called from tests/conftest.py, which the xdist controller also loads).

    Without xdist the count of deselected tests is known here; under xdist they were deselected in the
    worker processes, so the notice names the reason without a count.
    """
    problem = chromium_problem()
    if problem is None or in_ci():
        return
    count = config.stash.get(_NOT_RUN, 0)
    distributed = bool(getattr(config.option, "numprocesses", None))
    if not count and not distributed:
        return
    what = f"{count} browser test(s) were deselected" if count else "Browser tests, if any, were deselected"
    terminalreporter.section("BROWSER TESTS NOT RUN", sep="!", yellow=True, bold=True)
    terminalreporter.write_line(f"{what}: {problem}.")
    terminalreporter.write_line(f"Install Chromium to run them: {INSTALL_HINT}")
    terminalreporter.write_line("With CI=true a missing Chromium fails the run instead.")


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """One headless Chromium for the module's tests (starting one costs about 1.5 s of CPU); each test gets
    a fresh context of its own from `page`. Browser modules run in one process (`in_one_process`), so each
    starts Chromium once per run."""
    problem = chromium_problem()
    if problem is not None:
        pytest.fail(f"{problem}; CI must run the browser tests. Install it: {INSTALL_HINT}")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop in this thread while it runs, which makes Django refuse ORM
    # calls from the tests and their fixtures (the live server answers from its own thread either way). Every
    # test of a browser module drives the browser, so the module's tests run with that check off.
    with pytest.MonkeyPatch.context() as environment:
        environment.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        # Chromium refuses to start as root with its sandbox on (containers, CI).
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
            yield browser
            browser.close()


@pytest.fixture
def page(chromium: Any) -> Iterator[Any]:
    """A fresh page (1280 x 900) in a context of its own (no cookies or storage of another test), accepting
    downloads."""
    context = chromium.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    context.set_default_timeout(20_000)
    yield context.new_page()
    context.close()


@pytest.fixture
def artifacts() -> Path:
    """Where screenshots go (gitignored), for people to look at after the run."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
