from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from studio import health, transfer, views

handler400 = "studio.error_views.bad_request"
handler403 = "studio.error_views.permission_denied"
handler404 = "studio.error_views.page_not_found"
handler500 = "studio.error_views.server_error"

urlpatterns = [
    path("", views.home, name="home"),
    path("accounts/signup/", views.signup, name="signup"),
    # Before Django's own auth URLs, so the rate-limited login and reset views answer their URLs.
    path("accounts/login/", views.RateLimitedLoginView.as_view(), name="login"),
    path("accounts/password_reset/", views.RateLimitedPasswordResetView.as_view(), name="password_reset"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("characters/", include("characters.urls")),
    path("developer/", include("developer.urls")),
    path("api/", include("studio.api_urls")),
    path("healthz", health.healthz, name="healthz"),
    # Pages name their icon; this answers clients that ask the conventional address anyway.
    path("favicon.ico", views.favicon, name="favicon"),
    path("transfer/<str:token>", transfer.transfer_view, name="transfer"),
    path("", include("training.urls")),
    path("admin/", admin.site.urls),
]
