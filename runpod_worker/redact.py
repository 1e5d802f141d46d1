"""Takes secrets out of trainer output before it leaves the worker in a failed job's `log_tail`.

What is removed: the values of secret environment variables (HF_TOKEN and anything named like a token,
key, secret or password), values the handler registers for its job (the callback token, every signed
URL of the input), the query string of any URL (pre-signed S3/R2 URLs carry their signature there),
Hugging Face tokens (`hf_...`) and `Authorization:`/`Bearer` credentials.
"""

from __future__ import annotations

import os
import re
import threading

REDACTED = "[REDACTED]"
# Lines longer than this are cut: one runaway line must not crowd out the other 199.
MAX_LINE_CHARS = 1000
_SECRET_ENV = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|ACCESS_KEY|PRIVATE_KEY|CREDENTIAL)", re.I)
_MIN_SECRET_LEN = 8
_URL_QUERY = re.compile(r"(https?://[^\s?#'\"<>]+)\?[^\s'\"<>]*")
_HF_TOKEN = re.compile(r"\bhf_[A-Za-z0-9]{20,}\b")
_AUTH = (
    re.compile(r"(\bAuthorization[\"']?\s*[:=]\s*[\"']?)(?:Bearer\s+)?[^\s\"',}]{8,}", re.I),
    re.compile(r"(\bBearer\s+)[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"(\b(?:token|api_key|secret|password)[\"']?\s*[:=]\s*[\"']?)[A-Za-z0-9._~+/=-]{8,}", re.I),
)

_lock = threading.Lock()
_registered: set[str] = set()


def register_secret(value: str | None) -> None:
    """A value of this job that must never appear in output (the callback token, a signed URL)."""
    if value and len(value) >= _MIN_SECRET_LEN:
        with _lock:
            _registered.add(value)


def forget_secrets(values: list[str]) -> None:
    with _lock:
        _registered.difference_update(values)


def _secrets() -> list[str]:
    from_env = [
        value
        for name, value in os.environ.items()
        if _SECRET_ENV.search(name) and value and len(value) >= _MIN_SECRET_LEN
    ]
    with _lock:
        values = set(from_env) | _registered
    # Longest first, so a URL is removed whole before a token inside it is.
    return sorted(values, key=len, reverse=True)


def redact_line(line: str, secrets: list[str] | None = None) -> str:
    for secret in _secrets() if secrets is None else secrets:
        if secret in line:
            line = line.replace(secret, REDACTED)
    line = _URL_QUERY.sub(rf"\1?{REDACTED}", line)
    line = _HF_TOKEN.sub(REDACTED, line)
    for pattern in _AUTH:
        line = pattern.sub(rf"\1{REDACTED}", line)
    if len(line) > MAX_LINE_CHARS:
        line = line[:MAX_LINE_CHARS] + " [cut]"
    return line


def redact_lines(lines: list[str]) -> list[str]:
    secrets = _secrets()
    return [redact_line(line, secrets) for line in lines]
