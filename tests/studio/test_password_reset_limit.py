"""Password reset requests are limited per e-mail address and per client, like log-ins."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from studio.forms import RESET_LIMIT_PER_ADDRESS, RESET_LIMIT_PER_EMAIL

pytestmark = pytest.mark.django_db


def request_reset(email: str, address: str = "10.0.0.1", client: Client | None = None) -> Any:
    return (client or Client()).post(reverse("password_reset"), {"email": email}, REMOTE_ADDR=address)


def test_a_few_resets_for_one_address_are_sent_then_refused_with_what_to_do(
    alice: Any, mailoutbox: list[Any]
) -> None:
    for index in range(RESET_LIMIT_PER_EMAIL):
        assert request_reset("alice@example.com", address=f"10.0.0.{index}").status_code == 302

    response = request_reset("Alice@Example.com", address="10.0.9.9")

    assert response.status_code == 429
    assert "Too many password reset requests. Check your inbox" in response.content.decode()
    assert len(mailoutbox) == RESET_LIMIT_PER_EMAIL


def test_one_client_asking_for_many_addresses_is_refused(alice: Any, mailoutbox: list[Any]) -> None:
    for index in range(RESET_LIMIT_PER_ADDRESS):
        request_reset(f"nobody{index}@example.com")

    response = request_reset("alice@example.com")

    assert response.status_code == 429
    assert mailoutbox == []


def test_unknown_addresses_count_too_so_the_limit_reveals_no_accounts(mailoutbox: list[Any]) -> None:
    for index in range(RESET_LIMIT_PER_EMAIL):
        request_reset("ghost@example.com", address=f"10.0.1.{index}")

    assert request_reset("ghost@example.com", address="10.0.2.1").status_code == 429


def test_another_address_from_another_client_is_not_held_back(alice: Any, mailoutbox: list[Any]) -> None:
    for index in range(RESET_LIMIT_PER_EMAIL + 1):
        request_reset("bob@example.com", address=f"10.0.3.{index}")

    assert request_reset("alice@example.com", address="10.0.4.1").status_code == 302
    assert len(mailoutbox) == 1


def test_the_reset_form_refuses_a_post_without_a_csrf_token(alice: Any, mailoutbox: list[Any]) -> None:
    response = Client(enforce_csrf_checks=True).post(
        reverse("password_reset"), {"email": "alice@example.com"}
    )

    assert response.status_code == 403
    assert mailoutbox == []
