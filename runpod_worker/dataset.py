"""Downloads the training images (parallel, bounded, retried, verified) and writes their captions.

Retrying is urllib3's `Retry` on the session's adapter: a connection that fails, an answer that does not
come within the read timeout and a transient status (429, 5xx) are tried again with jittered
exponential backoff. A body cut off midway is fetched again from the start here, from the
same budget: one image never costs more than `attempts` requests.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from runpod_worker.contract import ErrorCode, ImageSpec
from runpod_worker.errors import JobFailed

log = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = 8
DEFAULT_ATTEMPTS = 4
DEFAULT_MAX_BYTES = 50 * 1024 * 1024  # the studio refuses larger uploads; anything bigger is not ours
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 60.0
CHUNK = 256 * 1024
# Statuses worth another attempt: presigned-URL backends throttle and blip; 4xx others are final.
TRANSIENT_STATUSES = {408, 425, 429, 500, 502, 503, 504}


@dataclass(frozen=True)
class DownloadSettings:
    concurrency: int = DEFAULT_CONCURRENCY
    attempts: int = DEFAULT_ATTEMPTS
    max_bytes: int = DEFAULT_MAX_BYTES
    backoff_s: float = 0.5

    @classmethod
    def from_env(cls) -> DownloadSettings:
        return cls(
            concurrency=int(os.environ.get("WORKER_DOWNLOAD_CONCURRENCY", DEFAULT_CONCURRENCY)),
            attempts=int(os.environ.get("WORKER_DOWNLOAD_ATTEMPTS", DEFAULT_ATTEMPTS)),
            max_bytes=int(os.environ.get("WORKER_MAX_IMAGE_BYTES", DEFAULT_MAX_BYTES)),
            backoff_s=float(os.environ.get("WORKER_DOWNLOAD_BACKOFF_S", 0.5)),
        )


class _Transient(Exception):
    """A failure another attempt may fix (connection reset, 5xx, 429), after `requests` requests."""

    def __init__(self, reason: str, *, requests_sent: int) -> None:
        super().__init__(reason)
        self.requests_sent = requests_sent


def image_kind(head: bytes) -> str | None:
    """The image type from its first bytes; extensions and Content-Type headers are not trusted."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return None


def download_images(
    images: list[ImageSpec],
    dest: Path,
    settings: DownloadSettings | None = None,
    on_done: Callable[[int], None] | None = None,
) -> list[Path]:
    """Downloads every image into `dest` and verifies it; raises JobFailed on the first bad one."""
    settings = settings or DownloadSettings.from_env()
    dest.mkdir(parents=True, exist_ok=True)
    local = threading.local()
    done = 0
    done_lock = threading.Lock()

    def fetch(index_image: tuple[int, ImageSpec]) -> Path:
        nonlocal done
        if not hasattr(local, "session"):
            local.session, local.adapter = _session(settings.concurrency)
        path = _download_one(local.session, local.adapter, index_image[0], index_image[1], dest, settings)
        with done_lock:
            done += 1
            count = done
        if on_done is not None:
            on_done(count)
        return path

    with ThreadPoolExecutor(max_workers=max(1, settings.concurrency), thread_name_prefix="download") as pool:
        futures = [pool.submit(fetch, item) for item in enumerate(images)]
        try:
            return [future.result() for future in futures]
        except BaseException:
            # One bad image fails the job: do not spend time fetching the ones still queued.
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def _session(pool_size: int) -> tuple[requests.Session, HTTPAdapter]:
    """A session for one download thread; its adapter's retries are set per image (`_retry`)."""
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session, adapter


def _retry(retries: int, settings: DownloadSettings) -> Retry:
    """At most `retries` more requests after the first, for failures another request may fix."""
    return Retry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        other=0,
        allowed_methods=frozenset({"GET"}),
        status_forcelist=TRANSIENT_STATUSES,
        # urllib3 retries the first failure at once, then waits 2, 4, … times `backoff_s` plus up to
        # `backoff_s` of jitter, so parallel retries do not hit the store together. A Retry-After header
        # is not obeyed: a store asking for an hour must not hold the GPU that long; the budget decides.
        backoff_factor=settings.backoff_s,
        backoff_jitter=settings.backoff_s,
        backoff_max=30.0,
        respect_retry_after_header=False,
        raise_on_status=False,  # the last answer comes back, and `_check_status` names its status
    )


def _download_one(
    session: requests.Session,
    adapter: HTTPAdapter,
    index: int,
    image: ImageSpec,
    dest: Path,
    settings: DownloadSettings,
) -> Path:
    label = f"Image {index + 1} ({image.filename})"
    budget = settings.attempts
    last_error = ""
    while budget > 0:
        # The session belongs to this thread, so setting its adapter's retries here is safe.
        adapter.max_retries = _retry(budget - 1, settings)
        try:
            return _attempt(session, label, image, dest, settings)
        except _Transient as exc:
            last_error = str(exc)
            budget -= max(1, exc.requests_sent)
            if budget > 0:  # a body cut off midway: fetch the image again after a pause
                time.sleep(settings.backoff_s * (0.5 + random.random()))
    raise JobFailed(
        ErrorCode.DOWNLOAD_FAILED,
        f"{label} could not be downloaded after {settings.attempts} attempts ({last_error}). "
        "The storage may be unreachable; retry the run.",
    )


def _attempt(
    session: requests.Session, label: str, image: ImageSpec, dest: Path, settings: DownloadSettings
) -> Path:
    target = dest / image.filename
    partial = dest / f".{image.filename}.part"
    digest = hashlib.sha256()
    size = 0
    sent = 0  # requests this attempt made, retries by the adapter included; 0 until an answer came
    try:
        with session.get(image.url, stream=True, timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S)) as response:
            sent = _requests_sent(response)
            _check_status(label, response.status_code, requests_sent=sent)
            with open(partial, "wb") as out:
                for chunk in response.iter_content(CHUNK):
                    size += len(chunk)
                    if size > settings.max_bytes:
                        raise JobFailed(
                            ErrorCode.BAD_INPUT,
                            f"{label} is larger than {settings.max_bytes // (1024 * 1024)} MB; "
                            "upload a smaller image.",
                        )
                    digest.update(chunk)
                    out.write(chunk)
    except requests.RequestException as exc:
        partial.unlink(missing_ok=True)
        # Without an answer, the adapter spent the whole budget on retries before giving up.
        raise _Transient(type(exc).__name__, requests_sent=sent or settings.attempts) from exc
    except JobFailed:
        partial.unlink(missing_ok=True)
        raise
    _verify(label, image, partial, digest.hexdigest())
    partial.replace(target)
    return target


def _requests_sent(response: requests.Response) -> int:
    retries = getattr(response.raw, "retries", None)
    return 1 + len(retries.history) if retries is not None else 1


def _check_status(label: str, status: int, *, requests_sent: int) -> None:
    if status == 200:
        return
    if status in TRANSIENT_STATUSES:
        # The adapter already retried it as often as the budget allowed.
        raise _Transient(f"HTTP {status}", requests_sent=requests_sent)
    hint = {
        403: "the link was refused or has expired",
        404: "the file is missing from storage",
    }.get(status, "the storage refused the request")
    raise JobFailed(
        ErrorCode.DOWNLOAD_FAILED,
        f"{label} could not be downloaded: HTTP {status}, {hint}. "
        "Check that the image still exists, then retry the run.",
    )


def _verify(label: str, image: ImageSpec, path: Path, sha256: str) -> None:
    if sha256 != image.sha256:
        path.unlink(missing_ok=True)
        raise JobFailed(
            ErrorCode.DOWNLOAD_FAILED,
            f"{label} does not match its recorded fingerprint (sha256 {sha256[:12]}..., "
            f"expected {image.sha256[:12]}...). The stored file changed after the run started; "
            "re-upload the image and start a new run.",
        )
    with open(path, "rb") as handle:
        head = handle.read(16)
    if image_kind(head) is None:
        path.unlink(missing_ok=True)
        raise JobFailed(
            ErrorCode.BAD_INPUT,
            f"{label} is not a JPEG, PNG or WebP image (the file is corrupt or of another type). "
            "Replace it with a valid image.",
        )


# --------------------------------------------------------------------------- decoding


def undecodable_reason(path: Path) -> str | None:
    """Why Pillow cannot decode the image at `path` (every pixel, not only its header); None if it can."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        return str(exc) or type(exc).__name__
    return None


def refuse_undecodable(paths: list[Path]) -> None:
    """Fails the job as bad input, naming every image that does not decode.

    AI Toolkit opens each image with Pillow when it scans the dataset and drops one that fails without a
    word (toolkit/dataloader_mixins.py, the image-size scan), so a run would "succeed" on fewer images,
    or, with none left, fail as a trainer error. Decoding here first says which files to replace.
    """
    bad = [(path.name, reason) for path in paths if (reason := undecodable_reason(path)) is not None]
    if not bad:
        return
    listed = "; ".join(f"{name} ({reason})" for name, reason in bad)
    raise JobFailed(
        ErrorCode.BAD_INPUT,
        f"{len(bad)} of {len(paths)} images cannot be decoded: {listed}. They are damaged or not really "
        "JPEG, PNG or WebP files; replace them and start a new run.",
    )


# --------------------------------------------------------------------------- captions

_WORD = r"(?<![A-Za-z0-9_]){}(?![A-Za-z0-9_])"


def caption_text(caption: str | None, trigger_word: str) -> str:
    """The caption AI Toolkit trains on: `[trigger]` filled in and the trigger word always present."""
    text = " ".join((caption or "").replace("[trigger]", trigger_word).split())
    if not text:
        return f"a photo of {trigger_word}"
    if not re.search(_WORD.format(re.escape(trigger_word)), text):
        # AI Toolkit would prepend it anyway; writing it here makes the caption file the whole truth.
        return f"{trigger_word}, {text}"
    return text


def write_given_captions(images: list[ImageSpec], dest: Path, trigger_word: str) -> None:
    """The caption file of each image sent with a caption; the others are left without one, for the
    captioner to find (runpod_worker/captions.py)."""
    write_captions([image for image in images if (image.caption or "").strip()], dest, trigger_word)


def write_captions(
    images: list[ImageSpec], dest: Path, trigger_word: str, made: dict[str, str] | None = None
) -> None:
    """Every image's caption file: its own caption, else the one the captioner made (`made`, by file name),
    else the bare trigger word."""
    for image in images:
        stem = image.filename.rsplit(".", 1)[0]
        caption = image.caption if (image.caption or "").strip() else (made or {}).get(image.filename)
        (dest / f"{stem}.txt").write_text(caption_text(caption, trigger_word), encoding="utf-8")
