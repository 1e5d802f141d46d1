"""Training's answers to the characters app: auto-train turned on, and a character deleted while it trains."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.urls import reverse

from characters import services as character_services
from characters.models import Character, ReferenceImage
from studio.errors import Conflict
from tests.characters.factories import CharacterFactory, ReferenceImageFactory
from tests.developer.api_helpers import client_for as api_client_for
from tests.training.conftest import FakeProvider, face_checked, make_run
from training.models import TrainingEvent, TrainingRun

pytestmark = pytest.mark.django_db


def client_for(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


# ============================================================================================ auto-train


@pytest.fixture
def sheet(alice: Any, settings: Any) -> Character:
    """A character with enough images to train, auto-train off."""
    settings.TRAINING_MIN_IMAGES = 3
    character = CharacterFactory(owner=alice, auto_train=False)
    ReferenceImageFactory.create_batch(3, character=character)
    return face_checked(character)


def test_turning_auto_train_on_for_a_complete_sheet_starts_a_run(
    sheet: Character, provider: FakeProvider, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        character_services.character_update(character=sheet, auto_train=True)

    run = TrainingRun.objects.get(character=sheet)
    assert run.events.get(from_status="").source == TrainingEvent.Source.SYSTEM
    assert len(provider.submitted) == 1


def test_saving_a_character_whose_auto_train_was_already_on_starts_nothing(
    sheet: Character, provider: FakeProvider, django_capture_on_commit_callbacks: Any
) -> None:
    Character.objects.filter(pk=sheet.pk).update(auto_train=True)
    sheet.refresh_from_db()

    with django_capture_on_commit_callbacks(execute=True):
        character_services.character_update(character=sheet, auto_train=True, description="Same as before")

    assert not TrainingRun.objects.exists()


def test_turning_auto_train_on_with_too_few_images_starts_nothing(
    sheet: Character, settings: Any, provider: FakeProvider, django_capture_on_commit_callbacks: Any
) -> None:
    settings.TRAINING_MIN_IMAGES = 10

    with django_capture_on_commit_callbacks(execute=True):
        character_services.character_update(character=sheet, auto_train=True)

    assert not TrainingRun.objects.exists()


def test_turning_auto_train_on_from_the_edit_page_starts_a_run(
    sheet: Character, alice: Any, provider: FakeProvider, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        client_for(alice).post(
            reverse("characters:edit", args=[sheet.pk]),
            {"name": sheet.name, "trigger_word": sheet.trigger_word, "auto_train": "on"},
        )

    assert TrainingRun.objects.filter(character=sheet).count() == 1


# ============================================================================================ delete


def test_deleting_a_training_character_cancels_its_job_before_deleting_it(
    sheet: Character, alice: Any, provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = make_run(sheet, TrainingRun.Status.TRAINING, runpod_job_id="job-running")
    seen: list[tuple[str, bool, int]] = []
    cancel = provider.cancel
    test_depth = len(connection.atomic_blocks)  # the test's own transaction

    def cancel_and_look(job_id: str) -> Any:
        # At the moment RunPod is asked, the character still exists and no transaction of ours is open.
        exists = Character.objects.filter(pk=sheet.pk).exists()
        seen.append((job_id, exists, len(connection.atomic_blocks) - test_depth))
        return cancel(job_id)

    monkeypatch.setattr(provider, "cancel", cancel_and_look)

    response = client_for(alice).post(reverse("characters:delete", args=[sheet.pk]))

    assert response.status_code == 302
    assert seen == [("job-running", True, 0)]
    assert not Character.objects.filter(pk=sheet.pk).exists()
    assert not TrainingRun.objects.filter(pk=run.pk).exists()


def test_deleting_a_character_without_an_active_run_calls_no_gpu(
    sheet: Character, provider: FakeProvider
) -> None:
    make_run(sheet, TrainingRun.Status.COMPLETED, runpod_job_id="job-done")

    character_services.character_delete(character=sheet)

    assert provider.cancelled == []
    assert not Character.objects.filter(pk=sheet.pk).exists()


# ============================================================================================ photo delete


def trains_on(character: Character, status: str, *photos: ReferenceImage) -> TrainingRun:
    manifest = [
        {
            "name": f"{p.sha256}.jpg",
            "sha256": p.sha256,
            "storage_name": p.file.name,
            "caption": None,
            "bytes": 1,
        }
        for p in photos
    ]
    return make_run(character, status, manifest=manifest)


@pytest.mark.parametrize("status", TrainingRun.ACTIVE_STATUSES)
def test_a_photo_an_active_run_trains_on_cannot_be_deleted_and_the_refusal_names_the_run(
    sheet: Character, status: str
) -> None:
    photo = sheet.images.first()
    assert photo is not None
    run = trains_on(sheet, status, photo)

    with pytest.raises(Conflict) as refused:
        character_services.reference_image_delete(image=photo)

    assert refused.value.code == "photo_in_use"
    assert photo.original_filename in refused.value.message
    assert reverse("training:run-detail", args=[run.pk]) in refused.value.message
    assert ReferenceImage.objects.filter(pk=photo.pk).exists()


def test_a_photo_added_after_the_run_started_or_kept_by_a_finished_run_can_be_deleted(
    sheet: Character,
) -> None:
    in_training, in_finished_run, added_later = list(sheet.images.all())
    trains_on(sheet, TrainingRun.Status.TRAINING, in_training)
    trains_on(sheet, TrainingRun.Status.COMPLETED, in_finished_run)

    character_services.reference_image_delete(image=added_later)
    character_services.reference_image_delete(image=in_finished_run)

    assert list(sheet.images.all()) == [in_training]


def test_the_photo_page_says_why_the_photo_stays(sheet: Character, alice: Any) -> None:
    photo = sheet.images.first()
    assert photo is not None
    trains_on(sheet, TrainingRun.Status.QUEUED, photo)

    response = client_for(alice).post(
        reverse("characters:image_delete", args=[sheet.pk, photo.pk]), follow=True
    )

    assert response.status_code == 200
    page = response.content.decode()
    assert f"{photo.original_filename} cannot be deleted while the training run started" in page
    assert ReferenceImage.objects.filter(pk=photo.pk).exists()


def test_the_api_answers_409_with_the_reason(sheet: Character, alice: Any) -> None:
    photo = sheet.images.first()
    assert photo is not None
    trains_on(sheet, TrainingRun.Status.TRAINING, photo)

    response = api_client_for(alice).delete(reverse("api:character-image", args=[sheet.pk, photo.pk]))

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "photo_in_use"
    assert ReferenceImage.objects.filter(pk=photo.pk).exists()
