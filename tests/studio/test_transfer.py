from __future__ import annotations

import hashlib
import io
import json
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
import time_machine
from django.core.exceptions import SuspiciousFileOperation
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.test import Client, RequestFactory

from studio.transfer import download_url, transfer_view, upload_url

BLOB = bytes(range(256)) * 4096  # 1 MiB


def path_of(url: str) -> str:
    return urlsplit(url).path


def test_a_file_round_trips_through_signed_local_urls(client: Client) -> None:
    name = "characters/x/loras/run.safetensors"

    put = client.put(path_of(upload_url(name, ttl=60)), data=BLOB, content_type="application/octet-stream")
    assert put.status_code == 200
    got = client.get(path_of(download_url(name, ttl=60)))

    assert got.status_code == 200
    assert hashlib.sha256(b"".join(got.streaming_content)).digest() == hashlib.sha256(BLOB).digest()
    assert default_storage.size(name) == len(BLOB)


def test_a_local_upload_replaces_the_previous_file(client: Client) -> None:
    name = "characters/x/loras/run.safetensors"
    default_storage.save(name, ContentFile(b"old"))

    client.put(path_of(upload_url(name, ttl=60)), data=b"new", content_type="application/octet-stream")

    with default_storage.open(name) as stored:
        assert stored.read() == b"new"


def test_an_upload_cut_short_keeps_the_stored_file_and_leaves_nothing_behind() -> None:
    name = "characters/x/loras/run.safetensors"
    default_storage.save(name, ContentFile(b"the verified LoRA"))
    folder = Path(default_storage.path(name)).parent
    # The body ends 1,000 bytes before its Content-Length: the sender was cut off mid-upload.
    request = RequestFactory().generic(
        "PUT",
        path_of(upload_url(name, ttl=60)),
        content_type="application/octet-stream",
        CONTENT_LENGTH=str(len(BLOB)),
        **{"wsgi.input": io.BytesIO(BLOB[:-1000])},
    )

    response = transfer_view(request, token=path_of(upload_url(name, ttl=60)).rsplit("/", 1)[1])

    assert response.status_code == 400
    assert "ended after 1,047,576 of 1,048,576 bytes" in json.loads(response.content)["error"]
    with default_storage.open(name) as stored:
        assert stored.read() == b"the verified LoRA"
    assert sorted(path.name for path in folder.iterdir()) == ["run.safetensors"]


@pytest.mark.parametrize("length", ["ten", "-5", "1e3", "²"])
def test_a_content_length_that_is_not_a_number_is_refused(client: Client, length: str) -> None:
    url = path_of(upload_url("characters/x/loras/run.safetensors", ttl=60))

    response = client.generic("PUT", url, b"x", CONTENT_LENGTH=length)

    assert response.status_code == 400


def test_a_tampered_local_signature_gets_403_without_touching_storage(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    touched: list[str] = []
    monkeypatch.setattr(default_storage.__class__, "exists", lambda self, name: touched.append(name))
    url = path_of(download_url("characters/x/images/a.jpg", ttl=60))

    response = client.get(url[:-3] + ("AAA" if not url.endswith("AAA") else "BBB"))

    assert response.status_code == 403
    assert touched == []


def test_an_expired_local_url_gets_403(client: Client) -> None:
    name = "characters/x/images/a.jpg"
    default_storage.save(name, ContentFile(b"jpeg"))
    url = path_of(download_url(name, ttl=60))

    with time_machine.travel(time.time() + 61):
        response = client.get(url)

    assert response.status_code == 403


def test_a_download_url_cannot_be_used_to_upload(client: Client) -> None:
    name = "characters/x/images/a.jpg"

    response = client.put(path_of(download_url(name, ttl=60)), data=b"evil", content_type="image/jpeg")

    assert response.status_code == 403
    assert not default_storage.exists(name)


@pytest.mark.parametrize(
    "name", ["../settings.py", "/etc/passwd", "characters/../../x", "a\\..\\b", "a\x00b", ""]
)
def test_a_path_traversal_name_is_refused(name: str) -> None:
    with pytest.raises(SuspiciousFileOperation):
        upload_url(name, ttl=60)


@pytest.mark.integration
def test_a_file_round_trips_through_presigned_s3_urls(s3_storage: object) -> None:
    name = "characters/x/loras/run-s3.safetensors"

    put = requests.put(upload_url(name, ttl=60), data=BLOB, timeout=30)
    got = requests.get(download_url(name, ttl=60), timeout=30)

    assert put.status_code == 200
    assert got.status_code == 200
    assert hashlib.sha256(got.content).digest() == hashlib.sha256(BLOB).digest()
    assert default_storage.size(name) == len(BLOB)


@pytest.mark.integration
def test_a_tampered_presigned_s3_url_gets_403_and_writes_nothing(s3_storage: object) -> None:
    name = "characters/x/loras/tampered.safetensors"
    url = upload_url(name, ttl=60)
    tampered = url.replace("X-Amz-Signature=", "X-Amz-Signature=0")

    response = requests.put(tampered, data=b"evil", timeout=30)

    assert response.status_code == 403
    assert not default_storage.exists(name)


@pytest.mark.integration
def test_an_expired_presigned_s3_url_gets_403(s3_storage: object) -> None:
    name = "characters/x/images/expiring.jpg"
    default_storage.save(name, ContentFile(b"jpeg"))
    url = download_url(name, ttl=1)

    time.sleep(2.1)
    response = requests.get(url, timeout=30)

    assert response.status_code == 403
