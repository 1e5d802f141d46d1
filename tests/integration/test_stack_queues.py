"""Each live stack's Celery worker reads a queue of that stack's own, and a test's tasks go to the queue of
the stack it uses (tests/integration/conftest.py): a module's shared stack, still up in the process, never
takes the tasks of a stack of a test's own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from studio.celery import app
from tests.integration.conftest import QUEUE, send_tasks_to


@pytest.fixture
def broker(session_broker_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(session_broker_url)
    yield client
    client.delete(*client.keys(f"{QUEUE}-probe-*"))
    client.close()


def test_the_tasks_of_a_test_go_to_the_queue_of_the_stack_it_points_at(
    broker: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared, own = f"{QUEUE}-probe-shared", f"{QUEUE}-probe-own"

    send_tasks_to(shared, monkeypatch)
    app.send_task("tests.probe")
    send_tasks_to(own, monkeypatch)
    app.send_task("tests.probe")
    app.send_task("tests.probe")

    assert (broker.llen(shared), broker.llen(own)) == (1, 2)
