"""Cancelling a run whose worker is reporting lets the worker upload what it made before it ends."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from tests.training.conftest import FakeProvider, held_run, make_run
from training.models import StrayJob
from training.services import training_run_cancel

pytestmark = pytest.mark.django_db


def test_a_reporting_worker_is_told_to_stop_and_runpod_cancels_only_after_the_grace(
    character: Any, provider: FakeProvider, settings: Any
) -> None:
    settings.TRAINING_CANCEL_GRACE_SECONDS = 120
    run = held_run(character)

    run = training_run_cancel(run=run, source="user")

    assert run.status == "cancelled" and provider.cancelled == []
    stray = StrayJob.objects.get(runpod_job_id="job-1")
    assert stray.next_attempt_at is not None
    assert stray.next_attempt_at - timezone.now() > timedelta(seconds=110)
    assert run.events.get(to_status="cancelled").detail["runpod"] == "stop_asked"


def test_a_silent_worker_is_cancelled_through_runpod_at_once(character: Any, provider: FakeProvider) -> None:
    run = make_run(
        character,
        status="training",
        runpod_job_id="job-1",
        worker_delivery_id="d1",
        worker_seen_at=timezone.now() - timedelta(minutes=5),
    )

    training_run_cancel(run=run, source="user")

    assert provider.cancelled == ["job-1"]


def test_erasing_the_character_cancels_its_run_through_runpod_at_once(
    character: Any, provider: FakeProvider
) -> None:
    run = held_run(character)

    training_run_cancel(run=run, source="system", keep_artifacts=False)

    assert provider.cancelled == ["job-1"]
