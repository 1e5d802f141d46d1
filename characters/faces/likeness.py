"""How much a generated image looks like the character, and whether it copies one of the training photos.

    references = [PhotoInput(...), ...]            # the run's photos with a face (characters.selectors)
    scored = sample_likeness(stream, references)    # SampleLikeness: face found, distance, likeness, copy
    summary = checkpoint_likeness([scored, ...])    # CheckpointLikeness: median likeness, faces, copies

The face of the sample is found and described by the same models as the reference photos (`photo`), and
compared with the mean of the references' descriptors. dlib's descriptors are "the same person" closer
than 0.6 (`dataset.SAME_PERSON`), so likeness is the distance mapped onto 0 to 1 with that threshold at one
half: 1 - distance / 1.2, at least 0. A sample with no face is a miss (likeness 0): the LoRA was trained
to draw the character, and a faceless picture does not show it.

A sample that is a near copy of one training photo — the same test that finds duplicate photos in a
dataset (`dataset.near_duplicates`: the same picture by perceptual hash, or the same face by its hash
and descriptor) — is flagged and counts as a miss as well: a LoRA that reproduces its training photos
has stopped learning the person and started memorising the pictures (WithAnyone, arXiv 2510.14975).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import IO

import numpy as np

from characters.faces.dataset import SAME_PERSON, PhotoInput, near_duplicates
from characters.faces.photo import analyse_photo

# The distance at which likeness reaches 0: twice the same-person threshold, so that threshold is 0.5.
ZERO_LIKENESS_DISTANCE = 2 * SAME_PERSON
SAME_PERSON_LIKENESS = 1 - SAME_PERSON / ZERO_LIKENESS_DISTANCE


@dataclass(frozen=True)
class SampleLikeness:
    face_found: bool
    distance: float | None  # from the references' mean descriptor; None without a face
    copy_of: str  # the name of the training photo the sample nearly copies; "" when none
    likeness: float  # 0-1; 0 for a miss (no face, or a near copy)


@dataclass(frozen=True)
class CheckpointLikeness:
    likeness: float | None  # median over the samples; None without any sample scored
    samples: int
    faces: int  # samples that showed a face
    copies: int  # samples that nearly copy a training photo

    @property
    def copying(self) -> bool:
        return copying(faces=self.faces, copies=self.copies)


def copying(*, faces: int, copies: int) -> bool:
    """Whether a checkpoint copies its training photos: at least half its samples with a face are copies."""
    return faces > 0 and copies * 2 >= faces


def likeness_of(distance: float) -> float:
    return max(0.0, 1.0 - distance / ZERO_LIKENESS_DISTANCE)


def sample_likeness(stream: IO[bytes], references: list[PhotoInput]) -> SampleLikeness:
    """Scores one generated image against the references (photos with a face: `embedding` set)."""
    faces = [reference for reference in references if reference.embedding is not None]
    if not faces:
        raise ValueError("Likeness needs at least one reference photo with a face.")
    # The training resolution only sizes the "face too small" flag, which a sample does not need.
    facts = analyse_photo(stream, training_resolution=1024, min_face_pixels=0)
    if facts.embedding is None:
        return SampleLikeness(face_found=False, distance=None, copy_of="", likeness=0.0)
    mean = np.mean(np.stack([face.embedding for face in faces]).astype(np.float64), axis=0)  # type: ignore[misc]
    distance = float(np.linalg.norm(facts.embedding.astype(np.float64) - mean))
    sample = PhotoInput(
        key="sample", name="sample", flags=(), embedding=facts.embedding, phash=facts.phash,
        face_phash=facts.face_phash, yaw=facts.yaw, background=(),
    )  # fmt: skip
    copied = next((reference.name for reference in references if near_duplicates(reference, sample)), "")
    return SampleLikeness(
        face_found=True,
        distance=round(distance, 4),
        copy_of=copied,
        likeness=0.0 if copied else round(likeness_of(distance), 4),
    )


def checkpoint_likeness(samples: list[SampleLikeness]) -> CheckpointLikeness:
    """A checkpoint's likeness: the median of its samples' (misses counted as 0)."""
    return CheckpointLikeness(
        likeness=round(statistics.median(sample.likeness for sample in samples), 4) if samples else None,
        samples=len(samples),
        faces=sum(1 for sample in samples if sample.face_found),
        copies=sum(1 for sample in samples if sample.copy_of),
    )
