"""Wan 2.2 14B's LoRA is two files, one per expert (`<name>_high_noise`, `<name>_low_noise`): a run completes
with both kept and verified, or with neither — a run with one file cannot reproduce the character on both
experts — and then it fails saying which file was missing or wrong (training/services/split_lora.py)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from runpod_worker.contract import BaseModel, JobOutput
from tests.training.conftest import HOLDER, held_run, store_lora
from training.artifacts import LOW_NOISE, lora_upload_name
from training.models import TrainingRun
from training.runpod import RunPodJob
from training.services import training_run_apply_status, training_run_worker_finished
from training.services.completion import NOTHING_STORED
from training.services.split_lora import LOW_NOISE_DIFFERS, LOW_NOISE_MISSING

pytestmark = pytest.mark.django_db

HIGH = b"the high-noise expert's weights"
LOW = b"the low-noise expert's weights"


@pytest.fixture
def run(character: Any) -> TrainingRun:
    run = held_run(character)
    run.base_model = BaseModel.WAN22
    run.save(update_fields=["base_model"])
    return run


def both_reported(run: TrainingRun, *, high: bytes = HIGH, low: bytes = LOW) -> dict[str, Any]:
    """The worker's output for both files (the high-noise one uploaded), without storing the low-noise one."""
    output = store_lora(run, high)
    output["lora"]["name"] = "alice_v1_high_noise.safetensors"
    output["lora_low_noise"] = {
        "name": "alice_v1_low_noise.safetensors",
        "bytes": len(low),
        "sha256": hashlib.sha256(low).hexdigest(),
    }
    return output


def upload_low_noise(run: TrainingRun, content: bytes = LOW) -> None:
    default_storage.save(lora_upload_name(run, LOW_NOISE), ContentFile(content))


def runpod_completed(run: TrainingRun, output: dict[str, Any]) -> TrainingRun:
    payload = {"id": "job-1", "status": "COMPLETED", "output": output, "executionTime": 60_000}
    training_run_apply_status(run_id=run.pk, job=RunPodJob.from_payload(payload), source="webhook")
    run.refresh_from_db()
    return run


def lora_files(run: TrainingRun) -> list[str]:
    """The character's kept LoRA files."""
    return sorted(default_storage.listdir(f"characters/{run.character_id}/loras/")[1])


def uploads(run: TrainingRun) -> list[str]:
    """What the worker's upload links wrote and no completion has removed."""
    folder = f"characters/{run.character_id}/loras/uploads/"
    return (
        sorted(folder + name for name in default_storage.listdir(folder)[1])
        if default_storage.exists(folder)
        else []
    )


def read(name: str) -> bytes:
    with default_storage.open(name, "rb") as handle:
        return bytes(handle.read())


def test_both_files_verified_complete_the_run_with_each_kept_under_a_name_of_its_own(
    run: TrainingRun,
) -> None:
    output = both_reported(run)
    upload_low_noise(run)

    run = runpod_completed(run, output)

    assert run.status == "completed"
    assert (read(run.lora_name), read(run.lora_low_noise_name)) == (HIGH, LOW)
    assert (run.lora_bytes, run.lora_sha256) == (len(HIGH), hashlib.sha256(HIGH).hexdigest())
    assert (run.lora_low_noise_bytes, run.lora_low_noise_sha256) == (
        len(LOW),
        hashlib.sha256(LOW).hexdigest(),
    )
    assert run.lora_low_noise_name.startswith(f"characters/{run.character_id}/loras/{run.pk}_low_noise-")
    # The kept copies are all that is left: both uploads went.
    assert lora_files(run) == sorted(
        name.rsplit("/", 1)[1] for name in (run.lora_name, run.lora_low_noise_name)
    )
    assert uploads(run) == []


def test_a_missing_low_noise_file_fails_the_run_and_keeps_neither_file(run: TrainingRun) -> None:
    run = runpod_completed(run, both_reported(run))

    assert (run.status, run.error_code, run.error_message) == ("failed", "lora_unverified", LOW_NOISE_MISSING)
    assert "low-noise file did not arrive" in run.error_message
    assert (run.lora_name, run.lora_low_noise_name) == ("", "")
    # Only the high-noise upload is left, as it came: no copy of it was kept.
    assert (lora_files(run), uploads(run)) == ([], [lora_upload_name(run)])


def test_a_low_noise_file_other_than_the_reported_one_fails_the_run_and_keeps_neither(
    run: TrainingRun,
) -> None:
    output = both_reported(run)
    upload_low_noise(run, b"another job's low-noise weights")

    run = runpod_completed(run, output)

    assert (run.status, run.error_code, run.error_message) == ("failed", "lora_unverified", LOW_NOISE_DIFFERS)
    assert (run.lora_name, run.lora_low_noise_name, run.lora_low_noise_sha256) == ("", "", "")
    assert lora_files(run) == []
    assert uploads(run) == sorted([lora_upload_name(run), lora_upload_name(run, LOW_NOISE)])


def test_a_missing_high_noise_file_fails_the_run_even_with_the_low_noise_one_stored(run: TrainingRun) -> None:
    output = both_reported(run)
    default_storage.delete(lora_upload_name(run))
    upload_low_noise(run)

    run = runpod_completed(run, output)

    assert (run.status, run.error_message) == ("failed", NOTHING_STORED)
    assert (run.lora_name, run.lora_low_noise_name) == ("", "")
    assert (lora_files(run), uploads(run)) == ([], [lora_upload_name(run, LOW_NOISE)])


def test_the_workers_finished_report_with_one_file_missing_does_not_complete_the_run(
    run: TrainingRun,
) -> None:
    output = JobOutput.from_dict(both_reported(run))

    answer = training_run_worker_finished(run=run, job_id="job-1", delivery_id=HOLDER, output=output)

    run.refresh_from_db()
    # Not the run's end: RunPod's own result is read at once and decides (as above, it fails the run).
    assert answer.as_dict() == {"action": "continue"}
    assert (run.status, run.lora_name, run.lora_low_noise_name) == ("training", "", "")
    assert run.next_poll_at is not None


def test_a_one_file_model_needs_no_low_noise_file(character: Any) -> None:
    run = held_run(character)  # flux-dev

    run = runpod_completed(run, store_lora(run, HIGH))

    assert (run.status, run.lora_low_noise_name, run.lora_low_noise_bytes) == ("completed", "", None)
