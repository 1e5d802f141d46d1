from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth.forms import AuthenticationForm, UserCreationForm

from studio.models import User
from studio.ratelimit import FailureLimiter

LOGIN_FAILURE_LIMIT = 10
LOGIN_WINDOW_MINUTES = 15

login_limiter = FailureLimiter(
    scope="login", limit=LOGIN_FAILURE_LIMIT, window_seconds=LOGIN_WINDOW_MINUTES * 60
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
