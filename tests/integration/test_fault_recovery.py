"""A LoRA in storage whose worker's report was lost, on the live stack: once RunPod's result can no longer
say how the run ended and the holder has gone silent, the run completes from the stored file, once.

    make test PYTEST_ARGS=tests/integration/test_fault_recovery.py
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from django.core.files.storage import default_storage

from runpod_worker.contract import parse_error
from tests.integration.test_fault_matrix import assert_one_job_one_lora, started_and_result_expired
from tests.integration.test_training_live import character_ready_to_train, explain, final
from training.models import TrainingRun
from training.services import training_run_start

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def recovered_from_storage(run: TrainingRun) -> str:
    return str(run.events.get(to_status="completed").detail.get("recovered_from_storage", ""))


def assert_lora_is_the_stored_file(run: TrainingRun) -> None:
    stored = default_storage.open(run.lora_name).read()
    assert (len(stored), hashlib.sha256(stored).hexdigest()) == (run.lora_bytes, run.lora_sha256)


def test_a_job_handed_out_twice_whose_finished_callback_is_lost_completes_from_the_stored_lora(
    alice: Any, stack_factory: Any, finished_callback_lost: list[str]
) -> None:
    # The duplicate is stopped after one liveness window (3 s) and its FAILED `claimed_elsewhere` is the
    # result RunPod keeps; the holder trains for 10 s, uploads, and its "finished" callback never arrives.
    stack = stack_factory(faults={"duplicate_jobs": "1", "duplicate_result": "first"})

    character = character_ready_to_train(alice)
    # Rank 4 and no checkpoints: the steps take the time, not writing a Flux LoRA every 50 of them.
    params = {"steps": 1000, "save_every": 1000, "rank": 4}
    run = final(training_run_start(character=character, requested_by=alice, params=params, source="user"), 90)

    assert_one_job_one_lora(stack, run)
    job = stack.runpod.state()["jobs"][run.runpod_job_id]
    assert len(job["deliveries"]) == 2
    assert job["status"] == "FAILED" and parse_error(job["error"]).code == "claimed_elsewhere"
    assert finished_callback_lost == [run.worker_delivery_id]
    assert "RunPod kept a duplicate delivery's result" in recovered_from_storage(run), explain(stack)
    assert run.events.filter(to_status="failed").count() == 0
    assert_lora_is_the_stored_file(run)


def test_a_lost_finished_callback_and_an_expired_result_complete_from_the_stored_lora(
    alice: Any, stack_factory: Any, finished_callback_lost: list[str]
) -> None:
    stack, run = started_and_result_expired(stack_factory, alice)

    run = final(run, timeout=60)

    # RunPod answers 404 for the job, the worker's report never arrived: the stored LoRA decides.
    assert_one_job_one_lora(stack, run, jobs=run.attempts)
    assert finished_callback_lost == [run.worker_delivery_id]
    assert recovered_from_storage(run) == "RunPod no longer knows the job and the worker's report was lost"
    assert_lora_is_the_stored_file(run)
    assert (run.cost_usd, run.next_poll_at) == (None, None)  # no execution time was read: none made up
