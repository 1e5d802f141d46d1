"""Every sample is scored for likeness against the photos the run trained on, every checkpoint gets the
median of its samples, and once the run completes the best checkpoint that does not copy its photos becomes
the character's LoRA — on real photographs (tests/characters/photos.py): the character is person A in two
photos; a "generated" image is person A's third photo (alike), a rescaled training photo (a copy) or a
picture with no face (a miss)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from PIL import ImageOps

from characters.faces.likeness import SAME_PERSON_LIKENESS
from runpod_worker.simulated_ai_toolkit.samples import sample_image as simulated_sample
from tests.characters import photos
from tests.characters.identity import character_with
from tests.developer.api_helpers import client_for
from tests.training.artifact_helpers import (
    PARAMS,
    PROMPTS,
    artifact_run,
    report,
    sha,
    store,
    uploaded_checkpoint,
)
from tests.training.likeness_helpers import TRAINED_ON, alike, copy, person_character, trained_run
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


@pytest.fixture
def person(alice: Any) -> Any:
    return person_character(alice)


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


def test_the_api_returns_the_scores_and_who_chose_the_lora(person: Any, alice: Any) -> None:
    run = completed(trained_run(person, {100: photos.without_face(), 200: alike(), 300: copy()}))
    training_run_likeness_score(run_id=run.pk)
    api = client_for(alice)

    checkpoints = {c["step"]: c for c in api.get(f"/api/v1/runs/{run.pk}/checkpoints").json()}
    samples = api.get(f"/api/v1/runs/{run.pk}/samples").json()
    lora = api.get(f"/api/v1/runs/{run.pk}").json()["lora"]

    assert checkpoints[100]["likeness"] == {
        "score": 0.0,
        "samples": 3,
        "faces": 0,
        "copies": 0,
        "copying": False,
    }
    assert checkpoints[200]["likeness"]["score"] > 0.5 and checkpoints[200]["chosen"]
    assert checkpoints[300]["likeness"]["copying"] is True
    copies = [s["likeness"] for s in samples if s["step"] == 300]
    assert copies == [{"score": 0.0, "face_found": True, "copy_of": TRAINED_ON[0]}] * 3
    assert (lora["step"], lora["chosen_by"]) == (200, "likeness")


def test_the_run_page_shows_the_likeness_curve_and_why_its_checkpoint_was_chosen(
    person: Any, alice: Any
) -> None:
    run = completed(trained_run(person, {100: photos.without_face(), 200: alike(), 300: copy()}))
    page_url = reverse("training:run-detail", args=[run.pk])

    comparing = Client()
    comparing.force_login(alice)
    html = comparing.get(page_url).content.decode()
    assert "Comparing each checkpoint" in html and "js/run.js" in html  # watched until chosen
    assert comparing.get(reverse("training:run-progress", args=[run.pk])).json()["comparing"] is True

    training_run_likeness_score(run_id=run.pk)
    html = comparing.get(page_url).content.decode()

    assert "js/run.js" not in html
    choice = re.search(r'<p id="lora-choice"[^>]*>(.*?)</p>', html, re.S)
    assert choice is not None
    assert "The studio chose the checkpoint at step 200: its samples look most like" in choice.group(1)
    assert "samples copy the training photos rather than draw" in choice.group(1)
    chart = re.search(r'<svg[^>]*class="likeness-chart-wide".*?</svg>', html, re.S)
    assert chart is not None
    assert chart.group(0).count('class="checkpoint-mark') == 3
    assert chart.group(0).count('class="checkpoint-mark copying"') == 1
    assert chart.group(0).count('class="in-use"') == 1
    assert "same person" in chart.group(0)
    assert "Checkpoint at step 200 chosen for its likeness" in html
    assert html.count('class="sample-flag copy"') == 3 and html.count(">no face</span>") == 3
    assert "Likeness 0% · copies photos" in html


def test_the_simulated_trainers_samples_of_a_person_draw_a_rising_curve_and_a_chosen_checkpoint(
    alice: Any, tmp_path: Path
) -> None:
    """What `make demo` shows: the simulator's samples turn from noise into the character's photos, so
    likeness rises from no face to the same person, and its last steps copy the photos: a checkpoint
    before them is chosen."""
    named = {name: photos.photo(name) for name in photos.PERSON_A}
    named.update({f"mirrored-{name}": ImageOps.mirror(photo) for name, photo in list(named.items())})
    character = character_with(alice, named)
    sources = []
    for name, photo in sorted(named.items()):
        sources.append(tmp_path / name)
        photo.save(sources[-1], "JPEG", quality=92)
    manifest = [{"sha256": image.sha256} for image in character.images.all()]
    run = artifact_run(character, manifest=manifest, params={**PARAMS, "save_every": 50, "sample_every": 50})
    steps = list(range(50, 301, 50))
    samples = []
    for step in steps:
        for index in range(len(PROMPTS)):
            data = simulated_sample(sources, step, 300, index, seed=42)
            store(sample_file(run, step, index), data)
            samples.append({"step": step, "prompt_index": index, "filename": f"1__{step:09d}_{index}.jpg",
                            "bytes": len(data), "sha256": sha(data)})  # fmt: skip
    checkpoints = [uploaded_checkpoint(run, step) for step in steps[:-1]]
    artifact_report_record(run=run, report=report(checkpoints=checkpoints, samples=samples), delivery_id="d1")
    training_run_artifacts_verify(run_id=run.pk)
    run = completed(run)

    training_run_likeness_score(run_id=run.pk)

    curve = {c.step: (c.likeness, c.likeness_copying) for c in Checkpoint.objects.filter(run=run)}
    assert curve[50] == (0.0, False)  # noise: no face
    best_step = max((step for step in steps if not curve[step][1]), key=lambda step: curve[step][0] or 0)
    assert (curve[best_step][0] or 0) > SAME_PERSON_LIKENESS
    assert curve[300][1]  # the last step is the photos themselves
    run.refresh_from_db()
    assert (run.lora_step, run.lora_choice) == (best_step, TrainingRun.LoraChoice.LIKENESS)


def test_a_checkpoint_whose_samples_mostly_miss_is_not_chosen_over_the_final(person: Any) -> None:
    # Step 200: one sample of three shows the character, so its median is a miss; the final copies.
    run = trained_run(person, {300: copy()})
    data = {index: photos.jpeg(alike() if index == 0 else photos.without_face()) for index in range(3)}
    samples = []
    for index, content in data.items():
        store(sample_file(run, 200, index), content)
        samples.append({"step": 200, "prompt_index": index, "filename": f"1__{200:09d}_{index}.jpg",
                        "bytes": len(content), "sha256": sha(content)})  # fmt: skip
    artifact_report_record(run=run, report=report(samples=samples), delivery_id="d1")
    training_run_artifacts_verify(run_id=run.pk)
    run = completed(run)

    training_run_likeness_score(run_id=run.pk)

    run.refresh_from_db()
    assert (checkpoint(run, 200).likeness, checkpoint(run, 200).likeness_faces) == (0.0, 1)
    assert (run.lora_step, run.lora_choice) == (None, TrainingRun.LoraChoice.FINAL)
    assert run.events.get(detail__has_key="likeness_kept").detail["likeness_kept"] == {"reason": "none_alike"}
