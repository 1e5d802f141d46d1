"""Hostile and malformed uploads through every interface that takes them: the web upload (script and
plain form) and the API. Each gets a clear refusal naming the file, never a 500, and leaves no file in
storage, no temporary upload and no row behind. The ingest rules themselves are specified in
tests/characters/test_ingest.py; this suite is about what reaches the interfaces."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from PIL import Image
from rest_framework.test import APIClient

from characters.models import Character, ReferenceImage
from tests.characters.images import jpeg_bytes
from tests.conftest import S3_TEST_BUCKET
from tests.developer.api_helpers import alice_api, api_isolation, assert_error
from tests.security.conftest import files_under
from tests.security.corpus import Sample, accepted_samples, refused_samples

__all__ = ["alice_api", "api_isolation"]

pytestmark = pytest.mark.django_db

REFUSED = refused_samples()
ACCEPTED = accepted_samples()


def api_images(character: Character) -> str:
    return f"/api/v1/characters/{character.pk}/images"


def web_upload(character: Character) -> str:
    return reverse("characters:upload", args=[character.pk])


def as_upload(sample: Sample) -> SimpleUploadedFile:
    return SimpleUploadedFile(sample.filename, sample.content, content_type=sample.content_type)


def assert_nothing_kept(character: Character, media: Path, upload_tmp: Path) -> None:
    assert ReferenceImage.objects.filter(character=character).count() == 0
    assert files_under(media) == []
    assert files_under(upload_tmp) == []


# --- Refused files, through each interface --------------------------------------------------------


@pytest.mark.parametrize("sample", REFUSED, ids=lambda sample: sample.id)
def test_the_api_refuses_it_by_name_and_keeps_nothing(
    sample: Sample, alice_api: APIClient, anna: Character, isolated_media: Path, upload_tmp: Path
) -> None:
    response = alice_api.post(api_images(anna), {"files": [as_upload(sample)]}, format="multipart")
    error = assert_error(response, 400, "images_rejected")
    assert error["message"].startswith(f"None of the files could be added: {sample.filename}: ")
    assert_nothing_kept(anna, isolated_media, upload_tmp)


@pytest.mark.parametrize("sample", REFUSED, ids=lambda sample: sample.id)
def test_the_upload_script_gets_the_files_code_and_nothing_is_kept(
    sample: Sample, alice_web: Client, anna: Character, isolated_media: Path, upload_tmp: Path
) -> None:
    response = alice_web.post(
        web_upload(anna), {"files": [as_upload(sample)]}, HTTP_ACCEPT="application/json"
    )
    assert response.status_code == 400
    [rejected] = response.json()["rejected"]
    assert rejected["filename"] == sample.filename and rejected["code"] == sample.code
    assert rejected["message"].startswith(f"{sample.filename}: ")
    assert_nothing_kept(anna, isolated_media, upload_tmp)


@pytest.mark.parametrize("sample", REFUSED, ids=lambda sample: sample.id)
def test_the_plain_form_gets_a_page_naming_the_file(
    sample: Sample, alice_web: Client, anna: Character, isolated_media: Path, upload_tmp: Path
) -> None:
    response = alice_web.post(web_upload(anna), {"files": [as_upload(sample)]})
    assert response.status_code == 400
    assert sample.filename in response.content.decode()
    assert_nothing_kept(anna, isolated_media, upload_tmp)


# --- Unusual but legitimate photos ------------------------------------------------------------------


def stored_image(image: ReferenceImage) -> tuple[bytes, Image.Image]:
    with default_storage.open(image.file.name, "rb") as handle:
        content = handle.read()
    return content, Image.open(io.BytesIO(content))


@pytest.mark.parametrize("sample", ACCEPTED, ids=lambda sample: sample.id)
def test_an_unusual_photo_is_stored_as_a_plain_still_image_without_its_extras(
    sample: Sample, alice_api: APIClient, anna: Character, upload_tmp: Path
) -> None:
    response = alice_api.post(api_images(anna), {"files": [as_upload(sample)]}, format="multipart")
    assert response.status_code == 201, response.content
    image = ReferenceImage.objects.get(character=anna)
    content, decoded = stored_image(image)
    assert decoded.format in {"JPEG", "PNG", "WEBP"}
    assert decoded.mode in {"RGB", "RGBA"}
    assert getattr(decoded, "n_frames", 1) == 1
    assert not getattr(decoded, "is_animated", False)
    if sample.payload:
        assert sample.payload not in content
    assert files_under(upload_tmp) == []


# --- File names -----------------------------------------------------------------------------------

HOSTILE_NAMES = {
    "parent-directories": "../../../../etc/passwd.jpg",
    "windows-parent-directories": "..\\..\\..\\windows\\win.ini.jpg",
    "absolute-path": "/etc/cron.d/evil.jpg",
    "unicode": "Zoë 照片 😀 résumé.jpg",
    "right-to-left-override": "photo\u202egpj.exe",
    "markup": '<img src=x onerror="alert(1)">.jpg',
    "very-long": "a" * 1000 + ".jpg",
    "reserved-windows-name": "CON.jpg",
    "only-dots": "...",
}


@pytest.mark.parametrize("name", HOSTILE_NAMES.values(), ids=HOSTILE_NAMES.keys())
def test_a_hostile_file_name_never_chooses_where_the_file_is_stored(
    name: str, alice_api: APIClient, anna: Character, isolated_media: Path
) -> None:
    upload = SimpleUploadedFile(name, jpeg_bytes((640, 640)), content_type="image/jpeg")
    response = alice_api.post(api_images(anna), {"files": [upload]}, format="multipart")
    assert response.status_code == 201, response.content
    image = ReferenceImage.objects.get(character=anna)
    assert image.file.name == f"characters/{anna.pk}/images/{image.sha256}.jpg"
    assert "/" not in image.original_filename and "\\" not in image.original_filename
    assert len(image.original_filename) <= 200
    assert all(path.startswith(f"characters/{anna.pk}/") for path in files_under(isolated_media))


def test_a_file_name_with_markup_is_shown_escaped_on_the_result_page(
    alice_web: Client, anna: Character
) -> None:
    name = '<img src=x onerror="alert(1)">.jpg'
    upload = SimpleUploadedFile(name, b"not an image", content_type="image/jpeg")
    response = alice_web.post(web_upload(anna), {"files": [upload]})
    page = response.content.decode()
    assert response.status_code == 400
    assert "<img src=x" not in page
    assert "&lt;img src=x onerror=" in page


# --- Oversized requests -----------------------------------------------------------------------------


def test_a_file_over_20_mb_is_refused_without_being_kept(
    alice_api: APIClient, anna: Character, isolated_media: Path, upload_tmp: Path
) -> None:
    big = SimpleUploadedFile("big.jpg", b"\xff\xd8\xff" + b"\x00" * (20 * 1024 * 1024), "image/jpeg")
    response = alice_api.post(api_images(anna), {"files": [big]}, format="multipart")
    error = assert_error(response, 400, "images_rejected")
    assert "20 MB" in error["message"]
    assert_nothing_kept(anna, isolated_media, upload_tmp)


def too_many_files() -> list[SimpleUploadedFile]:
    return [SimpleUploadedFile(f"{index}.jpg", b"x", "image/jpeg") for index in range(201)]


def test_the_api_refuses_more_files_than_a_character_may_hold_in_one_request(
    alice_api: APIClient, anna: Character, isolated_media: Path, upload_tmp: Path
) -> None:
    response = alice_api.post(api_images(anna), {"files": too_many_files()}, format="multipart")
    assert response.status_code == 400
    assert response.json()["error"]["message"]
    assert_nothing_kept(anna, isolated_media, upload_tmp)


def test_the_web_upload_refuses_more_files_than_a_character_may_hold_in_one_request(
    alice_web: Client, anna: Character, isolated_media: Path, upload_tmp: Path
) -> None:
    response = alice_web.post(web_upload(anna), {"files": too_many_files()})
    assert response.status_code == 400
    assert_nothing_kept(anna, isolated_media, upload_tmp)


def test_a_json_body_over_the_request_limit_is_refused_in_the_error_shape(alice_api: APIClient) -> None:
    body = '{"name": "' + "a" * (3 * 1024 * 1024) + '", "trigger_word": "ohwx_big"}'
    response = alice_api.generic("POST", "/api/v1/characters", body, content_type="application/json")
    assert response.status_code in {400, 413}
    assert response.json()["error"]["message"]
    assert Character.objects.count() == 0


# --- One batch of everything on the real S3 server --------------------------------------------------


def test_a_batch_of_the_whole_corpus_on_s3_keeps_exactly_the_good_photos(
    alice_api: APIClient, anna: Character, s3_storage: Any, upload_tmp: Path
) -> None:
    uploads = [as_upload(sample) for sample in [*REFUSED, *ACCEPTED]]
    response = alice_api.post(api_images(anna), {"files": uploads}, format="multipart")
    assert response.status_code == 201, response.content
    body = response.json()
    assert sorted(item["filename"] for item in body["rejected"]) == sorted(s.filename for s in REFUSED)
    assert len(body["added"]) == len(ACCEPTED)
    images = ReferenceImage.objects.filter(character=anna)
    stored_files = ("file", "thumbnail", "thumbnail_large")
    expected = sorted(getattr(image, kind).name for image in images for kind in stored_files)
    listing = s3_storage.client().list_objects_v2(Bucket=S3_TEST_BUCKET, Prefix=f"characters/{anna.pk}/")
    stored = sorted(item["Key"] for item in listing.get("Contents", []))
    assert stored == expected
    assert files_under(upload_tmp) == []
