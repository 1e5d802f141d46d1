"""The one family of errors that services raise for a person to read.

Views turn them into form errors or flash messages, the API into its error shape, commands into
a message and an exit code. The message says what happened and what to do next.
"""

from __future__ import annotations

from typing import Any


class ApplicationError(Exception):
    """A refusal a user can act on. `code` is stable for clients; `message` is for people."""

    code = "invalid"
    http_status = 400

    def __init__(
        self, message: str, *, code: str | None = None, fields: dict[str, list[str]] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.fields = fields or {}

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.fields:
            body["fields"] = self.fields
        return body


class NotFound(ApplicationError):
    code = "not_found"
    http_status = 404


class Conflict(ApplicationError):
    code = "conflict"
    http_status = 409


class Unavailable(ApplicationError):
    """A service we depend on (storage, RunPod) could not be reached: nothing changed, and trying again
    later may work."""

    code = "unavailable"
    http_status = 503
