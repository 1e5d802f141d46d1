"""A completed run keeps its own copy of the LoRA its worker uploaded, under a name no upload link writes.

Every job given a run's upload link can write there until the link expires: a job RunPod ran twice, or
one whose `/run` answer was lost and that never reached the backend to be told to stop. Whatever such a
job uploads after the run completed must not replace the file the run verified and serves.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.test import Client
from django.urls import reverse

from runpod_worker.contract import JobOutput
from tests.training.conftest import HOLDER, assert_keeps_its_own_lora, held_run, store_lora
from training import artifacts
from training.artifacts import StorageUnavailable, lora_upload_name
from training.models import TrainingRun
from training.runpod import RunPodJob
from training.services import completion, training_run_apply_status, training_run_worker_finished

pytestmark = pytest.mark.django_db

TRAINED = b"the weights this run trained"
STRAY = b"the weights another job of the same run trained later"


@pytest.fixture
def run(character: Any) -> TrainingRun:
    return held_run(character)


def runpod_completed(run: TrainingRun, output: dict[str, Any]) -> None:
    payload = {"id": "job-1", "status": "COMPLETED", "output": output, "executionTime": 60_000}
    training_run_apply_status(run_id=run.pk, job=RunPodJob.from_payload(payload), source="webhook")


def holder_finished(run: TrainingRun, output: dict[str, Any]) -> None:
    training_run_worker_finished(
        run=run, job_id="job-1", delivery_id=HOLDER, output=JobOutput.from_dict(output)
    )


def upload_again(run: TrainingRun, content: bytes) -> None:
    """Another upload through the run's link, replacing whatever is there (as a PUT does)."""
    name = lora_upload_name(run)
    default_storage.delete(name)
    assert default_storage.save(name, ContentFile(content)) == name


def lora_files(run: TrainingRun) -> list[str]:
    return sorted(default_storage.listdir(f"characters/{run.character_id}/loras/")[1])


@pytest.mark.parametrize("complete", [runpod_completed, holder_finished], ids=["runpod-result", "finished"])
def test_an_upload_after_the_run_completed_changes_neither_its_file_nor_its_download(
    run: TrainingRun, complete: Any, client: Client
) -> None:
    complete(run, store_lora(run, TRAINED))

    upload_again(run, STRAY)

    run.refresh_from_db()
    assert run.status == "completed"
    assert_keeps_its_own_lora_but_for(run, TRAINED)
    client.force_login(run.character.owner)
    response = client.get(reverse("training:run-lora", args=[run.pk]))
    assert b"".join(response.streaming_content) == TRAINED
    assert run.lora_sha256 == hashlib.sha256(TRAINED).hexdigest()


def assert_keeps_its_own_lora_but_for(run: TrainingRun, content: bytes) -> None:
    """As `assert_keeps_its_own_lora`, with the later upload lying beside the kept copy."""
    with default_storage.open(run.lora_name, "rb") as handle:
        assert handle.read() == content
    assert run.lora_name != lora_upload_name(run)


def test_completion_keeps_one_copy_and_removes_the_upload(run: TrainingRun) -> None:
    runpod_completed(run, store_lora(run, TRAINED))

    run.refresh_from_db()
    assert_keeps_its_own_lora(run, TRAINED)
    assert lora_files(run) == [run.lora_name.rsplit("/", 1)[1]]


def test_a_copy_that_is_not_the_file_the_worker_reported_is_not_kept_and_the_upload_stays(
    run: TrainingRun,
) -> None:
    output = store_lora(run, TRAINED)
    upload_again(run, STRAY)  # replaced before the report was read: its checksum differs

    runpod_completed(run, output)

    run.refresh_from_db()
    assert (run.status, run.error_code, run.lora_name) == ("failed", "lora_unverified", "")
    assert lora_files(run) == []  # the copy made to verify is gone
    assert default_storage.exists(lora_upload_name(run))  # the upload stays for staff to inspect


@pytest.mark.parametrize(
    ("loser", "winner"),
    [(runpod_completed, holder_finished), (holder_finished, runpod_completed)],
    ids=["runpod-result-loses", "finished-loses"],
)
def test_two_reports_completing_the_run_together_leave_one_copy(
    run: TrainingRun, loser: Any, winner: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = store_lora(run, TRAINED)
    digest = completion.stored_file_digest
    raced: list[bool] = []

    def verified_while_the_other_report_completes(name: str) -> Any:
        stored = digest(name)
        if not raced:
            raced.append(True)
            winner(run, output)  # completes the run between this copy's check and its transaction
        return stored

    monkeypatch.setattr(completion, "stored_file_digest", verified_while_the_other_report_completes)

    loser(run, output)

    run.refresh_from_db()
    assert raced and run.events.filter(to_status="completed").count() == 1
    assert_keeps_its_own_lora(run, TRAINED)
    assert lora_files(run) == [run.lora_name.rsplit("/", 1)[1]]  # the copy the run did not keep is gone


def test_a_finished_callback_whose_copy_vanished_because_the_run_completed_is_told_to_stop(
    run: TrainingRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = store_lora(run, TRAINED)
    keep = completion.lora_keep
    copies: list[TrainingRun] = []

    def upload_gone_mid_copy(locked: TrainingRun) -> str | None:
        copies.append(locked)
        if len(copies) > 1:
            return keep(locked)  # RunPod's result, completing the run
        runpod_completed(run, output)  # completes the run and removes the upload being copied
        raise StorageUnavailable("Storage could not copy the LoRA (ClientError).")

    monkeypatch.setattr(completion, "lora_keep", upload_gone_mid_copy)

    answer = training_run_worker_finished(
        run=run, job_id="job-1", delivery_id=HOLDER, output=JobOutput.from_dict(output)
    )

    assert answer.as_dict()["action"] == "stop"
    run.refresh_from_db()
    assert_keeps_its_own_lora(run, TRAINED)


def test_storage_failing_while_checking_the_copy_leaves_no_copy_and_the_run_as_it_was(
    run: TrainingRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = store_lora(run, TRAINED)

    def storage_gone(name: str) -> None:
        raise StorageUnavailable("Storage could not be read (EndpointConnectionError).")

    monkeypatch.setattr(completion, "stored_file_digest", storage_gone)

    with pytest.raises(StorageUnavailable):
        runpod_completed(run, output)  # the poll task retries it

    run.refresh_from_db()
    assert (run.status, run.lora_name) == ("training", "")
    assert lora_files(run) == []
    assert default_storage.exists(lora_upload_name(run))


def test_storage_refusing_the_copy_leaves_the_run_as_it_was(
    run: TrainingRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = store_lora(run, TRAINED)

    def refused(source: str, target: str) -> str:
        raise PermissionError(f"[Errno 13] Permission denied: {target!r}")

    monkeypatch.setattr(artifacts, "_copy", refused)

    with pytest.raises(StorageUnavailable, match="Storage could not copy the LoRA"):
        runpod_completed(run, output)

    run.refresh_from_db()
    assert (run.status, run.lora_name) == ("training", "")
    assert default_storage.exists(lora_upload_name(run))


class Killed(BaseException):
    """The process dying (SIGKILL, an OOM kill) in the middle of a completion: nothing after it runs."""


def killed_while_verifying(monkeypatch: pytest.MonkeyPatch, run: TrainingRun, output: dict[str, Any]) -> None:
    def dies(name: str) -> None:
        raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(completion, "stored_file_digest", dies)
        with pytest.raises(Killed):
            runpod_completed(run, output)


def test_a_copy_left_by_a_completion_killed_midway_goes_when_the_run_completes(
    run: TrainingRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = store_lora(run, TRAINED)
    killed_while_verifying(monkeypatch, run, output)
    assert len(lora_files(run)) == 1

    runpod_completed(run, output)

    run.refresh_from_db()
    assert_keeps_its_own_lora(run, TRAINED)
    assert lora_files(run) == [run.lora_name.rsplit("/", 1)[1]]


def test_a_run_whose_worker_had_a_link_to_the_former_lora_name_completes_with_its_own_copy(
    run: TrainingRun,
) -> None:
    # Links issued before runs kept their own copy wrote the LoRA straight to the run's former name.
    output = store_lora(run, TRAINED)
    former = f"characters/{run.character_id}/loras/{run.pk}.safetensors"
    with default_storage.open(lora_upload_name(run), "rb") as handle:
        default_storage.save(former, handle)
    default_storage.delete(lora_upload_name(run))

    runpod_completed(run, output)

    run.refresh_from_db()
    assert_keeps_its_own_lora(run, TRAINED)
    assert not default_storage.exists(former)


def test_on_s3_the_copy_is_made_in_the_bucket_and_a_later_upload_leaves_it_alone(
    run: TrainingRun, s3_storage: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = store_lora(run, TRAINED)
    killed_while_verifying(monkeypatch, run, output)  # leaves a copy in the bucket

    runpod_completed(run, output)

    run.refresh_from_db()
    assert run.status == "completed"
    assert_keeps_its_own_lora(run, TRAINED)
    assert lora_files(run) == [run.lora_name.rsplit("/", 1)[1]]  # the bucket's listing, tidied
    upload_again(run, STRAY)
    assert_keeps_its_own_lora_but_for(run, TRAINED)
    assert run.lora_sha256 == hashlib.sha256(TRAINED).hexdigest()
