"""The seam between the training services and whatever runs the GPU job.

The first provider is the RunPod serverless endpoint running `runpod_worker/` (`RunPodClient`).
The interface stays as small as that provider needs.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Protocol

from django.conf import settings

from training.runpod import RunPodClient, RunPodHealth, RunPodJob


class TrainingProvider(Protocol):
    def submit(
        self, *, job_input: dict[str, Any], webhook: str | None, policy: dict[str, Any]
    ) -> RunPodJob: ...

    def status(self, job_id: str) -> RunPodJob: ...

    def cancel(self, job_id: str) -> RunPodJob: ...

    def health(self) -> RunPodHealth: ...


# The process's client, with the settings it was built from. Guarded by the lock: threads share it.
_client: tuple[tuple[object, ...], RunPodClient] | None = None
_client_lock = threading.Lock()


def get_provider() -> TrainingProvider:
    """The process's RunPod client: built on first use and kept, so its session reuses its connections.

    Built again when the settings it came from change (tests swap them) and in a forked child (a Celery
    or gunicorn worker), which must never share its parent's sockets.
    """
    global _client
    key = _settings_key()
    with _client_lock:
        if _client is None or _client[0] != key:
            _client = (key, RunPodClient.from_settings())
        return _client[1]


def _settings_key() -> tuple[object, ...]:
    return (
        settings.RUNPOD_API_BASE,
        settings.RUNPOD_ENDPOINT_ID,
        settings.RUNPOD_API_KEY,
        settings.RUNPOD_TIMEOUT_SECONDS,
    )


def _forget_client_after_fork() -> None:
    global _client, _client_lock
    _client = None  # the parent's connections are the parent's: the child opens its own
    _client_lock = threading.Lock()  # a lock held by another thread at the fork would stay held here


os.register_at_fork(after_in_child=_forget_client_after_fork)
