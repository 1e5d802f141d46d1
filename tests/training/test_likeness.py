"""Every sample is scored for likeness against the photos the run trained on, every checkpoint gets the
median of its samples, and once the run completes the best checkpoint that does not copy its photos becomes
the character's LoRA — on real photographs (tests/characters/photos.py): the character is person A in two
photos; a "generated" image is person A's third photo (alike), a rescaled training photo (a copy) or a
picture with no face (a miss)."""

from __future__ import annotations

from typing import Any

import pytest
from django.utils import timezone
from PIL import Image

from tests.characters import photos
from tests.characters.identity import character_with
from tests.training.artifact_helpers import PROMPTS, artifact_run, report, sha, store, uploaded_checkpoint
from tests.training.test_checkpoint_choice import completed
from training.models import Checkpoint, Sample, TrainingEvent, TrainingRun
from training.run_files import sample_file
from training.selectors import character_current_lora
from training.services import (
    artifact_report_record,
    likeness_runs_overdue,
    training_run_artifacts_verify,
    training_run_checkpoints_prune,
    training_run_likeness_score,
    training_run_lora_choose,
)

pytestmark = pytest.mark.django_db

TRAINED_ON = photos.PERSON_A[1:]


@pytest.fixture
def person(alice: Any, settings: Any) -> Any:
    settings.TRAINING_MIN_IMAGES = 2
    return character_with(alice, {name: photos.photo(name) for name in TRAINED_ON})


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


def checkpoint(run: TrainingRun, step: int) -> Checkpoint:
    return Checkpoint.objects.get(run=run, step=step)


def test_each_sample_and_checkpoint_is_scored_while_the_run_trains(person: Any) -> None:
    run = trained_run(person, {100: photos.without_face(), 200: alike()})

    assert training_run_likeness_score(run_id=run.pk) == 6

    at_100 = Sample.objects.filter(run=run, step=100)
    assert {(s.face_found, s.likeness, s.copy_of) for s in at_100} == {(False, 0.0, "")}
    at_200 = Sample.objects.filter(run=run, step=200)
    assert all(s.face_found and s.likeness > 0.5 and not s.copy_of for s in at_200)
    first, second = checkpoint(run, 100), checkpoint(run, 200)
    assert (first.likeness, first.likeness_faces, first.likeness_samples) == (0.0, 0, 3)
    assert second.likeness is not None and second.likeness > 0.5
    assert (second.likeness_faces, second.likeness_copies) == (3, 0)
    assert training_run_likeness_score(run_id=run.pk) == 0  # idempotent: each sample is scored once
    assert TrainingRun.objects.get(pk=run.pk).likeness_settled_at is None  # still training: nothing chosen


def test_the_best_checkpoint_that_does_not_copy_becomes_the_lora(person: Any) -> None:
    run = trained_run(person, {100: photos.without_face(), 200: alike(), 300: copy()})
    run = completed(run)

    training_run_likeness_score(run_id=run.pk)

    run.refresh_from_db()
    final = Checkpoint.objects.get(run=run, final=True)
    assert (final.likeness, final.likeness_copies, final.likeness_copying) == (0.0, 3, True)
    assert {s.copy_of for s in Sample.objects.filter(run=run, step=300)} == {TRAINED_ON[0]}
    assert (run.lora_step, run.lora_choice) == (200, TrainingRun.LoraChoice.LIKENESS)
    assert run.lora_sha256 == checkpoint(run, 200).sha256
    assert run.likeness_settled_at is not None
    assert character_current_lora(person) == run
    event = run.events.filter(detail__has_key="lora_chosen").get()
    assert event.source == TrainingEvent.Source.SYSTEM
    why = event.detail["lora_chosen"]
    assert (why["by"], why["likeness"]["step"]) == ("likeness", 200)
    assert why["likeness"]["copying_skipped"] == [300]


def test_the_final_lora_stays_when_it_is_the_most_alike(person: Any) -> None:
    run = completed(trained_run(person, {100: photos.without_face(), 300: alike()}))

    training_run_likeness_score(run_id=run.pk)

    run.refresh_from_db()
    assert (run.lora_step, run.lora_choice) == (None, TrainingRun.LoraChoice.FINAL)
    assert run.likeness_settled_at is not None
    kept = run.events.get(detail__has_key="likeness_kept").detail["likeness_kept"]
    assert (kept["reason"], kept["step"], kept["final"]) == ("final_best", 300, True)


def test_samples_that_never_show_a_face_keep_the_final_lora(person: Any) -> None:
    run = completed(trained_run(person, {100: photos.without_face(), 300: photos.blank()}))

    training_run_likeness_score(run_id=run.pk)

    run.refresh_from_db()
    assert Checkpoint.objects.get(run=run, final=True).likeness_faces == 0
    assert (run.lora_step, run.lora_choice) == (None, TrainingRun.LoraChoice.FINAL)
    kept = run.events.get(detail__has_key="likeness_kept").detail["likeness_kept"]
    assert kept == {"reason": "no_faces"}


def test_the_owners_choice_stands(person: Any) -> None:
    run = completed(trained_run(person, {100: photos.without_face(), 200: alike(), 300: copy()}))
    training_run_lora_choose(run=run, step=100, source="user")

    training_run_likeness_score(run_id=run.pk)

    run.refresh_from_db()
    assert (run.lora_step, run.lora_choice) == (100, TrainingRun.LoraChoice.OWNER)
    assert run.likeness_settled_at is not None
    assert not run.events.filter(detail__has_key="likeness_kept").exists()  # the owner's own event says it


def test_a_character_not_a_person_is_not_scored(person: Any) -> None:
    person.is_person = False
    person.save()
    run = completed(trained_run(person, {200: alike()}))

    assert training_run_likeness_score(run_id=run.pk) == 0

    assert {s.likeness for s in Sample.objects.filter(run=run)} == {None}
    run.refresh_from_db()
    assert run.lora_choice == TrainingRun.LoraChoice.FINAL and run.likeness_settled_at is not None


def test_pruning_waits_for_the_choice_and_keeps_the_chosen_checkpoint(person: Any, settings: Any) -> None:
    settings.TRAINING_CHECKPOINTS_KEPT = 0
    run = completed(trained_run(person, {100: alike(), 200: photos.without_face(), 300: copy()}))

    assert training_run_checkpoints_prune(run_id=run.pk) == 0  # not compared yet: the best may be early
    training_run_likeness_score(run_id=run.pk)
    assert training_run_checkpoints_prune(run_id=run.pk) == 1

    assert checkpoint(run, 100).pruned_at is None  # chosen
    assert checkpoint(run, 200).pruned_at is not None


def test_a_pass_stops_at_its_budget_and_the_sweep_finds_what_is_left(person: Any) -> None:
    run = trained_run(person, {200: alike()})

    assert training_run_likeness_score(run_id=run.pk, budget_seconds=-1) == 0

    later = timezone.now() + timezone.timedelta(minutes=5)
    assert likeness_runs_overdue(now=later) == [run.pk]
    training_run_likeness_score(run_id=run.pk)
    assert likeness_runs_overdue(now=later) == []
