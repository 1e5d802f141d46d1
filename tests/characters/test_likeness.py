"""Likeness of generated images on real photographs: the same person scores above the "same person" line,
another person below it, a picture with no face and a near copy of a training photo are misses."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from characters.faces.dataset import PhotoInput
from characters.faces.likeness import (
    SAME_PERSON_LIKENESS,
    CheckpointLikeness,
    SampleLikeness,
    checkpoint_likeness,
    sample_likeness,
)
from tests.characters import photos
from tests.characters.test_faces import analyse, as_input

REFERENCES = photos.PERSON_A[1:]  # two photos of person A; the third is kept back as a "generated" one


@pytest.fixture(scope="module")
def references() -> list[PhotoInput]:
    return [as_input(name, analyse(photos.photo(name))) for name in REFERENCES]


def score(image: Image.Image, references: list[PhotoInput]) -> SampleLikeness:
    return sample_likeness(io.BytesIO(photos.jpeg(image)), references)


def test_an_unseen_photo_of_the_same_person_is_alike(references: list[PhotoInput]) -> None:
    # A generated image is small: AI Toolkit's samples are 1024 px or less, the simulator's 256 px.
    scored = score(photos.rescaled(photos.PERSON_A[0], 0.4), references)
    assert scored.face_found and not scored.copy_of
    assert scored.likeness > SAME_PERSON_LIKENESS
    assert scored.distance is not None and scored.distance < 0.6


def test_another_person_is_not_alike(references: list[PhotoInput]) -> None:
    scored = score(photos.photo(photos.PERSON_B), references)
    assert scored.face_found
    assert scored.likeness < SAME_PERSON_LIKENESS


def test_a_picture_without_a_face_is_a_miss(references: list[PhotoInput]) -> None:
    scored = score(photos.without_face(), references)
    assert scored == SampleLikeness(face_found=False, distance=None, copy_of="", likeness=0.0)


def test_a_near_copy_of_a_training_photo_is_flagged_and_a_miss(references: list[PhotoInput]) -> None:
    scored = score(photos.rescaled(REFERENCES[0], 0.5), references)
    assert scored.face_found
    assert scored.copy_of == REFERENCES[0]
    assert scored.likeness == 0.0


def test_references_without_a_face_cannot_score() -> None:
    faceless = as_input("blank.jpg", analyse(photos.blank()))
    with pytest.raises(ValueError, match="reference photo with a face"):
        score(photos.photo(photos.PERSON_A[0]), [faceless])


def test_a_checkpoint_is_the_median_of_its_samples_misses_included() -> None:
    alike = SampleLikeness(face_found=True, distance=0.3, copy_of="", likeness=0.75)
    other = SampleLikeness(face_found=True, distance=0.9, copy_of="", likeness=0.25)
    none = SampleLikeness(face_found=False, distance=None, copy_of="", likeness=0.0)
    copy = SampleLikeness(face_found=True, distance=0.1, copy_of="a.jpg", likeness=0.0)
    summary = checkpoint_likeness([alike, alike, other, none])
    assert summary == CheckpointLikeness(likeness=0.5, samples=4, faces=3, copies=0)
    assert not summary.copying
    assert checkpoint_likeness([alike, copy, copy, none]).copying  # two of three faces are copies
    assert checkpoint_likeness([]) == CheckpointLikeness(likeness=None, samples=0, faces=0, copies=0)
