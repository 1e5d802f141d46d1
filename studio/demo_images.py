"""The demo character's reference photos: real portraits from a registry package, never downloaded here.

`make install` keeps the source archive of `face_recognition` 1.3.0 (tests/photos-requirements.txt, pinned
by hash) in `.venv/test-photos`; its tests/test_images hold three distinct portraits of Barack Obama and two
crops of one of them, official White House photographs (US federal works are in the public domain, 17
U.S.C. § 105). The demo trains on those five and their mirror images — ten photos, the studio's minimum —
so the face check, the likeness of every checkpoint and the checkpoint chosen work on a real face.
"""

from __future__ import annotations

import io
import sys
import tarfile
from pathlib import Path

from PIL import Image, ImageOps

ARCHIVE = Path(sys.prefix) / "test-photos" / "face_recognition-1.3.0.tar.gz"
FOLDER = "face_recognition-1.3.0/tests/test_images/"
# The distinct portraits first: the simulated trainer draws sample prompt i from the i-th photo by name.
PORTRAITS = ("obama.jpg", "obama2.jpg", "obama3.jpg", "obama_partial_face.jpg", "obama_partial_face2.jpg")


MIN_SIDE = 512


class PortraitsMissing(RuntimeError):
    pass


def write_portraits(folder: Path) -> list[Path]:
    """Writes the ten demo photos into `folder` (kept when already there) and returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for number, (name, mirrored) in enumerate(((n, m) for m in (False, True) for n in PORTRAITS), start=1):
        path = folder / f"portrait-{number:02d}.jpg"
        if not path.exists():
            image = _portrait(name)
            (ImageOps.mirror(image) if mirrored else image).save(path, "JPEG", quality=92)
        paths.append(path)
    return paths


def _portrait(name: str) -> Image.Image:
    if not ARCHIVE.is_file():
        raise PortraitsMissing(f"{ARCHIVE} is missing: run `make install`, which downloads it.")
    with tarfile.open(ARCHIVE) as archive:
        member = archive.extractfile(FOLDER + name)
        if member is None:
            raise PortraitsMissing(f"{name} is not in {ARCHIVE.name}.")
        image = Image.open(io.BytesIO(member.read())).convert("RGB")
    # One crop is 491 px wide: enlarged a little to the upload's 512 px minimum (characters/ingest.py).
    scale = MIN_SIDE / min(image.size)
    if scale > 1:
        image = image.resize(
            (round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS
        )
    return image
