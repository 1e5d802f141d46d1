"""A run's samples, checkpoints and loss series in the API, "use this checkpoint", and their webhooks."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient

from developer.models import WebhookDelivery
from developer.services import webhook_endpoint_create
from tests.developer.api_helpers import client_for
from tests.training.artifact_helpers import artifact_run, report, uploaded_checkpoint, uploaded_sample
from training.artifacts import LoraInvalid, StorageUnavailable
from training.models import Sample, TrainingRun
from training.services import artifact_report_record, training_run_artifacts_verify

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice_api(alice: Any) -> APIClient:
    return client_for(alice)


@pytest.fixture
def bob_api(bob: Any) -> APIClient:
    return client_for(bob)


@pytest.fixture
def run(character: Any) -> TrainingRun:
    run = artifact_run(character, status="cancelled")
    fields = {
        "checkpoints": [uploaded_checkpoint(run, 100)],
        "samples": [uploaded_sample(run, step, index) for step in (100, 200) for index in range(3)],
        "loss_series": {"loss": [[1, 0.9], [2, 0.8]], "val_loss": [[2, 1.0]]},
    }
    artifact_report_record(run=run, report=report(**fields), delivery_id="d1")
    training_run_artifacts_verify(run_id=run.pk)
    return run


def test_the_samples_are_listed_newest_step_first_in_prompt_order(
    alice_api: APIClient, run: TrainingRun
) -> None:
    response = alice_api.get(f"/api/v1/runs/{run.pk}/samples")

    assert response.status_code == 200
    rows = [(item["step"], item["prompt_index"]) for item in response.json()]
    assert rows == [(200, 0), (200, 1), (200, 2), (100, 0), (100, 1), (100, 2)]
    first = response.json()[0]
    assert first["thumbnail_url"] and first["image_url"] and first["prompt"] == "a portrait of [trigger]"


def test_the_checkpoints_and_loss_are_listed(alice_api: APIClient, run: TrainingRun) -> None:
    checkpoints = alice_api.get(f"/api/v1/runs/{run.pk}/checkpoints").json()
    loss = alice_api.get(f"/api/v1/runs/{run.pk}/loss").json()

    assert [(c["step"], c["final"], c["chosen"], c["pruned"]) for c in checkpoints] == [
        (100, False, False, False)
    ]
    assert checkpoints[0]["download_url"] and checkpoints[0]["use_url"].endswith(
        f"/runs/{run.pk}/checkpoints/100/use"
    )
    assert loss == {"loss": [[1, 0.9], [2, 0.8]], "val_loss": [[2, 1.0]], "resumed_from_step": None}


def test_unverified_samples_are_not_listed(alice_api: APIClient, run: TrainingRun) -> None:
    Sample.objects.filter(run=run, step=200).update(verified_at=None)
    assert len(alice_api.get(f"/api/v1/runs/{run.pk}/samples").json()) == 3


def test_using_a_checkpoint_through_the_api_makes_it_the_runs_lora(
    alice_api: APIClient, run: TrainingRun
) -> None:
    response = alice_api.post(f"/api/v1/runs/{run.pk}/checkpoints/100/use")

    assert response.status_code == 200, response.json()
    assert response.json()["lora"]["step"] == 100
    assert alice_api.get(f"/api/v1/runs/{run.pk}/lora").status_code == 200


def test_using_a_step_without_a_checkpoint_is_a_404(alice_api: APIClient, run: TrainingRun) -> None:
    assert alice_api.post(f"/api/v1/runs/{run.pk}/checkpoints/200/use").status_code == 404


@pytest.mark.parametrize("path", ["samples", "checkpoints", "loss"])
def test_bob_sees_nothing_of_alices_run(bob_api: APIClient, run: TrainingRun, path: str) -> None:
    assert bob_api.get(f"/api/v1/runs/{run.pk}/{path}").status_code == 404


def test_bob_cannot_use_alices_checkpoint(bob_api: APIClient, run: TrainingRun) -> None:
    assert bob_api.post(f"/api/v1/runs/{run.pk}/checkpoints/100/use").status_code == 404
    run.refresh_from_db()
    assert run.lora_name == ""


def test_the_schema_types_the_new_resources(client: Client) -> None:
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()

    paths = schema["paths"]
    assert "/api/v1/runs/{run_id}/samples" in paths and "/api/v1/runs/{run_id}/loss" in paths
    assert "post" in paths["/api/v1/runs/{run_id}/checkpoints/{step}/use"]
    components = schema["components"]["schemas"]
    assert {"Sample", "Checkpoint", "LossSeries"} <= set(components)
    assert "thumbnail_url" in components["Sample"]["properties"]


def test_each_verified_sample_and_checkpoint_is_announced_to_the_owners_webhooks_once(
    character: Any, alice: Any, settings: Any
) -> None:
    settings.WEBHOOKS_ALLOW_PRIVATE_URLS = True
    webhook_endpoint_create(user=alice, url="http://127.0.0.1:9/hook")
    run = artifact_run(character)
    fields = {"checkpoints": [uploaded_checkpoint(run, 100)], "samples": [uploaded_sample(run, 100, 0)]}
    artifact_report_record(run=run, report=report(**fields), delivery_id="d1")

    training_run_artifacts_verify(run_id=run.pk)
    training_run_artifacts_verify(run_id=run.pk)

    deliveries = WebhookDelivery.objects.order_by("event_type")
    assert [d.event_type for d in deliveries] == ["run.checkpoint.created", "run.sample.created"]
    sample = deliveries[1].payload
    assert sample["data"]["run_id"] == str(run.pk) and sample["data"]["step"] == 100


@pytest.mark.parametrize(
    ("failure", "status", "code"),
    [
        (StorageUnavailable("down"), 503, "storage_unavailable"),
        (LoraInvalid("not safetensors"), 409, "checkpoint_changed"),
    ],
)
def test_using_a_checkpoint_when_storage_fails_says_why_in_the_error_shape_and_changes_nothing(
    alice_api: APIClient,
    run: TrainingRun,
    monkeypatch: pytest.MonkeyPatch,
    failure: Exception,
    status: int,
    code: str,
) -> None:
    def fails(name: str) -> None:
        raise failure

    monkeypatch.setattr("training.services.completion.stored_lora_digest", fails)

    response = alice_api.post(f"/api/v1/runs/{run.pk}/checkpoints/100/use")

    assert (response.status_code, response.json()["error"]["code"]) == (status, code)
    run.refresh_from_db()
    assert run.lora_step is None
