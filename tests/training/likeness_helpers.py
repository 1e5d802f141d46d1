"""A person character trained on two real photos of person A (tests/characters/photos.py), and runs whose
samples are real pictures: person A's third photo (alike), a rescaled training photo (a copy) or a picture
with no face (a miss)."""

from __future__ import annotations

from typing import Any

from PIL import Image

from tests.characters import photos
from tests.characters.identity import character_with
from tests.training.artifact_helpers import PROMPTS, artifact_run, report, sha, store, uploaded_checkpoint
from training.models import TrainingRun
from training.run_files import sample_file
from training.services import artifact_report_record, training_run_artifacts_verify

TRAINED_ON = photos.PERSON_A[1:]


def person_character(owner: Any) -> Any:
    """A person character of `owner` with the two photos of person A, analysed."""
    return character_with(owner, {name: photos.photo(name) for name in TRAINED_ON})


def alike() -> Image.Image:
    return photos.rescaled(photos.PERSON_A[0], 0.4)


def copy() -> Image.Image:
    return photos.rescaled(TRAINED_ON[0], 0.5)


def trained_run(character: Any, pictures: dict[int, Image.Image]) -> TrainingRun:
    """A run on the character's photos with a checkpoint at 100 and 200 of 300 steps and, at each step in
    `pictures`, that picture as every prompt's sample; verified as the worker's reports are."""
    manifest = [{"sha256": image.sha256, "name": image.original_filename} for image in character.images.all()]
    run = artifact_run(character, manifest=manifest)
    samples = []
    for step, picture in pictures.items():
        data = photos.jpeg(picture)
        for index in range(len(PROMPTS)):
            store(sample_file(run, step, index), data)
            samples.append({"step": step, "prompt_index": index, "filename": f"1__{step:09d}_{index}.jpg",
                            "bytes": len(data), "sha256": sha(data)})  # fmt: skip
    checkpoints = [uploaded_checkpoint(run, step) for step in (100, 200)]
    artifact_report_record(run=run, report=report(checkpoints=checkpoints, samples=samples), delivery_id="d1")
    training_run_artifacts_verify(run_id=run.pk)
    return run
