"""Judge a set of photos together: one identity, near-duplicates, variety of poses and backgrounds.

    assessment = assess_dataset(photos, is_person=True, minimum_good=10)

Identity: the main faces' embeddings are linked when closer than SAME_PERSON (dlib's threshold); the
largest linked group is the character, its medoid (the face with the smallest total distance to the
rest of the group) stands for it, and any face farther than SAME_PERSON from the medoid "may be someone
else". With two faces only, or two groups of equal size, nobody can say which is the character: the
report then warns without naming anyone.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from characters.faces import measures
from characters.faces.flags import DatasetWarning, Flag, flag_message, warning_message

SAME_PERSON = 0.6  # dlib: "two face descriptors closer than 0.6 are the same person" (99.38 % on LFW)
# Whole-photo pHash within 10 of 64 bits: the same picture rescaled, recompressed or lightly edited.
DUPLICATE_HASH_BITS = 10
# The same face crop (pHash of the aligned face) *and* nearly the same descriptor: one photo cropped
# twice. Different photos of one person stay above 0.3 in dlib's space (docs/IDENTITY.md).
DUPLICATE_FACE_HASH_BITS = 12
DUPLICATE_FACE_DISTANCE = 0.3
FRONTAL_YAW = 0.12  # |yaw| under this faces the camera (measures.yaw)
ONE_POSE_SHARE = 0.8
SAME_BACKGROUND_DISTANCE = 14.0  # mean colour difference (0-255) of the uncovered grid cells
SAME_BACKGROUND_SHARE = 0.6
MIN_PHOTOS_FOR_VARIETY = 4
FACE_FLAGS = frozenset(
    {Flag.NO_FACE, Flag.MULTIPLE_FACES, Flag.FACE_TOO_SMALL, Flag.BLURRY, Flag.TOO_DARK, Flag.TOO_BRIGHT}
)


@dataclass(frozen=True)
class PhotoInput:
    """One photo's stored measurements, as the report needs them."""

    key: str
    name: str
    flags: tuple[str, ...]
    embedding: np.ndarray | None
    phash: str
    face_phash: str
    yaw: float | None
    background: tuple[float, ...]
    face_pixels: int | None = None


@dataclass
class PhotoVerdict:
    flags: list[dict[str, str]] = field(default_factory=list)  # {"code", "message"}
    distance: float | None = None  # from the medoid of the set's identity

    @property
    def ok(self) -> bool:
        return not self.flags


@dataclass
class DatasetAssessment:
    photos: dict[str, PhotoVerdict]
    warnings: list[dict[str, str]]
    score: int
    medoid: str | None
    with_face: int
    poses: dict[str, int]

    @property
    def usable(self) -> int:
        return sum(1 for verdict in self.photos.values() if verdict.ok)


def assess_dataset(photos: list[PhotoInput], *, is_person: bool, minimum_good: int) -> DatasetAssessment:
    verdicts = {photo.key: PhotoVerdict() for photo in photos}
    for photo in photos:
        for code in photo.flags:
            if is_person or Flag(code) not in FACE_FLAGS:
                verdicts[photo.key].flags.append(_flag(code, face_pixels=photo.face_pixels))
    _mark_duplicates(photos, verdicts)
    faces = [photo for photo in photos if photo.embedding is not None]
    medoid, others_unnamed = _mark_identity(faces, verdicts) if is_person else (None, False)
    poses = _poses(faces)
    warnings = _warnings(photos, verdicts, poses, is_person=is_person, unnamed=others_unnamed)
    usable = sum(1 for verdict in verdicts.values() if verdict.ok)
    if usable < minimum_good and photos:
        warnings.append(
            _warning(DatasetWarning.FEW_USABLE, usable=usable, total=len(photos), minimum=minimum_good)
        )
    return DatasetAssessment(
        photos=verdicts,
        warnings=warnings,
        score=_score(photos, usable, poses, is_person=is_person),
        medoid=medoid,
        with_face=len(faces),
        poses=dict(poses),
    )


def near_duplicates(first: PhotoInput, second: PhotoInput) -> bool:
    if not (first.phash and second.phash):
        return False  # an unreadable photo has no hash to compare
    if measures.hash_distance(first.phash, second.phash) <= DUPLICATE_HASH_BITS:
        return True
    if first.embedding is None or second.embedding is None or not (first.face_phash and second.face_phash):
        return False
    same_face = measures.hash_distance(first.face_phash, second.face_phash) <= DUPLICATE_FACE_HASH_BITS
    return same_face and _distance(first.embedding, second.embedding) < DUPLICATE_FACE_DISTANCE


def _mark_duplicates(photos: list[PhotoInput], verdicts: dict[str, PhotoVerdict]) -> None:
    """The later of two near-identical photos is flagged, naming the earlier one it repeats."""
    for index, photo in enumerate(photos):
        earlier = next((other for other in photos[:index] if near_duplicates(other, photo)), None)
        if earlier is not None:
            verdicts[photo.key].flags.append(_flag(Flag.NEAR_DUPLICATE, other=earlier.name))


def _mark_identity(faces: list[PhotoInput], verdicts: dict[str, PhotoVerdict]) -> tuple[str | None, bool]:
    """Flag faces far from the main group's medoid; returns the medoid's key and whether others exist
    that could not be named (no group is clearly the character)."""
    if not faces:
        return None, False
    distances = _pairwise([face.embedding for face in faces])  # type: ignore[misc]
    groups = _linked_groups(distances)
    groups.sort(key=len, reverse=True)
    main = groups[0]
    if len(groups) > 1 and (len(main) < 2 or len(groups[1]) == len(main)):
        return None, True
    medoid = min(main, key=lambda i: float(distances[i, main].sum()))
    for index, face in enumerate(faces):
        distance = float(distances[index, medoid])
        verdicts[face.key].distance = round(distance, 3)
        if distance > SAME_PERSON:
            verdicts[face.key].flags.append(
                _flag(Flag.OTHER_PERSON, distance=f"{distance:.2f}", threshold=f"{SAME_PERSON:.1f}")
            )
    return faces[medoid].key, False


def _linked_groups(distances: np.ndarray) -> list[list[int]]:
    """Connected components of the graph linking faces closer than SAME_PERSON."""
    count = len(distances)
    group_of = list(range(count))

    def root(i: int) -> int:
        while group_of[i] != i:
            group_of[i] = group_of[group_of[i]]
            i = group_of[i]
        return i

    for i in range(count):
        for j in range(i + 1, count):
            if distances[i, j] < SAME_PERSON:
                group_of[root(i)] = root(j)
    groups: dict[int, list[int]] = {}
    for i in range(count):
        groups.setdefault(root(i), []).append(i)
    return list(groups.values())


def _poses(faces: list[PhotoInput]) -> Counter[str]:
    poses: Counter[str] = Counter()
    for face in faces:
        if face.yaw is None:
            continue
        if abs(face.yaw) < FRONTAL_YAW:
            poses["facing the camera"] += 1
        else:
            poses["turned right" if face.yaw > 0 else "turned left"] += 1
    return poses


def _warnings(
    photos: list[PhotoInput],
    verdicts: dict[str, PhotoVerdict],
    poses: Counter[str],
    *,
    is_person: bool,
    unnamed: bool,
) -> list[dict[str, str]]:
    warnings: list[dict[str, str]] = []
    without = sum(1 for photo in photos if Flag.NO_FACE in photo.flags or Flag.BLANK in photo.flags)
    if is_person and photos and without * 2 > len(photos):
        warnings.append(_warning(DatasetWarning.MOSTLY_NO_FACE, without=without, total=len(photos)))
    others = [photo.name for photo in photos if _has(verdicts[photo.key], Flag.OTHER_PERSON)]
    if is_person and (others or unnamed):
        named = ", ".join(others) if others else "some of them"
        warnings.append(_warning(DatasetWarning.SEVERAL_PEOPLE, others=named))
    total_posed = sum(poses.values())
    if is_person and total_posed >= MIN_PHOTOS_FOR_VARIETY:
        pose, count = poses.most_common(1)[0]
        if count >= ONE_POSE_SHARE * total_posed:
            warnings.append(_warning(DatasetWarning.FEW_POSES, pose=pose))
    if _same_background_share(photos) >= SAME_BACKGROUND_SHARE:
        warnings.append(_warning(DatasetWarning.SAME_BACKGROUND))
    return warnings


def _same_background_share(photos: list[PhotoInput]) -> float:
    signatures = [list(photo.background) for photo in photos if photo.background]
    if len(signatures) < MIN_PHOTOS_FOR_VARIETY:
        return 0.0
    same = compared = 0
    for i, first in enumerate(signatures):
        for second in signatures[i + 1 :]:
            distance = measures.background_distance(first, second)
            if distance is None:
                continue
            compared += 1
            same += distance < SAME_BACKGROUND_DISTANCE
    return same / compared if compared else 0.0


def _score(photos: list[PhotoInput], usable: int, poses: Counter[str], *, is_person: bool) -> int:
    """0-100: 70 for the share of photos without a problem, 15 for poses (three kinds seen = 15), 15 for
    backgrounds (none shared = 15). A plain guide for the owner, not a prediction of the LoRA's quality."""
    if not photos:
        return 0
    quality = usable / len(photos)
    pose_variety = min(len(poses), 3) / 3 if is_person else 1.0
    background_variety = 1.0 - _same_background_share(photos)
    return round(70 * quality + 15 * pose_variety + 15 * background_variety)


def _pairwise(embeddings: list[np.ndarray]) -> np.ndarray:
    matrix = np.stack(embeddings).astype(np.float64)
    return np.linalg.norm(matrix[:, None, :] - matrix[None, :, :], axis=-1)


def _distance(first: np.ndarray, second: np.ndarray) -> float:
    return float(np.linalg.norm(first.astype(np.float64) - second.astype(np.float64)))


def _has(verdict: PhotoVerdict, flag: Flag) -> bool:
    return any(item["code"] == flag for item in verdict.flags)


def _flag(code: Flag | str, **details: object) -> dict[str, str]:
    return {"code": str(Flag(code)), "message": flag_message(code, **details)}


def _warning(code: DatasetWarning, **details: object) -> dict[str, str]:
    return {"code": str(code), "message": warning_message(code, **details)}
