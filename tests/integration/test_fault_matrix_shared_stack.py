"""The fault matrix's faults that kill or restart nothing of the stack, on one stack the module's tests
share: a 5xx storm, a GPU worker killed inside the stand-in (which replaces it), a job handed out twice
whose "finished" callback is lost. The others are in test_fault_matrix.py and test_fault_recovery.py.

    make test PYTEST_ARGS=tests/integration/test_fault_matrix_shared_stack.py
"""

from __future__ import annotations

from typing import Any

import pytest

from runpod_worker.contract import parse_error
from tests.integration.test_fault_matrix import assert_one_job_one_lora
from tests.integration.test_fault_recovery import assert_lora_is_the_stored_file, recovered_from_storage
from tests.integration.test_training_live import character_ready_to_train, explain, final, start
from tests.support.grouping import in_one_process
from training.services import training_run_start

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True), in_one_process(__name__)]


def test_a_5xx_storm_completes_the_run_with_one_job(alice: Any, shared_stack: Any) -> None:
    # A 500 to /run leaves its outcome unknown; the backend waits this long for a claim, then resubmits.
    stack = shared_stack(
        faults={"rate_5xx": "0.3"}, worker_env={"TRAINING_SUBMIT_UNCERTAIN_GRACE_SECONDS": "3"}
    )

    run = final(start(character_ready_to_train(alice)), timeout=90)

    assert_one_job_one_lora(stack, run)


def test_a_gpu_worker_killed_mid_job_is_retried_on_the_same_job(alice: Any, shared_stack: Any) -> None:
    stack = shared_stack(faults={"kill_worker_mid_job": "1"})

    run = final(start(character_ready_to_train(alice), steps=200), timeout=90)

    assert_one_job_one_lora(stack, run)
    assert run.progress_step == 200
    # RunPod ran the job again on a new worker, and that delivery took the run over.
    deliveries = stack.runpod.state()["jobs"][run.runpod_job_id]["deliveries"]
    assert len({delivery["worker_id"] for delivery in deliveries}) == 2
    assert run.worker_delivery_id


def test_a_job_handed_out_twice_whose_finished_callback_is_lost_completes_from_the_stored_lora(
    alice: Any, shared_stack: Any, finished_callback_lost: list[str]
) -> None:
    # The duplicate is stopped after one liveness window (3 s) and its FAILED `claimed_elsewhere` is the
    # result RunPod keeps; the holder trains for 10 s, uploads, and its "finished" callback never arrives.
    stack = shared_stack(faults={"duplicate_jobs": "1", "duplicate_result": "first"})

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
