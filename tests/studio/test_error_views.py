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
