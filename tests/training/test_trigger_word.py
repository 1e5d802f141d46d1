"""A LoRA answers to the trigger word it was trained with: renaming the character's trigger word later
relabels nothing that was already trained."""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from characters import services as character_services
from tests.developer.api_helpers import client_for as api_client_for
from tests.training.conftest import FakeProvider, make_run
from training.models import TrainingRun
from training.services import training_job_input, training_run_retry, training_run_start

pytestmark = pytest.mark.django_db

LORA = b"\x08\x00\x00\x00\x00\x00\x00\x00{}      " + b"\x00" * 2048


def client_for(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def trained_then_renamed(character: Any) -> TrainingRun:
    """A LoRA trained on ohwx_anna, then the character's trigger word changed to zzq_renamed."""
    run = make_run(character, TrainingRun.Status.COMPLETED, finished_at=timezone.now())
    run.lora_name = default_storage.save(
        f"characters/{character.pk}/loras/{run.pk}.safetensors", ContentFile(LORA)
    )
    run.lora_bytes = len(LORA)
    run.lora_sha256 = hashlib.sha256(LORA).hexdigest()
    run.cost_usd = Decimal("0.1000")
    run.save()
    character_services.character_update(character=character, trigger_word="zzq_renamed")
    return run


def test_a_run_records_the_trigger_word_it_starts_with(character: Any, alice: Any) -> None:
    run = training_run_start(character=character, requested_by=alice, source="user")

    character_services.character_update(character=character, trigger_word="zzq_renamed")
    run.refresh_from_db()

    assert run.trigger_word == "ohwx_anna"
    document = training_job_input(run)
    assert document["trigger_word"] == "ohwx_anna"
    assert document["output"]["lora_name"].startswith("ohwx_anna_")


def test_the_run_page_and_the_download_keep_the_trained_trigger_word(character: Any, alice: Any) -> None:
    run = trained_then_renamed(character)
    client = client_for(alice)

    page = client.get(reverse("training:run-detail", args=[run.pk])).content.decode()
    download = client.get(reverse("training:run-lora", args=[run.pk]))

    assert "write <code>ohwx_anna</code> in your prompts" in page
    assert "zzq_renamed" not in page
    expected = f'attachment; filename="ohwx_anna-{str(run.pk)[:8]}.safetensors"'
    assert download["Content-Disposition"] == expected


def test_the_character_page_names_its_current_loras_own_trigger_word(character: Any, alice: Any) -> None:
    run = trained_then_renamed(character)

    page = client_for(alice).get(reverse("characters:detail", args=[character.pk])).content.decode()

    assert f"ohwx_anna-{str(run.pk)[:8]}.safetensors" in page
    assert "write <code>ohwx_anna</code> in your prompts" in page


def test_the_api_shows_the_runs_own_trigger_word(character: Any, alice: Any) -> None:
    run = trained_then_renamed(character)
    api = api_client_for(alice)

    body = api.get(reverse("api:run", args=[run.pk])).json()
    character_body = api.get(reverse("api:character", args=[character.pk])).json()

    assert body["trigger_word"] == "ohwx_anna"
    assert body["lora"]["filename"] == f"ohwx_anna-{str(run.pk)[:8]}.safetensors"
    assert character_body["trigger_word"] == "zzq_renamed"
    assert character_body["lora"]["filename"] == f"ohwx_anna-{str(run.pk)[:8]}.safetensors"


def test_a_retry_repeats_the_trigger_word_of_the_run_it_repeats(
    character: Any, alice: Any, provider: FakeProvider
) -> None:
    failed = make_run(character, TrainingRun.Status.FAILED, manifest=[], finished_at=timezone.now())
    character_services.character_update(character=character, trigger_word="zzq_renamed")

    again = training_run_retry(run=failed, requested_by=alice, source="user")

    assert again.trigger_word == "ohwx_anna"


def test_the_edit_page_warns_that_trained_loras_keep_their_trigger_word(character: Any, alice: Any) -> None:
    page = client_for(alice).get(reverse("characters:edit", args=[character.pk])).content.decode()

    assert "LoRAs already trained keep the trigger word they were trained with." in page
