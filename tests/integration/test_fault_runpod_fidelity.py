"""RunPod as its own sources describe it, on the live stack: the product survives each behaviour the
stand-in now plays faithfully (runpod_worker/local_runpod/README.md lists them with their sources).

    make test PYTEST_ARGS=tests/integration/test_fault_runpod_fidelity.py
"""

from __future__ import annotations

from typing import Any

import pytest

from runpod_worker.contract import parse_error
from tests.integration.conftest import Stack, wait_for
from tests.integration.test_fault_matrix import assert_one_job_one_lora
from tests.integration.test_training_live import character_ready_to_train, explain, final, start
from tests.support.grouping import in_one_process
from training.models import TrainingRun

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True), in_one_process(__name__)]


def rerun_ended(stack: Stack, run: TrainingRun, *, replaces: bool) -> dict[str, Any]:
    """The job once its second execution (after the first posted its result) sent its own result back:
    recorded aside, or (`rerun_result=replaces`) as the job's result."""

    def ended() -> dict[str, Any] | None:
        job = stack.runpod.state()["jobs"][run.runpod_job_id]
        if not [d for d in job["deliveries"] if d.get("rerun")]:
            return None
        if replaces:
            return job if job["status"] == "FAILED" else None
        return job if [r for r in job["ignored_results"] if "error" in r] else None

    return wait_for(ended, timeout=60, what="the re-run to end")


def test_a_job_run_again_after_its_result_trains_nothing_and_the_run_keeps_its_lora(
    alice: Any, shared_stack: Any
) -> None:
    # runpod-python#402: the request ran again after it had finished and posted its result. By default
    # RunPod's /status keeps the first result.
    stack = shared_stack(faults={"rerun_after_result": "1"})

    run = final(start(character_ready_to_train(alice)))
    job = rerun_ended(stack, run, replaces=False)

    run.refresh_from_db()
    assert_one_job_one_lora(stack, run)
    [again] = [r for r in job["ignored_results"] if "error" in r]
    # Told to stop at its `started` callback (the run is completed), before downloading anything.
    assert parse_error(again["error"]).code == "cancelled", explain(stack)
    assert job["status"] == "COMPLETED"
    run = wait_for(lambda: TrainingRun.objects.filter(pk=run.pk, cost_usd__isnull=False).first(), what="cost")
    assert run.status == "completed" and run.cost_usd > 0


def test_a_rerun_whose_result_replaces_the_first_leaves_the_completed_run_as_it_is(
    alice: Any, shared_stack: Any
) -> None:
    stack = shared_stack(faults={"rerun_after_result": "1", "rerun_result": "replaces"})

    run = final(start(character_ready_to_train(alice)))
    job = rerun_ended(stack, run, replaces=True)

    run.refresh_from_db()
    assert_one_job_one_lora(stack, run)
    assert job["status"] == "FAILED" and parse_error(job["error"]).code == "cancelled"
    # The cost is read once, from the first final status the studio saw; either counts GPU time RunPod billed.
    run = wait_for(lambda: TrainingRun.objects.filter(pk=run.pk, cost_usd__isnull=False).first(), what="cost")
    assert run.status == "completed" and run.cost_usd > 0


@pytest.mark.parametrize("expiry", ["404", "TIMED_OUT"])
def test_an_endpoint_runpod_scaled_to_zero_leaves_the_run_queued_until_its_ttl_and_then_fails_it(
    alice: Any, shared_stack: Any, expiry: str
) -> None:
    # After 7 days without requests RunPod sets max workers to 0 for good (docs endpoint-configurations.mdx
    # :80-88): no worker ever takes the job, which expires at its TTL as a 404 or as TIMED_OUT.
    stack = shared_stack(
        faults={"idle_days": "7", "queued_expiry": expiry}, worker_env={"TRAINING_JOB_TTL_SECONDS": "3"}
    )

    run = final(start(character_ready_to_train(alice)), timeout=90)

    assert (run.status, run.error_code) == ("failed", "timed_out"), explain(stack)
    assert run.error_message.startswith("No GPU worker took the run within"), run.error_message
    assert run.started_at is None and run.cost_usd is None
    assert stack.runpod.endpoint()["workers"]["max"] == 0
