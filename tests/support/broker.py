"""The live stack's broker for the test session: a Redis of the session's own and the queue its tasks go to.

A pytest plugin (`pytest_plugins` in tests/conftest.py), so that the integration and the browser suites
share the one session fixture: a copy imported into another conftest would be a second session fixture,
starting a second Redis and switching the Celery app to it (tests/test_fixture_structure.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.db import connection

from studio.celery import app
from tests.support.ports import free_port, wait_for_port
from tests.support.processes import kill_group, spawn

# A Redis database and a queue of this test session's own, so that another run of this suite sharing
# the Redis server never takes our tasks (nor we theirs).
REDIS_DB = 13
QUEUE = f"integration-{os.getpid()}"


class PrivateRedis:
    """A `redis-server` of this test session's own, without persistence, so a test may restart it (losing
    every queued task, as a restarted Redis without a disk does) without touching the shared one."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        self.workdir.mkdir(parents=True, exist_ok=True)
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no", "--dir", str(self.workdir)]  # fmt: skip
        self.process = spawn(command, log_path=self.workdir / "redis.log")
        wait_for_port(self.port, timeout=10)
        return self

    def kill(self) -> None:
        kill_group(self.process)

    def restart(self) -> None:
        self.kill()
        self.start()


_private_redis: PrivateRedis | None = None


def private_redis() -> PrivateRedis | None:
    """The session's own Redis (None when `redis-server` is not installed and the shared one is used)."""
    return _private_redis


@pytest.fixture(scope="session")
def session_broker_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The test process sends tasks to our own Redis for the rest of the session: a `redis-server` started
    for the session when one is installed, else our own database of the shared Redis.

    Switched once: kombu's pools and producers cache the URL, and switching back and forth between tests
    left sends going nowhere.
    """
    global _private_redis
    if shutil.which("redis-server"):
        _private_redis = PrivateRedis(tmp_path_factory.mktemp("redis")).start()
        url = _private_redis.url
    else:
        base = django_settings.REDIS_URL
        if not base:
            pytest.skip("the live stack needs Redis (make test finds it)")
        url = base.rsplit("/", 1)[0] + f"/{REDIS_DB}"
    app.conf.broker_url = url
    app.conf.task_default_queue = QUEUE
    app._pool = None
    app.amqp._producer_pool = None
    yield url
    if _private_redis is not None:
        _private_redis.kill()


@pytest.fixture
def broker_url(session_broker_url: str) -> str:
    if connection.vendor != "postgresql":
        pytest.skip("the live stack needs Postgres (make test finds it)")
    # Tasks left over from an earlier test name runs that no longer exist, and do nothing.
    return session_broker_url
