"""Training asks the face check first: a start (page, API, retry, auto-train) is refused when most photos
of a person show no face, and the train and confirm pages show the check's warnings. A character marked
not a person is never refused; auto-train waits for the check of new photos and says on the character
page why it does not start."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from characters import services as character_services
from characters.models import Character
from characters.signals import reference_images_added
from studio.errors import ApplicationError
from tests.characters import photos
from tests.characters.identity import add, analyse, character_with, person_a_and_b
from tests.developer.api_helpers import client_for as api_client_for
from tests.training.conftest import FakeProvider, make_run
from training.models import TrainingRun
from training.services import training_run_retry, training_run_start

pytestmark = pytest.mark.django_db

FACELESS = "2 of 3 photos show no face"


@pytest.fixture(autouse=True)
def three_photos_train(settings: Any) -> None:
    settings.TRAINING_MIN_IMAGES = 3


def faceless(owner: Any, **fields: Any) -> Character:
    """Three photos of which two show no face: most of them."""
    return character_with(
        owner,
        {
            "room.jpg": photos.without_face(),
            "white.jpg": photos.blank(),
            photos.PERSON_B: photos.photo(photos.PERSON_B),
        },
        **fields,
    )


def page_client(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def start(character: Character) -> TrainingRun:
    return training_run_start(character=character, requested_by=character.owner, source="user")


# ============================================================================================ start


def test_a_start_is_refused_when_most_photos_of_a_person_show_no_face(alice: Any) -> None:
    anna = faceless(alice)

    with pytest.raises(ApplicationError) as refused:
        start(anna)

    assert refused.value.code == "identity_refused" and refused.value.http_status == 400
    assert FACELESS in refused.value.message
    assert not TrainingRun.objects.exists()


def test_a_character_that_is_not_a_person_trains_on_photos_without_faces(alice: Any) -> None:
    still_life = faceless(alice, is_person=False)

    assert start(still_life).status == TrainingRun.Status.PENDING


def test_a_retry_is_refused_as_a_start_is(alice: Any) -> None:
    anna = faceless(alice, is_person=False)
    failed = make_run(anna, TrainingRun.Status.FAILED, manifest=start(anna).manifest)
    TrainingRun.objects.exclude(pk=failed.pk).update(status=TrainingRun.Status.CANCELLED)
    character_services.character_update(character=anna, is_person=True)
    analyse(anna)

    with pytest.raises(ApplicationError) as refused:
        training_run_retry(run=failed, requested_by=alice, source="user")

    assert refused.value.code == "identity_refused"


def test_the_start_records_the_face_checks_warnings_in_its_first_event(alice: Any) -> None:
    anna = character_with(alice, person_a_and_b())

    run = start(anna)

    detail = run.events.get().detail
    assert "several_people" in detail["identity_warnings"] and detail["identity_score"] is not None


def test_the_api_refuses_the_start_with_400_identity_refused(alice: Any) -> None:
    anna = faceless(alice)

    response = api_client_for(alice).post(
        reverse("api:character-runs", args=[anna.pk]), {"preset": "fast"}, format="json"
    )

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "identity_refused" and FACELESS in error["message"]
    assert not TrainingRun.objects.exists()


# ============================================================================================ pages


def test_the_confirm_step_shows_the_refusal_in_place_of_start_training(alice: Any) -> None:
    anna = faceless(alice)

    page = page_client(alice).post(reverse("training:start", args=[anna.pk]), {"preset": "fast"})

    text = page.content.decode()
    assert page.status_code == 200 and "This run cannot start." in text and FACELESS in text
    assert 'name="confirm"' not in text


def test_confirming_anyway_is_refused_with_the_message_not_an_error_page(
    alice: Any, provider: FakeProvider
) -> None:
    anna = faceless(alice)

    page = page_client(alice).post(
        reverse("training:start", args=[anna.pk]), {"preset": "fast", "confirm": "1"}
    )

    assert page.status_code == 400 and FACELESS in page.content.decode()
    assert not TrainingRun.objects.exists()


def test_the_train_and_confirm_pages_show_the_face_checks_warnings(alice: Any) -> None:
    anna = character_with(alice, person_a_and_b())
    client, url = page_client(alice), reverse("training:start", args=[anna.pk])

    form = client.get(url).content.decode()
    confirm = client.post(url, {"preset": "fast"}).content.decode()

    for page in (form, confirm):
        assert 'data-code="several_people"' in page
        assert reverse("characters:report", args=[anna.pk]) in page
    assert 'name="confirm"' in confirm  # warnings never stop a start


def test_the_character_page_says_why_training_is_refused(alice: Any) -> None:
    anna = faceless(alice)

    page = page_client(alice).get(reverse("characters:detail", args=[anna.pk])).content.decode()

    assert FACELESS in page
    assert f'href="{reverse("training:start", args=[anna.pk])}"' not in page


# ============================================================================================ auto-train


def test_auto_train_waits_for_the_face_check_of_new_photos_then_starts(
    alice: Any, provider: FakeProvider, django_capture_on_commit_callbacks: Any
) -> None:
    anna = character_with(alice, {name: photos.photo(name) for name in photos.PERSON_A[:2]}, auto_train=True)
    add(anna, {photos.PERSON_A[2]: photos.photo(photos.PERSON_A[2])})

    reference_images_added.send(sender=Character, character_id=anna.pk)
    assert not TrainingRun.objects.exists()  # the third photo is not checked yet

    with django_capture_on_commit_callbacks(execute=True):  # the check says it is done once committed
        analyse(anna)

    run = TrainingRun.objects.get(character=anna)
    assert run.events.get(from_status="").source == "system"


def test_auto_train_does_not_start_photos_without_faces_and_the_character_page_says_why(
    alice: Any, provider: FakeProvider
) -> None:
    anna = faceless(alice, auto_train=True)

    reference_images_added.send(sender=Character, character_id=anna.pk)

    assert not TrainingRun.objects.exists()
    page = page_client(alice).get(reverse("characters:detail", args=[anna.pk])).content.decode()
    assert "Auto-train is on but does not start" in page and FACELESS in page


def test_a_report_made_before_the_latest_photos_refuses_only_for_the_photos_it_saw(alice: Any) -> None:
    anna = character_with(alice, {"room.jpg": photos.without_face()})
    add(anna, {name: photos.photo(name) for name in photos.PERSON_A})  # not checked yet

    assert start(anna).status == TrainingRun.Status.PENDING  # 1 of 4 without a face, not "1 of 1"
