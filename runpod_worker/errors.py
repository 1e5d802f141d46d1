"""The one exception the worker's modules raise to fail a job with a classified, user-facing error."""

from __future__ import annotations

from runpod_worker.contract import WorkerError


class JobFailed(Exception):
    def __init__(self, code: str, message: str, log_tail: list[str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.log_tail = list(log_tail or [])

    def to_worker_error(self) -> WorkerError:
        return WorkerError(code=self.code, message=self.message, log_tail=self.log_tail[-20:])
