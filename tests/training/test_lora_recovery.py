"""A LoRA verified in storage whose run never heard of it: the worker's "finished" callback was lost, and
RunPod's result says nothing about the run (a duplicate delivery's `claimed_elsewhere` failure) or RunPod
no longer knows the job (404). Once the holder is silent, the stored file decides."""

from __future__ import annotations

import hashlib
import json
import struct
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.utils import timezone

from runpod_worker.contract import WorkerError
from tests.training.conftest import FakeProvider, assert_keeps_its_own_lora, lora_bytes, make_run
from training.artifacts import LoraInvalid, lora_upload_name, stored_lora_digest
from training.models import TrainingRun
from training.runpod import RunPodJob, RunPodJobNotFound
from training.services import training_run_apply_status, training_run_poll

pytestmark = pytest.mark.django_db

HOLDER = "delivery-holder"


def with_header(header: dict[str, Any], data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def store(run: TrainingRun, content: bytes) -> None:
    default_storage.save(lora_upload_name(run), ContentFile(content))


def holder_run(character: Any, silent_for: timedelta) -> TrainingRun:
    seen = timezone.now() - silent_for
    return make_run(
        character,
        status="training",
        runpod_job_id="job-1",
        worker_delivery_id=HOLDER,
        started_at=seen - timedelta(minutes=5),
        worker_seen_at=seen,
        progress_step=1000,
        progress_total=1000,
    )


def duplicates_result(run: TrainingRun) -> TrainingRun:
    error = WorkerError("claimed_elsewhere", "The run was not started: another worker holds it.").to_json()
    job = RunPodJob.from_payload({"id": "job-1", "status": "FAILED", "error": error, "executionTime": 31_000})
    return training_run_apply_status(run_id=run.pk, job=job, source="poll")


def job_forgotten(run: TrainingRun, provider: FakeProvider) -> TrainingRun:
    provider.status_errors.append(RunPodJobNotFound("HTTP 404"))
    return training_run_poll(run_id=run.pk)


SILENT = timedelta(minutes=2)  # past the 30 s liveness window
LIVE = timedelta(seconds=5)


def test_a_duplicates_result_and_a_silent_holder_complete_the_run_from_the_stored_lora(
    character: Any,
) -> None:
    run = holder_run(character, SILENT)
    content = lora_bytes()
    store(run, content)

    duplicates_result(run)

    run.refresh_from_db()
    assert run.status == "completed"
    assert (run.lora_bytes, run.lora_sha256) == (len(content), hashlib.sha256(content).hexdigest())
    assert_keeps_its_own_lora(run, content)
    [event] = run.events.filter(to_status="completed")
    assert event.source == "poll"
    assert "worker's report was lost" in event.detail["recovered_from_storage"]
    assert run.execution_ms == 31_000 and run.cost_usd is not None  # what RunPod reported for the job


def test_while_the_holder_still_calls_back_a_duplicates_result_keeps_the_run_waiting(
    character: Any,
) -> None:
    run = holder_run(character, LIVE)
    store(run, lora_bytes())

    duplicates_result(run)

    run.refresh_from_db()
    assert (run.status, run.error_code, run.lora_sha256) == ("training", "", "")
    assert run.execution_ms == 31_000  # the job's status is still recorded
    assert not run.events.exists()


def test_a_job_runpod_forgot_completes_from_the_stored_lora(character: Any, provider: FakeProvider) -> None:
    run = holder_run(character, SILENT)
    content = lora_bytes()
    store(run, content)

    job_forgotten(run, provider)

    run.refresh_from_db()
    assert (run.status, run.lora_sha256) == ("completed", hashlib.sha256(content).hexdigest())
    detail = run.events.get(to_status="completed").detail["recovered_from_storage"]
    assert detail == "RunPod no longer knows the job and the worker's report was lost"
    assert (run.cost_usd, run.next_poll_at) == (None, None)  # no execution time to read, none made up


def test_a_job_runpod_forgot_while_the_holder_calls_back_keeps_the_run_waiting(
    character: Any, provider: FakeProvider
) -> None:
    run = holder_run(character, LIVE)

    job_forgotten(run, provider)

    run.refresh_from_db()
    assert run.status == "training"


def test_a_truncated_lora_fails_the_run_with_what_happened_and_stays_in_storage(
    character: Any, provider: FakeProvider
) -> None:
    run = holder_run(character, SILENT)
    content = lora_bytes()
    store(run, content[:-100])

    job_forgotten(run, provider)

    run.refresh_from_db()
    assert (run.status, run.error_code) == ("failed", "job_lost")
    assert "RunPod no longer knows this run's job" in run.error_message
    assert "incomplete or damaged (the file is truncated" in run.error_message
    assert run.error_message.endswith("Retry the run.")
    assert run.lora_name == ""
    assert default_storage.exists(lora_upload_name(run))  # kept for staff to inspect
    # ... and only the upload: the copy made to check it is gone.
    assert default_storage.listdir(f"characters/{character.pk}/loras/")[1] == []


def test_no_lora_after_a_duplicates_result_keeps_the_run_waiting_until_its_deadline(
    character: Any, provider: FakeProvider, settings: Any
) -> None:
    # The holder looks silent, but that may be our own outage (its callbacks answered 503): with no LoRA
    # to go by, the run is not failed early; RunPod still has the job, and the deadline ends the run.
    run = holder_run(character, SILENT)

    duplicates_result(run)

    run.refresh_from_db()
    assert run.status == "training"
    deadline = run.started_at + timedelta(seconds=settings.TRAINING_EXECUTION_TIMEOUT_SECONDS)
    with time_machine.travel(deadline + timedelta(minutes=6)):
        training_run_poll(run_id=run.pk)

    run.refresh_from_db()
    assert (run.status, run.error_code) == ("failed", "timed_out")
    assert run.error_message.startswith("The run went past its time limit")
    assert provider.cancelled == ["job-1"]


def test_a_lora_recovered_from_storage_is_the_runs_own_copy_that_a_later_upload_leaves_alone(
    character: Any,
) -> None:
    run = holder_run(character, SILENT)
    content = lora_bytes()
    store(run, content)
    duplicates_result(run)

    # A job that still holds the run's upload link (RunPod ran it twice) uploads after the run completed.
    default_storage.delete(lora_upload_name(run))
    store(run, lora_bytes() + b"another job's weights")
    assert default_storage.exists(lora_upload_name(run))

    run.refresh_from_db()
    assert run.lora_sha256 == hashlib.sha256(content).hexdigest()
    with default_storage.open(run.lora_name, "rb") as handle:
        assert handle.read() == content


def test_a_run_runpod_forgot_before_any_worker_started_still_fails_job_lost(
    character: Any, provider: FakeProvider
) -> None:
    run = make_run(character, status="queued", runpod_job_id="job-1", submitted_at=timezone.now())

    job_forgotten(run, provider)

    run.refresh_from_db()
    assert (run.status, run.error_code) == ("failed", "job_lost")


def test_a_complete_lora_gives_its_size_and_sha256(character: Any) -> None:
    run = holder_run(character, SILENT)
    content = lora_bytes()
    store(run, content)

    stored = stored_lora_digest(lora_upload_name(run))

    assert stored is not None
    assert (stored.bytes, stored.sha256) == (len(content), hashlib.sha256(content).hexdigest())


def test_an_absent_lora_is_none(character: Any) -> None:
    assert stored_lora_digest(lora_upload_name(holder_run(character, SILENT))) is None


F16_4X4 = {"dtype": "F16", "shape": [4, 4], "data_offsets": [0, 32]}


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        pytest.param(b"", "ends inside its header", id="empty"),
        pytest.param(b"safetensors bytes", "header length", id="not-safetensors"),
        pytest.param(lora_bytes()[:-1], "truncated", id="one-byte-short"),
        pytest.param(lora_bytes()[:20], "ends inside its header", id="cut-in-the-header"),
        pytest.param(lora_bytes() + b"\0", "longer than its header says", id="padded"),
        pytest.param(struct.pack("<Q", 2**40) + b"{}", "header length", id="absurd-header-length"),
        pytest.param(struct.pack("<Q", 5) + b"{oops" + bytes(32), "not valid JSON", id="bad-json"),
        pytest.param(with_header({"w": F16_4X4}, bytes(31)), "truncated", id="data-short"),
        pytest.param(with_header({"__metadata__": {}}, b""), "lists no tensors", id="no-tensors"),
        pytest.param(
            with_header({"w": {**F16_4X4, "data_offsets": [8, 40]}}, bytes(40)), "gap", id="offset-gap"
        ),
        pytest.param(
            with_header({"w": {**F16_4X4, "shape": [4, 8]}}, bytes(32)), "do not fit its shape", id="shape"
        ),
        pytest.param(with_header({"w": {**F16_4X4, "dtype": "F17"}}, bytes(32)), "malformed", id="dtype"),
        pytest.param(with_header({"w": F16_4X4, "v": F16_4X4}, bytes(32)), "overlap", id="overlapping"),
    ],
)
def test_a_file_that_is_not_a_complete_safetensors_file_is_refused(
    character: Any, content: bytes, problem: str
) -> None:
    run = holder_run(character, SILENT)
    store(run, content)

    with pytest.raises(LoraInvalid, match=problem):
        stored_lora_digest(lora_upload_name(run))
