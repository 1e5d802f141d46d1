"""The seam between the training services and whatever runs the GPU job: one client per kind of provider
(`TrainingRun.provider`).

- serverless: the RunPod endpoint running `runpod_worker/` (`get_provider()`, a `RunPodClient`);
- pod: a persistent pod's AI Toolkit UI (`pod_client(pod)`, an `AIToolkitClient`).

Each service that talks to a provider (`submission`, `poll`, `ending`) hands a pod run to
`training.services.pod_runs` at its entry; everything after it (progress, artifacts, verification,
completion, cost) is shared.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Protocol

from django.conf import settings

from training.aitoolkit import AIToolkitClient
from training.models import Pod
from training.pod_secrets import pod_token
from training.runpod import RunPodClient, RunPodHealth, RunPodJob
from training.runpod_rest import RunPodRestClient


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


# ------------------------------------------------------------------------------------------- pods
# The second provider: a pod's AI Toolkit UI, one client per pod (`training.services.pod_runs` drives it).
_pod_clients: dict[tuple[object, ...], AIToolkitClient] = {}
_pod_lock = threading.Lock()


def pod_client(pod: Pod) -> AIToolkitClient:
    """The process's client for `pod`'s UI, kept so its session reuses its connections; made again when the
    pod's URL or token, or the timeouts, change. Raises PodTokenUnreadable when its token cannot be read."""
    key = (
        pod.pk,
        pod.ui_url,
        pod.token_encrypted,
        settings.TRAINING_POD_TIMEOUT_SECONDS,
        settings.TRAINING_POD_TRANSFER_TIMEOUT_SECONDS,
    )
    with _pod_lock:
        client = _pod_clients.get(key)
        if client is None:
            for stale in [k for k in _pod_clients if k[0] == pod.pk]:
                _pod_clients.pop(stale).close()
            client = AIToolkitClient(
                base_url=pod.ui_url,
                token=pod_token(pod),
                timeout_seconds=settings.TRAINING_POD_TIMEOUT_SECONDS,
                transfer_timeout_seconds=settings.TRAINING_POD_TRANSFER_TIMEOUT_SECONDS,
            )
            _pod_clients[key] = client
        return client


def _forget_pod_clients_after_fork() -> None:
    global _pod_clients, _pod_lock
    _pod_clients = {}
    _pod_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_pod_clients_after_fork)


def runpod_rest() -> RunPodRestClient:
    """RunPod's REST v2 management API (a pod's start and stop), as the settings name it."""
    return RunPodRestClient.from_settings()
