"""Real face photos for the face-analysis tests, read in place from the face_recognition 1.3.0 source
archive that `make install` puts in .venv/test-photos (tests/photos-requirements.txt says why those).

Person A has three distinct photos (`PERSON_A`) and a crop of the first (`PERSON_A_CROP`); person B one.
Test cases that need other pictures build them from these (a blurred copy, two faces side by side, the
lower part of a photo with no face, a white page) so that every case starts from a real photograph.
"""

from __future__ import annotations

import io
import sys
import tarfile
from functools import cache
from pathlib import Path

import pytest
from PIL import Image, ImageFilter

ARCHIVE = Path(sys.prefix) / "test-photos" / "face_recognition-1.3.0.tar.gz"
FOLDER = "face_recognition-1.3.0/tests/test_images/"
PERSON_A = ("obama.jpg", "obama2.jpg", "obama3.jpg")
PERSON_A_CROP = "obama_partial_face.jpg"  # the left part of obama.jpg: the same photo, cropped
PERSON_B = "biden.jpg"


@cache
def photo_bytes(name: str) -> bytes:
    if not ARCHIVE.is_file():
        pytest.fail(f"{ARCHIVE} is missing: run `make install`, which downloads it.")
    with tarfile.open(ARCHIVE) as archive:
        member = archive.extractfile(FOLDER + name)
        assert member is not None
        return member.read()


def photo(name: str) -> Image.Image:
    return Image.open(io.BytesIO(photo_bytes(name))).convert("RGB")


def jpeg(image: Image.Image, quality: int = 92) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def blurred(name: str, radius: float = 3.0) -> Image.Image:
    return photo(name).filter(ImageFilter.GaussianBlur(radius))


def rescaled(name: str, factor: float = 0.6) -> Image.Image:
    image = photo(name)
    return image.resize((round(image.width * factor), round(image.height * factor)), Image.Resampling.LANCZOS)


def two_people() -> Image.Image:
    """Person A and person B side by side, both faces about the same size."""
    a = photo(PERSON_A[0]).resize((700, 875))
    b = photo(PERSON_B).crop((0, 0, 970, 1200)).resize((700, 866))
    canvas = Image.new("RGB", (1400, 900), (128, 128, 128))
    canvas.paste(a, (0, 0))
    canvas.paste(b, (700, 0))
    return canvas


def without_face() -> Image.Image:
    """The lower two thirds of a real photo: a person's body and a room, no face."""
    image = photo(PERSON_A[2])
    return image.crop((0, image.height // 3, image.width, image.height))


def blank() -> Image.Image:
    return Image.new("RGB", (1024, 768), (250, 250, 250))


def small_face() -> Image.Image:
    """Person A far away: the whole photo on a large empty canvas, the face a few dozen pixels wide."""
    canvas = Image.new("RGB", (2400, 1800), (90, 110, 90))
    canvas.paste(rescaled(PERSON_A[0], 0.5), (1000, 600))
    return canvas
