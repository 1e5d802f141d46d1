from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth.forms import AuthenticationForm, PasswordResetForm, UserCreationForm
from django.http import HttpRequest

from studio.models import User
from studio.ratelimit import FailureLimiter

LOGIN_FAILURE_LIMIT = 10
LOGIN_WINDOW_MINUTES = 15

login_limiter = FailureLimiter(
    scope="login", limit=LOGIN_FAILURE_LIMIT, window_seconds=LOGIN_WINDOW_MINUTES * 60
)

# Every reset request counts, found address or not, so the limit says nothing about who has an account.
RESET_LIMIT_PER_EMAIL = 5
RESET_LIMIT_PER_ADDRESS = 20
RESET_WINDOW_MINUTES = 60

reset_email_limiter = FailureLimiter(
    scope="password_reset_email", limit=RESET_LIMIT_PER_EMAIL, window_seconds=RESET_WINDOW_MINUTES * 60
)
reset_address_limiter = FailureLimiter(
    scope="password_reset_address", limit=RESET_LIMIT_PER_ADDRESS, window_seconds=RESET_WINDOW_MINUTES * 60
)


class SignupForm(UserCreationForm):
    email = forms.EmailField(
        required=True,
        help_text="Used only to reset your password.",
        widget=forms.EmailInput(attrs={"autocomplete": "email"}),
    )

    class Meta(UserCreationForm.Meta):
        model = User
        fields = ("username", "email")


class RateLimitedAuthenticationForm(AuthenticationForm):
    """Django's login form, refusing a username from one address after repeated failures."""

    error_messages = {
        **AuthenticationForm.error_messages,
        "rate_limited": (
            f"Too many failed log-in attempts. Wait {LOGIN_WINDOW_MINUTES} minutes and try again, "
            "or reset your password."
        ),
    }

    def clean(self) -> dict[str, Any]:
        key = self._limiter_key()
        if login_limiter.is_blocked(key):
            raise forms.ValidationError(self.error_messages["rate_limited"], code="rate_limited")
        try:
            cleaned = super().clean()
        except forms.ValidationError:
            login_limiter.record_failure(key)
            raise
        login_limiter.reset(key)
        return cleaned

    def _limiter_key(self) -> str:
        username = str(self.cleaned_data.get("username") or "").casefold()
        # REMOTE_ADDR, not X-Forwarded-For: a client can write any forwarded address it likes.
        address = self.request.META.get("REMOTE_ADDR", "") if self.request else ""
        return f"{username}|{address}"


class RateLimitedPasswordResetForm(PasswordResetForm):
    """Django's reset form, refusing more than a few e-mails per address and per client per hour."""

    error_messages = {
        "rate_limited": (
            "Too many password reset requests. Check your inbox (and spam folder) for the e-mails already "
            f"sent, or wait {RESET_WINDOW_MINUTES} minutes and try again."
        ),
    }

    def __init__(self, *args: Any, request: HttpRequest | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.request = request

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        email = str(cleaned.get("email") or "").casefold()
        # REMOTE_ADDR, not X-Forwarded-For: a client can write any forwarded address it likes.
        address = self.request.META.get("REMOTE_ADDR", "") if self.request else ""
        if reset_email_limiter.is_blocked(email) or reset_address_limiter.is_blocked(address):
            raise forms.ValidationError(self.error_messages["rate_limited"], code="rate_limited")
        if email:
            reset_email_limiter.record_failure(email)
        reset_address_limiter.record_failure(address)
        return cleaned
