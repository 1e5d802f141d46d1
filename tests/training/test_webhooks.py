from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from tests.training.conftest import FakeProvider, make_run, store_lora
from tests.training.payloads import runpod_payload
from training.models import TrainingRun
from training.runpod import RunPodJob
from training.tokens import run_token

# Real commits, so the poll a webhook queues after commit runs (eagerly) as a worker would run it.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def run(character: Any) -> TrainingRun:
    return make_run(character, status="training", runpod_job_id="job-1")


def webhook(client: Client, run: TrainingRun, body: Any, token: str | None = None) -> Any:
    url = f"/hooks/runpod/{run.pk}/{token if token is not None else run_token(run.pk)}"
    data = body if isinstance(body, str) else json.dumps(body)
    return client.post(url, data=data, content_type="application/json")


def callback(
    client: Client, run: TrainingRun, body: Any, token: str | None = None, scheme: str = "Bearer"
) -> Any:
    headers = {} if token == "" else {"Authorization": f"{scheme} {token or run_token(run.pk)}"}
    data = body if isinstance(body, str) else json.dumps(body)
    return client.post(f"/hooks/worker/{run.pk}", data=data, content_type="application/json", headers=headers)


def completed_body(run: TrainingRun) -> dict[str, Any]:
    return runpod_payload("webhook_completed", id=run.runpod_job_id)


# --------------------------------------------------------------------------------- RunPod webhook


def test_a_webhook_with_a_wrong_token_is_404(client: Client, run: TrainingRun) -> None:
    response = webhook(client, run, completed_body(run), token="0" * 64)

    assert response.status_code == 404


def test_a_webhook_with_another_runs_token_is_404(client: Client, run: TrainingRun, character: Any) -> None:
    other = make_run(character, status="failed", runpod_job_id="job-other")

    response = webhook(client, run, completed_body(run), token=run_token(other.pk))

    assert response.status_code == 404


def test_an_unknown_run_gets_the_same_404_as_a_wrong_token(client: Client, run: TrainingRun) -> None:
    wrong_token = webhook(client, run, completed_body(run), token="nope")
    token, body, run_id = run_token(run.pk), completed_body(run), run.pk
    run.delete()
    unknown_run = client.post(f"/hooks/runpod/{run_id}/{token}", data=body, content_type="application/json")

    assert (unknown_run.status_code, unknown_run.content) == (wrong_token.status_code, wrong_token.content)


def test_a_webhook_only_accepts_post(client: Client, run: TrainingRun) -> None:
    response = client.get(f"/hooks/runpod/{run.pk}/{run_token(run.pk)}")

    assert response.status_code == 405


def test_malformed_json_is_400(client: Client, run: TrainingRun) -> None:
    response = webhook(client, run, "{not json")

    assert response.status_code == 400


def test_a_body_claiming_completed_changes_nothing_while_status_says_in_progress(
    client: Client, run: TrainingRun, provider: FakeProvider
) -> None:
    provider.statuses["job-1"] = RunPodJob.from_payload(runpod_payload("status_in_progress", id="job-1"))

    response = webhook(client, run, completed_body(run))

    assert response.status_code == 200
    run.refresh_from_db()
    assert run.status == "training"
    assert provider.status_calls == ["job-1"]  # the body was only a hint to read /status


def test_a_webhook_completes_the_run_once_status_confirms_it(
    client: Client, run: TrainingRun, provider: FakeProvider
) -> None:
    output = store_lora(run)
    provider.statuses["job-1"] = RunPodJob.from_payload(
        {"id": "job-1", "status": "COMPLETED", "output": output}
    )

    webhook(client, run, completed_body(run))

    run.refresh_from_db()
    assert run.status == "completed"


def test_a_duplicate_webhook_changes_nothing(
    client: Client, run: TrainingRun, provider: FakeProvider
) -> None:
    output = store_lora(run)
    provider.statuses["job-1"] = RunPodJob.from_payload(
        {"id": "job-1", "status": "COMPLETED", "output": output}
    )
    webhook(client, run, completed_body(run))

    second = webhook(client, run, completed_body(run))

    assert second.status_code == 200
    assert run.events.count() == 1
    assert provider.status_calls == ["job-1"]


def test_a_late_webhook_for_an_older_job_changes_nothing(
    client: Client, run: TrainingRun, provider: FakeProvider
) -> None:
    response = webhook(client, run, runpod_payload("webhook_completed", id="job-0", status="FAILED"))

    assert response.status_code == 200
    run.refresh_from_db()
    assert run.status == "training" and provider.status_calls == []


def test_the_callback_token_never_lands_in_the_stored_payload(
    client: Client, run: TrainingRun, provider: FakeProvider
) -> None:
    provider.statuses["job-1"] = RunPodJob.from_payload(
        {**runpod_payload("status_in_progress", id="job-1"), "input": {"callback": {"token": "t"}}}
    )

    webhook(client, run, completed_body(run))

    run.refresh_from_db()
    assert "input" not in run.last_provider_payload


# --------------------------------------------------------------------------------- worker callback


def test_a_callback_without_a_token_is_404(client: Client, run: TrainingRun) -> None:
    response = callback(client, run, {"event": "started", "job_id": "job-1"}, token="")

    assert response.status_code == 404


def test_a_callback_with_another_scheme_is_404(client: Client, run: TrainingRun) -> None:
    response = callback(client, run, {"event": "started", "job_id": "job-1"}, scheme="Basic")

    assert response.status_code == 404


def test_a_callback_with_a_wrong_token_is_404(client: Client, run: TrainingRun) -> None:
    response = callback(client, run, {"event": "started", "job_id": "job-1"}, token="f" * 64)

    assert response.status_code == 404


def test_a_callback_with_malformed_json_is_400(client: Client, run: TrainingRun) -> None:
    assert callback(client, run, "[1, 2").status_code == 400


def test_an_unknown_event_is_400(client: Client, run: TrainingRun) -> None:
    assert callback(client, run, {"event": "finished", "job_id": "job-1"}).status_code == 400


def test_started_moves_a_queued_run_to_training_and_says_continue(client: Client, run: TrainingRun) -> None:
    TrainingRun.objects.filter(pk=run.pk).update(status="queued")

    response = callback(client, run, {"event": "started", "job_id": "job-1"})

    assert response.json() == {"action": "continue"}
    run.refresh_from_db()
    assert run.status == "training" and run.started_at is not None


def test_started_claims_a_run_whose_submission_went_unanswered(client: Client, character: Any) -> None:
    run = make_run(character, status="pending", runpod_job_id="")

    response = callback(client, run, {"event": "started", "job_id": "job-lost-answer"})

    assert response.json()["action"] == "continue"
    run.refresh_from_db()
    assert (run.status, run.runpod_job_id) == ("training", "job-lost-answer")


def test_a_second_job_for_a_claimed_run_is_told_to_stop_and_cancelled(
    client: Client, run: TrainingRun, provider: FakeProvider
) -> None:
    response = callback(client, run, {"event": "started", "job_id": "job-2"})

    assert response.json() == {
        "action": "stop",
        "reason": "another job is already training this run",
        "code": "claimed_elsewhere",
    }
    assert provider.cancelled == ["job-2"]


def test_the_same_job_handed_to_a_second_worker_is_told_to_stop(client: Client, run: TrainingRun) -> None:
    TrainingRun.objects.filter(pk=run.pk).update(status="queued")
    callback(client, run, {"event": "started", "job_id": "job-1"})

    response = callback(client, run, {"event": "started", "job_id": "job-1"})

    assert response.json() == {
        "action": "stop",
        "reason": "another worker is already running this job",
        "code": "claimed_elsewhere",
    }


def test_a_cancelled_run_tells_its_worker_to_stop(client: Client, run: TrainingRun) -> None:
    TrainingRun.objects.filter(pk=run.pk).update(status="cancelled")

    response = callback(client, run, {"event": "progress", "job_id": "job-1", "stage": "training", "step": 5})

    assert response.json() == {"action": "stop", "reason": "the run is already cancelled"}


def test_progress_is_recorded_and_never_goes_back(client: Client, run: TrainingRun) -> None:
    body = {"event": "progress", "job_id": "job-1", "stage": "training", "total_steps": 1000}
    callback(client, run, {**body, "step": 400, "loss": 0.3, "eta_s": 90})
    callback(client, run, {**body, "step": 200, "loss": 0.9})

    run.refresh_from_db()
    assert (run.progress_step, run.progress_total, run.progress_loss, run.progress_eta_seconds) == (
        400,
        1000,
        0.3,
        90,
    )


def test_an_invalid_progress_report_is_400(client: Client, run: TrainingRun) -> None:
    response = callback(client, run, {"event": "progress", "job_id": "job-1", "stage": "dreaming"})

    assert response.status_code == 400
    assert "progress.stage" in response.json()["error"]
