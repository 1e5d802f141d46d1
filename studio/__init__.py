"""The studio project: settings, the Celery app, users and site-wide pages."""

from __future__ import annotations

from studio.celery import app as celery_app

__all__ = ["celery_app"]
