"""What a run trains on, frozen at its start (`TrainingRun.manifest`): the character's photos and, beside
them, the face-centred crop the face check made of each photo with a face (characters/faces, "Face-centred
crops"), as fal's `use_face_detection` and Astria's face crop add one.

A crop is one more image to the worker (runpod_worker/contract.py `ImageSpec`: a presigned URL, its sha256,
a file name, the photo's caption), so every path that sends the manifest sends the crops through the same
download and caption steps as the photos. Its item says `kind: face_crop` and names its photo
(`photo_sha256`); a photo's item has no kind (runs frozen before crops have none either).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from characters.models import Character, ReferenceImage
from characters.selectors import FaceCropFile, character_face_crop_files
from runpod_worker.contract import MAX_IMAGES
from training.models import TrainingRun

FACE_CROP = "face_crop"


@dataclass(frozen=True)
class DatasetSize:
    photos: int
    face_crops: int

    def __str__(self) -> str:
        photos = f"{self.photos} photo{'s' if self.photos != 1 else ''}"
        if not self.face_crops:
            return photos
        return f"{photos} + {self.face_crops} face crop{'s' if self.face_crops != 1 else ''}"


def photo_item(image: ReferenceImage) -> dict[str, Any]:
    return {
        # Content-addressed file names are unique per character, as the worker requires.
        "name": PurePosixPath(image.file.name or "").name,
        # What the owner calls the photo: messages about it use this name, not the stored one.
        "original_name": image.original_filename,
        "sha256": image.sha256,
        "storage_name": image.file.name,
        "caption": image.caption or None,
        "bytes": image.bytes,
    }


def face_crop_items(character: Character, *, photos: int) -> list[dict[str, Any]]:
    """The character's face crops as manifest items, as many as fit beside `photos` photos in one job
    (the contract's MAX_IMAGES): the photos come first, the crops only add to them."""
    return [_crop_item(crop) for crop in character_face_crop_files(character)[: max(0, MAX_IMAGES - photos)]]


def _crop_item(crop: FaceCropFile) -> dict[str, Any]:
    stem = PurePosixPath(crop.image.file.name or "").stem
    return {
        "kind": FACE_CROP,
        # Beside the photo's `<sha256>.<ext>`: a stem of its own, as captions are `<stem>.txt` on the worker.
        "name": f"{stem}-face.jpg",
        "original_name": f"{crop.image.original_filename} (face crop)",
        "sha256": crop.sha256,
        "storage_name": crop.name,
        "caption": crop.image.caption or None,
        "bytes": crop.bytes,
        "photo_sha256": crop.image.sha256,
    }


def is_face_crop(item: dict[str, Any]) -> bool:
    return item.get("kind") == FACE_CROP


def dataset_size(manifest: list[dict[str, Any]]) -> DatasetSize:
    """How many photos and face crops a frozen dataset holds."""
    crops = sum(1 for item in manifest if is_face_crop(item))
    return DatasetSize(photos=len(manifest) - crops, face_crops=crops)


def character_dataset_size(character: Character) -> DatasetSize:
    """What a start would freeze now: the character's photos and the crops that fit beside them."""
    photos = character.images.count()
    crops = len(character_face_crop_files(character))
    return DatasetSize(photos=photos, face_crops=min(crops, max(0, MAX_IMAGES - photos)))


def run_changed_face_crops(run: TrainingRun) -> int:
    """How many of the crops frozen in the run's manifest the character no longer has as they were (its
    face crops turned off, or a photo analysed again into a different crop)."""
    current = {crop.sha256 for crop in character_face_crop_files(run.character)}
    return sum(1 for item in run.manifest if is_face_crop(item) and item["sha256"] not in current)
