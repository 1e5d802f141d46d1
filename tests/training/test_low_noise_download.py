"""A Wan 2.2 14B run's second file, the low-noise expert's LoRA, downloads like the first: to its owner only,
from the run page (`?part=low_noise`) and the API (`low_noise` of the LoRA link), named as AI Toolkit and
ComfyUI's two-model workflows name it. Anyone else gets what a missing run gets."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from runpod_worker.contract import BaseModel
from tests.developer.api_helpers import alice_api, api_isolation, assert_error, bob_api
from tests.training.conftest import make_run
from tests.training.test_views import client_for
from training.models import TrainingRun

__all__ = ["alice_api", "api_isolation", "bob_api"]

pytestmark = pytest.mark.django_db

HIGH = b"high-noise expert LoRA bytes"
LOW = b"low-noise expert LoRA bytes"


def stored(name: str, content: bytes) -> str:
    return default_storage.save(name, ContentFile(content))


@pytest.fixture
def wan_run(character: Any) -> TrainingRun:
    folder = f"characters/{character.pk}/loras"
    run = make_run(
        character, TrainingRun.Status.COMPLETED, base_model=BaseModel.WAN22, finished_at=timezone.now()
    )
    run.lora_name = stored(f"{folder}/{run.pk}-aaaaaaaa.safetensors", HIGH)
    run.lora_bytes, run.lora_sha256 = len(HIGH), hashlib.sha256(HIGH).hexdigest()
    run.lora_low_noise_name = stored(f"{folder}/{run.pk}_low_noise-bbbbbbbb.safetensors", LOW)
    run.lora_low_noise_bytes, run.lora_low_noise_sha256 = len(LOW), hashlib.sha256(LOW).hexdigest()
    run.save()
    return run


def download(client: Client, run: TrainingRun, part: str = "") -> Any:
    url = reverse("training:run-lora", args=[run.pk]) + (f"?part={part}" if part else "")
    return client.get(url)


def test_the_owner_downloads_each_expert_file_under_its_own_name(alice: Any, wan_run: TrainingRun) -> None:
    low = download(client_for(alice), wan_run, "low_noise")
    high = download(client_for(alice), wan_run)

    assert (low.status_code, b"".join(low.streaming_content)) == (200, LOW)
    assert (high.status_code, b"".join(high.streaming_content)) == (200, HIGH)
    prefix = f"ohwx_anna-{str(wan_run.pk)[:8]}"
    assert low["Content-Disposition"] == f'attachment; filename="{prefix}_low_noise.safetensors"'
    assert high["Content-Disposition"] == f'attachment; filename="{prefix}_high_noise.safetensors"'


@pytest.mark.parametrize("who", ["bob", "staff"])
@pytest.mark.parametrize("part", ["low_noise", ""])
def test_nobody_but_the_owner_downloads_either_file(
    who: str, part: str, wan_run: TrainingRun, request: pytest.FixtureRequest
) -> None:
    other = request.getfixturevalue(who)

    response = download(client_for(other), wan_run, part)

    assert response.status_code == 404
    assert LOW not in response.content and HIGH not in response.content


def test_an_anonymous_visitor_is_sent_to_log_in_for_the_low_noise_file(wan_run: TrainingRun) -> None:
    response = download(Client(), wan_run, "low_noise")

    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


def test_a_one_file_run_has_no_low_noise_file_to_download(alice: Any, character: Any) -> None:
    run = make_run(character, TrainingRun.Status.COMPLETED, finished_at=timezone.now())
    run.lora_name = stored(f"characters/{character.pk}/loras/{run.pk}.safetensors", HIGH)
    run.save()

    assert download(client_for(alice), run, "low_noise").status_code == 404
    assert download(client_for(alice), run).status_code == 200


def test_the_api_gives_the_owner_a_link_to_each_file(alice_api: APIClient, wan_run: TrainingRun) -> None:
    body = alice_api.get(f"/api/v1/runs/{wan_run.pk}/lora").json()

    low = body["low_noise"]
    assert (low["bytes"], low["sha256"]) == (len(LOW), hashlib.sha256(LOW).hexdigest())
    assert low["filename"].endswith("_low_noise.safetensors")
    assert body["filename"].endswith("_high_noise.safetensors")
    fetched = APIClient().get(low["url"].removeprefix("http://127.0.0.1:8000"))
    assert b"".join(fetched.streaming_content) == LOW


def test_another_user_gets_no_link_to_either_file(bob_api: APIClient, wan_run: TrainingRun) -> None:
    response = bob_api.get(f"/api/v1/runs/{wan_run.pk}/lora")

    assert_error(response, 404, "not_found")
    assert wan_run.lora_low_noise_name not in response.content.decode()
