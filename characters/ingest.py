"""Validate and normalise one uploaded reference image, without touching the database.

    prepared = prepare_image(upload)      # raises ImageRejected naming the file and the reason
    try:
        ...store prepared.image and prepared.thumbnail...
    finally:
        prepared.close()

Images are judged by their content, never by their name or declared type: Pillow may only
open them as JPEG, PNG or WebP. Limits are checked from the header before anything is
decoded, so a decompression bomb costs nothing; then the image is fully decoded, which
refuses truncated and damaged files. The stored file is re-encoded from the pixels with EXIF
orientation applied and no metadata at all (no GPS, no camera serial, no ICC profile: colours
are converted to sRGB first). Its sha256 is taken over the stored bytes, so the same upload
always hashes the same. Output goes to temporary files, never to one big buffer.
"""

from __future__ import annotations

import hashlib
import io
import logging
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import PurePath
from typing import IO, Any

from PIL import Image, ImageCms, ImageOps, JpegImagePlugin, UnidentifiedImageError

from studio.errors import ApplicationError

logger = logging.getLogger(__name__)

MAX_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 40_000_000
MIN_SHORT_SIDE = 512
THUMBNAIL_SIZE = 256
# Grids show photos about 110-160 CSS px wide; phones draw them at 2-3 device pixels per CSS pixel, where a
# 256 px thumbnail is upscaled and soft. Pages offer both through `srcset`; the browser picks.
LARGE_THUMBNAIL_SIZE = 512

# Pillow's own plugin names; anything else is refused however it is named.
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP")
_EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}
_CONTENT_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
_SPOOL_BYTES = 1024 * 1024
_READ_CHUNK = 1024 * 1024


class ImageRejected(ApplicationError):
    """An uploaded file that cannot become a reference image. The message names the file."""

    code = "image_rejected"

    def __init__(self, filename: str, reason: str, *, code: str) -> None:
        super().__init__(f"{filename}: {reason}", code=code)
        self.filename = filename
        self.reason = reason


@dataclass
class PreparedImage:
    """A normalised image and its thumbnail, in temporary files, ready to store."""

    original_filename: str
    image: IO[bytes]
    thumbnail: IO[bytes]
    thumbnail_large: IO[bytes]
    extension: str
    content_type: str
    sha256: str
    width: int
    height: int
    bytes: int

    def close(self) -> None:
        self.image.close()
        self.thumbnail.close()
        self.thumbnail_large.close()


def prepare_image(upload: IO[bytes], *, filename: str, size: int) -> PreparedImage:
    """Check one upload against every rule and return its normalised form, or raise ImageRejected."""
    name = display_name(filename)
    if size == 0:
        raise ImageRejected(name, "the file is empty. Choose the photo again.", code="empty")
    if size > MAX_BYTES:
        raise ImageRejected(
            name,
            f"the file is {size / 1024**2:.1f} MB; the limit is 20 MB. Export it smaller.",
            code="too_large",
        )
    upload.seek(0)
    with _open_image(upload, name) as source:
        _check_dimensions(source, name)
        _decode_fully(source, name)
        image_format = str(source.format)
        normalised = _normalise(source)
        try:
            return _encode(normalised, source, name=name, image_format=image_format)
        finally:
            if normalised is not source:
                normalised.close()


def display_name(filename: str) -> str:
    """The last path component of a client-supplied name, short enough to show and store."""
    name = PurePath(filename.replace("\\", "/")).name.strip() or "unnamed file"
    return name[:200]


def _open_image(upload: IO[bytes], name: str) -> Image.Image:
    # Pillow warns between MAX_IMAGE_PIXELS and twice that, and only raises above; treat both alike.
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            return Image.open(upload, formats=ACCEPTED_FORMATS)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise ImageRejected(
                name,
                "its header claims an enormous size (a decompression bomb); it was not opened.",
                code="bomb",
            ) from error
        except UnidentifiedImageError as error:
            raise ImageRejected(
                name,
                "this is not a JPEG, PNG or WebP image. Convert it to one of those.",
                code="unsupported_type",
            ) from error
        except (OSError, SyntaxError, ValueError) as error:
            raise ImageRejected(
                name, "the image header is damaged. Export the photo again.", code="damaged"
            ) from error


def _check_dimensions(source: Image.Image, name: str) -> None:
    width, height = source.size
    if width * height > MAX_PIXELS:
        raise ImageRejected(
            name,
            f"{width} x {height} is {width * height / 1e6:.1f} megapixels; the limit is 40. Scale it down.",
            code="too_many_pixels",
        )
    if min(width, height) < MIN_SHORT_SIDE:
        raise ImageRejected(
            name,
            f"{width} x {height} is too small; the short side needs at least {MIN_SHORT_SIDE} px.",
            code="too_small",
        )


def _decode_fully(source: Image.Image, name: str) -> None:
    """Decode every pixel now: a file Pillow cannot read to the end is refused, not stored."""
    try:
        source.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ImageRejected(
            name, "the file is truncated or damaged and could not be read to the end.", code="damaged"
        ) from error


def _normalise(source: Image.Image) -> Image.Image:
    """Upright, sRGB, 8-bit RGB (RGBA when there is transparency), and no metadata."""
    icc_profile = source.info.get("icc_profile")
    try:
        # In place: a copy of a large photo would double the memory one upload needs.
        ImageOps.exif_transpose(source, in_place=True)
    except Exception:
        # A malformed EXIF block must not cost the user a good photo; it is dropped below anyway.
        logger.warning("Ignoring unreadable EXIF orientation", exc_info=True)
    converted = _to_srgb(source, icc_profile)
    # Encoders copy some of `info` (PNG keeps the ICC profile); an empty dict carries nothing along.
    converted.info = {}
    return converted


def _to_srgb(image: Image.Image, icc_profile: bytes | None) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # Pillow clips 16-bit values when converting; scale them into 8 bits instead.
        eight_bit = image.convert("I").point(lambda value: value * (1 / 256))
        image = eight_bit.convert("L")
        eight_bit.close()
    target = "RGBA" if "A" in image.mode or "transparency" in image.info else "RGB"
    if icc_profile and image.mode in ("RGB", "CMYK", "L"):
        try:
            source_profile = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
            srgb = ImageCms.createProfile("sRGB")
            transformed = ImageCms.profileToProfile(image, source_profile, srgb, outputMode="RGB")
            if transformed is not None:
                return transformed
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass  # a broken profile is dropped; plain conversion below is the fallback
    return image if image.mode == target else image.convert(target)


def _encode(image: Image.Image, source: Image.Image, *, name: str, image_format: str) -> PreparedImage:
    stored = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)  # noqa: SIM115 - handed to the caller
    thumbnail = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)  # noqa: SIM115
    thumbnail_large = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)  # noqa: SIM115
    try:
        out_format = "JPEG" if image_format == "JPEG" and image.mode == "RGB" else image_format
        if out_format == "JPEG" and image.mode != "RGB":
            out_format = "PNG"  # JPEG cannot keep transparency
        image.save(stored, out_format, **_encoder_options(out_format, source))
        _make_thumbnail(image, THUMBNAIL_SIZE).save(thumbnail, "WEBP", quality=80, method=4)
        _make_thumbnail(image, LARGE_THUMBNAIL_SIZE).save(thumbnail_large, "WEBP", quality=80, method=4)
        digest, length = _hash(stored)
        thumbnail.seek(0)
        thumbnail_large.seek(0)
        width, height = image.size
        return PreparedImage(
            original_filename=name,
            image=stored,
            thumbnail=thumbnail,
            thumbnail_large=thumbnail_large,
            extension=_EXTENSIONS[out_format],
            content_type=_CONTENT_TYPES[out_format],
            sha256=digest,
            width=width,
            height=height,
            bytes=length,
        )
    except BaseException:
        stored.close()
        thumbnail.close()
        thumbnail_large.close()
        raise


def _encoder_options(out_format: str, source: Image.Image) -> dict[str, Any]:
    if out_format == "JPEG":
        # No `optimize`: its second pass holds the whole image's coefficients in memory, several
        # times the decoded photo, to save a few percent of file size.
        options: dict[str, Any] = {"quality": 95}
        qtables = getattr(source, "quantization", None)
        if source.format == "JPEG" and qtables:
            # Re-encoding with the photo's own tables and subsampling keeps the loss negligible.
            options = {"qtables": qtables}
            sampling = JpegImagePlugin.get_sampling(source)
            if sampling != -1:
                options["subsampling"] = sampling
        return options
    if out_format == "WEBP":
        return {"quality": 95, "method": 4}
    return {"optimize": False, "compress_level": 6}


def _make_thumbnail(image: Image.Image, longest_side: int) -> Image.Image:
    width, height = image.size
    scale = min(1.0, longest_side / max(width, height))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _hash(stream: IO[bytes]) -> tuple[str, int]:
    stream.seek(0)
    digest = hashlib.sha256()
    length = 0
    while chunk := stream.read(_READ_CHUNK):
        digest.update(chunk)
        length += len(chunk)
    stream.seek(0)
    return digest.hexdigest(), length
