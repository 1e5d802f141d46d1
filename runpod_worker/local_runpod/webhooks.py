"""Webhook delivery as RunPod does it: POST the job document, success is HTTP 200, up to 2 more tries
10 s apart, then the notification is lost (docs: serverless/endpoints/send-requests.mdx:97)."""

from __future__ import annotations

import threading
import time
from typing import Any

import requests

from runpod_worker.local_runpod.jobs import Job, now_ms

WEBHOOK_ATTEMPTS = 3
WEBHOOK_TIMEOUT_S = 10.0


def deliver_webhook(
    job: Job, body: dict[str, Any], *, lock: threading.Condition, dropped: bool, retry_interval_s: float
) -> None:
    """Sends one notification, recording each attempt on the job (under `lock`) for tests to read."""
    if dropped:
        with lock:
            job.webhook_attempts.append({"dropped": True})
        return
    assert job.webhook is not None
    for attempt in range(1, WEBHOOK_ATTEMPTS + 1):
        status: int | str
        try:
            status = requests.post(job.webhook, json=body, timeout=WEBHOOK_TIMEOUT_S).status_code
        except requests.RequestException as exc:
            status = type(exc).__name__
        with lock:
            job.webhook_attempts.append({"attempt": attempt, "status": status, "at_ms": now_ms()})
        if status == 200:
            return
        if attempt < WEBHOOK_ATTEMPTS:
            time.sleep(retry_interval_s)
