"""Sign up, log in (rate-limited), log out, change and reset a password."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.core.cache import cache
from django.test import Client
from django.urls import reverse

from studio.models import User

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"


@pytest.fixture(autouse=True)
def private_cache(settings: Any) -> None:
    """A fresh in-process cache: failure counts start at zero, and time-machine moves its clock.

    Clearing the configured Redis instead would wipe data other test runs are using.
    """
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "accounts-tests"}
    }
    cache.clear()


def log_in(client: Client, username: str, password: str, address: str = "10.0.0.1") -> Any:
    return client.post(reverse("login"), {"username": username, "password": password}, REMOTE_ADDR=address)


def test_signing_up_creates_the_account_and_logs_in() -> None:
    client = Client()

    response = client.post(
        reverse("signup"),
        {"username": "carol", "email": "carol@example.com", "password1": PASSWORD, "password2": PASSWORD},
    )

    assert response.url == reverse("characters:list")
    assert User.objects.get(username="carol").email == "carol@example.com"
    assert client.get(reverse("characters:list")).status_code == 200


def test_signing_up_with_mismatched_passwords_explains_the_problem() -> None:
    response = Client().post(
        reverse("signup"),
        {
            "username": "carol",
            "email": "carol@example.com",
            "password1": PASSWORD,
            "password2": PASSWORD + "!",
        },
    )

    assert response.status_code == 400
    assert "password2" in response.context["form"].errors
    assert not User.objects.filter(username="carol").exists()


def test_signup_refuses_a_post_without_a_csrf_token() -> None:
    response = Client(enforce_csrf_checks=True).post(
        reverse("signup"),
        {"username": "carol", "email": "carol@example.com", "password1": PASSWORD, "password2": PASSWORD},
    )

    assert response.status_code == 403
    assert not User.objects.filter(username="carol").exists()


def test_login_refuses_a_post_without_a_csrf_token(alice: Any) -> None:
    response = log_in(Client(enforce_csrf_checks=True), "alice", PASSWORD)

    assert response.status_code == 403


def test_alice_logs_in_with_her_password(alice: Any) -> None:
    response = log_in(Client(), "alice", PASSWORD)

    assert response.status_code == 302
    assert response.url == "/"


def test_ten_failed_logins_lock_that_username_from_that_address_even_with_the_right_password(
    alice: Any,
) -> None:
    client = Client()
    for _ in range(10):
        assert log_in(client, "alice", "wrong").status_code == 200

    response = log_in(client, "alice", PASSWORD)

    assert response.status_code == 429
    assert "Too many failed log-in attempts. Wait 15 minutes" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_the_lock_does_not_reach_another_address(alice: Any) -> None:
    for _ in range(10):
        log_in(Client(), "alice", "wrong", address="10.0.0.1")

    response = log_in(Client(), "alice", PASSWORD, address="10.0.0.2")

    assert response.status_code == 302


def test_the_lock_ends_when_the_window_has_passed(alice: Any, time_machine: Any) -> None:
    time_machine.move_to("2026-01-01 12:00", tick=False)
    for _ in range(10):
        log_in(Client(), "alice", "wrong")

    time_machine.move_to("2026-01-01 12:16", tick=False)

    assert log_in(Client(), "alice", PASSWORD).status_code == 302


def test_a_successful_login_clears_the_failure_count(alice: Any) -> None:
    for _ in range(9):
        log_in(Client(), "alice", "wrong")
    log_in(Client(), "alice", PASSWORD)
    for _ in range(9):
        log_in(Client(), "alice", "wrong")

    assert log_in(Client(), "alice", PASSWORD).status_code == 302


def test_logging_out_takes_a_post_and_ends_the_session(alice: Any) -> None:
    client = Client()
    client.force_login(alice)

    client.post(reverse("logout"))

    assert client.get(reverse("characters:list")).status_code == 302


def test_alice_changes_her_password(alice: Any) -> None:
    client = Client()
    client.force_login(alice)

    response = client.post(
        reverse("password_change"),
        {
            "old_password": PASSWORD,
            "new_password1": "a brand new passphrase",
            "new_password2": "a brand new passphrase",
        },
    )

    alice.refresh_from_db()
    assert response.url == reverse("password_change_done")
    assert alice.check_password("a brand new passphrase")


def test_a_password_reset_mails_a_link_that_sets_a_new_password(alice: Any, mailoutbox: list[Any]) -> None:
    client = Client()

    client.post(reverse("password_reset"), {"email": "alice@example.com"})
    link = re.search(r"http://testserver(/accounts/reset/\S+)", mailoutbox[0].body)
    assert link is not None
    form_url = client.get(link.group(1)).url  # Django swaps the token for a session value first
    client.post(form_url, {"new_password1": "reset passphrase 42", "new_password2": "reset passphrase 42"})

    alice.refresh_from_db()
    assert mailoutbox[0].subject == "Reset your Character LoRA Studio password"
    assert alice.check_password("reset passphrase 42")


def test_the_account_pages_use_the_studios_templates_not_the_admins(db: None) -> None:
    response = Client().get(reverse("password_reset"))

    assert "registration/password_reset_form.html" in [template.name for template in response.templates]
    assert b"Reset your password" in response.content
