"""Where a run's LoRA lives in storage, and proof that the file there is the one the worker made."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from django.core.files.storage import default_storage

from training.models import TrainingRun

CHUNK = 1024 * 1024


class StorageUnavailable(Exception):
    """Storage could not be read just now; verification should be tried again later."""


@dataclass(frozen=True)
class StoredFile:
    bytes: int
    sha256: str


def lora_storage_name(run: TrainingRun) -> str:
    return f"characters/{run.character_id}/loras/{run.id}.safetensors"


def stored_file_digest(name: str) -> StoredFile | None:
    """Size and SHA-256 of a stored file, read in chunks (a LoRA is hundreds of MB); None if absent."""
    try:
        if not default_storage.exists(name):
            return None
        digest = hashlib.sha256()
        size = 0
        for chunk in _chunks(name):
            digest.update(chunk)
            size += len(chunk)
    except (OSError, BotoCoreError, ClientError) as exc:
        raise StorageUnavailable(f"Storage could not be read ({type(exc).__name__}).") from exc
    return StoredFile(bytes=size, sha256=digest.hexdigest())


def _chunks(name: str) -> Iterator[bytes]:
    storage: Any = default_storage
    if hasattr(storage, "bucket") and hasattr(storage, "_normalize_name"):
        # S3File.read() would first download the whole object to a temporary file; the body streams.
        body = storage.bucket.Object(storage._normalize_name(name)).get()["Body"]
        yield from body.iter_chunks(CHUNK)
        return
    with storage.open(name, "rb") as handle:
        while chunk := handle.read(CHUNK):
            yield chunk
