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

    def public(self) -> dict[str, Any]:
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
        return body

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
