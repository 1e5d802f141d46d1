from __future__ import annotations

from typing import Any

from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from characters.models import Character, ReferenceImage
from tests.characters.factories import CharacterFactory, ReferenceImageFactory
from tests.developer.api_helpers import (
    alice_api,
    anonymous_api,
    api_isolation,
    assert_error,
    bob_api,
    jpeg_upload,
)

__all__ = ["alice_api", "anonymous_api", "api_isolation", "bob_api"]

CHARACTERS = "/api/v1/characters"


def anna(owner: Any) -> Character:
    return CharacterFactory(owner=owner, name="Anna", trigger_word="ohwx_anna")


# --- Characters ---------------------------------------------------------------------------


def test_alice_creates_a_character(alice_api: APIClient, alice: Any) -> None:
    response = alice_api.post(CHARACTERS, {"name": "Anna", "trigger_word": "ohwx_anna"}, format="json")
    assert response.status_code == 201
    body = response.json()
    assert body["name"] == "Anna" and body["image_count"] == 0 and body["auto_train"] is False
    assert Character.objects.get(pk=body["id"]).owner == alice


def test_a_bad_trigger_word_is_a_field_error(alice_api: APIClient) -> None:
    response = alice_api.post(CHARACTERS, {"name": "Anna", "trigger_word": "Not A Token"}, format="json")
    error = assert_error(response, 400, "invalid")
    assert "trigger_word" in error["fields"]


def test_missing_fields_are_listed(alice_api: APIClient) -> None:
    error = assert_error(alice_api.post(CHARACTERS, {}, format="json"), 400, "invalid")
    assert set(error["fields"]) == {"name", "trigger_word"}


def test_a_second_character_with_the_same_name_is_a_conflict(alice_api: APIClient, alice: Any) -> None:
    anna(alice)
    response = alice_api.post(CHARACTERS, {"name": "Anna", "trigger_word": "ohwx_other"}, format="json")
    assert_error(response, 409, "name_taken")


def test_a_body_that_is_not_json_is_a_400(alice_api: APIClient) -> None:
    response = alice_api.generic("POST", CHARACTERS, "{not json", content_type="application/json")
    assert_error(response, 400, "malformed_request")


def test_alice_lists_only_her_characters_newest_first(alice_api: APIClient, alice: Any, bob: Any) -> None:
    CharacterFactory(owner=alice, name="First")
    CharacterFactory(owner=alice, name="Second")
    CharacterFactory(owner=bob, name="Bobs")
    body = alice_api.get(CHARACTERS).json()
    assert [item["name"] for item in body["results"]] == ["Second", "First"]
    assert body["next"] is None


def test_the_list_is_paginated_with_cursors(alice_api: APIClient, alice: Any) -> None:
    CharacterFactory.create_batch(3, owner=alice)
    first = alice_api.get(CHARACTERS, {"page_size": 2}).json()
    assert len(first["results"]) == 2 and first["next"]
    second = alice_api.get(first["next"]).json()
    assert len(second["results"]) == 1 and second["next"] is None
    ids = {item["id"] for item in first["results"] + second["results"]}
    assert len(ids) == 3


def test_a_bad_cursor_or_page_size_is_a_400(alice_api: APIClient) -> None:
    assert_error(alice_api.get(CHARACTERS, {"cursor": "garbage"}), 400, "invalid")
    assert_error(alice_api.get(CHARACTERS, {"page_size": 1000}), 400, "invalid")


def test_alice_reads_updates_and_deletes_her_character(alice_api: APIClient, alice: Any) -> None:
    character = anna(alice)
    url = f"{CHARACTERS}/{character.pk}"
    assert alice_api.get(url).json()["trigger_word"] == "ohwx_anna"
    response = alice_api.patch(url, {"description": "red hair", "auto_train": True}, format="json")
    assert response.status_code == 200
    character.refresh_from_db()
    assert character.description == "red hair" and character.auto_train
    assert alice_api.delete(url).status_code == 204
    assert not Character.objects.filter(pk=character.pk).exists()


def test_bob_can_neither_read_nor_change_nor_delete_alices_character(bob_api: APIClient, alice: Any) -> None:
    character = anna(alice)
    url = f"{CHARACTERS}/{character.pk}"
    assert_error(bob_api.get(url), 404, "not_found")
    assert_error(bob_api.patch(url, {"name": "Mine"}, format="json"), 404, "not_found")
    assert_error(bob_api.delete(url), 404, "not_found")
    assert bob_api.get(CHARACTERS).json()["results"] == []
    character.refresh_from_db()
    assert character.name == "Anna"


def test_anonymous_requests_are_refused(anonymous_api: APIClient, alice: Any) -> None:
    character = anna(alice)
    assert_error(anonymous_api.get(CHARACTERS), 401, "not_authenticated")
    assert_error(anonymous_api.get(f"{CHARACTERS}/{character.pk}"), 401, "not_authenticated")
    assert_error(anonymous_api.post(CHARACTERS, {"name": "x"}, format="json"), 401, "not_authenticated")


def test_a_browser_session_works_too_with_its_csrf_check(alice: Any) -> None:
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(alice)
    assert client.get(CHARACTERS).status_code == 200
    response = client.post(CHARACTERS, {"name": "Anna", "trigger_word": "ohwx_anna"}, format="json")
    assert_error(response, 403, "permission_denied")


def test_an_unknown_api_path_answers_in_the_error_shape(alice_api: APIClient) -> None:
    assert_error(alice_api.get("/api/v1/nothing-here"), 404, "not_found")
    assert_error(alice_api.get(f"{CHARACTERS}/not-a-uuid"), 404, "not_found")


# --- Images -------------------------------------------------------------------------------


def test_alice_uploads_several_images_in_one_request(alice_api: APIClient, alice: Any) -> None:
    character = anna(alice)
    files = [jpeg_upload("a.jpg", seed=1), jpeg_upload("b.jpg", seed=2)]
    response = alice_api.post(f"{CHARACTERS}/{character.pk}/images", {"files": files}, format="multipart")
    assert response.status_code == 201, response.content
    body = response.json()
    assert [item["original_filename"] for item in body["added"]] == ["a.jpg", "b.jpg"]
    assert body["rejected"] == []
    assert character.images.count() == 2
    assert body["added"][0]["url"].startswith("http")


def test_photos_sent_under_another_part_name_are_refused_naming_the_part(
    alice_api: APIClient, alice: Any
) -> None:
    character = CharacterFactory(owner=alice)
    files = [jpeg_upload("a.jpg", seed=1)]

    response = alice_api.post(f"{CHARACTERS}/{character.pk}/images", {"images": files}, format="multipart")

    assert response.status_code == 400
    assert (
        "Send the photos as parts named `files`; this request's file parts are named `images`."
        in (response.json()["error"]["message"])
    )
    assert not character.images.exists()


def test_an_upload_reports_each_refused_file_and_keeps_the_good_ones(
    alice_api: APIClient, alice: Any
) -> None:
    character = anna(alice)
    files = [
        jpeg_upload("good.jpg", seed=3),
        SimpleUploadedFile("notes.jpg", b"not an image", content_type="image/jpeg"),
        jpeg_upload("tiny.jpg", seed=4, size=(100, 100)),
    ]
    response = alice_api.post(f"{CHARACTERS}/{character.pk}/images", {"files": files}, format="multipart")
    assert response.status_code == 201
    body = response.json()
    assert [item["original_filename"] for item in body["added"]] == ["good.jpg"]
    assert [item["filename"] for item in body["rejected"]] == ["notes.jpg", "tiny.jpg"]
    assert all(item["code"] and item["message"] for item in body["rejected"])
    assert character.images.count() == 1


def test_an_upload_where_every_file_is_refused_is_a_400(alice_api: APIClient, alice: Any) -> None:
    character = anna(alice)
    files = [SimpleUploadedFile("notes.txt", b"hello", content_type="text/plain")]
    response = alice_api.post(f"{CHARACTERS}/{character.pk}/images", {"files": files}, format="multipart")
    error = assert_error(response, 400, "images_rejected")
    assert "notes.txt" in error["fields"]["files"][0]
    assert not ReferenceImage.objects.exists()


def test_an_upload_without_files_is_a_400(alice_api: APIClient, alice: Any) -> None:
    character = anna(alice)
    response = alice_api.post(f"{CHARACTERS}/{character.pk}/images", {}, format="multipart")
    error = assert_error(response, 400, "invalid")
    assert "files" in error["fields"]


def test_a_json_upload_is_an_unsupported_media_type(alice_api: APIClient, alice: Any) -> None:
    character = anna(alice)
    response = alice_api.post(f"{CHARACTERS}/{character.pk}/images", {"files": []}, format="json")
    assert_error(response, 415, "unsupported_media_type")


def test_alice_lists_captions_and_deletes_images(alice_api: APIClient, alice: Any) -> None:
    character = anna(alice)
    image = ReferenceImageFactory(character=character)
    base = f"{CHARACTERS}/{character.pk}/images"
    [listed] = alice_api.get(base).json()["results"]
    assert listed["id"] == str(image.pk)
    response = alice_api.patch(f"{base}/{image.pk}", {"caption": "[trigger] smiling"}, format="json")
    assert response.status_code == 200 and response.json()["caption"] == "[trigger] smiling"
    image.refresh_from_db()
    assert image.caption == "[trigger] smiling"
    assert alice_api.delete(f"{base}/{image.pk}").status_code == 204
    assert not ReferenceImage.objects.filter(pk=image.pk).exists()


def test_a_caption_that_is_too_long_is_a_field_error(alice_api: APIClient, alice: Any) -> None:
    image = ReferenceImageFactory(character=anna(alice))
    url = f"{CHARACTERS}/{image.character_id}/images/{image.pk}"
    error = assert_error(alice_api.patch(url, {"caption": "x" * 5000}, format="json"), 400, "invalid")
    assert "caption" in error["fields"]


def test_bob_can_neither_see_nor_add_nor_change_alices_images(bob_api: APIClient, alice: Any) -> None:
    character = anna(alice)
    image = ReferenceImageFactory(character=character, caption="hers")
    base = f"{CHARACTERS}/{character.pk}/images"
    assert_error(bob_api.get(base), 404, "not_found")
    upload = {"files": [jpeg_upload("x.jpg", seed=9)]}
    assert_error(bob_api.post(base, upload, format="multipart"), 404, "not_found")
    assert_error(bob_api.get(f"{base}/{image.pk}"), 404, "not_found")
    assert_error(bob_api.patch(f"{base}/{image.pk}", {"caption": "mine"}, format="json"), 404, "not_found")
    assert_error(bob_api.delete(f"{base}/{image.pk}"), 404, "not_found")
    image.refresh_from_db()
    assert image.caption == "hers" and character.images.count() == 1


def test_an_image_is_only_found_under_its_own_character(alice_api: APIClient, alice: Any) -> None:
    image = ReferenceImageFactory(character=anna(alice))
    other = CharacterFactory(owner=alice)
    assert_error(alice_api.get(f"{CHARACTERS}/{other.pk}/images/{image.pk}"), 404, "not_found")
