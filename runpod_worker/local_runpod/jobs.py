"""One job of the stand-in's queue, and the documents RunPod makes of it (`/status`, the state view)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

FINAL_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"})


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Job:
    id: str
    input: Any
    webhook: str | None
    policy: dict[str, Any]
    created_ms: int
    available_at: float
    status: str = "IN_QUEUE"
    output: Any = None
    error: Any = None
    worker_id: str | None = None
    started_ms: int | None = None
    finished_ms: int | None = None
    finished_at: float | None = None
    attempts: int = 0
    duplicate_pending: bool = False
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    ignored_results: list[dict[str, Any]] = field(default_factory=list)
    webhook_attempts: list[dict[str, Any]] = field(default_factory=list)
    kill_on_progress: bool = False
    # Kill the worker at its first progress post that says training reached this step (0: never).
    kill_after_step: int = 0
    # Re-queued after a lost worker (`retries` in /status when `status_retries` is on).
    retries: int = 0
    # runpod-python#402: handed out again once it has posted its result (`rerun_after_result`).
    rerun_pending: bool = False
    rerun_worker: str | None = None
    # The worker whose posted result ended the job (None when RunPod ended it: cancel, timeout).
    result_worker: str | None = None
    # runpod-python#250: a late progress post made a finished job read IN_PROGRESS for good.
    reopened: bool = False
    # Its TTL passed in the queue and it ended TIMED_OUT (`queued_expiry=TIMED_OUT`).
    expired_in_queue: bool = False

    def public(self, *, with_retries: bool = False) -> dict[str, Any]:
        """The `/status` document (docs serverless/endpoints/operation-reference.mdx:414-430): `delayTime`
        (queue time) once a worker took the job, `executionTime` from then on, the final figure once it
        ended and a running total before (runpod-python#105 shows it beside IN_PROGRESS)."""
        body: dict[str, Any] = {"id": self.id, "status": self.status}
        if self.started_ms is not None:
            body["delayTime"] = self.started_ms - self.created_ms
        if self.started_ms is not None and self.finished_ms is not None:
            body["executionTime"] = self.finished_ms - self.started_ms
        elif self.started_ms is not None:
            body["executionTime"] = now_ms() - self.started_ms
        if self.worker_id:
            body["workerId"] = self.worker_id
        if self.error is not None:
            body["error"] = self.error
        elif self.output is not None:
            body["output"] = self.output
        if with_retries:
            body["retries"] = self.retries
        return body

    def webhook_body(self) -> dict[str, Any]:
        """The cloud webhook's body (runpod-python#409): the job document without `workerId`, plus the
        job's `input` and `webhook`."""
        body = {key: value for key, value in self.public().items() if key != "workerId"}
        return {**body, "input": self.input, "webhook": self.webhook}

    def internals(self) -> dict[str, Any]:
        return {
            **self.public(),
            # Wall-clock milliseconds (time.time), for measuring how soon the backend learns of an end.
            "created_ms": self.created_ms,
            "started_ms": self.started_ms,
            "finished_ms": self.finished_ms,
            "attempts": self.attempts,
            "deliveries": self.deliveries,
            "ignored_results": self.ignored_results,
            "webhook_attempts": self.webhook_attempts,
        }
