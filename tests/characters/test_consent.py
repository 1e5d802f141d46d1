"""Consent before the first upload: recorded per character (who, when, wording version), required by the
web page and the API alike."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.files.storage import default_storage
from django.urls import reverse
from rest_framework.test import APIClient

from characters import consent, services
from characters.models import PhotoConsent, ReferenceImage
from studio.errors import ApplicationError
from tests.characters import images, photos
from tests.characters.factories import CharacterFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def anna(alice: Any) -> Any:
    return CharacterFactory(owner=alice, name="Anna", with_consent=None)


def photo_upload(name: str = "a.jpg") -> Any:
    return images.upload(photos.photo_bytes(photos.PERSON_B), name)


def test_the_web_upload_without_consent_stores_nothing_and_sends_the_owner_to_the_consent_page(
    anna: Any, client: Any, isolated_media: Any
) -> None:
    client.force_login(anna.owner)

    response = client.post(reverse("characters:upload", args=[anna.pk]), {"files": [photo_upload()]})

    assert response.status_code == 302 and response.url == reverse("characters:consent", args=[anna.pk])
    assert not ReferenceImage.objects.exists()
    assert not any(isolated_media.rglob("*.*"))


def test_the_upload_script_is_told_that_consent_is_required(anna: Any, client: Any) -> None:
    client.force_login(anna.owner)

    response = client.post(
        reverse("characters:upload", args=[anna.pk]),
        {"files": [photo_upload()]},
        HTTP_ACCEPT="application/json",
    )

    assert response.status_code == 400
    assert response.json()["code"] == "consent_required"
    assert response.json()["consent_url"] == reverse("characters:consent", args=[anna.pk])


def test_the_consent_page_records_who_agreed_when_and_to_which_wording(anna: Any, client: Any) -> None:
    client.force_login(anna.owner)
    page = client.get(reverse("characters:consent", args=[anna.pk])).content.decode()
    assert consent.WORDINGS[consent.CURRENT_VERSION][:60] in page

    response = client.post(
        reverse("characters:consent", args=[anna.pk]),
        {"basis": "self", "agree": "on", "wording_version": consent.CURRENT_VERSION},
    )

    assert response.status_code == 302
    record = PhotoConsent.objects.get(character=anna)
    assert (record.given_by, record.wording_version, record.basis) == (
        anna.owner,
        consent.CURRENT_VERSION,
        "self",
    )
    assert record.given_at is not None


def test_the_consent_page_refuses_without_the_agreement_ticked(anna: Any, client: Any) -> None:
    client.force_login(anna.owner)

    response = client.post(
        reverse("characters:consent", args=[anna.pk]),
        {"basis": "self", "wording_version": consent.CURRENT_VERSION},
    )

    assert response.status_code == 400
    assert not PhotoConsent.objects.exists()


def test_after_consent_the_web_upload_keeps_the_photo(anna: Any, client: Any) -> None:
    services.character_consent_record(character=anna, given_by=anna.owner, basis="permission")
    client.force_login(anna.owner)

    response = client.post(reverse("characters:upload", args=[anna.pk]), {"files": [photo_upload()]})

    assert response.status_code == 200
    image = ReferenceImage.objects.get(character=anna)
    assert default_storage.exists(image.file.name)


def test_the_api_refuses_an_upload_without_consent(anna: Any) -> None:
    api = APIClient()
    api.force_authenticate(anna.owner)

    response = api.post(
        f"/api/v1/characters/{anna.pk}/images", {"files": [photo_upload()]}, format="multipart"
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "consent_required"
    assert not ReferenceImage.objects.exists()


def test_the_api_records_consent_and_returns_the_statement(anna: Any) -> None:
    api = APIClient()
    api.force_authenticate(anna.owner)
    assert api.get(f"/api/v1/characters/{anna.pk}/consent").json()["error"]["code"] == "no_consent"

    recorded = api.put(f"/api/v1/characters/{anna.pk}/consent", {"basis": "self"}, format="json")

    assert recorded.status_code == 200
    body = api.get(f"/api/v1/characters/{anna.pk}/consent").json()
    assert body["wording_version"] == consent.CURRENT_VERSION
    assert body["statement"] == consent.WORDINGS[consent.CURRENT_VERSION]
    assert body["given_by"] == "alice"
    uploaded = api.post(
        f"/api/v1/characters/{anna.pk}/images", {"files": [photo_upload()]}, format="multipart"
    )
    assert uploaded.status_code == 201


def test_an_unknown_wording_version_is_refused(anna: Any) -> None:
    with pytest.raises(ApplicationError) as refused:
        services.character_consent_record(
            character=anna, given_by=anna.owner, basis="self", wording_version="1999-1"
        )

    assert refused.value.code == "unknown_consent_version"
    assert not PhotoConsent.objects.exists()


def test_only_the_owner_can_consent_for_a_character(anna: Any, bob: Any) -> None:
    with pytest.raises(ApplicationError):
        services.character_consent_record(character=anna, given_by=bob, basis="permission")

    api = APIClient()
    api.force_authenticate(bob)
    assert (
        api.put(f"/api/v1/characters/{anna.pk}/consent", {"basis": "self"}, format="json").status_code == 404
    )
    assert not PhotoConsent.objects.exists()
