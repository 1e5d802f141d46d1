"""The Celery app. Configuration lives in settings under the CELERY_ prefix."""

from __future__ import annotations

import gc
import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studio.settings")

app = Celery("studio")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.worker_before_create_process.connect
def freeze_before_fork(**_: object) -> None:
    """A pool child is forked from the worker once Django, the apps and their tasks are imported: some
    150,000 objects the children share. Celery collects garbage before each fork (celery 5.7.0
    celery/concurrency/asynpool.py:565-568, for celery#2927); frozen first (`gc.freeze()`, as CPython's `gc`
    documentation advises before a fork), they are skipped by that collection and by every collection in
    the children, which would otherwise touch, and so copy, the memory pages that hold them."""
    gc.freeze()
