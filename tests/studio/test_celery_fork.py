"""The prefork worker freezes its objects before it forks a pool child (studio/celery.py)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from celery import signals

import studio.celery  # noqa: F401 - connects the worker's signal handlers


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_the_workers_objects_are_frozen_before_each_pool_child_is_forked(unfrozen: None) -> None:
    assert gc.get_freeze_count() == 0

    signals.worker_before_create_process.send(sender=None)

    assert gc.get_freeze_count() > 0
