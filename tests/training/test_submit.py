from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.utils import timezone

from runpod_worker.contract import JobInput
from studio.celery import app
from studio.errors import Conflict
from tests.training.conftest import FakeProvider, make_run
from training.models import TrainingRun
from training.runpod import RunPodRejected, RunPodSubmitUncertain, RunPodUnavailable
from training.services import (
    training_run_cancel,
    training_run_start,
    training_run_submit,
    training_run_worker_started,
)
from training.tasks import submit_training_run
from training.tokens import run_token


@pytest.fixture
def pending(character: Any) -> TrainingRun:
    # Created without the on-commit enqueue running, so each test submits by hand.
    return training_run_start(character=character, requested_by=character.owner, source="user")


def test_submit_sends_a_job_the_worker_accepts_and_records_it(
    pending: TrainingRun, provider: FakeProvider
) -> None:
    run = training_run_submit(run=pending)

    sent = provider.submitted[0]
    spec = JobInput.from_dict(sent["input"])
    assert spec.run_id == str(run.pk) and len(spec.images) == 3
    assert spec.callback is not None and spec.callback.token == run_token(run.pk)
    assert spec.output.lora_upload_url.startswith("http")
    assert sent["webhook"].endswith(f"/hooks/runpod/{run.pk}/{run_token(run.pk)}")
    # The run's own time limit, fitted to its steps at start (tests/training/test_time_limits.py).
    assert sent["policy"]["executionTimeout"] == run.execution_timeout_s * 1000
    assert sent["policy"]["ttl"] > sent["policy"]["executionTimeout"]
    assert (run.status, run.runpod_job_id, run.attempts) == ("queued", "job-1", 1)


def test_a_run_with_a_job_id_is_never_submitted_twice(pending: TrainingRun, provider: FakeProvider) -> None:
    training_run_submit(run=pending)
    training_run_submit(run=pending)
    submit_training_run(str(pending.pk))

    assert len(provider.submitted) == 1


def test_after_an_unanswered_run_call_it_is_not_called_again_within_the_grace(
    pending: TrainingRun, provider: FakeProvider
) -> None:
    provider.submit_errors.append(RunPodSubmitUncertain("read timeout; a job may exist"))
    submit_training_run(str(pending.pk))

    submit_training_run(str(pending.pk))

    assert len(provider.submitted) == 1
    pending.refresh_from_db()
    assert pending.status == "pending" and pending.submit_attempted_at is not None


def test_the_job_from_an_unanswered_call_claims_the_run_when_its_worker_starts(
    pending: TrainingRun, provider: FakeProvider
) -> None:
    provider.submit_errors.append(RunPodSubmitUncertain("read timeout"))
    submit_training_run(str(pending.pk))

    answer = training_run_worker_started(run=pending, job_id="job-that-was-created")

    pending.refresh_from_db()
    assert answer.action == "continue"
    assert (pending.status, pending.runpod_job_id) == ("training", "job-that-was-created")


def test_after_the_grace_the_run_is_resubmitted_and_a_late_first_job_is_stopped(
    pending: TrainingRun, provider: FakeProvider, settings: Any
) -> None:
    provider.submit_errors.append(RunPodSubmitUncertain("read timeout"))
    submit_training_run(str(pending.pk))
    TrainingRun.objects.filter(pk=pending.pk).update(
        submit_attempted_at=timezone.now()
        - timedelta(seconds=settings.TRAINING_SUBMIT_UNCERTAIN_GRACE_SECONDS + 1)
    )

    submit_training_run(str(pending.pk))
    late = training_run_worker_started(run=pending, job_id="job-from-first-call")

    pending.refresh_from_db()
    assert pending.runpod_job_id == "job-2"
    assert late.action == "stop"


def test_transient_errors_retry_then_leave_the_run_pending_for_the_sweep_without_using_attempts(
    pending: TrainingRun, provider: FakeProvider, settings: Any
) -> None:
    provider.submit_errors.extend(
        RunPodUnavailable("RunPod answered POST run with HTTP 429 on every attempt") for _ in range(10)
    )

    # Eager Celery runs each retry inline (without its countdown) until the retries run out.
    app.conf.task_eager_propagates = False
    try:
        submit_training_run.delay(str(pending.pk))
    finally:
        app.conf.task_eager_propagates = True

    pending.refresh_from_db()
    assert len(provider.submitted) == settings.TRAINING_SUBMIT_MAX_ATTEMPTS
    # No job can exist: the run waits for the sweep's recheck, and none of the calls counts as an attempt.
    assert (pending.status, pending.attempts, pending.submit_attempted_at) == ("pending", 0, None)
    assert pending.submit_due_at is not None and pending.submit_due_at > timezone.now()


def test_a_run_runpod_would_not_take_for_the_give_up_time_fails_saying_nothing_was_billed(
    pending: TrainingRun, provider: FakeProvider, settings: Any
) -> None:
    give_up = timedelta(seconds=settings.TRAINING_SUBMIT_GIVE_UP_SECONDS)
    with time_machine.travel(pending.created_at + give_up):
        submit_training_run(str(pending.pk))

    pending.refresh_from_db()
    assert (pending.status, pending.error_code) == ("failed", "submit_failed")
    assert pending.error_message.startswith("RunPod would not take the run for 60 minutes")
    assert "nothing was billed" in pending.error_message
    assert provider.submitted == []


def test_a_permanent_refusal_fails_the_run_at_once(pending: TrainingRun, provider: FakeProvider) -> None:
    provider.submit_errors.append(RunPodRejected("RunPod refused the API key (HTTP 401)."))

    submit_training_run(str(pending.pk))

    pending.refresh_from_db()
    assert (pending.status, pending.error_code) == ("failed", "submit_rejected")
    assert "HTTP 401" in pending.error_message
    assert len(provider.submitted) == 1


def test_cancel_stops_the_runpod_job_then_ends_the_run(character: Any, provider: FakeProvider) -> None:
    run = make_run(character, status="training", runpod_job_id="job-9")

    training_run_cancel(run=run, source="user")

    run.refresh_from_db()
    assert run.status == "cancelled" and provider.cancelled == ["job-9"]
    assert run.events.get().detail == {"job_id": "job-9", "runpod": "cancelled"}


def test_cancel_ends_the_run_even_when_runpod_cannot_be_reached(
    character: Any, provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = make_run(character, status="training", runpod_job_id="job-9")

    def unreachable(job_id: str) -> None:
        raise RunPodUnavailable("down")

    monkeypatch.setattr(provider, "cancel", unreachable)
    training_run_cancel(run=run, source="user")

    run.refresh_from_db()
    assert run.status == "cancelled"  # the worker's next callback is answered "stop"


def test_cancelling_a_finished_run_says_there_is_nothing_to_cancel(
    character: Any, provider: FakeProvider
) -> None:
    run = make_run(character, status="completed")

    with pytest.raises(Conflict, match="already completed; there is nothing to cancel"):
        training_run_cancel(run=run, source="user")


def test_a_job_created_for_a_run_cancelled_meanwhile_is_cancelled(
    pending: TrainingRun,
    provider: FakeProvider,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    original = provider.submit

    def submit_while_user_cancels(**kwargs: Any) -> Any:
        training_run_cancel(run=TrainingRun.objects.get(pk=pending.pk), source="user")
        return original(**kwargs)

    monkeypatch.setattr(provider, "submit", submit_while_user_cancels)
    with django_capture_on_commit_callbacks(execute=True):
        training_run_submit(run=pending)

    pending.refresh_from_db()
    assert pending.status == "cancelled" and pending.runpod_job_id == ""
    assert provider.cancelled == ["job-1"]
