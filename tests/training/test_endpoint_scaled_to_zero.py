"""An endpoint RunPod scaled to zero, read and (when allowed) repaired through RunPod's own APIs — here the
stand-in's job API and REST v2 subset.

After 3 days without requests RunPod lowers an endpoint's max workers to 2, after 7 days to 0, and leaves it
there until someone raises it (docs serverless/endpoints/endpoint-configurations.mdx:80-88); jobs then wait
in the queue until their TTL deletes them. Beat's endpoint check reads `/health` and the endpoint's max
workers, tells staff on the dashboard and once in the log, raises max workers itself only when
RUNPOD_RESTORE_MAX_WORKERS allows it, and the pages of runs waiting on it say so.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import responses
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from tests.support.local_runpod import LocalRunPod
from tests.training.conftest import make_run
from training.models import RunPodEndpointStatus, TrainingRun
from training.services import runpod_endpoint_check
from training.tasks import check_runpod_endpoint

pytestmark = pytest.mark.django_db

Problem = RunPodEndpointStatus.Problem


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRunPod]:
    workdir: Path = tmp_path_factory.mktemp("local-runpod-scale-to-zero")
    with LocalRunPod(workdir=workdir, workers=0, worker_key="worker-key", max_workers=3) as runpod:
        yield runpod


@pytest.fixture
def runpod(stand_in: LocalRunPod, settings: Any) -> Iterator[LocalRunPod]:
    settings.RUNPOD_API_BASE = stand_in.rest_url
    settings.RUNPOD_REST_API_BASE = stand_in.rest_url
    settings.RUNPOD_API_KEY = stand_in.api_key
    settings.RUNPOD_ENDPOINT_ID = stand_in.endpoint_id
    settings.RUNPOD_WORKERS_MAX = 3
    settings.RUNPOD_RESTORE_MAX_WORKERS = False
    yield stand_in
    stand_in.reset()  # max workers, faults and jobs as the stand-in started


def idle_for_a_week_with_a_job_waiting(runpod: LocalRunPod) -> str:
    runpod.set_faults(idle_days=7)
    return runpod.run({"n": 1})


@pytest.mark.integration
def test_b2_an_endpoint_scaled_to_zero_with_a_job_waiting_is_reported_and_by_default_left_as_it_is(
    runpod: LocalRunPod, caplog: pytest.LogCaptureFixture
) -> None:
    job_id = idle_for_a_week_with_a_job_waiting(runpod)

    with caplog.at_level(logging.ERROR, "training.services"):
        status = runpod_endpoint_check()

    assert (status.problem, status.max_workers, status.queued_jobs) == (Problem.SCALED_TO_ZERO, 0, 1)
    assert "max workers of endpoint local-endpoint to 0" in status.message
    assert "runpod_provision" in status.message and "RUNPOD_RESTORE_MAX_WORKERS=true" in status.message
    assert [r.getMessage() for r in caplog.records] == [f"RunPod endpoint local-endpoint: {status.message}"]
    assert runpod.endpoint()["workers"]["max"] == 0
    assert runpod.scripted_worker().take() is None
    assert runpod.status(job_id)["status"] == "IN_QUEUE"  # type: ignore[index]


@pytest.mark.integration
def test_checking_again_while_it_lasts_logs_nothing_more(
    runpod: LocalRunPod, caplog: pytest.LogCaptureFixture
) -> None:
    idle_for_a_week_with_a_job_waiting(runpod)
    runpod_endpoint_check()
    caplog.clear()

    with caplog.at_level(logging.ERROR, "training.services"):
        status = runpod_endpoint_check()

    assert status.problem == Problem.SCALED_TO_ZERO and caplog.records == []


@pytest.mark.integration
def test_when_allowed_the_check_raises_max_workers_and_the_waiting_job_is_taken(
    runpod: LocalRunPod, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.RUNPOD_RESTORE_MAX_WORKERS = True
    job_id = idle_for_a_week_with_a_job_waiting(runpod)

    with caplog.at_level(logging.WARNING, "training.services"):
        status = runpod_endpoint_check()

    assert runpod.endpoint()["workers"]["max"] == 3
    assert (status.problem, status.max_workers) == (Problem.NONE, 3)
    assert status.workers_restored_at is not None
    assert "raised it to 3" in caplog.text and "RUNPOD_RESTORE_MAX_WORKERS" in caplog.text
    assert runpod.scripted_worker().take_until(job_id)["id"] == job_id


@pytest.mark.integration
def test_with_nothing_waiting_it_is_reported_and_not_raised_even_when_allowed(
    runpod: LocalRunPod, settings: Any
) -> None:
    settings.RUNPOD_RESTORE_MAX_WORKERS = True
    runpod.set_faults(idle_days=7)

    status = runpod_endpoint_check()

    assert status.problem == Problem.SCALED_TO_ZERO and "the next run" in status.message
    assert runpod.endpoint()["workers"]["max"] == 0


@pytest.mark.integration
def test_an_endpoint_lowered_to_two_workers_after_three_idle_days_can_still_run_jobs(
    runpod: LocalRunPod,
) -> None:
    runpod.set_faults(idle_days=3)

    status = runpod_endpoint_check()

    assert (status.problem, status.max_workers) == (Problem.NONE, 2)


@pytest.mark.integration
def test_a_problem_ends_once_the_endpoint_has_workers_again(runpod: LocalRunPod) -> None:
    idle_for_a_week_with_a_job_waiting(runpod)
    runpod_endpoint_check()
    runpod.set_endpoint_max_workers(3)

    status = runpod_endpoint_check()

    assert (status.problem, status.message, status.problem_since) == (Problem.NONE, "", None)


@pytest.mark.integration
def test_an_endpoint_runpod_does_not_know_is_reported_as_such(runpod: LocalRunPod, settings: Any) -> None:
    settings.RUNPOD_ENDPOINT_ID = "deleted-or-mistyped"

    status = check_runpod_endpoint()

    assert status == Problem.NOT_FOUND
    assert RunPodEndpointStatus.objects.get(endpoint_id="deleted-or-mistyped").problem == Problem.NOT_FOUND


# ------------------------------------------------------------------------- without the stand-in


@responses.activate
def test_a_key_refused_the_endpoints_settings_is_reported_with_what_to_do(settings: Any) -> None:
    settings.RUNPOD_API_BASE = settings.RUNPOD_REST_API_BASE = "https://api.runpod.test/v2"
    settings.RUNPOD_ENDPOINT_ID = "ep1"
    responses.get("https://api.runpod.test/v2/ep1/health", json={"jobs": {"inQueue": 1}, "workers": {}})
    responses.get(
        "https://api.runpod.test/v2/serverless/ep1",
        status=403,
        json={"title": "Forbidden", "status": 403, "detail": "insufficient scope"},
    )

    status = runpod_endpoint_check()

    assert status.problem == Problem.UNREADABLE
    assert "cannot tell whether RunPod scaled it to zero" in status.message
    assert "RUNPOD_API_KEY" in status.message


def test_runpod_unreachable_leaves_the_last_finding_and_the_next_check_tries_again(
    settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.RUNPOD_API_BASE = "http://127.0.0.1:9/v2"  # nothing listens: the connection is refused
    RunPodEndpointStatus.objects.create(endpoint_id=settings.RUNPOD_ENDPOINT_ID, problem="scaled_to_zero")

    with caplog.at_level(logging.WARNING, "training.tasks"):
        assert check_runpod_endpoint() == "unavailable"

    assert RunPodEndpointStatus.objects.get().problem == Problem.SCALED_TO_ZERO
    assert "the next check tries again" in caplog.text


def test_the_check_is_on_beats_schedule(settings: Any) -> None:
    entry = settings.CELERY_BEAT_SCHEDULE["check-runpod-endpoint"]

    assert entry["task"] == "training.tasks.check_runpod_endpoint"


# --------------------------------------------------------------------------------- what people see


def scaled_to_zero(settings: Any) -> RunPodEndpointStatus:
    return RunPodEndpointStatus.objects.create(
        endpoint_id=settings.RUNPOD_ENDPOINT_ID,
        problem=Problem.SCALED_TO_ZERO,
        message="RunPod has set max workers of endpoint local to 0 … Raise max workers to 3.",
        problem_since=timezone.now(),
        checked_at=timezone.now(),
        max_workers=0,
        queued_jobs=1,
    )


def test_a_queued_runs_page_says_it_waits_for_a_worker_runpod_does_not_allow(
    client: Client, alice: Any, character: Any, settings: Any
) -> None:
    scaled_to_zero(settings)
    run = make_run(character, TrainingRun.Status.QUEUED)
    client.force_login(alice)

    page = client.get(reverse("training:run-detail", args=[run.pk])).content.decode()
    progress = client.get(reverse("training:run-progress", args=[run.pk])).json()

    assert "RunPod allows the studio no GPU worker right now" in page
    assert progress["notice"].startswith("RunPod allows the studio no GPU worker right now")
    assert "max workers" not in page  # staff's wording stays on the dashboard


def test_a_training_runs_page_says_nothing_of_it(
    client: Client, alice: Any, character: Any, settings: Any
) -> None:
    scaled_to_zero(settings)
    run = make_run(character, TrainingRun.Status.TRAINING)
    client.force_login(alice)

    page = client.get(reverse("training:run-detail", args=[run.pk])).content.decode()

    assert "no GPU worker" not in page
    assert client.get(reverse("training:run-progress", args=[run.pk])).json()["notice"] is None


def test_a_pod_runs_page_says_nothing_of_it_since_a_pod_run_never_meets_the_endpoint(
    client: Client, alice: Any, character: Any, settings: Any
) -> None:
    scaled_to_zero(settings)
    run = make_run(character, TrainingRun.Status.QUEUED, provider=TrainingRun.Provider.POD)
    client.force_login(alice)

    page = client.get(reverse("training:run-detail", args=[run.pk])).content.decode()

    assert "no GPU worker" not in page
    assert client.get(reverse("training:run-progress", args=[run.pk])).json()["notice"] is None


def test_the_dashboard_shows_staff_what_is_wrong_and_what_to_do(
    client: Client, staff: Any, settings: Any
) -> None:
    scaled_to_zero(settings)
    client.force_login(staff)

    page = client.get(reverse("admin:index")).content.decode()

    assert "No worker allowed (max workers 0)" in page and "Raise max workers to 3." in page
    assert "max workers 0" in page
