"""Emptying the database after a test on the live stack, again when Postgres aborted it to break a deadlock.

A pytest plugin (`pytest_plugins` in tests/conftest.py). A test with `transactional_db` (every live-stack
and browser test) ends with Django's flush: one TRUNCATE of every table, which locks the tables one after
another. The processes the test set going may still be in a transaction of their own: the shared stack's
Celery worker pruning the checkpoints of the run that just ended, the live server answering a GPU worker's
last callback. One that holds a table the TRUNCATE has not reached yet and then reads one it has is a
deadlock, and Postgres aborts one of the two: the flush, which began to wait first. Left there, the tables
keep the test's rows and every later test of that process fails on them. The other transaction ends
once the flush's locks are gone, and the flush run again empties the tables
(tests/test_flush_after_a_deadlock.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from django.core.management.base import CommandError
from django.test import TransactionTestCase

ATTEMPTS = 3


def _aborted_by_a_deadlock(error: CommandError) -> bool:
    # django/core/management/commands/flush.py raises CommandError from the database's OperationalError,
    # itself raised from psycopg's error.
    database_error = error.__cause__
    return isinstance(getattr(database_error, "__cause__", None), psycopg.errors.DeadlockDetected)


def _again_after_a_deadlock(teardown: Callable[[Any], None]) -> Callable[[Any], None]:
    def flush(test_case: Any) -> None:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                teardown(test_case)
                return
            except CommandError as error:
                if attempt == ATTEMPTS or not _aborted_by_a_deadlock(error):
                    raise

    return flush


def pytest_configure(config: pytest.Config) -> None:
    original = TransactionTestCase._fixture_teardown
    TransactionTestCase._fixture_teardown = _again_after_a_deadlock(original)  # type: ignore[method-assign]
    config.add_cleanup(lambda: setattr(TransactionTestCase, "_fixture_teardown", original))
