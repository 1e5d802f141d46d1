"""Face crops join a run's frozen dataset beside the photos: sent to the worker as more images (presigned
URL, checksum, the photo's caption), counted on the run and its pages, kept in step with the photos on retry
and on delete, and downloaded and verified by the worker's own code as photos are."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest
from django.apps import apps
from django.core.files.storage import default_storage
from django.test import Client
from django.urls import reverse

from characters import services as character_services
from characters.models import Character, PhotoAnalysis
from characters.selectors import character_face_crop_files
from characters.tasks import sweep_dataset_reports
from runpod_worker.contract import JobInput
from runpod_worker.dataset import DownloadSettings, caption_text, download_images
from studio.errors import ApplicationError, Conflict
from tests.characters import photos
from tests.characters.identity import analyse, character_with
from tests.training.conftest import FakeProvider, make_run
from training.dataset import dataset_size, is_face_crop
from training.models import TrainingRun
from training.pod_config import pod_dataset_files
from training.preflight import training_retry_refusal
from training.services import training_run_retry, training_run_start
from training.services.submission import training_job_input

pytestmark = pytest.mark.django_db

# Each of person A's three portraits has a face large enough for a crop at the training resolution; this
# one gets a caption.
WITH_CROP = photos.PERSON_A[2]


@pytest.fixture
def anna(alice: Any, settings: Any) -> Character:
    settings.TRAINING_MIN_IMAGES = 3
    character = character_with(alice, {name: photos.photo(name) for name in photos.PERSON_A})
    character.images.filter(original_filename=WITH_CROP).update(caption="ohwx_anna smiling, blue tie")
    return character


def start(character: Character) -> TrainingRun:
    return training_run_start(character=character, requested_by=character.owner, source="user")


def crop_items(run: TrainingRun) -> list[dict[str, Any]]:
    return [item for item in run.manifest if is_face_crop(item)]


def crop_of(run: TrainingRun, name: str) -> dict[str, Any]:
    [crop] = [item for item in crop_items(run) if item["original_name"] == f"{name} (face crop)"]
    return crop


def test_a_start_freezes_each_face_crop_beside_the_photos_with_the_photos_caption(anna: Character) -> None:
    photo = anna.images.get(original_filename=WITH_CROP)

    run = start(anna)

    crop = crop_of(run, WITH_CROP)
    assert crop["storage_name"] == photo.analysis.crop.name and crop["sha256"] == photo.analysis.crop_sha256
    assert crop["caption"] == "ohwx_anna smiling, blue tie" and crop["photo_sha256"] == photo.sha256
    assert {item["caption"] for item in crop_items(run) if item is not crop} == {None}
    assert str(dataset_size(run.manifest)) == "3 photos + 3 face crops"
    assert run.events.get().detail["face_crops"] == 3


def test_a_character_with_face_crops_off_trains_on_its_photos_alone(anna: Character) -> None:
    character_services.character_update(character=anna, face_crops=False)
    analyse(anna)

    run = start(anna)

    assert crop_items(run) == [] and len(run.manifest) == 3
    assert "face_crops" not in run.events.get().detail


def test_the_job_input_sends_the_crop_as_one_more_image_the_contract_accepts(
    anna: Character, provider: FakeProvider
) -> None:
    run = start(anna)

    document = training_job_input(run)

    images = JobInput.from_dict(document).images  # unchanged contract: the crop is just an image
    assert len(images) == 6
    crop = next(image for image in images if image.filename == crop_of(run, WITH_CROP)["name"])
    assert crop.sha256 == crop_of(run, WITH_CROP)["sha256"] and crop.caption == "ohwx_anna smiling, blue tie"


def test_the_worker_downloads_and_verifies_the_crop_from_the_bucket_as_it_does_the_photos(
    alice: Any, settings: Any, s3_storage: Any, tmp_path: Path
) -> None:
    settings.TRAINING_MIN_IMAGES = 3
    anna = character_with(alice, {name: photos.photo(name) for name in photos.PERSON_A})
    run = start(anna)

    images = JobInput.from_dict(training_job_input(run)).images
    paths = download_images(images, tmp_path / "dataset", DownloadSettings(concurrency=2, attempts=2))

    assert sorted(path.name for path in paths) == sorted(item["name"] for item in run.manifest)
    assert any(path.name.endswith("-face.jpg") and path.stat().st_size > 0 for path in paths)


def test_the_run_page_and_the_confirm_step_say_how_many_photos_and_face_crops(anna: Character) -> None:
    client = Client()
    client.force_login(anna.owner)

    confirm = client.post(reverse("training:start", args=[anna.pk]), {"preset": "fast"}).content.decode()
    run = start(anna)
    page = client.get(reverse("training:run-detail", args=[run.pk])).content.decode()

    assert '<dd class="dataset-size">3 photos + 3 face crops</dd>' in confirm
    assert '<span class="dataset-size">3 photos + 3 face crops</span>' in page


def test_a_retry_trains_on_the_same_crops(anna: Character) -> None:
    failed = make_run(anna, TrainingRun.Status.FAILED, manifest=start(anna).manifest)
    TrainingRun.objects.exclude(pk=failed.pk).update(status=TrainingRun.Status.CANCELLED)

    assert training_retry_refusal(failed) is None

    again = training_run_retry(run=failed, requested_by=anna.owner, source="user")

    assert again.manifest == failed.manifest


def test_a_retry_is_refused_once_the_crops_it_trained_on_are_gone(anna: Character) -> None:
    failed = make_run(anna, TrainingRun.Status.FAILED, manifest=start(anna).manifest)
    TrainingRun.objects.exclude(pk=failed.pk).update(status=TrainingRun.Status.CANCELLED)
    character_services.character_update(character=anna, face_crops=False)
    analyse(anna)

    with pytest.raises(ApplicationError) as refused:
        training_run_retry(run=failed, requested_by=anna.owner, source="user")

    assert refused.value.code == "images_changed" and "face crops have changed" in refused.value.message
    assert "face crops have changed" in (training_retry_refusal(failed) or "")


def test_analysing_a_photo_again_leaves_its_unchanged_crop_in_place_for_the_run_downloading_it(
    anna: Character, django_capture_on_commit_callbacks: Any
) -> None:
    crop = crop_of(start(anna), WITH_CROP)
    stored = Path(default_storage.path(crop["storage_name"])).stat()
    PhotoAnalysis.objects.update(analyser="")  # a new analyser version, or a switch turned and back

    with django_capture_on_commit_callbacks(execute=True):
        analyse(anna)

    analysis = anna.images.get(original_filename=WITH_CROP).analysis
    assert (analysis.crop.name, analysis.crop_sha256) == (crop["storage_name"], crop["sha256"])
    after = Path(default_storage.path(crop["storage_name"])).stat()
    assert (after.st_ino, after.st_mtime_ns) == (stored.st_ino, stored.st_mtime_ns)  # never deleted meanwhile


def test_a_photo_whose_crop_an_active_run_trains_on_cannot_be_deleted(anna: Character) -> None:
    frozen = crop_of(start(anna), WITH_CROP)
    TrainingRun.objects.update(manifest=[frozen])  # a run that trains on the crop, not on the photo itself
    photo = anna.images.get(original_filename=WITH_CROP)

    with pytest.raises(Conflict) as refused:
        character_services.reference_image_delete(image=photo)

    assert refused.value.code == "photo_in_use"


def test_crops_stored_before_their_checksum_are_checked_again_by_the_sweep_and_then_train(
    anna: Character, django_capture_on_commit_callbacks: Any
) -> None:
    migration = importlib.import_module("characters.migrations.0009_face_crop_checksum")
    PhotoAnalysis.objects.update(crop_sha256="", crop_bytes=None)  # as the crops were before 0009
    assert character_face_crop_files(anna) == []

    migration.check_crops_again(apps, None)
    with django_capture_on_commit_callbacks(execute=True):
        sweep_dataset_reports()  # queues the analysis, which Celery runs here (eager)

    assert len(character_face_crop_files(anna)) == 3
    assert str(dataset_size(start(anna).manifest)) == "3 photos + 3 face crops"


def test_a_pod_run_uploads_the_crops_beside_the_photos_with_their_captions(anna: Character) -> None:
    run = start(anna)
    crop = crop_of(run, WITH_CROP)

    files = dict(pod_dataset_files(run, lambda name: default_storage.open(name, "rb").read()))

    assert len(files) == 2 * 6  # each image and its caption, as the serverless worker writes them
    assert files[crop["name"]] == default_storage.open(crop["storage_name"], "rb").read()
    caption = caption_text("ohwx_anna smiling, blue tie", run.trigger_word)  # the photo's caption
    assert files[crop["name"].replace(".jpg", ".txt")] == caption.encode()
