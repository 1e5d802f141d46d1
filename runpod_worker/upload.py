"""Uploads a file (the LoRA, a checkpoint, its optimizer state, a sample) to its presigned URL by a
streaming PUT, hashing the bytes as they leave."""

from __future__ import annotations

import hashlib
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import requests

from runpod_worker.contract import ErrorCode
from runpod_worker.errors import JobFailed

CHUNK = 1024 * 1024
CONNECT_TIMEOUT_S = 10.0
# The read timeout covers the wait for the store's answer after the last byte: generous for big files.
READ_TIMEOUT_S = 300.0
TRANSIENT_STATUSES = {408, 429, 500, 502, 503, 504}


@dataclass(frozen=True)
class UploadResult:
    bytes: int
    sha256: str


class _HashingReader:
    """A file wrapper with a length, so requests sends Content-Length (presigned PUTs refuse chunked)."""

    def __init__(self, handle: BinaryIO, size: int) -> None:
        self._handle = handle
        self._size = size
        self.digest = hashlib.sha256()
        self.sent = 0

    def __len__(self) -> int:
        return self._size

    def read(self, amount: int = -1) -> bytes:
        chunk = self._handle.read(CHUNK if amount is None or amount < 0 else min(amount, CHUNK))
        self.digest.update(chunk)
        self.sent += len(chunk)
        return chunk


class _Transient(Exception):
    pass


def upload_file(
    path: Path,
    url: str,
    *,
    attempts: int | None = None,
    backoff_s: float | None = None,
    what: str = "the trained LoRA",
) -> UploadResult:
    """PUTs `path` to `url`; retries transient failures, raises JobFailed(upload_failed) otherwise."""
    attempts = attempts or int(os.environ.get("WORKER_UPLOAD_ATTEMPTS", 4))
    backoff_s = float(os.environ.get("WORKER_UPLOAD_BACKOFF_S", 1.0)) if backoff_s is None else backoff_s
    last_error = ""
    with requests.Session() as session:
        for attempt in range(1, attempts + 1):
            try:
                return _put_once(session, path, url, what)
            except _Transient as exc:
                last_error = str(exc)
                if attempt < attempts:
                    time.sleep(backoff_s * 2 ** (attempt - 1) * (0.5 + random.random()))
    raise JobFailed(
        ErrorCode.UPLOAD_FAILED,
        f"{what[0].upper()}{what[1:]} could not be uploaded after {attempts} attempts ({last_error}). "
        "Storage may be down; retry the run.",
    )


def _put_once(session: requests.Session, path: Path, url: str, what: str) -> UploadResult:
    size = path.stat().st_size
    with open(path, "rb") as handle:
        body = _HashingReader(handle, size)
        try:
            response = session.put(
                url,
                data=body,
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
                timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S),
            )
        except requests.RequestException as exc:
            raise _Transient(type(exc).__name__) from exc
    if response.status_code in TRANSIENT_STATUSES:
        raise _Transient(f"HTTP {response.status_code}")
    if not 200 <= response.status_code < 300:
        raise JobFailed(
            ErrorCode.UPLOAD_FAILED,
            f"Storage refused the upload of {what} (HTTP {response.status_code}); the upload link may have "
            "expired. Retry the run.",
        )
    if body.sent != size:
        raise _Transient(f"sent {body.sent} of {size} bytes")
    return UploadResult(bytes=size, sha256=body.digest.hexdigest())
