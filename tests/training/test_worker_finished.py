"""A job handed out twice (runpod-python#402): the duplicate's `claimed_elsewhere` failure never ends the
run, and the holder's `finished` callback completes it with the LoRA verified in storage."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from runpod_worker.contract import JobOutput, WorkerError
from tests.training.conftest import HOLDER, assert_keeps_its_own_lora, held_run, store_lora
from training.models import TrainingRun
from training.runpod import RunPodJob
from training.services import (
    training_run_apply_status,
    training_run_worker_finished,
    training_run_worker_started,
)
from training.tokens import run_token

pytestmark = pytest.mark.django_db

DUPLICATE = "delivery-duplicate"


@pytest.fixture
def run(character: Any) -> TrainingRun:
    # The holder called back just now: a duplicate's result makes the run wait for its "finished".
    return held_run(character)


def apply(run: TrainingRun, status: str, **job: Any) -> TrainingRun:
    payload = {"id": "job-1", "status": status, **job}
    return training_run_apply_status(run_id=run.pk, job=RunPodJob.from_payload(payload), source="poll")


def finished(run: TrainingRun, delivery_id: str, output: dict[str, Any]) -> dict[str, Any]:
    answer = training_run_worker_finished(
        run=run, job_id="job-1", delivery_id=delivery_id, output=JobOutput.from_dict(output)
    )
    return answer.as_dict()


def claimed_elsewhere_error() -> str:
    return WorkerError("claimed_elsewhere", "The run was not started: another worker holds it.").to_json()


def test_a_claimed_elsewhere_failure_leaves_the_run_active(run: TrainingRun) -> None:
    apply(run, "FAILED", error=claimed_elsewhere_error(), executionTime=4000)

    run.refresh_from_db()
    assert (run.status, run.error_code, run.finished_at) == ("training", "", None)
    assert run.execution_ms == 4000
    assert list(run.events.values_list("to_status", flat=True)) == []


def test_any_other_failure_still_ends_the_run(run: TrainingRun) -> None:
    apply(run, "FAILED", error=WorkerError("cancelled", "Training was stopped.").to_json())

    run.refresh_from_db()
    assert (run.status, run.error_code) == ("failed", "cancelled")


def test_the_holders_finished_callback_completes_the_run_with_the_lora_verified(run: TrainingRun) -> None:
    output = store_lora(run, b"the trained lora")
    apply(run, "FAILED", error=claimed_elsewhere_error(), executionTime=60_000)

    assert finished(run, HOLDER, output) == {"action": "continue"}

    run.refresh_from_db()
    assert run.status == "completed"
    assert (run.lora_bytes, run.lora_sha256) == (output["lora"]["bytes"], output["lora"]["sha256"])
    assert_keeps_its_own_lora(run, b"the trained lora")
    assert run.cost_usd is not None and run.cost_usd > 0  # RunPod's execution time, not the worker's
    assert run.events.filter(to_status="completed", source="worker").count() == 1
    # The holder's own result reaching RunPod later changes nothing.
    apply(run, "COMPLETED", output=output, executionTime=90_000)
    run.refresh_from_db()
    assert (run.status, run.execution_ms, run.events.filter(to_status="completed").count()) == (
        "completed",
        60_000,
        1,
    )


def test_the_cost_is_filled_from_runpods_final_status_after_a_finished_callback(run: TrainingRun) -> None:
    output = store_lora(run)
    finished(run, HOLDER, output)
    run.refresh_from_db()
    assert (run.status, run.cost_usd) == ("completed", None)

    apply(run, "COMPLETED", output=output, executionTime=100_000)

    run.refresh_from_db()
    assert run.execution_ms == 100_000 and run.cost_usd is not None and run.cost_usd > 0


def test_a_finished_callback_from_another_delivery_is_refused(run: TrainingRun) -> None:
    output = store_lora(run)

    answer = finished(run, DUPLICATE, output)

    assert answer["action"] == "stop" and answer["code"] == "claimed_elsewhere"
    run.refresh_from_db()
    assert run.status == "training"


def test_a_finished_callback_with_a_wrong_sha256_does_not_complete(run: TrainingRun) -> None:
    output = store_lora(run)
    output["lora"]["sha256"] = "0" * 64

    answer = finished(run, HOLDER, output)

    assert answer == {"action": "continue"}
    run.refresh_from_db()
    assert (run.status, run.lora_sha256) == ("training", "")


def test_a_duplicates_stop_answer_carries_the_claimed_elsewhere_code(run: TrainingRun) -> None:
    run.started_at = run.worker_seen_at = timezone.now()  # the holder called back just now
    run.save(update_fields=["started_at", "worker_seen_at"])

    answer = training_run_worker_started(run=run, job_id="job-1", delivery_id=DUPLICATE, claim_wait_s=1e6)

    assert answer.as_dict() == {
        "action": "stop",
        "reason": "another worker is already running this job",
        "code": "claimed_elsewhere",
    }


def test_the_finished_event_goes_through_the_callback_view(run: TrainingRun) -> None:
    output = store_lora(run)
    client = Client()
    body = {"event": "finished", "job_id": "job-1", "delivery_id": HOLDER, "output": output}

    response = client.post(
        reverse("training:worker-callback", args=[run.pk]),
        data=json.dumps(body),
        content_type="application/json",
        headers={"Authorization": f"Bearer {run_token(run.pk)}"},
    )

    assert response.status_code == 200, response.content
    assert response.json() == {"action": "continue"}
    run.refresh_from_db()
    assert run.status == "completed"


def test_a_failure_names_the_photo_as_its_owner_uploaded_it(run: TrainingRun) -> None:
    stored = "0f" * 32 + ".jpg"
    run.manifest = [
        {"name": stored, "original_name": "anna at the beach.jpg", "sha256": "0f" * 32, "storage_name": "x"}
    ]
    run.save()
    message = (
        f"Image 1 ({stored}) could not be downloaded: HTTP 404, the link has expired or the file is gone."
    )

    apply(run, "FAILED", error=WorkerError("download_failed", message).to_json())

    run.refresh_from_db()
    assert run.error_message == (
        "Image 1 (anna at the beach.jpg) could not be downloaded: HTTP 404, the link has expired or the file "
        "is gone."
    )
