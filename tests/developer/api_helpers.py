"""Fixtures and helpers for API tests; API test modules import what they use from here.

from tests.developer.api_helpers import alice_api, bob_api, anonymous_api, api_isolation
"""

from __future__ import annotations

import io
import uuid
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image
from rest_framework.test import APIClient

from developer.services import api_token_create


def client_for(user: Any) -> APIClient:
    """A client that authenticates like an external service: with a Bearer token."""
    _, raw = api_token_create(user=user, name="tests")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


@pytest.fixture(autouse=True)
def api_isolation(settings: Any) -> None:
    """Each test gets its own rate-limit counters and may register webhooks on loopback."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": f"api-tests-{uuid.uuid4()}",
        }
    }
    settings.WEBHOOKS_ALLOW_PRIVATE_URLS = True


@pytest.fixture
def alice_api(alice: Any) -> APIClient:
    return client_for(alice)


@pytest.fixture
def bob_api(bob: Any) -> APIClient:
    return client_for(bob)


@pytest.fixture
def anonymous_api() -> APIClient:
    return APIClient()


def jpeg_upload(
    name: str = "photo.jpg", *, seed: int = 0, size: tuple[int, int] = (640, 640)
) -> SimpleUploadedFile:
    """A real JPEG the ingest accepts; a different `seed` gives a different image (and sha256)."""
    buffer = io.BytesIO()
    Image.new("RGB", size, (seed * 37 % 256, seed * 91 % 256, 120)).save(buffer, "JPEG", quality=90)
    return SimpleUploadedFile(name, buffer.getvalue(), content_type="image/jpeg")


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    """The response has the API's one error shape with this status and code."""
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return dict(body["error"])
