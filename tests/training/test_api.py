from __future__ import annotations

import threading
import time
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from rest_framework.test import APIClient

from studio.models import IdempotencyKey
from tests.characters.factories import CharacterFactory, ReferenceImageFactory
from tests.developer.api_helpers import (
    alice_api,
    anonymous_api,
    api_isolation,
    assert_error,
    bob_api,
    client_for,
)
from tests.training.conftest import make_run
from training import services
from training.models import TrainingRun

__all__ = ["alice_api", "anonymous_api", "api_isolation", "bob_api"]

RUNS = "/api/v1/runs"


def start_url(character: Any) -> str:
    return f"/api/v1/characters/{character.pk}/runs"


def completed(character: Any) -> TrainingRun:
    return make_run(
        character,
        TrainingRun.Status.COMPLETED,
        lora_name=f"characters/{character.pk}/loras/run.safetensors",
        lora_bytes=4321,
        lora_sha256="c" * 64,
        cost_usd=Decimal("1.2500"),
    )


# --- Start --------------------------------------------------------------------------------


def test_alice_starts_a_run_and_it_is_accepted(alice_api: APIClient, character: Any) -> None:
    response = alice_api.post(start_url(character), {"preset": "fast"}, format="json")
    assert response.status_code == 202, response.content
    body = response.json()
    run = TrainingRun.objects.get(pk=body["id"])
    assert run.status == "pending" and run.params["steps"] == 600
    assert run.events.get().source == "api"
    assert response["Location"] == body["urls"]["get"]
    assert body["progress"] == {"step": 0, "total": 0, "percent": 0, "loss": None, "eta_seconds": None}


def test_explicit_params_override_the_preset(alice_api: APIClient, character: Any) -> None:
    response = alice_api.post(
        start_url(character), {"preset": "fast", "params": {"steps": 800}}, format="json"
    )
    assert response.status_code == 202
    assert TrainingRun.objects.get().params["steps"] == 800


def test_bad_params_name_the_field(alice_api: APIClient, character: Any) -> None:
    response = alice_api.post(start_url(character), {"params": {"steps": -5}}, format="json")
    error = assert_error(response, 400, "invalid_params")
    assert "steps" in error["fields"]
    assert not TrainingRun.objects.exists()


def test_an_unknown_preset_is_a_field_error(alice_api: APIClient, character: Any) -> None:
    error = assert_error(
        alice_api.post(start_url(character), {"preset": "turbo"}, format="json"), 400, "invalid"
    )
    assert "preset" in error["fields"]


def test_too_few_images_is_a_400_that_says_how_many_to_add(
    alice_api: APIClient, character: Any, settings: Any
) -> None:
    settings.TRAINING_MIN_IMAGES = 10
    error = assert_error(alice_api.post(start_url(character), {}, format="json"), 400, "not_enough_images")
    assert "7 more" in error["message"]


def test_a_second_active_run_is_a_409(alice_api: APIClient, character: Any) -> None:
    make_run(character, TrainingRun.Status.TRAINING)
    assert_error(alice_api.post(start_url(character), {}, format="json"), 409, "run_active")
    assert TrainingRun.objects.count() == 1


def test_an_exhausted_budget_is_a_402(alice_api: APIClient, character: Any, alice: Any) -> None:
    alice.monthly_gpu_budget_usd = Decimal("0.01")
    alice.save()
    error = assert_error(alice_api.post(start_url(character), {}, format="json"), 402, "budget_exceeded")
    assert "budget" in error["message"]
    assert not TrainingRun.objects.exists()


def test_bob_cannot_train_alices_character(bob_api: APIClient, character: Any) -> None:
    assert_error(bob_api.post(start_url(character), {}, format="json"), 404, "not_found")
    assert not TrainingRun.objects.exists()


def test_anonymous_cannot_start_a_run(anonymous_api: APIClient, character: Any) -> None:
    assert_error(anonymous_api.post(start_url(character), {}, format="json"), 401, "not_authenticated")


# --- Idempotency --------------------------------------------------------------------------


def test_the_same_idempotency_key_returns_the_same_run(alice_api: APIClient, character: Any) -> None:
    first = alice_api.post(start_url(character), {}, format="json", HTTP_IDEMPOTENCY_KEY="key-1")
    again = alice_api.post(start_url(character), {}, format="json", HTTP_IDEMPOTENCY_KEY="key-1")
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    assert again["Idempotent-Replayed"] == "true"
    assert TrainingRun.objects.count() == 1


def test_a_key_reused_for_a_different_request_is_refused(alice_api: APIClient, character: Any) -> None:
    alice_api.post(start_url(character), {"preset": "fast"}, format="json", HTTP_IDEMPOTENCY_KEY="key-1")
    response = alice_api.post(
        start_url(character), {"preset": "quality"}, format="json", HTTP_IDEMPOTENCY_KEY="key-1"
    )
    assert_error(response, 422, "idempotency_key_reused")
    assert TrainingRun.objects.count() == 1


def test_a_failed_request_does_not_use_up_its_key(
    alice_api: APIClient, character: Any, settings: Any
) -> None:
    settings.TRAINING_MIN_IMAGES = 10
    assert (
        alice_api.post(start_url(character), {}, format="json", HTTP_IDEMPOTENCY_KEY="k").status_code == 400
    )
    settings.TRAINING_MIN_IMAGES = 3
    assert (
        alice_api.post(start_url(character), {}, format="json", HTTP_IDEMPOTENCY_KEY="k").status_code == 202
    )


def test_keys_belong_to_their_user(
    bob_api: APIClient, alice_api: APIClient, character: Any, bob: Any
) -> None:
    from tests.characters.factories import CharacterFactory, ReferenceImageFactory

    bobs = CharacterFactory(owner=bob)
    ReferenceImageFactory.create_batch(3, character=bobs)
    first = alice_api.post(start_url(character), {}, format="json", HTTP_IDEMPOTENCY_KEY="shared")
    second = bob_api.post(start_url(bobs), {}, format="json", HTTP_IDEMPOTENCY_KEY="shared")
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] != second.json()["id"]


def test_a_malformed_key_is_a_400(alice_api: APIClient, character: Any) -> None:
    response = alice_api.post(start_url(character), {}, format="json", HTTP_IDEMPOTENCY_KEY="x" * 300)
    assert_error(response, 400, "invalid_idempotency_key")


@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_with_one_key_start_one_run(
    alice: Any, character: Any, provider: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("needs a database with concurrent writers")
    real_start = services.training_run_start

    def slow_start(**kwargs: Any) -> TrainingRun:
        time.sleep(0.3)  # hold the key row long enough for the other request to arrive
        return real_start(**kwargs)

    monkeypatch.setattr(services, "training_run_start", slow_start)
    clients = [client_for(alice), client_for(alice)]
    barrier = threading.Barrier(2)
    responses: list[Any] = []

    def post(client: APIClient) -> None:
        barrier.wait()
        try:
            responses.append(
                client.post(start_url(character), {}, format="json", HTTP_IDEMPOTENCY_KEY="race")
            )
        finally:
            connection.close()

    threads = [threading.Thread(target=post, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert [response.status_code for response in responses] == [202, 202]
    assert responses[0].json()["id"] == responses[1].json()["id"]
    assert TrainingRun.objects.count() == 1
    assert IdempotencyKey.objects.get().resource_id is not None


def limit_starts_to(settings: Any, rate: str) -> None:
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"training_run_start": rate},
    }
    settings.TRAINING_MIN_IMAGES = 3  # ready_character's photos are enough


def ready_character(owner: Any) -> Any:
    character = CharacterFactory(owner=owner)
    ReferenceImageFactory.create_batch(3, character=character)
    return character


def test_accepted_run_starts_are_rate_limited(alice_api: APIClient, alice: Any, settings: Any) -> None:
    limit_starts_to(settings, "2/hour")
    for _ in range(2):
        accepted = alice_api.post(start_url(ready_character(alice)), {}, format="json")
        assert accepted.status_code == 202, accepted.json()

    response = alice_api.post(start_url(ready_character(alice)), {}, format="json")

    assert_error(response, 429, "rate_limited")
    assert TrainingRun.objects.count() == 2


def test_refused_run_starts_do_not_count_against_the_limit(
    alice_api: APIClient, alice: Any, character: Any, settings: Any
) -> None:
    limit_starts_to(settings, "2/hour")
    for _ in range(30):
        alice_api.post(start_url(character), {"params": {"steps": 5}}, format="json")  # 400 each

    response = alice_api.post(start_url(character), {}, format="json")

    assert response.status_code == 202


def test_a_429_names_the_limit_its_window_and_when_it_resets(
    alice_api: APIClient, alice: Any, settings: Any
) -> None:
    limit_starts_to(settings, "1/hour")
    alice_api.post(start_url(ready_character(alice)), {}, format="json")

    response = alice_api.post(start_url(ready_character(alice)), {}, format="json")

    error = response.json()["error"]
    assert error["rate_limit"]["limit"] == 1
    assert error["rate_limit"]["window_seconds"] == 3600
    assert error["rate_limit"]["scope"] == "training_run_start"
    assert 3590 <= error["rate_limit"]["retry_after_seconds"] <= 3601
    assert int(response["Retry-After"]) == error["rate_limit"]["retry_after_seconds"]
    assert "at most 1 accepted run starts (new runs and retries) per hour" in error["message"]
    assert "Refused requests do not count" in error["message"]


# --- Reading ------------------------------------------------------------------------------


def test_alice_reads_a_run_with_progress_and_cost(alice_api: APIClient, character: Any) -> None:
    run = make_run(
        character,
        TrainingRun.Status.TRAINING,
        progress_step=250,
        progress_total=1000,
        progress_loss=0.21,
        progress_eta_seconds=600,
        estimated_cost_usd=Decimal("1.5000"),
    )
    body = alice_api.get(f"{RUNS}/{run.pk}").json()
    assert body["status"] == "training"
    assert body["progress"] == {"step": 250, "total": 1000, "percent": 25, "loss": 0.21, "eta_seconds": 600}
    assert body["estimated_cost_usd"] == "1.5000" and body["cost_usd"] is None
    assert body["lora"] is None and body["error"] is None


def test_a_failed_run_shows_its_error(alice_api: APIClient, character: Any) -> None:
    run = make_run(character, TrainingRun.Status.FAILED, error_code="oom", error_message="Out of GPU memory.")
    assert alice_api.get(f"{RUNS}/{run.pk}").json()["error"] == {
        "code": "oom",
        "message": "Out of GPU memory.",
    }


def test_runs_are_filtered_by_status_and_character(alice_api: APIClient, character: Any, alice: Any) -> None:
    from tests.characters.factories import CharacterFactory

    done = completed(character)
    make_run(character, TrainingRun.Status.FAILED)
    other = make_run(CharacterFactory(owner=alice), TrainingRun.Status.COMPLETED, runpod_job_id="job-other")
    by_status = alice_api.get(RUNS, {"status": "completed"}).json()["results"]
    assert {item["id"] for item in by_status} == {str(done.pk), str(other.pk)}
    both = alice_api.get(RUNS, {"status": "completed", "character": str(character.pk)}).json()["results"]
    assert [item["id"] for item in both] == [str(done.pk)]


def test_a_bad_filter_is_a_field_error(alice_api: APIClient, character: Any) -> None:
    error = assert_error(alice_api.get(RUNS, {"status": "sleeping"}), 400, "invalid")
    assert "status" in error["fields"]
    assert_error(alice_api.get(RUNS, {"character": "nope"}), 400, "invalid")


def test_bob_sees_none_of_alices_runs(bob_api: APIClient, character: Any) -> None:
    run = completed(character)
    assert bob_api.get(RUNS).json()["results"] == []
    assert bob_api.get(RUNS, {"character": str(character.pk)}).json()["results"] == []
    assert_error(bob_api.get(f"{RUNS}/{run.pk}"), 404, "not_found")


# --- Cancel and retry ---------------------------------------------------------------------


def test_alice_cancels_an_active_run(alice_api: APIClient, character: Any, provider: Any) -> None:
    run = make_run(character, TrainingRun.Status.TRAINING)
    response = alice_api.post(f"{RUNS}/{run.pk}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    run.refresh_from_db()
    assert run.status == "cancelled"
    assert provider.cancelled == [run.runpod_job_id]


def test_cancelling_a_finished_run_is_a_409(alice_api: APIClient, character: Any) -> None:
    run = completed(character)
    assert_error(alice_api.post(f"{RUNS}/{run.pk}/cancel"), 409, "conflict")


def test_bob_cannot_cancel_alices_run(bob_api: APIClient, character: Any, provider: Any) -> None:
    run = make_run(character, TrainingRun.Status.TRAINING)
    assert_error(bob_api.post(f"{RUNS}/{run.pk}/cancel"), 404, "not_found")
    run.refresh_from_db()
    assert run.status == "training" and provider.cancelled == []


def test_alice_retries_a_failed_run(alice_api: APIClient, character: Any) -> None:
    failed = make_run(character, TrainingRun.Status.FAILED, manifest=[])
    response = alice_api.post(f"{RUNS}/{failed.pk}/retry", HTTP_IDEMPOTENCY_KEY="retry-1")
    assert response.status_code == 202
    again = alice_api.post(f"{RUNS}/{failed.pk}/retry", HTTP_IDEMPOTENCY_KEY="retry-1")
    assert again.json()["id"] == response.json()["id"]
    new = TrainingRun.objects.get(pk=response.json()["id"])
    assert new.params == failed.params and new.status == "pending"


def test_retrying_an_active_run_is_a_409(alice_api: APIClient, character: Any) -> None:
    run = make_run(character, TrainingRun.Status.QUEUED)
    assert_error(alice_api.post(f"{RUNS}/{run.pk}/retry"), 409, "conflict")


def test_bob_cannot_retry_alices_run(bob_api: APIClient, character: Any) -> None:
    run = make_run(character, TrainingRun.Status.FAILED, manifest=[])
    assert_error(bob_api.post(f"{RUNS}/{run.pk}/retry"), 404, "not_found")
    assert TrainingRun.objects.count() == 1


# --- LoRA ---------------------------------------------------------------------------------


def test_alice_gets_a_short_lived_link_to_her_lora(alice_api: APIClient, character: Any) -> None:
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    run = completed(character)
    default_storage.save(run.lora_name, ContentFile(b"lora bytes"))
    body = alice_api.get(f"{RUNS}/{run.pk}/lora").json()
    assert body["bytes"] == 4321 and body["sha256"] == "c" * 64
    # The name the web page downloads it as, not the storage name.
    assert body["filename"] == f"{character.trigger_word}-{str(run.pk)[:8]}.safetensors"
    downloaded = APIClient().get(body["url"].removeprefix("http://127.0.0.1:8000"))
    assert b"".join(downloaded.streaming_content) == b"lora bytes"


def test_a_run_without_a_lora_yet_is_a_409(alice_api: APIClient, character: Any) -> None:
    run = make_run(character, TrainingRun.Status.TRAINING)
    assert_error(alice_api.get(f"{RUNS}/{run.pk}/lora"), 409, "lora_not_ready")


def test_bob_cannot_download_alices_lora(bob_api: APIClient, character: Any) -> None:
    run = completed(character)
    assert_error(bob_api.get(f"{RUNS}/{run.pk}/lora"), 404, "not_found")


# --- Me -----------------------------------------------------------------------------------


def test_me_shows_budget_spend_and_active_runs(alice_api: APIClient, character: Any, alice: Any) -> None:
    from django.utils import timezone

    alice.monthly_gpu_budget_usd = Decimal("10.00")
    alice.save()
    make_run(character, TrainingRun.Status.COMPLETED, cost_usd=Decimal("2.5"), finished_at=timezone.now())
    active = make_run(character, TrainingRun.Status.TRAINING, runpod_job_id="job-active")
    body = alice_api.get("/api/v1/me").json()
    assert body["monthly_gpu_budget_usd"] == "10.00"
    assert Decimal(body["spend_this_month_usd"]) == Decimal("2.5")
    assert Decimal(body["budget_remaining_usd"]) == Decimal("7.5")
    assert [item["id"] for item in body["active_runs"]] == [str(active.pk)]


def test_bob_sees_nothing_of_alices_spend(bob_api: APIClient, character: Any) -> None:
    make_run(character, TrainingRun.Status.TRAINING)
    body = bob_api.get("/api/v1/me").json()
    assert body["active_runs"] == [] and Decimal(body["spend_this_month_usd"]) == 0


# --- Characters with their LoRA -------------------------------------------------------------


def test_a_character_in_the_api_shows_its_lora_status_and_links_to_its_current_lora(
    alice_api: APIClient, character: Any
) -> None:
    run = completed(character)

    body = alice_api.get(f"/api/v1/characters/{character.pk}").json()

    assert body["lora_status"] == "ready"
    assert body["lora"]["run_id"] == str(run.pk)
    assert (body["lora"]["bytes"], body["lora"]["sha256"]) == (4321, "c" * 64)
    assert body["lora"]["urls"]["download"].endswith(f"/api/v1/runs/{run.pk}/lora")
    assert body["active_run"] is None


def test_the_character_list_shows_which_characters_are_training(
    alice_api: APIClient, character: Any, alice: Any
) -> None:
    run = make_run(character, TrainingRun.Status.TRAINING)
    CharacterFactory(owner=alice, name="Untrained")

    rows = {row["name"]: row for row in alice_api.get("/api/v1/characters").json()["results"]}

    assert rows[character.name]["lora_status"] == "training"
    assert rows[character.name]["active_run"]["id"] == str(run.pk)
    assert (rows["Untrained"]["lora_status"], rows["Untrained"]["lora"]) == ("none", None)
