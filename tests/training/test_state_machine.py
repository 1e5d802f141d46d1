from __future__ import annotations

import threading
from decimal import Decimal
from itertools import product
from typing import Any

import pytest
from django.core.files.storage import default_storage
from django.db import connection

from tests.characters.factories import CharacterFactory
from tests.training.conftest import assert_keeps_its_own_lora, make_run, store_lora
from training.artifacts import lora_upload_name
from training.models import TrainingEvent, TrainingRun
from training.runpod import RunPodJob
from training.services import training_run_apply_status, transition_allowed
from training.signals import training_run_status_changed

STATUSES = [choice.value for choice in TrainingRun.Status]
ALLOWED = {
    ("pending", "queued"),
    ("pending", "training"),
    ("pending", "completed"),
    ("pending", "failed"),
    ("pending", "cancelled"),
    ("queued", "training"),
    ("queued", "completed"),
    ("queued", "failed"),
    ("queued", "cancelled"),
    ("training", "completed"),
    ("training", "failed"),
    ("training", "cancelled"),
}
RUNPOD_FOR = {
    "queued": "IN_QUEUE",
    "training": "IN_PROGRESS",
    "completed": "COMPLETED",
    "failed": "FAILED",
    "cancelled": "CANCELLED",
}


@pytest.mark.parametrize(("from_status", "to_status"), list(product(STATUSES, STATUSES)))
def test_only_forward_moves_out_of_an_active_state_are_allowed(from_status: str, to_status: str) -> None:
    assert transition_allowed(from_status, to_status) == ((from_status, to_status) in ALLOWED)


def apply(run: TrainingRun, runpod_status: str, **job: Any) -> TrainingRun:
    payload = {"id": run.runpod_job_id, "status": runpod_status, **job}
    return training_run_apply_status(run_id=run.pk, job=RunPodJob.from_payload(payload), source="poll")


@pytest.mark.parametrize(
    ("from_status", "to_status"), [pair for pair in product(STATUSES, STATUSES[1:]) if pair[0] != "pending"]
)
def test_applying_a_runpod_status_moves_the_run_only_when_allowed(
    character: Any, from_status: str, to_status: str
) -> None:
    run = make_run(character, status=from_status, runpod_job_id="job-1")
    extra: dict[str, Any] = {}
    if to_status == "completed":
        extra["output"] = store_lora(run)
    if to_status == "failed":
        extra["error"] = '{"code": "trainer_failed", "message": "boom"}'

    apply(run, RUNPOD_FOR[to_status], **extra)

    run.refresh_from_db()
    expected = to_status if (from_status, to_status) in ALLOWED else from_status
    assert run.status == expected
    assert run.events.count() == (1 if (from_status, to_status) in ALLOWED else 0)


def test_timed_out_without_an_error_fails_the_run_as_timed_out_saying_what_to_do(character: Any) -> None:
    # RunPod's TIMED_OUT carries no `error` in any source (docs serverless/endpoints/job-states.mdx:20).
    run = make_run(character, status="training")

    apply(run, "TIMED_OUT", executionTime=10_800_000)

    run.refresh_from_db()
    assert (run.status, run.error_code) == ("failed", "timed_out")
    assert "Retry with fewer steps" in run.error_message


def test_a_timeout_runpod_reports_as_failed_without_an_error_still_fails_the_run_with_a_message(
    character: Any,
) -> None:
    # The v1 OpenAPI says a job past its execution timeout is "marked as failed" (api-reference/openapi.json
    # :3415); no source shows an `error` with it.
    run = make_run(character, status="training")

    apply(run, "FAILED", executionTime=10_800_000)

    run.refresh_from_db()
    assert run.status == "failed" and run.error_message
    assert run.execution_ms == 10_800_000


def test_a_job_that_expired_in_the_queue_as_timed_out_fails_the_queued_run(character: Any) -> None:
    # docs serverless/endpoints/job-states.mdx:20: TIMED_OUT also means "expired before it was picked up".
    run = make_run(character, status="queued")

    apply(run, "TIMED_OUT")

    run.refresh_from_db()
    assert (run.status, run.error_code, run.execution_ms) == ("failed", "timed_out", None)


def test_a_run_no_worker_took_says_so_and_that_nothing_was_billed_not_to_choose_fewer_steps(
    character: Any, settings: Any
) -> None:
    settings.TRAINING_JOB_TTL_SECONDS = 12 * 3600
    run = make_run(character, status="queued")

    apply(run, "TIMED_OUT")

    run.refresh_from_db()
    assert run.error_message.startswith("No GPU worker took the run within 12 h")
    assert "nothing was billed" in run.error_message and "fewer steps" not in run.error_message


def test_a_run_past_its_time_limit_is_told_the_limit_and_the_step_it_reached(character: Any) -> None:
    run = make_run(
        character, status="training", execution_timeout_s=9000, progress_step=3120, progress_total=4000
    )

    apply(run, "TIMED_OUT", executionTime=9_000_412)

    run.refresh_from_db()
    assert run.error_message == (
        "The run reached its time limit on RunPod (2 h 30 min) at step 3120 of 4000, so RunPod stopped it; "
        "the GPU time until then is billed. Retry with fewer steps."
    )


def test_a_timeout_runpod_reports_as_failed_without_an_error_is_told_as_a_timeout(character: Any) -> None:
    # RunPod may mark a job past its execution timeout as FAILED (v1 OpenAPI, api-reference/openapi.json
    # :3415) with no `error`: its execution time reaching the run's limit is what tells it apart.
    run = make_run(character, status="training", execution_timeout_s=9000)

    apply(run, "FAILED", executionTime=9_000_100)

    run.refresh_from_db()
    assert run.error_code == "timed_out"
    assert run.error_message.startswith("The run reached its time limit on RunPod (2 h 30 min)")


def test_a_failed_job_without_an_error_well_within_its_limit_is_not_called_a_timeout(character: Any) -> None:
    run = make_run(character, status="training", execution_timeout_s=9000)

    apply(run, "FAILED", executionTime=1_200_000)

    run.refresh_from_db()
    assert (run.error_code, run.error_message) == ("unknown", "The worker failed without saying why.")


def test_a_failed_job_carries_the_workers_classified_error(character: Any) -> None:
    run = make_run(character, status="training")

    apply(
        run, "FAILED", error='{"code": "out_of_memory", "message": "The GPU ran out of memory at step 212."}'
    )

    run.refresh_from_db()
    assert (run.error_code, run.error_message) == ("out_of_memory", "The GPU ran out of memory at step 212.")


def test_a_final_state_never_changes(character: Any) -> None:
    run = make_run(character, status="training")
    output = store_lora(run)
    apply(run, "COMPLETED", output=output, executionTime=1000)

    apply(run, "FAILED", error="late")
    apply(run, "IN_PROGRESS")

    run.refresh_from_db()
    assert run.status == "completed" and run.error_message == ""
    assert run.events.count() == 1


def test_progress_never_goes_back(character: Any) -> None:
    run = make_run(character, status="training", progress_step=500, progress_total=1000)

    apply(run, "IN_PROGRESS", output={"stage": "training", "step": 300, "total_steps": 1000})

    run.refresh_from_db()
    assert run.progress_step == 500


def test_progress_moves_forward_from_status(character: Any) -> None:
    run = make_run(character, status="training", progress_step=500, progress_total=1000)

    apply(run, "IN_PROGRESS", output={"stage": "training", "step": 700, "total_steps": 1000, "loss": 0.2})

    run.refresh_from_db()
    assert (run.progress_step, run.progress_loss) == (700, 0.2)


def test_completion_records_the_lora_and_its_cost(character: Any, settings: Any) -> None:
    settings.TRAINING_GPU_PRICES_USD_PER_SECOND = {"A100 80GB": "0.00076", "H100": "0.00116"}
    run = make_run(character, status="training")
    output = store_lora(run, b"x" * 4096)

    apply(run, "COMPLETED", output=output, executionTime=1_800_000, delayTime=5000)

    run.refresh_from_db()
    assert run.status == "completed"
    assert_keeps_its_own_lora(run, b"x" * 4096)
    assert (run.lora_bytes, run.lora_sha256) == (4096, output["lora"]["sha256"])
    assert run.cost_usd == Decimal("1.3680")  # 1800 s x $0.00076 on the A100 the worker reported
    assert (run.execution_ms, run.delay_ms) == (1_800_000, 5000)


def test_completion_is_refused_when_the_lora_is_missing_from_storage(character: Any) -> None:
    run = make_run(character, status="training")
    output = store_lora(run)
    default_storage.delete(lora_upload_name(run))

    apply(run, "COMPLETED", output=output)

    run.refresh_from_db()
    assert run.status == "failed"
    assert run.error_message.startswith("The worker reported a trained LoRA, but no file arrived in storage")


def test_completion_is_refused_when_the_checksum_differs(character: Any) -> None:
    run = make_run(character, status="training")
    output = store_lora(run)
    output["lora"]["sha256"] = "0" * 64

    apply(run, "COMPLETED", output=output)

    run.refresh_from_db()
    assert (run.status, run.error_code) == ("failed", "lora_unverified")


def test_a_status_for_another_job_changes_nothing(character: Any) -> None:
    run = make_run(character, status="training", runpod_job_id="job-mine")

    training_run_apply_status(
        run_id=run.pk, job=RunPodJob.from_payload({"id": "job-other", "status": "FAILED"}), source="poll"
    )

    run.refresh_from_db()
    assert run.status == "training"


def test_every_transition_is_announced_after_commit(
    character: Any, django_capture_on_commit_callbacks: Any
) -> None:
    run = make_run(character, status="queued")
    heard: list[dict[str, Any]] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        heard.append(kwargs)

    training_run_status_changed.connect(receiver)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            apply(run, "IN_PROGRESS")
    finally:
        training_run_status_changed.disconnect(receiver)

    assert [(h["run_id"], h["from_status"], h["to_status"]) for h in heard] == [
        (run.pk, "queued", "training")
    ]


@pytest.mark.django_db(transaction=True)
def test_two_threads_applying_different_final_statuses_leave_exactly_one_transition(alice: Any) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("row locks need Postgres; SQLite serialises whole-database writes")
    run = make_run(CharacterFactory(owner=alice), status="training", runpod_job_id="job-race")
    barrier = threading.Barrier(2)

    def worker(status: str) -> None:
        try:
            barrier.wait()
            apply(run, status, error="stop")
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(s,)) for s in ("FAILED", "CANCELLED")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    run.refresh_from_db()
    assert run.status in {"failed", "cancelled"}
    assert TrainingEvent.objects.filter(run=run).count() == 1
