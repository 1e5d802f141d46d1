"""A run's status change is announced (`training_run_status_changed`, which records outbound webhook events)
after its transaction commits. A process that dies between the commit and the announcement, or a receiver
that fails, used to lose it; the change's TrainingEvent is now the outbox, and the sweep announces what was
not announced."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.db import OperationalError
from django.utils import timezone

from developer.models import WebhookDelivery
from developer.services import webhook_endpoint_create
from tests.training.conftest import make_run
from training import services
from training.models import TrainingEvent, TrainingRun
from training.services import ANNOUNCE_GIVE_UP, ANNOUNCE_GRACE, training_run_fail
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

    with time_machine.travel(timezone.now() + ANNOUNCE_GRACE + timedelta(seconds=1)):
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

        with time_machine.travel(timezone.now() + ANNOUNCE_GRACE + timedelta(seconds=1)):
            sweep_training_runs()
    finally:
        training_run_status_changed.disconnect(dispatch_uid="test.flaky")

    assert answers == []
    assert failed_event(queued).announced_at is not None
    assert failed_webhooks(queued) == 1  # the webhook receiver ran twice; its event is recorded once


def test_an_announcement_failing_for_a_day_is_given_up_with_an_error(
    queued: TrainingRun,
    heard: list[str],
    django_capture_on_commit_callbacks: Capture,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with django_capture_on_commit_callbacks(execute=False):
        fail(queued)

    later = timezone.now() + ANNOUNCE_GIVE_UP + timedelta(minutes=1)
    with caplog.at_level(logging.ERROR, "training.services"), time_machine.travel(later):
        sweep_training_runs()

    assert heard == []
    assert failed_event(queued).announced_at is not None
    assert "its change to failed was not announced within 1 day" in caplog.text


def test_a_late_announcement_says_when_the_change_happened(
    queued: TrainingRun, django_capture_on_commit_callbacks: Capture
) -> None:
    with django_capture_on_commit_callbacks(execute=False):
        fail(queued)

    with time_machine.travel(timezone.now() + ANNOUNCE_GRACE + timedelta(minutes=5)):
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

    monkeypatch.setattr(services, "_announce", database_gone)

    with caplog.at_level(logging.ERROR), django_capture_on_commit_callbacks(execute=True):
        fail(queued)  # raises nothing: the change stands

    queued.refresh_from_db()
    assert queued.status == "failed"
    assert failed_event(queued).announced_at is None  # the sweep announces it
    assert "server closed the connection unexpectedly" in caplog.text
