from __future__ import annotations

from typing import Any

from django.contrib.auth import login
from django.contrib.auth.views import LoginView, PasswordResetView
from django.http import HttpRequest, HttpResponse, HttpResponsePermanentRedirect
from django.shortcuts import redirect, render
from django.templatetags.static import static
from django.views.decorators.http import require_GET, require_http_methods

from studio.forms import RateLimitedAuthenticationForm, RateLimitedPasswordResetForm, SignupForm


def home(request: HttpRequest) -> HttpResponse:
    """Signed-in users go straight to their characters; everyone else sees the introduction."""
    if request.user.is_authenticated:
        return redirect("characters:list")
    return render(request, "home.html")


@require_GET
def favicon(request: HttpRequest) -> HttpResponse:
    """Pages name their icon (base.html); this answers clients that ask the conventional address anyway."""
    return HttpResponsePermanentRedirect(static("favicon.svg"))


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("characters:list")
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect("characters:list")
    return render(request, "registration/signup.html", {"form": form}, status=400 if form.errors else 200)


class RateLimitedLoginView(LoginView):
    form_class = RateLimitedAuthenticationForm
    redirect_authenticated_user = True

    def form_invalid(self, form: RateLimitedAuthenticationForm) -> HttpResponse:  # type: ignore[override]
        response = super().form_invalid(form)
        if form.has_error("__all__", code="rate_limited"):
            response.status_code = 429
        return response


class RateLimitedPasswordResetView(PasswordResetView):
    form_class = RateLimitedPasswordResetForm

    def get_form_kwargs(self) -> dict[str, Any]:
        return {**super().get_form_kwargs(), "request": self.request}

    def form_invalid(self, form: RateLimitedPasswordResetForm) -> HttpResponse:  # type: ignore[override]
        response = super().form_invalid(form)
        if form.has_error("__all__", code="rate_limited"):
            response.status_code = 429
        return response
