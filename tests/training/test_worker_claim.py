"""Which delivery of a run's job may train it: RunPod re-running a job after a lost worker must carry on,
the same job handed to two workers at once must train once (runpod-python#402)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import time_machine
from django.test import Client
from django.utils import timezone

from runpod_worker.contract import Progress
from tests.training.conftest import make_run
from training.models import TrainingRun
from training.services import (
    CLAIM_RETRY_MARGIN_S,
    training_run_worker_progress,
    training_run_worker_started,
)
from training.tokens import run_token

pytestmark = pytest.mark.django_db

WINDOW_S = 30.0
FIRST, SECOND = "delivery-first", "delivery-second"


@pytest.fixture
def run(character: Any, settings: Any) -> TrainingRun:
    settings.TRAINING_WORKER_LIVENESS_SECONDS = WINDOW_S
    return make_run(character, status="queued", runpod_job_id="job-1")


@pytest.fixture
def clock() -> Iterator[Any]:
    with time_machine.travel(timezone.now(), tick=False) as traveller:
        yield traveller


def started(run: TrainingRun, delivery_id: str, claim_wait_s: float = 0.0) -> dict[str, Any]:
    answer = training_run_worker_started(
        run=run, job_id="job-1", delivery_id=delivery_id, claim_wait_s=claim_wait_s
    )
    return answer.as_dict()


def progress(run: TrainingRun, delivery_id: str, step: int) -> dict[str, Any]:
    report = Progress(stage="training", step=step, total_steps=100)
    return training_run_worker_progress(
        run=run, job_id="job-1", progress=report, delivery_id=delivery_id
    ).as_dict()


def test_the_first_delivery_to_start_claims_the_run(run: TrainingRun, clock: Any) -> None:
    assert started(run, FIRST) == {"action": "continue"}

    run.refresh_from_db()
    assert (run.status, run.worker_delivery_id) == ("training", FIRST)


def test_the_holder_asking_started_again_is_told_to_continue(run: TrainingRun, clock: Any) -> None:
    started(run, FIRST)
    clock.shift(2)

    assert started(run, FIRST) == {"action": "continue"}


def test_another_delivery_is_told_to_wait_until_the_holders_liveness_window_runs_out(
    run: TrainingRun, clock: Any
) -> None:
    started(run, FIRST)
    clock.shift(10)

    answer = started(run, SECOND)

    assert answer["action"] == "wait"
    assert answer["retry_after_s"] == pytest.approx(WINDOW_S - 10 + CLAIM_RETRY_MARGIN_S)
    run.refresh_from_db()
    assert run.worker_delivery_id == FIRST


def test_a_delivery_takes_the_run_over_once_the_holder_was_silent_past_the_window(
    run: TrainingRun, clock: Any
) -> None:
    started(run, FIRST)
    progress(run, FIRST, 10)
    clock.shift(2)
    assert started(run, SECOND)["action"] == "wait"  # the first worker just died; nobody knows yet

    clock.shift(WINDOW_S)
    answer = started(run, SECOND, claim_wait_s=WINDOW_S)

    assert answer == {"action": "continue"}
    run.refresh_from_db()
    assert (run.status, run.worker_delivery_id, run.runpod_job_id) == ("training", SECOND, "job-1")
    assert run.events.filter(to_status="training").count() == 1


def test_a_holder_that_comes_back_after_losing_the_claim_is_told_to_stop(
    run: TrainingRun, clock: Any
) -> None:
    started(run, FIRST)
    clock.shift(WINDOW_S + 1)
    started(run, SECOND)

    assert progress(run, FIRST, 20) == {
        "action": "stop",
        "reason": "the run was claimed by another worker",
        "code": "claimed_elsewhere",
    }
    assert progress(run, SECOND, 5) == {"action": "continue"}


def test_progress_from_the_holder_keeps_its_claim_alive(run: TrainingRun, clock: Any) -> None:
    started(run, FIRST)
    for _ in range(4):
        clock.shift(WINDOW_S / 2)
        progress(run, FIRST, 10)

    assert started(run, SECOND)["action"] == "wait"


def test_a_delivery_that_waited_a_whole_window_while_the_holder_called_back_is_a_duplicate_and_stops(
    run: TrainingRun, clock: Any
) -> None:
    started(run, FIRST)
    assert started(run, SECOND)["action"] == "wait"
    clock.shift(WINDOW_S / 2)
    progress(run, FIRST, 10)
    clock.shift(WINDOW_S / 2 + 1)

    answer = started(run, SECOND, claim_wait_s=WINDOW_S + 1)

    assert answer == {
        "action": "stop",
        "reason": "another worker is already running this job",
        "code": "claimed_elsewhere",
    }
    run.refresh_from_db()
    assert run.worker_delivery_id == FIRST


def test_a_waiting_delivery_is_told_to_stop_once_the_run_has_ended(run: TrainingRun, clock: Any) -> None:
    started(run, FIRST)
    assert started(run, SECOND)["action"] == "wait"
    TrainingRun.objects.filter(pk=run.pk).update(status="completed")
    clock.shift(5)

    assert started(run, SECOND, claim_wait_s=5) == {
        "action": "stop",
        "reason": "the run is already completed",
    }


def test_a_worker_without_delivery_ids_is_answered_as_before(
    run: TrainingRun, clock: Any, settings: Any
) -> None:
    settings.TRAINING_WORKER_LEASE_SECONDS = 45
    assert training_run_worker_started(run=run, job_id="job-1").as_dict() == {"action": "continue"}
    clock.shift(40)

    again = training_run_worker_started(run=run, job_id="job-1")
    clock.shift(46)
    after_the_lease = training_run_worker_started(run=run, job_id="job-1")

    assert again.as_dict() == {
        "action": "stop",
        "reason": "another worker is already running this job",
        "code": "claimed_elsewhere",
    }
    assert after_the_lease.as_dict() == {"action": "continue"}


def test_a_delivery_may_take_over_a_run_started_by_a_worker_without_delivery_ids(
    run: TrainingRun, clock: Any
) -> None:
    training_run_worker_started(run=run, job_id="job-1")
    clock.shift(5)
    assert started(run, SECOND)["action"] == "wait"

    clock.shift(WINDOW_S)

    assert started(run, SECOND, claim_wait_s=WINDOW_S) == {"action": "continue"}


def test_another_job_of_the_run_is_still_told_to_stop_whatever_its_delivery(run: TrainingRun) -> None:
    started(run, FIRST)

    answer = training_run_worker_started(run=run, job_id="job-2", delivery_id=SECOND)

    assert answer.as_dict() == {
        "action": "stop",
        "reason": "another job is already training this run",
        "code": "claimed_elsewhere",
    }


# --------------------------------------------------------------------------------- over HTTP


def callback(client: Client, run: TrainingRun, body: dict[str, Any]) -> Any:
    return client.post(
        f"/hooks/worker/{run.pk}",
        data=json.dumps(body),
        content_type="application/json",
        headers={"Authorization": f"Bearer {run_token(run.pk)}"},
    )


@pytest.fixture
def hooked_run(run: TrainingRun) -> TrainingRun:
    return run  # its token is derived from its id: nothing to store


def test_the_callback_view_passes_delivery_ids_and_answers_wait_with_retry_after(
    client: Client, hooked_run: TrainingRun
) -> None:
    first = callback(client, hooked_run, {"event": "started", "job_id": "job-1", "delivery_id": FIRST})
    report = {"event": "progress", "job_id": "job-1", "delivery_id": FIRST, "stage": "training", "step": 3}
    progressed = callback(client, hooked_run, report)
    second = callback(
        client,
        hooked_run,
        {"event": "started", "job_id": "job-1", "delivery_id": SECOND, "claim_wait_s": 1.5},
    )

    assert first.json() == {"action": "continue"}
    assert progressed.json() == {"action": "continue"}
    assert second.json()["action"] == "wait"
    assert 0 < second.json()["retry_after_s"] <= WINDOW_S + CLAIM_RETRY_MARGIN_S
    hooked_run.refresh_from_db()
    assert (hooked_run.worker_delivery_id, hooked_run.progress_step) == (FIRST, 3)


@pytest.mark.parametrize(
    "extra",
    [{"delivery_id": 7}, {"delivery_id": "x" * 65}, {"claim_wait_s": "soon"}, {"claim_wait_s": -1}],
)
def test_a_malformed_delivery_id_or_wait_time_is_400(
    client: Client, hooked_run: TrainingRun, extra: dict[str, Any]
) -> None:
    response = callback(client, hooked_run, {"event": "started", "job_id": "job-1", **extra})

    assert response.status_code == 400
    hooked_run.refresh_from_db()
    assert hooked_run.status == "queued"
