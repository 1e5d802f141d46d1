"""Erasing a character erases what its training made: its runs' samples, checkpoints, LoRAs, loss series and
every stored file of them, a run still training included (stopped first), on local files and on the S3 test
server. The money the runs cost stays counted: spend is history, and no delete lowers it."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.core.files.storage import default_storage
from django.utils import timezone

from characters import services as character_services
from characters.models import Character
from runpod_worker.contract import JobOutput
from tests.characters import photos
from tests.characters.identity import character_with
from tests.characters.test_erase import stored_files, traces_in_database
from tests.training.artifact_helpers import (
    artifact_run,
    jpeg,
    report,
    store,
    uploaded_checkpoint,
    uploaded_sample,
)
from tests.training.conftest import HOLDER, FakeProvider, lora_bytes, store_lora
from training.dataset import is_face_crop
from training.models import Checkpoint, DeletedRunSpend, LossSeries, Sample, StrayJob, TrainingRun
from training.run_files import sample_file
from training.runpod import RunPodUnavailable
from training.selectors import user_spend_this_month
from training.services import (
    artifact_report_record,
    runpod_job_cancel,
    training_run_artifacts_verify,
    training_run_start,
    training_run_worker_finished,
)
from training.tasks import sweep_training_runs

pytestmark = pytest.mark.django_db

COST = Decimal("0.4200")


@pytest.fixture
def anna(alice: Any, settings: Any) -> Character:
    settings.TRAINING_MIN_IMAGES = 3
    return character_with(alice, {name: photos.photo(name) for name in photos.PERSON_A})


def frozen_dataset(character: Character) -> list[dict[str, Any]]:
    """The photos and face crops a start freezes (the started run itself is not kept)."""
    run = training_run_start(character=character, requested_by=character.owner, source="user")
    TrainingRun.objects.filter(pk=run.pk).delete()
    return run.manifest


def with_artifacts(run: TrainingRun, steps: tuple[int, ...]) -> TrainingRun:
    """Checkpoints and samples uploaded at each of `steps`, a loss series, all recorded and verified."""
    fields = {
        "checkpoints": [uploaded_checkpoint(run, step) for step in steps],
        "samples": [uploaded_sample(run, step, index) for step in steps for index in (0, 1)],
        "loss_series": {"loss": [[1, 0.5], [steps[-1], 0.2]], "val_loss": []},
    }
    artifact_report_record(run=run, report=report(**fields), delivery_id=HOLDER)
    training_run_artifacts_verify(run_id=run.pk)
    return run


def trained_run(character: Character, manifest: list[dict[str, Any]]) -> TrainingRun:
    """A completed run that kept its LoRA, with checkpoints, samples and loss, and cost $0.42."""
    now = timezone.now()
    run = artifact_run(
        character, manifest=manifest, worker_delivery_id=HOLDER, started_at=now, worker_seen_at=now
    )
    with_artifacts(run, (100, 200))
    output = JobOutput.from_dict(store_lora(run, lora_bytes()))
    training_run_worker_finished(run=run, job_id="job-1", delivery_id=HOLDER, output=output)
    TrainingRun.objects.filter(pk=run.pk).update(cost_usd=COST, cost_state="settled")
    run.refresh_from_db()
    assert run.status == "completed" and run.lora_name
    return run


def still_training(character: Character, manifest: list[dict[str, Any]]) -> TrainingRun:
    run = artifact_run(character, manifest=manifest, runpod_job_id="job-2", started_at=timezone.now())
    return with_artifacts(run, (100,))


def needles_of(character: Character, runs: list[TrainingRun]) -> list[str]:
    """Everything that names the character, its photos, its crops and what its runs made."""
    needles = [str(character.pk), character.pk.hex]
    for image in character.images.all():
        needles += [str(image.pk), image.pk.hex, image.sha256]
    for run in runs:
        needles += [item["sha256"] for item in run.manifest if is_face_crop(item)]
        needles += list(Checkpoint.objects.filter(run=run).values_list("sha256", flat=True))
        needles += list(Sample.objects.filter(run=run).values_list("sha256", flat=True))
        needles += [run.lora_sha256] if run.lora_sha256 else []
    return needles


def artifact_files(runs: list[TrainingRun]) -> list[str]:
    """Every stored file the runs made: LoRAs, checkpoints with their optimizer state, samples and their
    thumbnails."""
    names = {run.lora_name for run in runs if run.lora_name}
    for checkpoint in Checkpoint.objects.filter(run__in=runs):
        names |= {name for name in (checkpoint.file, checkpoint.optimizer_file) if name}
    for sample in Sample.objects.filter(run__in=runs):
        names |= {sample.image.name, sample.thumbnail.name, sample.thumbnail_large.name}
    return sorted(names)


def erase_and_check(anna: Character, provider: FakeProvider, django_capture_on_commit_callbacks: Any) -> None:
    manifest = frozen_dataset(anna)
    assert any(is_face_crop(item) for item in manifest)
    runs = [trained_run(anna, manifest), still_training(anna, manifest)]
    needles = needles_of(anna, runs)
    run_ids = [str(run.pk) for run in runs]
    spent = user_spend_this_month(anna.owner)
    assert spent >= COST
    assert (
        Checkpoint.objects.count() == 3 + 1
        and Sample.objects.count() == 6
        and LossSeries.objects.count() == 2
    )
    made = artifact_files(runs)
    assert len(made) == 1 + 3 * 2 + 6 * 3 and all(default_storage.exists(name) for name in made)

    with django_capture_on_commit_callbacks(execute=True):
        character_services.character_delete(character=anna)

    assert provider.cancelled == ["job-2"]  # stopped before anything was deleted
    assert traces_in_database(needles) == []
    # A run is named afterwards only by the spend it leaves behind.
    assert {trace.split(":")[0] for trace in traces_in_database(run_ids)} <= {"DeletedRunSpend"}
    assert not TrainingRun.objects.exists() and not Checkpoint.objects.exists()
    assert not Sample.objects.exists() and not LossSeries.objects.exists()
    assert stored_files(f"characters/{anna.pk}/") == []
    assert [name for name in made if default_storage.exists(name)] == []
    assert DeletedRunSpend.objects.get(run_id=runs[0].pk).amount_usd == COST
    assert user_spend_this_month(anna.owner) == spent


def test_erasing_a_character_erases_its_runs_and_their_files_but_not_their_cost(
    anna: Character, provider: FakeProvider, django_capture_on_commit_callbacks: Any, isolated_media: Any
) -> None:
    erase_and_check(anna, provider, django_capture_on_commit_callbacks)

    assert [path for path in isolated_media.rglob("*") if path.is_file()] == []


def test_erasing_a_character_erases_its_runs_files_from_the_bucket(
    anna: Character, provider: FakeProvider, django_capture_on_commit_callbacks: Any, s3_storage: Any
) -> None:
    erase_and_check(anna, provider, django_capture_on_commit_callbacks)


def test_what_a_job_runpod_could_not_stop_uploads_after_the_erase_is_erased_once_the_job_ends(
    anna: Character, provider: FakeProvider, django_capture_on_commit_callbacks: Any, monkeypatch: Any
) -> None:
    run = still_training(anna, frozen_dataset(anna))
    folder, names = f"characters/{anna.pk}/", [str(anna.pk), anna.pk.hex]
    answer = provider.cancel

    def unreachable(job_id: str) -> Any:
        provider.cancelled.append(job_id)
        raise RunPodUnavailable("RunPod could not be reached")

    monkeypatch.setattr(provider, "cancel", unreachable)
    with django_capture_on_commit_callbacks(execute=True):
        character_services.character_delete(character=anna)
    # The job still runs, and its signed links still write: a sample lands in the erased folder.
    store(sample_file(run, 200, 0), jpeg())
    assert stored_files(folder) != []
    monkeypatch.setattr(provider, "cancel", answer)
    StrayJob.objects.update(next_attempt_at=timezone.now())

    runpod_job_cancel(job_id="job-2")  # RunPod takes the cancel at last
    sweep_training_runs()

    assert StrayJob.objects.get().status == StrayJob.Status.CANCELLED
    assert stored_files(folder) == []
    assert traces_in_database(names) == []
