"""A 404 names no cause: RunPod answers it for a job it no longer knows and for a wrong or deleted endpoint
alike (docs serverless/endpoints/send-requests.mdx:215, "Check your endpoint ID"). Before the sweep declares
a job lost it asks `/health`, which names no job: an endpoint RunPod does not know stops the sweep from
failing runs, and is one clear operator error — on the admin dashboard and once in the log."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from tests.characters.factories import CharacterFactory
from tests.training.conftest import FakeProvider, make_run
from training.models import RunPodEndpointStatus, StrayJob, TrainingRun
from training.runpod import RunPodEndpointNotFound, RunPodJobNotFound
from training.services import training_run_cancel
from training.tasks import sweep_training_runs

pytestmark = pytest.mark.django_db

UNKNOWN = RunPodEndpointNotFound("RunPod does not know the endpoint (GET health: HTTP 404).")


def due_queued(owner: Any, job_id: str) -> TrainingRun:
    return make_run(
        CharacterFactory(owner=owner),
        "queued",
        runpod_job_id=job_id,
        submitted_at=timezone.now(),
        next_poll_at=timezone.now() - timedelta(seconds=5),
    )


def test_w4_a_404_while_runpod_does_not_know_the_endpoint_fails_no_run(
    alice: Any, provider: FakeProvider, settings: Any
) -> None:
    settings.RUNPOD_ENDPOINT_ID = "re-created-elsewhere"
    run = due_queued(alice, "job-a")
    provider.status_errors.append(RunPodJobNotFound("HTTP 404"))
    provider.health_errors.append(UNKNOWN)

    sweep_training_runs()

    run.refresh_from_db()
    assert (run.status, run.error_code) == ("queued", "")
    status = RunPodEndpointStatus.objects.get(endpoint_id="re-created-elsewhere")
    assert status.problem == RunPodEndpointStatus.Problem.NOT_FOUND
    assert "RUNPOD_ENDPOINT_ID" in status.message and "re-created-elsewhere" in status.message


def test_many_runs_meeting_an_unknown_endpoint_make_one_error_in_the_log(
    alice: Any, provider: FakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    runs = [due_queued(alice, f"job-{n}") for n in range(3)]
    provider.status_errors.extend(RunPodJobNotFound("HTTP 404") for _ in runs)
    provider.health_errors.extend(UNKNOWN for _ in runs)

    with caplog.at_level(logging.ERROR, "training.services"):
        sweep_training_runs()

    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "RUNPOD_ENDPOINT_ID" in errors[0].getMessage()
    assert TrainingRun.objects.filter(status="queued").count() == 3


def test_a_404_while_the_endpoint_answers_health_is_a_lost_job_and_clears_the_endpoint_problem(
    alice: Any, provider: FakeProvider, settings: Any
) -> None:
    RunPodEndpointStatus.objects.create(
        endpoint_id=settings.RUNPOD_ENDPOINT_ID,
        problem="not_found",
        message="unknown",
        problem_since=timezone.now(),
    )
    run = due_queued(alice, "job-a")
    provider.status_errors.append(RunPodJobNotFound("HTTP 404"))

    sweep_training_runs()

    run.refresh_from_db()
    assert (run.status, run.error_code) == ("failed", "job_lost")
    assert provider.health_calls == 1
    assert RunPodEndpointStatus.objects.get().problem == ""


def test_a_completed_runs_cost_stays_pending_while_the_endpoint_is_unknown(
    character: Any, provider: FakeProvider
) -> None:
    run = make_run(
        character,
        "completed",
        runpod_job_id="job-1",
        finished_at=timezone.now(),
        next_poll_at=timezone.now() - timedelta(seconds=1),
    )
    assert run.cost_state == "pending"
    provider.status_errors.append(RunPodJobNotFound("HTTP 404"))
    provider.health_errors.append(UNKNOWN)

    sweep_training_runs()

    run.refresh_from_db()
    assert run.cost_state == "pending" and run.next_poll_at is not None


def test_the_dashboard_says_what_is_wrong_and_what_to_do(
    client: Client, staff: Any, alice: Any, provider: FakeProvider
) -> None:
    due_queued(alice, "job-a")
    provider.status_errors.append(RunPodJobNotFound("HTTP 404"))
    provider.health_errors.extend([UNKNOWN, UNKNOWN])
    sweep_training_runs()
    client.force_login(staff)

    page = client.get(reverse("admin:index")).content.decode()

    assert "RunPod does not know the endpoint" in page
    assert "Set RUNPOD_ENDPOINT_ID" in page


@pytest.mark.parametrize(
    ("endpoint_known", "runpod", "strays"), [(True, "gone", 0), (False, "endpoint_unknown", 1)]
)
def test_a_404_to_a_runs_own_cancel_means_gone_only_once_runpod_knows_the_endpoint(
    alice: Any, provider: FakeProvider, endpoint_known: bool, runpod: str, strays: int
) -> None:
    run = due_queued(alice, "job-404")
    provider.cancel_errors.append(RunPodJobNotFound("RunPod answered 404 for job-404"))
    if not endpoint_known:
        provider.health_errors.append(UNKNOWN)

    cancelled = training_run_cancel(run=run, source="user")

    assert cancelled.status == TrainingRun.Status.CANCELLED
    assert cancelled.events.last().detail["runpod"] == runpod
    # A job RunPod may still run where it was sent is cancelled again later, through the stray-job sweep.
    assert StrayJob.objects.filter(runpod_job_id="job-404", status=StrayJob.Status.PENDING).count() == strays
