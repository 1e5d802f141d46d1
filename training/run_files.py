"""Where a run's checkpoints and samples live in storage, and a sample's thumbnails, made once.

Every name is known when the job is built (the steps follow from the parameters), so the job input signs
one PUT per name up front and the callbacks find the same names again; nothing the worker reports names a
storage key.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image, UnidentifiedImageError

from characters.ingest import LARGE_THUMBNAIL_SIZE, THUMBNAIL_SIZE
from training.artifacts import StorageUnavailable
from training.models import TrainingRun, run_artifact_prefix

logger = logging.getLogger(__name__)

# A sample is a rendered image of at most 1024 px or so; anything far larger is not one of ours.
MAX_SAMPLE_PIXELS = 16_000_000


def checkpoint_file(run: TrainingRun, step: int) -> str:
    return f"{run_artifact_prefix(run)}checkpoints/{step:09d}.safetensors"


def optimizer_file(run: TrainingRun, step: int) -> str:
    return f"{run_artifact_prefix(run)}checkpoints/{step:09d}.optimizer.pt"


def sample_file(run: TrainingRun, step: int, prompt_index: int) -> str:
    return f"{run_artifact_prefix(run)}samples/{step:09d}_{prompt_index}.jpg"


def sample_thumbnail_file(run: TrainingRun, step: int, prompt_index: int, *, large: bool = False) -> str:
    return f"{run_artifact_prefix(run)}samples/{step:09d}_{prompt_index}.thumb{'-512' if large else ''}.webp"


@dataclass(frozen=True)
class Thumbnails:
    small: str
    large: str
    width: int
    height: int


def sample_read(name: str) -> bytes:
    """A stored sample's bytes. Raises StorageUnavailable when storage fails."""
    try:
        with default_storage.open(name, "rb") as handle:
            return bytes(handle.read())
    except (OSError, BotoCoreError, ClientError) as exc:
        raise StorageUnavailable(f"Storage could not read a sample ({type(exc).__name__}).") from exc


def sample_thumbnails_make(run: TrainingRun, step: int, prompt_index: int) -> Thumbnails | None:
    """Reads the stored sample and stores its 256 px and 512 px WebP thumbnails (as reference photos have);
    None when the file is not an image Pillow reads. Raises StorageUnavailable when storage fails."""
    name = sample_file(run, step, prompt_index)
    data = sample_read(name)
    try:
        with Image.open(io.BytesIO(data)) as opened:
            if opened.width * opened.height > MAX_SAMPLE_PIXELS:
                return None
            image = opened.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        logger.warning("run %s: sample %s is not an image; kept without a thumbnail", run.pk, name)
        return None
    names = []
    for size, large in ((THUMBNAIL_SIZE, False), (LARGE_THUMBNAIL_SIZE, True)):
        target = sample_thumbnail_file(run, step, prompt_index, large=large)
        names.append(_store(target, _thumbnail(image, size)))
    return Thumbnails(small=names[0], large=names[1], width=image.width, height=image.height)


def _thumbnail(image: Image.Image, longest_side: int) -> bytes:
    scale = min(1.0, longest_side / max(image.size))
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    out = io.BytesIO()
    image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0).save(out, "WEBP", quality=80, method=4)
    return out.getvalue()


def _store(name: str, data: bytes) -> str:
    """Stores `data` under exactly `name`, replacing an earlier copy (a sample rendered again on resume)."""
    try:
        if default_storage.exists(name):
            default_storage.delete(name)
        return str(default_storage.save(name, ContentFile(data)))
    except (OSError, BotoCoreError, ClientError) as exc:
        raise StorageUnavailable(f"Storage could not store a thumbnail ({type(exc).__name__}).") from exc


def run_files_delete(names: list[str]) -> list[str]:
    """Deletes stored files, and returns those that could not be deleted (logged; tried again later)."""
    failed = []
    for name in names:
        try:
            default_storage.delete(name)
        except (OSError, BotoCoreError, ClientError):
            logger.warning("could not delete %s from storage", name, exc_info=True)
            failed.append(name)
    return failed
