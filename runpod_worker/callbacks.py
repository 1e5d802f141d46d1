"""Tells the backend what the worker is doing, and hears back whether to stop.

A callback that fails (timeout, 5xx, bad JSON) must never fail a training job: the backend also
learns everything from RunPod's status and webhook. So every failure here means "continue".
"""

from __future__ import annotations

import logging
import time
from typing import Any

import requests

from runpod_worker.contract import (
    CALLBACK_ACTION_CONTINUE,
    CALLBACK_ACTION_STOP,
    CALLBACK_ACTION_WAIT,
    CALLBACK_AUTH_SCHEME,
    CALLBACK_EVENT_FINISHED,
    CALLBACK_EVENT_PROGRESS,
    CALLBACK_EVENT_STARTED,
    CALLBACK_FIELD_CLAIM_WAIT_S,
    CALLBACK_FIELD_CODE,
    CALLBACK_FIELD_DELIVERY_ID,
    CALLBACK_FIELD_OUTPUT,
    CALLBACK_FIELD_RESUME,
    CALLBACK_FIELD_RETRY_AFTER_S,
    Callback,
    ErrorCode,
    JobOutput,
    Progress,
)

log = logging.getLogger(__name__)

TIMEOUT_S = (3.0, 5.0)
ATTEMPTS = 3
BACKOFF_S = 0.5
# A "wait" answer's retry_after_s is kept within these bounds, whatever the backend says.
RETRY_AFTER_BOUNDS_S = (0.1, 30.0)
RETRY_AFTER_DEFAULT_S = 5.0


class Decision:
    def __init__(
        self,
        action: str,
        reason: str = "",
        retry_after_s: float = 0.0,
        code: str = "",
        *,
        delivered: bool = False,
        resume: Any = None,
    ) -> None:
        self.action = action
        self.reason = reason
        self.retry_after_s = retry_after_s
        self.code = code
        # True when the backend answered HTTP 200: what the callback carried has arrived.
        self.delivered = delivered
        # The raw `resume` document of a "started" answer (validated by the handler against the job).
        self.resume = resume

    @property
    def claimed_elsewhere(self) -> bool:
        """A "stop" because another delivery of this job holds the run (the backend says so in `code`)."""
        return self.stop and self.code == ErrorCode.CLAIMED_ELSEWHERE

    @property
    def stop(self) -> bool:
        return self.action == CALLBACK_ACTION_STOP

    @property
    def wait(self) -> bool:
        return self.action == CALLBACK_ACTION_WAIT


CONTINUE = Decision(CALLBACK_ACTION_CONTINUE)


class CallbackClient:
    def __init__(self, callback: Callback | None, job_id: str, delivery_id: str) -> None:
        self._callback = callback
        self._job_id = job_id
        self.delivery_id = delivery_id
        self._session = requests.Session()

    def started(self, claim_wait_s: float = 0.0) -> Decision:
        body: dict[str, Any] = {"event": CALLBACK_EVENT_STARTED, **self._ids()}
        if claim_wait_s:
            body[CALLBACK_FIELD_CLAIM_WAIT_S] = round(claim_wait_s, 3)
        return self._post(body)

    def progress(self, progress: Progress, extra: dict[str, Any] | None = None) -> Decision:
        """`extra`: the additive fields (checkpoints, samples, loss, resumed_from_step; see contract.py)."""
        return self._post(
            {"event": CALLBACK_EVENT_PROGRESS, **self._ids(), **progress.to_dict(), **(extra or {})}
        )

    def finished(self, output: JobOutput) -> Decision:
        return self._post(
            {"event": CALLBACK_EVENT_FINISHED, **self._ids(), CALLBACK_FIELD_OUTPUT: output.to_dict()}
        )

    def _ids(self) -> dict[str, str]:
        return {"job_id": self._job_id, CALLBACK_FIELD_DELIVERY_ID: self.delivery_id}

    def close(self) -> None:
        self._session.close()

    def _post(self, body: dict[str, Any]) -> Decision:
        if self._callback is None:
            return CONTINUE
        headers = {"Authorization": f"{CALLBACK_AUTH_SCHEME} {self._callback.token}"}
        for attempt in range(1, ATTEMPTS + 1):
            try:
                response = self._session.post(
                    self._callback.url, json=body, headers=headers, timeout=TIMEOUT_S
                )
                if response.status_code == 200:
                    return _decision(response)
                log.warning("callback %s answered HTTP %s", body["event"], response.status_code)
                if response.status_code < 500 and response.status_code != 429:
                    return CONTINUE  # a 4xx will not change on retry
            except requests.RequestException as exc:
                # Only the exception type: its text may contain the URL, and the URL may contain secrets.
                log.warning("callback %s failed: %s", body["event"], type(exc).__name__)
            if attempt < ATTEMPTS:
                time.sleep(BACKOFF_S * attempt)
        return CONTINUE


def _decision(response: requests.Response) -> Decision:
    delivered = Decision(CALLBACK_ACTION_CONTINUE, delivered=True)
    try:
        data = response.json()
    except ValueError:
        return delivered
    if not isinstance(data, dict):
        return delivered
    if data.get("action") == CALLBACK_ACTION_STOP:
        reason = str(data.get("reason") or "the run was stopped by the studio")
        code = data.get(CALLBACK_FIELD_CODE)
        code = code if isinstance(code, str) else ""
        return Decision(CALLBACK_ACTION_STOP, reason, code=code, delivered=True)
    if data.get("action") == CALLBACK_ACTION_WAIT:
        reason = str(data.get("reason") or "another worker holds the run")
        retry_after = _retry_after(data.get(CALLBACK_FIELD_RETRY_AFTER_S))
        return Decision(CALLBACK_ACTION_WAIT, reason, retry_after, delivered=True)
    return Decision(CALLBACK_ACTION_CONTINUE, delivered=True, resume=data.get(CALLBACK_FIELD_RESUME))


def _retry_after(value: Any) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return RETRY_AFTER_DEFAULT_S
    if seconds != seconds:  # NaN
        return RETRY_AFTER_DEFAULT_S
    low, high = RETRY_AFTER_BOUNDS_S
    return min(high, max(low, seconds))
