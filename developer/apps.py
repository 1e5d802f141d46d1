from __future__ import annotations

from django.apps import AppConfig


class DeveloperConfig(AppConfig):
    """Developer settings: API tokens and outbound webhook endpoints."""

    name = "developer"
    verbose_name = "Developer settings"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Importing registers the webhook receiver and the token scheme in the OpenAPI schema.
        from developer import receivers, schema  # noqa: F401
