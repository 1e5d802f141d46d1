"""Analyse one photo: its faces, their boxes and embedding, and what would make it a poor training image.

    facts = analyse_photo(stream, training_resolution=1024)   # PhotoFacts; facts.embedding is biometric
    crop = face_crop(stream, facts, resolution=1024)          # a PIL image, or None

Everything runs on a downscaled copy (long side ANALYSIS_SIDE): JPEG is decoded straight at a reduced
scale (Pillow's draft mode), so a 2 MP photo costs about as much as a 1 MP one. Face boxes are kept as
fractions of the photo's width and height, valid at any size (thumbnails, the original, a crop).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np
from PIL import Image, ImageOps

from characters.faces import engine, measures
from characters.faces.flags import Flag

# Faces of 80 px and more are found at upsample 0 (dlib's HOG window); 1024 px keeps a head-and-
# shoulders face of a 2 MP photo well above that. A photo with none found is searched again on a 720 px
# copy doubled, which finds faces down to ~57 px of the 1024 px copy (all of them "too small" for
# training anyway) and keeps that worst case under the 0.5 s budget (docs/BENCHMARKS.md).
ANALYSIS_SIDE = 1024
SEARCH_AGAIN_SIDE = 720
THUMB_SIDE = 64  # blank check and background signature need no detail
# A second face at least half as wide as the main one is another person in the picture, not a poster
# in the background.
SECOND_FACE_SHARE = 0.5
# Calibrated on the test photos (docs/IDENTITY.md): sharp faces measure 150-900 on the 150 px chip,
# the same faces blurred by a 3 px Gaussian fall under 40.
BLUR_MIN_VARIANCE = 60.0
BLANK_MAX_SPREAD = 6.0
DARK_MAX_MEAN = 55.0
BRIGHT_MIN_MEAN = 215.0
CLIPPED_MAX_SHARE = 0.35
VERSION = "dlib-20.0.1/hog+resnet-v1/2"  # stored with each analysis: a change re-analyses every photo


@dataclass
class PhotoFacts:
    """What one photo shows. `embedding` (128 float32 of the main face) is biometric data."""

    width: int
    height: int
    faces: list[dict[str, Any]] = field(default_factory=list)  # box fractions, score, yaw, largest first
    embedding: np.ndarray | None = None
    phash: str = ""
    face_phash: str = ""
    blur: float | None = None
    brightness: float = 0.0
    spread: float = 0.0
    face_pixels: int | None = None  # the main face's width at the training resolution
    yaw: float | None = None
    background: list[float] = field(default_factory=list)
    flags: list[Flag] = field(default_factory=list)

    @property
    def main_box(self) -> tuple[float, float, float, float] | None:
        if not self.faces:
            return None
        left, top, right, bottom = self.faces[0]["box"]
        return (float(left), float(top), float(right), float(bottom))


def analyse_photo(stream: IO[bytes], *, training_resolution: int, min_face_pixels: int) -> PhotoFacts:
    """Measure one stored photo (already validated and normalised by ingest)."""
    with Image.open(stream) as image:
        width, height = image.size
        small = _downscaled(image)
    pixels = np.asarray(small)
    facts = PhotoFacts(width=width, height=height)
    _measure_whole(facts, small)
    if facts.spread <= BLANK_MAX_SPREAD:
        facts.flags.append(Flag.BLANK)
        return facts  # nothing to find on a blank page, and nothing to gain from the detector's time
    faces = engine.detect_faces(pixels) or engine.detect_small_faces(pixels, search_side=SEARCH_AGAIN_SIDE)
    facts.faces = [_face_record(face, small.size) for face in faces]
    facts.background = measures.background_signature(_thumb(small), _thumb_box(faces, small.size))
    if not faces:
        facts.flags.append(Flag.NO_FACE)
        return facts
    _measure_main_face(facts, pixels, faces, training_resolution=training_resolution)
    facts.flags.extend(_face_flags(facts, faces, min_face_pixels=min_face_pixels))
    return facts


def face_crop(stream: IO[bytes], facts: PhotoFacts, *, resolution: int) -> Image.Image | None:
    """A square around the main face (head and shoulders) from the full photo, at most `resolution` px.

    None when the photo has no face or the square would be under 512 px, the smallest training
    resolution: an upscaled crop would teach the LoRA a soft face.
    """
    box = facts.main_box
    if box is None:
        return None
    left, top, right, bottom = (
        box[0] * facts.width,
        box[1] * facts.height,
        box[2] * facts.width,
        box[3] * facts.height,
    )
    side = min(2.4 * max(right - left, bottom - top), facts.width, facts.height)
    if side < 512:
        return None
    centre_x, centre_y = (left + right) / 2, (top + bottom) / 2 + 0.1 * side  # room for the shoulders
    x0 = int(min(max(centre_x - side / 2, 0), facts.width - side))
    y0 = int(min(max(centre_y - side / 2, 0), facts.height - side))
    with Image.open(stream) as image:
        square = image.convert("RGB").crop((x0, y0, x0 + int(side), y0 + int(side)))
    if square.width > resolution:
        square = square.resize((resolution, resolution), Image.Resampling.LANCZOS)
    return square


def bucket_scale(width: int, height: int, resolution: int) -> float:
    """How much AI Toolkit shrinks a photo for one training resolution: to at most resolution² pixels,
    keeping its shape (ostris/ai-toolkit toolkit/buckets.py:17-25, get_bucket_for_image_size, 27a03a91)."""
    total = width * height
    return float((min(total, resolution * resolution) / total) ** 0.5)


def _downscaled(image: Image.Image) -> Image.Image:
    image.draft("RGB", (ANALYSIS_SIDE, ANALYSIS_SIDE))  # JPEG decodes at 1/2, 1/4 or 1/8 scale
    rgb = image.convert("RGB")
    if max(rgb.size) > ANALYSIS_SIDE:
        rgb = ImageOps.contain(rgb, (ANALYSIS_SIDE, ANALYSIS_SIDE), Image.Resampling.BILINEAR)
    return rgb


def _thumb(small: Image.Image) -> np.ndarray:
    return np.asarray(ImageOps.contain(small, (THUMB_SIDE, THUMB_SIDE), Image.Resampling.BILINEAR))


def _measure_whole(facts: PhotoFacts, small: Image.Image) -> None:
    thumb = _thumb(small)
    facts.spread = measures.spread(thumb)
    facts.brightness = measures.exposure(measures.grey(thumb))[0]
    hash_source = small.convert("L").resize(
        (measures.HASH_SIDE, measures.HASH_SIDE), Image.Resampling.BILINEAR
    )
    facts.phash = measures.perceptual_hash(np.asarray(hash_source))


def _measure_main_face(
    facts: PhotoFacts, pixels: np.ndarray, faces: list[engine.Detection], *, training_resolution: int
) -> None:
    main = faces[0]
    facts.embedding = engine.embed_face(pixels, main)
    chip = measures.grey(engine.face_chip(pixels, main))
    facts.blur = measures.laplacian_variance(chip)
    mean, crushed, blown = measures.exposure(chip)
    facts.brightness = mean
    facts.yaw = measures.yaw(main.landmarks)
    hash_source = Image.fromarray(chip.astype(np.uint8)).resize((measures.HASH_SIDE, measures.HASH_SIDE))
    facts.face_phash = measures.perceptual_hash(np.asarray(hash_source))
    to_original = facts.width / pixels.shape[1]
    scale = bucket_scale(facts.width, facts.height, training_resolution)
    facts.face_pixels = round(main.width * to_original * scale)
    facts.faces[0]["clipped"] = round(max(crushed, blown), 3)


def _face_flags(facts: PhotoFacts, faces: list[engine.Detection], *, min_face_pixels: int) -> list[Flag]:
    flags: list[Flag] = []
    if len(faces) > 1 and faces[1].width >= SECOND_FACE_SHARE * faces[0].width:
        flags.append(Flag.MULTIPLE_FACES)
    if facts.face_pixels is not None and facts.face_pixels < min_face_pixels:
        flags.append(Flag.FACE_TOO_SMALL)
    # A face too small is enlarged to make its chip, which softens it: its blur says nothing more.
    if facts.blur is not None and facts.blur < BLUR_MIN_VARIANCE and Flag.FACE_TOO_SMALL not in flags:
        flags.append(Flag.BLURRY)
    clipped = float(facts.faces[0].get("clipped", 0.0))
    if facts.brightness < DARK_MAX_MEAN or (clipped > CLIPPED_MAX_SHARE and facts.brightness < 128):
        flags.append(Flag.TOO_DARK)
    elif facts.brightness > BRIGHT_MIN_MEAN or (clipped > CLIPPED_MAX_SHARE and facts.brightness >= 128):
        flags.append(Flag.TOO_BRIGHT)
    return flags


def _face_record(face: engine.Detection, size: tuple[int, int]) -> dict[str, Any]:
    width, height = size
    left, top, right, bottom = face.box
    return {
        "box": [
            round(left / width, 4),
            round(top / height, 4),
            round(right / width, 4),
            round(bottom / height, 4),
        ],
        "score": round(face.score, 3),
        "yaw": round(measures.yaw(face.landmarks), 3),
    }


def _thumb_box(faces: list[engine.Detection], size: tuple[int, int]) -> tuple[int, int, int, int] | None:
    if not faces:
        return None
    scale = THUMB_SIDE / max(size)
    left, top, right, bottom = faces[0].box
    return (int(left * scale), int(top * scale), int(right * scale) + 1, int(bottom * scale) + 1)
