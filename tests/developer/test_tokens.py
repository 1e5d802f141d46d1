from __future__ import annotations

import hashlib
from typing import Any

from django.urls import reverse
from rest_framework.test import APIClient

from developer.models import ApiToken
from developer.services import api_token_create, api_token_revoke
from tests.developer.api_helpers import assert_error

ME = "/api/v1/me"


def bearer(raw: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def test_a_token_authenticates_its_user(alice: Any) -> None:
    _, raw = api_token_create(user=alice, name="farm")
    response = bearer(raw).get(ME)
    assert response.status_code == 200
    assert response.json()["username"] == "alice"


def test_only_the_hash_of_a_token_is_stored(alice: Any) -> None:
    token, raw = api_token_create(user=alice, name="farm")
    stored = ApiToken.objects.get(pk=token.pk)
    assert stored.token_hash == hashlib.sha256(raw.encode()).hexdigest()
    assert raw not in {stored.token_hash, stored.prefix, stored.name}
    assert raw.startswith(stored.prefix)


def test_a_revoked_token_is_refused_with_401(alice: Any) -> None:
    token, raw = api_token_create(user=alice, name="farm")
    api_token_revoke(token=token)
    error = assert_error(bearer(raw).get(ME), 401, "authentication_failed")
    assert "revoked" in error["message"]


def test_an_unknown_token_is_refused_with_401(db: None) -> None:
    response = bearer("cls_not-a-real-token").get(ME)
    assert_error(response, 401, "authentication_failed")
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_an_anonymous_request_gets_401_with_a_hint(anonymous_api: APIClient) -> None:
    error = assert_error(anonymous_api.get(ME), 401, "not_authenticated")
    assert "Bearer" in error["message"]


def test_a_malformed_authorization_header_is_refused(alice: Any) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer two parts")
    assert_error(client.get(ME), 401, "authentication_failed")


def test_a_token_of_a_deactivated_user_is_refused(alice: Any) -> None:
    _, raw = api_token_create(user=alice, name="farm")
    alice.is_active = False
    alice.save()
    assert_error(bearer(raw).get(ME), 401, "authentication_failed")


def test_using_a_token_records_when(alice: Any) -> None:
    token, raw = api_token_create(user=alice, name="farm")
    bearer(raw).get(ME)
    token.refresh_from_db()
    assert token.last_used_at is not None


def test_the_api_creates_a_token_and_shows_it_once(alice_api: APIClient, alice: Any) -> None:
    response = alice_api.post("/api/v1/tokens", {"name": "render farm"}, format="json")
    assert response.status_code == 201
    raw = response.json()["token"]
    assert bearer(raw).get(ME).status_code == 200
    listed = alice_api.get("/api/v1/tokens").json()["results"]
    assert {item["name"] for item in listed} == {"tests", "render farm"}
    assert all("token" not in item for item in listed)


def test_creating_a_token_needs_a_name(alice_api: APIClient) -> None:
    error = assert_error(alice_api.post("/api/v1/tokens", {}, format="json"), 400, "invalid")
    assert "name" in error["fields"]


def test_the_api_revokes_a_token(alice_api: APIClient, alice: Any) -> None:
    token, raw = api_token_create(user=alice, name="old")
    response = alice_api.post(f"/api/v1/tokens/{token.pk}/revoke")
    assert response.status_code == 200
    assert response.json()["revoked_at"] is not None
    assert_error(bearer(raw).get(ME), 401, "authentication_failed")


def test_bob_cannot_revoke_alices_token(bob_api: APIClient, alice: Any) -> None:
    token, _ = api_token_create(user=alice, name="farm")
    assert_error(bob_api.post(f"/api/v1/tokens/{token.pk}/revoke"), 404, "not_found")
    token.refresh_from_db()
    assert token.revoked_at is None


def test_the_tokens_page_shows_a_new_token_once(client: Any, alice: Any) -> None:
    client.force_login(alice)
    response = client.post(reverse("developer:tokens"), {"name": "render farm"}, follow=True)
    assert response.redirect_chain == [(reverse("developer:tokens"), 302)]
    raw = response.context["new_token"]
    assert raw in response.content.decode()
    assert bearer(raw).get(ME).status_code == 200
    again = client.get(reverse("developer:tokens")).content.decode()
    assert "render farm" in again and raw not in again


def test_reloading_the_page_that_shows_a_new_token_creates_no_second_token(client: Any, alice: Any) -> None:
    client.force_login(alice)
    created = client.post(reverse("developer:tokens"), {"name": "render farm"})

    client.get(created["Location"])
    client.get(created["Location"])

    assert ApiToken.objects.filter(user=alice).count() == 1


def test_the_tokens_page_revokes_a_token(client: Any, alice: Any) -> None:
    token, raw = api_token_create(user=alice, name="farm")
    client.force_login(alice)
    response = client.post(reverse("developer:token-revoke", args=[token.pk]))
    assert response.status_code == 302
    assert_error(bearer(raw).get(ME), 401, "authentication_failed")


def test_bob_cannot_revoke_alices_token_from_the_page(client: Any, alice: Any, bob: Any) -> None:
    token, _ = api_token_create(user=alice, name="farm")
    client.force_login(bob)
    assert client.post(reverse("developer:token-revoke", args=[token.pk])).status_code == 404
    token.refresh_from_db()
    assert token.revoked_at is None


def test_staff_create_a_token_for_a_user_in_the_admin(client: Any, staff: Any, alice: Any) -> None:
    client.force_login(staff)
    response = client.post(
        reverse("admin:developer_apitoken_add"), {"user": alice.pk, "name": "given by staff"}, follow=True
    )
    assert response.status_code == 200
    token = ApiToken.objects.get(name="given by staff")
    assert token.user == alice
    shown = [str(message) for message in response.context["messages"]]
    raw = next(part for message in shown for part in message.split() if part.startswith("cls_"))
    assert bearer(raw).get(ME).json()["username"] == "alice"
