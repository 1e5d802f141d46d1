"""Where a run's LoRA lives in storage, and proof that the file there is the one the worker made."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import secrets
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from django.core.files.storage import default_storage

from studio.storage import is_s3
from training.models import TrainingRun

logger = logging.getLogger(__name__)

CHUNK = 1024 * 1024
# A Flux LoRA's header is a few hundred KB (one entry per tensor); anything far larger is not a LoRA.
MAX_HEADER_BYTES = 16 * 1024 * 1024
# Bytes per element of each safetensors dtype.
DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1,
    "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
    "U32": 4, "I32": 4, "F32": 4,
    "U64": 8, "I64": 8, "F64": 8,
}  # fmt: skip


class StorageUnavailable(Exception):
    """Storage could not be read just now; verification should be tried again later."""


class LoraInvalid(Exception):
    """The stored file is not a complete, well-formed safetensors file."""


@dataclass(frozen=True)
class StoredFile:
    bytes: int
    sha256: str


# The second file of a model with two experts (Wan 2.2): AI Toolkit's own suffix for it.
LOW_NOISE = "_low_noise"


def lora_output_name(run: TrainingRun) -> str:
    """The name AI Toolkit gives the run's LoRA (`output.lora_name`): checkpoints are `<it>_<step:09d>`."""
    return f"{run.trigger_word}_{run.id.hex[:8]}"


def lora_upload_name(run: TrainingRun, part: str = "") -> str:
    """Where the worker's upload link writes the run's LoRA.

    Every job given that link can write there until the link expires, a job RunPod ran twice or one
    whose `/run` answer was lost included, so a run never keeps this file itself: it keeps a copy made
    by `lora_keep` under a name no link names.
    """
    return f"characters/{run.character_id}/loras/uploads/{run.id}{part}.safetensors"


def _former_upload_name(run: TrainingRun) -> str:
    # Links issued before runs kept their own copy wrote here, and live as long as a job's TTL plus its
    # execution timeout (15 h): a run submitted then and completing now is read from this name.
    return f"characters/{run.character_id}/loras/{run.id}.safetensors"


def lora_keep(run: TrainingRun, part: str = "", source: str | None = None) -> str | None:
    """Copies the uploaded LoRA (`part`: the low-noise file of a split one; or `source`, a checkpoint) to a
    new name of the run's own, written once, here, and never by a link; None if nothing was uploaded. The
    caller verifies the copy, so what it verified is what it keeps."""
    target = f"characters/{run.character_id}/loras/{run.id}{part}-{secrets.token_hex(4)}.safetensors"
    sources: tuple[str, ...] = (lora_upload_name(run), _former_upload_name(run))
    if source is not None or part:
        sources = (source,) if source is not None else (lora_upload_name(run, part),)
    try:
        for name in sources:
            if default_storage.exists(name):
                return _copy(name, target)
    except (OSError, BotoCoreError, ClientError) as exc:
        raise StorageUnavailable(f"Storage could not copy the LoRA ({type(exc).__name__}).") from exc
    return None


def lora_tidy(run: TrainingRun, kept: str, part: str = "") -> None:
    """Once the run keeps `kept`: removes its upload, and any copy a completion cut short left behind (a
    completion still in flight then finds its copy gone, and the run already complete, so it changes
    nothing)."""
    folder = f"characters/{run.character_id}/loras/"
    try:
        files = default_storage.listdir(folder)[1]
    except (OSError, BotoCoreError, ClientError):
        logger.warning("could not list %s to remove what run %s left", folder, run.pk, exc_info=True)
        files = []
    leftovers = [
        folder + file for file in files if file.startswith(f"{run.id}{part}-") and folder + file != kept
    ]
    uploads = [lora_upload_name(run, part)] if part else [lora_upload_name(run), _former_upload_name(run)]
    for name in [*uploads, *leftovers]:
        lora_discard(name)


def lora_discard(name: str) -> None:
    """Removes a stored LoRA no run keeps; a failure is logged, and leaves only a file in the character's
    folder, which goes with the character."""
    try:
        default_storage.delete(name)
    except (OSError, BotoCoreError, ClientError):
        logger.warning("could not remove %s from storage", name, exc_info=True)


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


def stored_lora_digest(name: str) -> StoredFile | None:
    """Size and SHA-256 of a stored LoRA that is a complete safetensors file; None if absent.

    One streamed read: the header (8-byte little-endian length, then JSON) is checked as soon as it has
    arrived, and the tensors' data offsets must tile the rest of the file exactly, so a truncated or padded
    file raises LoraInvalid. The file is never held in memory, and reading stops at the first problem.
    """
    try:
        if not default_storage.exists(name):
            return None
        digest = hashlib.sha256()
        head = bytearray()
        size = 0
        expected: int | None = None
        for chunk in _chunks(name):
            digest.update(chunk)
            size += len(chunk)
            if expected is None:
                head += chunk
                expected = _safetensors_size(bytes(head))
                if expected is not None:
                    head.clear()
            if expected is not None and size > expected:
                raise LoraInvalid(f"the file is longer than its header says ({size:,} > {expected:,} bytes)")
    except (OSError, BotoCoreError, ClientError) as exc:
        raise StorageUnavailable(f"Storage could not be read ({type(exc).__name__}).") from exc
    if expected is None:
        raise LoraInvalid(f"the file ends inside its header ({size:,} bytes)")
    if size != expected:
        raise LoraInvalid(f"the file is truncated ({size:,} of {expected:,} bytes)")
    return StoredFile(bytes=size, sha256=digest.hexdigest())


def _safetensors_size(head: bytes) -> int | None:
    """The total file size a safetensors header promises; None until the whole header has been read."""
    if len(head) < 8:
        return None
    (length,) = struct.unpack("<Q", head[:8])
    if not 2 <= length <= MAX_HEADER_BYTES:
        raise LoraInvalid(f"its header length ({length:,} bytes) is not a safetensors header's")
    if len(head) < 8 + length:
        return None
    try:
        header = json.loads(head[8 : 8 + length])
    except ValueError as exc:
        raise LoraInvalid("its header is not valid JSON") from exc
    if not isinstance(header, dict):
        raise LoraInvalid("its header is not a JSON object")
    return 8 + length + _data_length(header)


def _data_length(header: dict[str, Any]) -> int:
    """The length of the data the header's tensors cover, which must be contiguous from offset 0."""
    spans = sorted(_span(key, entry) for key, entry in header.items() if key != "__metadata__")
    if not spans:
        raise LoraInvalid("its header lists no tensors")
    end = 0
    for begin, stop in spans:
        if begin != end:
            raise LoraInvalid("its tensors' data offsets leave a gap or overlap")
        end = stop
    return end


def _span(key: str, entry: Any) -> tuple[int, int]:
    try:
        begin, stop = (int(offset) for offset in entry["data_offsets"])
        shape = [int(dim) for dim in entry["shape"]]
        width = DTYPE_BYTES[entry["dtype"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise LoraInvalid(f"its header entry {key[:80]!r} is malformed") from exc
    if begin < 0 or min(shape, default=0) < 0 or stop - begin != math.prod(shape) * width:
        raise LoraInvalid(f"its header entry {key[:80]!r} has data offsets that do not fit its shape")
    return begin, stop


def _copy(source: str, target: str) -> str:
    storage: Any = default_storage
    if is_s3(storage):
        # A server-side copy in one request: S3 copies up to 5 GB so, the most a presigned PUT can upload.
        storage.bucket.Object(storage._normalize_name(target)).copy_from(
            CopySource={"Bucket": storage.bucket_name, "Key": storage._normalize_name(source)}
        )
        return target
    with storage.open(source, "rb") as handle:
        return str(storage.save(target, handle))


def _chunks(name: str) -> Iterator[bytes]:
    storage: Any = default_storage
    if is_s3(storage):
        # S3File.read() would first download the whole object to a temporary file; the body streams.
        body = storage.bucket.Object(storage._normalize_name(name)).get()["Body"]
        yield from body.iter_chunks(CHUNK)
        return
    with storage.open(name, "rb") as handle:
        while chunk := handle.read(CHUNK):
            yield chunk


def lora_download_name(run: TrainingRun, part: str = "") -> str:
    """`<trigger word>-<run id prefix>.safetensors`, with the trigger word the run trained on:
    recognisable in a folder of many LoRAs. A split LoRA's files end `_high_noise` and `_low_noise`, as AI
    Toolkit names them and ComfyUI workflows expect."""
    suffix = PurePosixPath(run.lora_name).suffix or ".safetensors"
    if run.lora_low_noise_name:
        part = part or "_high_noise"
    return f"{run.trigger_word}-{str(run.pk)[:8]}{part}{suffix}"
