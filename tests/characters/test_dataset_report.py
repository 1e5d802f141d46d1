"""The dataset report of a character, computed by the Celery task from real photos, stored, and read back
through the selectors, the API, the report page and the admin."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from django.core.files.storage import default_storage
from django.urls import reverse
from rest_framework.test import APIClient

from characters import analysis, selectors, services, tasks
from characters.faces.flags import DatasetWarning, Flag
from characters.faces.photo import VERSION
from characters.models import DatasetReport, PhotoAnalysis
from tests.characters import photos
from tests.characters.factories import CharacterFactory
from tests.characters.identity import add, analyse, character_with, flags_by_name, image_named, person_a_and_b

pytestmark = pytest.mark.django_db


def test_the_report_names_the_second_person_and_passes_the_first_persons_photos(alice: Any) -> None:
    anna = character_with(alice, person_a_and_b())

    flags = flags_by_name(anna)

    assert flags[photos.PERSON_B] == [Flag.OTHER_PERSON]
    assert all(flags[name] == [] for name in photos.PERSON_A)
    report = DatasetReport.objects.get(character=anna)
    assert report.medoid is not None and report.medoid.original_filename in photos.PERSON_A
    assert report.with_face == 4 and report.usable == 3
    assert DatasetWarning.SEVERAL_PEOPLE in [warning["code"] for warning in report.warnings]


def test_blank_faceless_two_face_and_blurred_photos_are_each_flagged(alice: Any) -> None:
    named = {name: photos.photo(name) for name in photos.PERSON_A}
    named |= {
        "white.jpg": photos.blank(),
        "room.jpg": photos.without_face(),
        "two.jpg": photos.two_people(),
        "soft.jpg": photos.blurred(photos.PERSON_A[1]),
    }

    flags = flags_by_name(character_with(alice, named))

    assert flags["white.jpg"] == [Flag.BLANK]
    assert flags["room.jpg"] == [Flag.NO_FACE]
    assert Flag.MULTIPLE_FACES in flags["two.jpg"]
    assert Flag.BLURRY in flags["soft.jpg"]
    assert all(flags[name] == [] for name in photos.PERSON_A)


def test_a_rescaled_copy_is_reported_as_a_near_duplicate_naming_the_original(alice: Any) -> None:
    original = photos.PERSON_A[0]
    anna = character_with(alice, {original: photos.photo(original), "copy.jpg": photos.rescaled(original)})

    report = DatasetReport.objects.get(character=anna)

    copy_flags = report.photos[str(image_named(anna, "copy.jpg").pk)]["flags"]
    assert [flag["code"] for flag in copy_flags] == [Flag.NEAR_DUPLICATE]
    assert original in copy_flags[0]["message"]


def test_each_analysis_keeps_the_face_boxes_and_embedding_of_its_photo(alice: Any) -> None:
    anna = character_with(alice, {photos.PERSON_B: photos.photo(photos.PERSON_B)})

    stored = PhotoAnalysis.objects.get(image__character=anna)

    assert stored.analyser == VERSION
    assert len(stored.faces) == 1 and len(stored.faces[0]["box"]) == 4
    embedding = analysis.embedding_of(stored)
    assert embedding is not None and embedding.shape == (128,) and np.isfinite(embedding).all()


def test_a_face_crop_at_the_training_resolution_is_stored_for_each_photo_with_a_face(alice: Any) -> None:
    anna = character_with(
        alice, {photos.PERSON_A[2]: photos.photo(photos.PERSON_A[2]), "room.jpg": photos.without_face()}
    )

    crops = selectors.character_face_crops(anna)

    assert [image.original_filename for image, _ in crops] == [photos.PERSON_A[2]]
    name = crops[0][1]
    assert name == f"characters/{anna.pk}/crops/{crops[0][0].sha256}.jpg"
    assert default_storage.exists(name)


def test_no_crop_is_made_for_a_character_with_face_crops_off(alice: Any) -> None:
    anna = character_with(alice, {photos.PERSON_A[2]: photos.photo(photos.PERSON_A[2])}, face_crops=False)

    assert selectors.character_face_crops(anna) == []
    assert not PhotoAnalysis.objects.exclude(crop="").exists()


def test_running_the_analysis_again_changes_nothing(alice: Any) -> None:
    anna = character_with(alice, person_a_and_b())
    before = {row.pk: row.analysed_at for row in PhotoAnalysis.objects.all()}
    report_before = DatasetReport.objects.get(character=anna)

    analyse(anna)

    assert {row.pk: row.analysed_at for row in PhotoAnalysis.objects.all()} == before
    report_after = DatasetReport.objects.get(character=anna)
    assert (report_after.pk, report_after.photos, report_after.score) == (
        report_before.pk,
        report_before.photos,
        report_before.score,
    )


def test_deleting_a_photo_deletes_its_analysis_embedding_and_crop_and_updates_the_report(
    alice: Any, django_capture_on_commit_callbacks: Any, settings: Any
) -> None:
    settings.CELERY_TASK_ALWAYS_EAGER = True
    anna = character_with(alice, person_a_and_b())
    biden = image_named(anna, photos.PERSON_B)
    crop = biden.analysis.crop.name
    assert crop and default_storage.exists(crop)

    with django_capture_on_commit_callbacks(execute=True):
        services.reference_image_delete(image=biden)
    tasks.analyse_character_photos(str(anna.pk))  # what the queued task does

    assert not PhotoAnalysis.objects.filter(image_id=biden.pk).exists()
    assert not default_storage.exists(crop)
    assert flags_by_name(anna) == {name: [] for name in photos.PERSON_A}
    assert selectors.dataset_report_is_current(anna, anna.dataset_report)


def test_a_photo_deleted_during_its_analysis_leaves_no_analysis_and_no_crop(
    alice: Any, django_capture_on_commit_callbacks: Any
) -> None:
    anna = character_with(alice, {})
    add(anna, {photos.PERSON_B: photos.photo(photos.PERSON_B)})
    image = image_named(anna, photos.PERSON_B)
    image.delete()  # gone from the database while the worker still holds it

    with django_capture_on_commit_callbacks(execute=True):
        assert analysis.photo_analysis_run(image=image, character=anna) is None
    assert not PhotoAnalysis.objects.exists()
    assert not default_storage.exists(f"characters/{anna.pk}/crops/{image.sha256}.jpg")


def test_a_new_photo_makes_the_report_outdated_and_the_sweep_queues_its_character(
    alice: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    anna = character_with(alice, {photos.PERSON_A[0]: photos.photo(photos.PERSON_A[0])})
    assert selectors.dataset_report_is_current(anna, anna.dataset_report)
    add(anna, {photos.PERSON_A[1]: photos.photo(photos.PERSON_A[1])})
    queued: list[str] = []
    monkeypatch.setattr(tasks.analyse_character_photos, "delay", queued.append)

    tasks.sweep_dataset_reports()

    assert not selectors.dataset_report_is_current(anna, DatasetReport.objects.get(character=anna))
    assert queued == [str(anna.pk)]


def test_the_sweep_leaves_characters_with_a_current_report_alone(
    alice: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    character_with(alice, {photos.PERSON_A[0]: photos.photo(photos.PERSON_A[0])})
    queued: list[str] = []
    monkeypatch.setattr(tasks.analyse_character_photos, "delay", queued.append)

    tasks.sweep_dataset_reports()

    assert queued == []


def test_a_long_analysis_queues_the_next_slice_instead_of_running_on(
    alice: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.CHARACTERS_ANALYSIS_SLICE_SECONDS = 0
    anna = character_with(alice, {})
    add(anna, {photos.PERSON_B: photos.photo(photos.PERSON_B)})
    queued: list[str] = []
    monkeypatch.setattr(tasks.analyse_character_photos, "delay", queued.append)

    tasks.analyse_character_photos(str(anna.pk))

    assert queued == [str(anna.pk)]
    assert not PhotoAnalysis.objects.exists()


# --- Identity check for training ----------------------------------------------------------


def test_training_is_refused_when_most_photos_of_a_person_show_no_face(alice: Any) -> None:
    anna = character_with(
        alice,
        {
            "room.jpg": photos.without_face(),
            "white.jpg": photos.blank(),
            photos.PERSON_B: photos.photo(photos.PERSON_B),
        },
    )

    check = selectors.character_identity_check(anna)

    assert check.refusal is not None and "2 of 3 photos show no face" in check.refusal
    assert DatasetWarning.MOSTLY_NO_FACE in [warning["code"] for warning in check.warnings]


def test_a_character_that_is_not_a_person_is_never_refused_for_faces(alice: Any) -> None:
    anna = character_with(
        alice, {"room.jpg": photos.without_face(), "white.jpg": photos.blank()}, is_person=False
    )

    check = selectors.character_identity_check(anna)

    assert check.refusal is None
    assert flags_by_name(anna) == {"room.jpg": [], "white.jpg": [Flag.BLANK]}


def test_the_refusal_share_is_a_setting(alice: Any, settings: Any) -> None:
    settings.CHARACTERS_NO_FACE_REFUSAL_SHARE = 1.0
    anna = character_with(alice, {"room.jpg": photos.without_face(), "white.jpg": photos.blank()})

    assert selectors.character_identity_check(anna).refusal is None


def test_a_set_with_faces_is_not_refused_and_carries_its_warnings(alice: Any) -> None:
    anna = character_with(alice, person_a_and_b())

    check = selectors.character_identity_check(anna)

    assert check.refusal is None and check.current and check.score is not None
    assert DatasetWarning.SEVERAL_PEOPLE in [warning["code"] for warning in check.warnings]


def test_turning_is_a_person_off_updates_the_report(
    alice: Any, django_capture_on_commit_callbacks: Any
) -> None:
    anna = character_with(alice, {"room.jpg": photos.without_face()})
    assert flags_by_name(anna) == {"room.jpg": [Flag.NO_FACE]}

    services.character_update(character=anna, is_person=False)
    assert not selectors.dataset_report_is_current(anna, anna.dataset_report)
    analyse(anna)

    assert flags_by_name(anna) == {"room.jpg": []}


def test_the_likeness_references_leave_out_the_other_person(alice: Any) -> None:
    anna = character_with(alice, person_a_and_b())

    names = sorted(reference.name for reference in selectors.character_likeness_references(anna))

    assert names == sorted(photos.PERSON_A)


# --- Where the report is shown --------------------------------------------------------------


def test_the_api_returns_the_report_with_boxes_flags_and_crop_links(alice: Any) -> None:
    anna = character_with(alice, person_a_and_b())
    api = APIClient()
    api.force_authenticate(alice)

    body = api.get(f"/api/v1/characters/{anna.pk}/dataset-report").json()

    assert body["status"] == "current" and body["photo_count"] == 4 and body["with_face"] == 4
    by_name = {photo["original_filename"]: photo for photo in body["photos"]}
    assert [flag["code"] for flag in by_name[photos.PERSON_B]["flags"]] == ["other_person"]
    assert by_name[photos.PERSON_B]["distance"] > 0.6 > by_name[photos.PERSON_A[0]]["distance"]
    assert len(by_name[photos.PERSON_A[0]]["faces"][0]["box"]) == 4
    assert by_name[photos.PERSON_A[0]]["crop_url"]
    assert body["medoid_image_id"] in {photo["image_id"] for photo in body["photos"]}


def test_the_api_says_pending_before_the_first_report(alice: Any) -> None:
    anna = CharacterFactory(owner=alice)
    add(anna, {photos.PERSON_B: photos.photo(photos.PERSON_B)})
    api = APIClient()
    api.force_authenticate(alice)

    body = api.get(f"/api/v1/characters/{anna.pk}/dataset-report").json()

    assert body["status"] == "pending" and body["score"] is None
    assert [photo["analysed"] for photo in body["photos"]] == [False]


def test_another_user_cannot_read_the_report(alice: Any, bob: Any) -> None:
    anna = character_with(alice, {photos.PERSON_B: photos.photo(photos.PERSON_B)})
    api = APIClient()
    api.force_authenticate(bob)

    assert api.get(f"/api/v1/characters/{anna.pk}/dataset-report").status_code == 404


def test_the_report_page_shows_face_boxes_flags_and_a_remove_button(alice: Any, client: Any) -> None:
    anna = character_with(alice, person_a_and_b())
    client.force_login(alice)

    page = client.get(reverse("characters:report", args=[anna.pk])).content.decode()

    assert page.count('class="face-box"') == 4
    assert "This may be someone else" in page
    biden = image_named(anna, photos.PERSON_B)
    assert reverse("characters:image_delete", args=[anna.pk, biden.pk]) in page


def test_the_admin_shows_the_report_and_the_consent(alice: Any, staff: Any, client: Any) -> None:
    anna = character_with(alice, person_a_and_b())
    client.force_login(staff)

    page = client.get(reverse("admin:characters_character_change", args=[anna.pk])).content.decode()

    assert f"<strong>{anna.dataset_report.score}</strong> / 100" in page
    assert "This may be someone else" in page
    assert "statement 2026-12-1" in page


def test_turning_face_crops_on_later_makes_the_crops(alice: Any) -> None:
    anna = character_with(alice, {photos.PERSON_A[2]: photos.photo(photos.PERSON_A[2])}, face_crops=False)

    services.character_update(character=anna, face_crops=True)
    analyse(anna)

    [(_, name)] = selectors.character_face_crops(anna)
    assert default_storage.exists(name)


def test_turning_face_crops_off_deletes_the_crops(
    alice: Any, django_capture_on_commit_callbacks: Any
) -> None:
    anna = character_with(alice, {photos.PERSON_A[2]: photos.photo(photos.PERSON_A[2])})
    [(_, name)] = selectors.character_face_crops(anna)

    services.character_update(character=anna, face_crops=False)
    with django_capture_on_commit_callbacks(execute=True):
        analyse(anna)

    assert not default_storage.exists(name)
    assert not PhotoAnalysis.objects.exclude(crop="").exists()
