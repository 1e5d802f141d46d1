"""A run's status change is announced (`training_run_status_changed`, which records outbound webhook events)
after its transaction commits. A process that dies between the commit and the announcement, or a receiver
that fails, used to lose it; the change's TrainingEvent is now the outbox, and the sweep announces what was
not announced."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any

import pytest
import time_machine
from django.db import OperationalError
from django.utils import timezone

from developer.models import WebhookDelivery
from developer.services import webhook_endpoint_create
from tests.characters.factories import CharacterFactory
from tests.training.conftest import make_run
from training.models import TrainingEvent, TrainingRun
from training.services import (
    ANNOUNCE_MAX_ATTEMPTS,
    ANNOUNCE_RETRY,
    training_events_announce_overdue,
    training_run_fail,
    transitions,
)
from training.signals import training_run_status_changed
from training.tasks import sweep_training_runs

pytestmark = pytest.mark.django_db

Capture = Callable[..., Any]


@pytest.fixture
def queued(character: Any, settings: Any) -> TrainingRun:
    settings.WEBHOOKS_ALLOW_PRIVATE_URLS = True
    webhook_endpoint_create(user=character.owner, url="http://127.0.0.1:9/studio")
    return make_run(character, TrainingRun.Status.QUEUED)


@pytest.fixture
def heard() -> Iterator[list[str]]:
    """Every announcement made, as `<run id>:<status>`."""
    calls: list[str] = []

    def listen(sender: Any, *, run_id: Any, to_status: str, **kwargs: Any) -> None:
        calls.append(f"{run_id}:{to_status}")

    training_run_status_changed.connect(listen, dispatch_uid="test.heard")
    yield calls
    training_run_status_changed.disconnect(dispatch_uid="test.heard")


def fail(run: TrainingRun) -> None:
    training_run_fail(run_id=run.pk, code="trainer_failed", message="The trainer stopped.", source="system")


def failed_event(run: TrainingRun) -> TrainingEvent:
    return TrainingEvent.objects.get(run=run, to_status="failed")


def failed_webhooks(run: TrainingRun) -> int:
    deliveries = WebhookDelivery.objects.filter(event_type="training_run.failed")
    return deliveries.filter(payload__data__id=str(run.pk)).count()


def test_a_change_is_announced_after_its_commit_and_marked_so(
    queued: TrainingRun, heard: list[str], django_capture_on_commit_callbacks: Capture
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        fail(queued)

    assert heard == [f"{queued.pk}:failed"]
    assert failed_event(queued).announced_at is not None
    assert failed_webhooks(queued) == 1


def test_a_change_whose_process_died_before_announcing_it_is_announced_by_the_sweep_once(
    queued: TrainingRun, heard: list[str], django_capture_on_commit_callbacks: Capture
) -> None:
    with django_capture_on_commit_callbacks(execute=False):  # committed; the process died right after
        fail(queued)
    assert (failed_event(queued).announced_at, heard, failed_webhooks(queued)) == (None, [], 0)

    sweep_training_runs()  # within the grace the announcement may still be on its way: left alone
    assert heard == []

    with time_machine.travel(timezone.now() + ANNOUNCE_RETRY[0] + timedelta(seconds=1)):
        sweep_training_runs()
        sweep_training_runs()

    assert heard == [f"{queued.pk}:failed"]
    assert failed_event(queued).announced_at is not None
    assert failed_webhooks(queued) == 1


def test_a_receiver_that_failed_is_called_again_by_the_sweep(
    queued: TrainingRun, django_capture_on_commit_callbacks: Capture, caplog: pytest.LogCaptureFixture
) -> None:
    answers = [RuntimeError("the webhook table was locked"), None]

    def flaky(sender: Any, **kwargs: Any) -> None:
        answer = answers.pop(0)
        if answer is not None:
            raise answer

    training_run_status_changed.connect(flaky, dispatch_uid="test.flaky")
    try:
        with (
            caplog.at_level(logging.ERROR, "training.services"),
            django_capture_on_commit_callbacks(execute=True),
        ):
            fail(queued)
        assert failed_event(queued).announced_at is None
        assert "receiver" in caplog.text and "failed" in caplog.text

        with time_machine.travel(timezone.now() + ANNOUNCE_RETRY[0] + timedelta(seconds=1)):
            sweep_training_runs()
    finally:
        training_run_status_changed.disconnect(dispatch_uid="test.flaky")

    assert answers == []
    assert failed_event(queued).announced_at is not None
    assert failed_webhooks(queued) == 1  # the webhook receiver ran twice; its event is recorded once


@dataclass
class BrokenReceiver:
    """A receiver that fails for the runs in `failing`, recording each call (run id, when)."""

    failing: set[str] = field(default_factory=set)
    calls: list[tuple[str, datetime]] = field(default_factory=list)

    def hear(self, run_id: Any) -> None:
        self.calls.append((str(run_id), timezone.now()))
        if str(run_id) in self.failing:
            raise RuntimeError("the receiver is broken")


@pytest.fixture
def broken() -> Iterator[BrokenReceiver]:
    state = BrokenReceiver()

    def receiver(sender: Any, *, run_id: Any, **kwargs: Any) -> None:  # a function: Django logs its name
        state.hear(run_id)

    training_run_status_changed.connect(receiver, weak=False, dispatch_uid="test.broken")
    yield state
    training_run_status_changed.disconnect(dispatch_uid="test.broken")


def test_a_change_a_receiver_keeps_failing_is_tried_with_growing_delays_then_given_up(
    queued: TrainingRun,
    broken: BrokenReceiver,
    django_capture_on_commit_callbacks: Capture,
    caplog: pytest.LogCaptureFixture,
) -> None:
    broken.failing.add(str(queued.pk))
    with time_machine.travel(timezone.now(), tick=False) as clock:
        with django_capture_on_commit_callbacks(execute=True):
            fail(queued)  # the first attempt, right after the commit
        with caplog.at_level(logging.ERROR, "training.services"):
            while (event := failed_event(queued)).announced_at is None:
                clock.move_to(event.announce_due_at)
                sweep_training_runs()

    tried = [when for run_id, when in broken.calls if run_id == str(queued.pk)]
    gaps = [round((later - earlier).total_seconds() / 60) for earlier, later in pairwise(tried)]
    assert len(tried) == ANNOUNCE_MAX_ATTEMPTS
    assert gaps == [1, 2, 4, 8, 16, 32, 60, 60, 60, 60, 60]
    assert "could not be announced (12 failed attempts); given up" in caplog.text


def test_a_change_that_keeps_failing_does_not_hold_up_the_next(
    queued: TrainingRun, broken: BrokenReceiver, django_capture_on_commit_callbacks: Capture
) -> None:
    other = make_run(
        CharacterFactory(owner=queued.character.owner), TrainingRun.Status.QUEUED, runpod_job_id="job-2"
    )
    broken.failing.add(str(queued.pk))
    with django_capture_on_commit_callbacks(execute=False):
        fail(queued)
        fail(other)

    with time_machine.travel(timezone.now() + ANNOUNCE_RETRY[0], tick=False):
        assert training_events_announce_overdue(batch_size=1) == 0  # the first due fails, and is put back
        assert training_events_announce_overdue(batch_size=1) == 1

    assert failed_event(other).announced_at is not None
    assert failed_event(queued).announced_at is None
    assert failed_event(queued).announce_attempts == 1


def test_a_late_announcement_says_when_the_change_happened(
    queued: TrainingRun, django_capture_on_commit_callbacks: Capture
) -> None:
    with django_capture_on_commit_callbacks(execute=False):
        fail(queued)

    with time_machine.travel(timezone.now() + ANNOUNCE_RETRY[0] + timedelta(minutes=5)):
        sweep_training_runs()

    [delivery] = WebhookDelivery.objects.filter(event_type="training_run.failed")
    assert delivery.payload["timestamp"] == failed_event(queued).created_at.isoformat()
    assert delivery.payload["data"]["status"] == "failed"


def test_an_error_while_announcing_does_not_fail_the_change_that_committed(
    queued: TrainingRun,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Capture,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def database_gone(event: TrainingEvent) -> bool:
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(transitions, "announce", database_gone)

    with caplog.at_level(logging.ERROR), django_capture_on_commit_callbacks(execute=True):
        fail(queued)  # raises nothing: the change stands

    queued.refresh_from_db()
    assert queued.status == "failed"
    assert failed_event(queued).announced_at is None  # the sweep announces it
    assert "server closed the connection unexpectedly" in caplog.text
