"""A request that fails on our side: a clear 503 while the database cannot be reached, a plain 500
otherwise; JSON in the API's error shape under /api/, a page elsewhere; never a traceback."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.sessions.backends.db import SessionStore
from django.db import OperationalError
from django.test import Client

from studio.error_views import RETRY_AFTER_SECONDS

pytestmark = pytest.mark.django_db


def _unreachable(*args: Any, **kwargs: Any) -> Any:
    raise OperationalError('connection to server at "127.0.0.1", port 5432 failed: Connection refused')


def _broken(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("a bug with a secret-looking detail: s3cr3t")


@pytest.fixture
def client_as_alice(alice: Any) -> Client:
    client = Client(raise_request_exception=False)
    client.force_login(alice)
    return client


def test_the_api_answers_503_in_its_error_shape_while_the_database_is_unreachable(
    client_as_alice: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("characters.api.character_list_for", _unreachable)

    response = client_as_alice.get("/api/v1/characters")

    assert response.status_code == 503
    assert response["Retry-After"] == str(RETRY_AFTER_SECONDS)
    error = response.json()["error"]
    assert error["code"] == "service_unavailable"
    assert "cannot reach its database" in error["message"] and "Try again" in error["message"]


def test_a_page_answers_503_with_a_page_that_needs_no_database(
    client_as_alice: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("characters.views.character_list_for", _unreachable)

    response = client_as_alice.get("/characters/")

    assert response.status_code == 503
    body = response.content.decode()
    assert "Temporarily unavailable" in body and "Try again in 30 seconds" in body
    assert "Traceback" not in body and "5432" not in body


def test_the_database_failing_in_the_session_middleware_is_also_a_503(
    client_as_alice: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(SessionStore, "load", _unreachable)

    response = client_as_alice.get("/characters/")

    assert response.status_code == 503


def test_any_other_failure_is_a_500_that_shows_nothing_of_it(
    client_as_alice: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("characters.api.character_list_for", _broken)
    monkeypatch.setattr("characters.views.character_list_for", _broken)

    api = client_as_alice.get("/api/v1/characters")
    page = client_as_alice.get("/characters/")

    assert api.status_code == 500
    assert api.json()["error"]["code"] == "server_error"
    assert "s3cr3t" not in api.content.decode()
    assert page.status_code == 500
    assert "Something went wrong" in page.content.decode()
    assert "s3cr3t" not in page.content.decode()


def test_the_error_page_falls_back_to_plain_text_when_it_cannot_be_rendered(
    client_as_alice: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("characters.views.character_list_for", _unreachable)

    def missing_manifest(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("Missing staticfiles manifest entry for 'css/studio.css'")

    monkeypatch.setattr("studio.error_views.loader.get_template", missing_manifest)

    response = client_as_alice.get("/characters/")

    assert response.status_code == 503
    assert response["Content-Type"].startswith("text/plain")
    assert "cannot reach its database" in response.content.decode()


def test_a_missing_page_is_the_studios_own_404_page(client_as_alice: Client) -> None:
    response = client_as_alice.get("/no-such-page/")

    assert response.status_code == 404
    body = response.content.decode()
    assert "Page not found" in body and "Character LoRA Studio" in body
    assert "URLconf" not in body


def test_a_missing_api_route_stays_in_the_api_error_shape(client_as_alice: Client) -> None:
    response = client_as_alice.get("/api/v1/no-such-thing")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_a_form_sent_from_an_expired_page_gets_the_studios_page_saying_what_to_do(alice: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)

    response = client.post("/characters/new/", {"name": "Anna", "trigger_word": "ohwx_anna"})

    assert response.status_code == 403
    assert "reload the page" in response.content.decode()


def test_more_files_than_one_upload_takes_get_the_studios_page_with_the_way_back(
    client_as_alice: Client, alice: Any, settings: Any
) -> None:
    from django.core.files.uploadedfile import SimpleUploadedFile

    from tests.characters.factories import CharacterFactory

    settings.DATA_UPLOAD_MAX_NUMBER_FILES = 3
    character = CharacterFactory(owner=alice)
    files = [SimpleUploadedFile(f"{index}.jpg", b"x", "image/jpeg") for index in range(4)]

    response = client_as_alice.post(f"/characters/{character.pk}/images/", {"files": files})

    assert response.status_code == 400
    body = response.content.decode()
    assert "More than 3 files were sent at once" in body
    assert f'href="/characters/{character.pk}/"' in body


def test_a_post_to_a_url_without_its_slash_is_redirected_keeping_its_method(client_as_alice: Client) -> None:
    response = client_as_alice.post("/characters/new", {"name": "Anna"})

    assert response.status_code == 308
    assert response["Location"] == "/characters/new/"


def test_a_post_to_a_url_without_its_slash_is_no_error_with_debug_on(
    client_as_alice: Client, settings: Any
) -> None:
    settings.DEBUG = True

    response = client_as_alice.post("/characters/new", {"name": "Anna"})

    assert response.status_code == 308


def test_the_conventional_icon_address_leads_to_the_studios_icon(client: Client) -> None:
    response = client.get("/favicon.ico")

    assert response.status_code == 301
    assert response["Location"].endswith("favicon.svg")
