"""The face analysis on real photographs (tests/characters/photos.py): one photo at a time, then the set."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from characters.faces import engine
from characters.faces.dataset import SAME_PERSON, PhotoInput, assess_dataset
from characters.faces.flags import DatasetWarning, Flag
from characters.faces.photo import PhotoFacts, analyse_photo, face_crop
from tests.characters import photos

RESOLUTION = 1024
MIN_FACE = 100


def analyse(image: Image.Image) -> PhotoFacts:
    return analyse_photo(
        io.BytesIO(photos.jpeg(image)), training_resolution=RESOLUTION, min_face_pixels=MIN_FACE
    )


def as_input(name: str, facts: PhotoFacts) -> PhotoInput:
    return PhotoInput(
        key=name,
        name=name,
        flags=tuple(flag.value for flag in facts.flags),
        embedding=facts.embedding,
        phash=facts.phash,
        face_phash=facts.face_phash,
        yaw=facts.yaw,
        background=tuple(facts.background),
        face_pixels=facts.face_pixels,
    )


def assess(named: dict[str, Image.Image], *, is_person: bool = True) -> dict[str, list[str]]:
    inputs = [as_input(name, analyse(image)) for name, image in named.items()]
    assessment = assess_dataset(inputs, is_person=is_person, minimum_good=1)
    return {key: [flag["code"] for flag in verdict.flags] for key, verdict in assessment.photos.items()}


# --- One photo ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", [*photos.PERSON_A, photos.PERSON_B])
def test_a_clear_portrait_has_one_face_and_no_flag(name: str) -> None:
    facts = analyse(photos.photo(name))

    assert len(facts.faces) == 1
    assert facts.flags == []
    assert facts.embedding is not None and facts.embedding.shape == (128,)


def test_the_face_box_is_given_as_fractions_around_the_face() -> None:
    facts = analyse(photos.photo(photos.PERSON_A[0]))  # a head-and-shoulders portrait, face top centre

    left, top, right, bottom = facts.faces[0]["box"]
    assert 0.3 < (left + right) / 2 < 0.7
    assert 0.1 < (top + bottom) / 2 < 0.45
    assert 0.15 < right - left < 0.5


def test_a_blank_image_is_flagged_blank() -> None:
    facts = analyse(photos.blank())

    assert facts.flags == [Flag.BLANK]
    assert facts.faces == [] and facts.embedding is None


def test_a_photo_without_a_face_is_flagged_no_face() -> None:
    facts = analyse(photos.without_face())

    assert facts.flags == [Flag.NO_FACE]
    assert facts.embedding is None


def test_a_photo_of_two_people_is_flagged_as_more_than_one_face() -> None:
    facts = analyse(photos.two_people())

    assert len(facts.faces) == 2
    assert Flag.MULTIPLE_FACES in facts.flags


def test_a_blurred_copy_is_flagged_blurry_and_the_original_is_not() -> None:
    sharp = analyse(photos.photo(photos.PERSON_A[0]))
    soft = analyse(photos.blurred(photos.PERSON_A[0]))

    assert Flag.BLURRY not in sharp.flags
    assert Flag.BLURRY in soft.flags
    assert soft.blur is not None and sharp.blur is not None and soft.blur < sharp.blur / 5


def test_a_face_too_small_for_the_training_resolution_is_flagged() -> None:
    facts = analyse(photos.small_face())

    assert len(facts.faces) == 1
    assert facts.face_pixels is not None and facts.face_pixels < MIN_FACE
    assert facts.flags == [Flag.FACE_TOO_SMALL]


def test_a_dark_copy_is_flagged_too_dark() -> None:
    dark = photos.photo(photos.PERSON_B).point(lambda value: value // 4)

    assert Flag.TOO_DARK in analyse(dark).flags


def test_the_face_crop_is_a_square_around_the_face_at_the_training_resolution() -> None:
    source = photos.photo_bytes(photos.PERSON_A[2])  # 1434 x 2333, the face small in a large room
    facts = analyse_photo(io.BytesIO(source), training_resolution=RESOLUTION, min_face_pixels=MIN_FACE)

    crop = face_crop(io.BytesIO(source), facts, resolution=RESOLUTION)

    assert crop is not None and crop.size[0] == crop.size[1] <= RESOLUTION
    assert crop.size[0] >= 512
    again = analyse(crop)
    assert len(again.faces) == 1
    assert again.face_pixels is not None and facts.face_pixels is not None
    assert again.face_pixels > facts.face_pixels  # the face fills more of the training image


def test_no_face_crop_is_made_when_there_is_no_face() -> None:
    source = photos.jpeg(photos.without_face())
    facts = analyse_photo(io.BytesIO(source), training_resolution=RESOLUTION, min_face_pixels=MIN_FACE)

    assert face_crop(io.BytesIO(source), facts, resolution=RESOLUTION) is None


# --- The set ------------------------------------------------------------------------------


def test_the_same_persons_photos_cluster_within_the_same_person_distance() -> None:
    embeddings = [analyse(photos.photo(name)).embedding for name in photos.PERSON_A]
    distances = [float(np.linalg.norm(a - b)) for i, a in enumerate(embeddings) for b in embeddings[i + 1 :]]  # type: ignore[operator]

    assert max(distances) < SAME_PERSON
    assert assess({name: photos.photo(name) for name in photos.PERSON_A}) == {
        name: [] for name in photos.PERSON_A
    }


def test_a_second_person_in_the_set_is_named_as_maybe_someone_else() -> None:
    named = {name: photos.photo(name) for name in photos.PERSON_A} | {
        photos.PERSON_B: photos.photo(photos.PERSON_B)
    }

    flags = assess(named)

    assert flags[photos.PERSON_B] == [Flag.OTHER_PERSON]
    assert all(flags[name] == [] for name in photos.PERSON_A)


def test_the_report_warns_of_several_people_naming_the_photo() -> None:
    named = {name: photos.photo(name) for name in photos.PERSON_A} | {
        photos.PERSON_B: photos.photo(photos.PERSON_B)
    }
    inputs = [as_input(name, analyse(image)) for name, image in named.items()]

    assessment = assess_dataset(inputs, is_person=True, minimum_good=1)

    warning = next(w for w in assessment.warnings if w["code"] == DatasetWarning.SEVERAL_PEOPLE)
    assert photos.PERSON_B in warning["message"]
    assert assessment.medoid in photos.PERSON_A


def test_two_faces_of_two_people_only_warn_without_naming_either() -> None:
    named = {
        photos.PERSON_A[0]: photos.photo(photos.PERSON_A[0]),
        photos.PERSON_B: photos.photo(photos.PERSON_B),
    }
    inputs = [as_input(name, analyse(image)) for name, image in named.items()]

    assessment = assess_dataset(inputs, is_person=True, minimum_good=1)

    assert all(verdict.flags == [] for verdict in assessment.photos.values())
    assert [w["code"] for w in assessment.warnings] == [DatasetWarning.SEVERAL_PEOPLE]


def test_a_rescaled_copy_is_found_as_a_near_duplicate_of_the_original() -> None:
    original = photos.PERSON_A[0]

    flags = assess({original: photos.photo(original), "copy.jpg": photos.rescaled(original)})

    assert flags == {original: [], "copy.jpg": [Flag.NEAR_DUPLICATE]}


def test_a_crop_of_the_same_photo_is_found_as_a_near_duplicate() -> None:
    original = photos.PERSON_A[0]

    flags = assess(
        {original: photos.photo(original), photos.PERSON_A_CROP: photos.photo(photos.PERSON_A_CROP)}
    )

    assert flags[photos.PERSON_A_CROP] == [Flag.NEAR_DUPLICATE]


def test_distinct_photos_of_one_person_are_not_near_duplicates() -> None:
    flags = assess({name: photos.photo(name) for name in photos.PERSON_A})

    assert not any(Flag.NEAR_DUPLICATE in codes for codes in flags.values())


def test_a_character_that_is_not_a_person_gets_no_face_flags() -> None:
    named = {
        "room.jpg": photos.without_face(),
        photos.PERSON_B: photos.photo(photos.PERSON_B),
        "white.jpg": photos.blank(),
    }

    flags = assess(named, is_person=False)

    assert flags == {"room.jpg": [], photos.PERSON_B: [], "white.jpg": [Flag.BLANK]}


def test_most_photos_without_a_face_raise_the_mostly_no_face_warning() -> None:
    named = {
        "room.jpg": photos.without_face(),
        "white.jpg": photos.blank(),
        photos.PERSON_B: photos.photo(photos.PERSON_B),
    }
    inputs = [as_input(name, analyse(image)) for name, image in named.items()]

    assessment = assess_dataset(inputs, is_person=True, minimum_good=1)

    assert DatasetWarning.MOSTLY_NO_FACE in [w["code"] for w in assessment.warnings]
    assert assessment.with_face == 1


def test_a_clean_set_scores_higher_than_a_flawed_one() -> None:
    clean = [as_input(name, analyse(photos.photo(name))) for name in photos.PERSON_A]
    flawed = [
        *clean[:1],
        as_input("white.jpg", analyse(photos.blank())),
        as_input("room.jpg", analyse(photos.without_face())),
    ]

    good = assess_dataset(clean, is_person=True, minimum_good=1).score
    poor = assess_dataset(flawed, is_person=True, minimum_good=1).score

    assert 0 <= poor < good <= 100


# --- The models ---------------------------------------------------------------------------


def test_the_models_are_loaded_once_per_process() -> None:
    assert engine.face_models() is engine.face_models()


def test_a_model_file_other_than_the_pinned_one_is_refused(tmp_path: Path) -> None:
    impostor = tmp_path / engine.EMBEDDING_FILE
    impostor.write_bytes(b"not the ResNet")

    with pytest.raises(engine.FaceModelsMissing, match="not the pinned model"):
        engine._verify(impostor, engine.MODEL_SHA256[engine.EMBEDDING_FILE])
