"""The one exception the worker's modules raise to fail a job with a classified, user-facing error."""

from __future__ import annotations

from runpod_worker.contract import WorkerError
from runpod_worker.redact import redact_lines

# The trainer output a failed job carries back: the lines before the error usually say why.
LOG_TAIL_LINES = 200


class JobFailed(Exception):
    def __init__(self, code: str, message: str, log_tail: list[str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.log_tail = list(log_tail or [])

    def to_worker_error(self) -> WorkerError:
        """The error document, with the last LOG_TAIL_LINES lines of trainer output, secrets and signed URLs
        redacted (runpod_worker/redact.py)."""
        return WorkerError(
            code=self.code, message=self.message, log_tail=redact_lines(self.log_tail[-LOG_TAIL_LINES:])
        )
