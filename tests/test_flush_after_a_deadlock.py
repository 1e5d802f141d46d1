"""The database is emptied after a live test even when Postgres makes the flush a deadlock's victim
(tests/support/flush.py says when that happens)."""

from __future__ import annotations

import re
import threading
import time

import psycopg
import pytest
from django.contrib.auth import get_user_model
from django.core.management.color import no_style
from django.core.management.sql import sql_flush
from django.db import connection
from django.test import TransactionTestCase
from psycopg import sql

from tests.studio.factories import UserFactory

pytestmark = pytest.mark.django_db(transaction=True)


def _truncate_order() -> list[str]:
    (statement,) = sql_flush(no_style(), connection, reset_sequences=False, allow_cascade=False)
    return re.findall(r'"([^"]+)"', statement)


def _connect() -> psycopg.Connection:
    params = connection.get_connection_params()
    return psycopg.connect(**{key: params[key] for key in ("dbname", "user", "host", "port")})


def _read_from(table: str) -> sql.Composed:
    return sql.SQL("SELECT 1 FROM {} LIMIT 1").format(sql.Identifier(table))


def _waiting_truncate(observer: psycopg.Connection) -> bool:
    row = observer.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND wait_event_type = 'Lock' AND query LIKE 'TRUNCATE%'"
    ).fetchone()
    return bool(row and row[0])


def test_a_flush_postgres_aborts_to_break_a_deadlock_is_run_again_and_empties_the_tables() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("the deadlock is Postgres's (make test finds it)")
    UserFactory()
    tables = _truncate_order()
    first, last = tables[0], tables[-1]
    outcome: list[BaseException | None] = []

    def flush() -> None:
        try:
            TransactionTestCase()._fixture_teardown()
            outcome.append(None)
        except BaseException as error:  # the test reads it below
            outcome.append(error)
        finally:
            connection.close()

    # Another process's transaction (a Celery task, say) holds the table the TRUNCATE locks last, and
    # once the TRUNCATE waits for it, reads the table the TRUNCATE locked first. Its own deadlock check
    # waits long, so Postgres's victim is the flush, as it was in the suite.
    with _connect() as task, _connect() as observer:
        observer.autocommit = True
        task.execute("SET deadlock_timeout = '60s'")
        task.execute(_read_from(last))
        flushing = threading.Thread(target=flush)
        flushing.start()
        deadline = time.monotonic() + 30
        while not _waiting_truncate(observer):
            assert time.monotonic() < deadline, "the flush never waited for the task's table"
            time.sleep(0.05)
        task.execute(_read_from(first))  # returns once the flush is aborted
        task.commit()
    flushing.join(timeout=60)

    assert outcome == [None]
    assert not get_user_model().objects.exists()
