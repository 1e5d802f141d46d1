"""RunPod slow, silent or unreachable, on the live stack: each run still trains on one GPU job, ends with
one LoRA that is the character's current one, and keeps every reference image.

The stand-in's switches make the faults (runpod_worker/local_runpod/): `slow_rate`/`slow_s` answer
after the client gave up (a `/run` creates its job first), `lose_run_answer` makes a job and answers 500,
`garble_run_answer` makes a job and answers 200 with a body that is not JSON,
`public_down` closes every public API connection unanswered while the GPU workers carry on and still
call the backend back. The deterministic ten-minute version is tests/training/test_runpod_outage_clock.py.

    make test PYTEST_ARGS=tests/integration/test_fault_runpod_outage.py
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.integration.conftest import WORKER_LIVENESS_S, Stack, wait_for
from tests.integration.test_fault_matrix import assert_one_job_one_lora
from tests.integration.test_training_live import (
    character_ready_to_train,
    explain,
    final,
    start,
    statuses,
)
from tests.support.grouping import in_one_process
from training.models import TrainingRun
from training.services import training_run_retry

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True), in_one_process(__name__)]

# The Celery worker's RunPod client gives up after this; the stand-in answers only after SLOW_S.
CLIENT_TIMEOUT_S = 1.0
SLOW_S = 3.0


def api_calls(stack: Stack, route: str) -> int:
    """Public API requests the stand-in received on `route`, refused or timed-out ones included."""
    return int(stack.runpod.state()["api_calls"].get(route, 0))


def other_jobs(stack: Stack, run: TrainingRun) -> list[dict[str, Any]]:
    return [job for job in stack.jobs() if job["id"] != run.runpod_job_id]


# ---------------------------------------------------------------------------------------- timeouts


def test_runpod_answering_every_call_after_the_client_timeout_trains_once_on_the_job_that_timed_out(
    alice: Any, shared_stack: Any
) -> None:
    stack = shared_stack(
        faults={"slow_rate": "1.0", "slow_s": str(SLOW_S)},
        worker_env={"RUNPOD_TIMEOUT_SECONDS": str(CLIENT_TIMEOUT_S)},
    )

    run = final(start(character_ready_to_train(alice)), timeout=60)

    # `/run` timed out after its job was made: the backend did not submit again (the grace period holds
    # it back); the job's worker claimed the run when it started, and its "finished" callback completed it.
    assert_one_job_one_lora(stack, run)
    assert run.attempts == 1 and api_calls(stack, "run") == 1
    [job] = stack.jobs()
    assert run.runpod_job_id == job["id"]
    assert statuses(run) == ["pending", "training", "completed"]
    # RunPod's webhook for the job's end queues a read of its final status for the cost; `/status` times
    # out too (every attempt of the client), and the completed run stays as it is, its cost unknown.
    wait_for(lambda: api_calls(stack, "status") >= 1, timeout=30, what="a /status call")
    run.refresh_from_db()
    assert (run.status, run.cost_usd) == ("completed", None), explain(stack)


# ------------------------------------------------------------------------------------ lost answer


def test_a_lost_run_answer_leaves_the_first_job_to_claim_the_run(alice: Any, shared_stack: Any) -> None:
    stack = shared_stack(faults={"lose_run_answer": "1"})

    run = final(start(character_ready_to_train(alice)), timeout=60)

    # The 500 left the outcome unknown; within the grace period (10 min) nothing was sent again, and the
    # job that did exist claimed the run when its worker started.
    assert_one_job_one_lora(stack, run)
    assert run.attempts == 1 and api_calls(stack, "run") == 1
    assert run.events.filter(to_status="completed").count() == 1


def test_a_garbled_run_answer_leaves_its_job_to_claim_the_run_and_sends_no_second(
    alice: Any, shared_stack: Any
) -> None:
    # A 2xx whose body is not JSON: RunPod made the job, its id is unreadable. The client calls that
    # uncertain (not "certainly no job"), so the grace period holds a second /run back.
    stack = shared_stack(faults={"garble_run_answer": "1"})

    run = final(start(character_ready_to_train(alice)), timeout=60)

    assert_one_job_one_lora(stack, run)
    assert run.attempts == 1 and api_calls(stack, "run") == 1
    assert run.events.filter(to_status="completed").count() == 1


def test_a_lost_run_answer_past_the_grace_period_trains_the_resubmitted_job_and_stops_the_first(
    alice: Any, shared_stack: Any
) -> None:
    # Every new job waits 7 s for a GPU, so the grace period (2 s) runs out before the first job's worker
    # starts: the sweep submits again, that answer arrives, and the first job's worker is stopped.
    stack = shared_stack(
        faults={"lose_run_answer": "1", "queue_delay_s": "7"},
        worker_env={"TRAINING_SUBMIT_UNCERTAIN_GRACE_SECONDS": "2"},
    )

    run = final(start(character_ready_to_train(alice)), timeout=60)

    assert run.status == "completed", run.error_message + explain(stack)
    first = min(stack.jobs(), key=lambda job: job["created_ms"])
    assert run.attempts >= 2 and run.runpod_job_id != first["id"], stack.jobs()
    # The first job was stopped at its `started` callback (claimed_elsewhere) and cancelled; any other job
    # but the run's ended the same way. None trained to the end.
    for job in other_jobs(stack, run):
        ended = stack.runpod.wait_for(job["id"], timeout=20)
        assert ended["status"] in {"CANCELLED", "FAILED"}, ended
        assert not (ended.get("output") or {}).get("lora"), ended
    assert_one_job_one_lora(stack, run, jobs=1)
    assert run.events.filter(to_status="completed").count() == 1


# --------------------------------------------------------------------------------- unreachable


def test_runpod_unreachable_while_a_run_trains_and_ends_completes_it_and_fills_its_cost_once_back(
    alice: Any, shared_stack: Any
) -> None:
    # Webhooks stay on: RunPod's webhook for the job's end is sent during the outage and reaches the
    # backend (only the backend's calls to RunPod fail), which answers 200, so RunPod never sends it
    # again; the read of the final status it queues fails. In production every webhook attempt (3 in
    # ~20 s) falls inside a ten-minute outage the same way, so only the sweep can bring the cost after.
    stack = shared_stack()
    run = start(character_ready_to_train(alice), steps=200)
    wait_for(lambda: TrainingRun.objects.filter(pk=run.pk, progress_step__gt=0).exists(), what="progress")
    stack.runpod.set_faults(public_down=True)
    down_at = time.monotonic()
    status_calls_before = api_calls(stack, "status")

    run = final(run, timeout=60)

    # The worker's "finished" callback completed the run with its LoRA verified in storage; RunPod was
    # never asked, and the run never showed failed.
    assert run.status == "completed", run.error_message + explain(stack)
    assert statuses(run) == ["pending", "queued", "training", "completed"]
    assert run.cost_usd is None
    job_id = run.runpod_job_id
    # RunPod's webhook reached the backend and its poll was refused; keep RunPod down past the worker
    # liveness window and a few sweeps after that.
    wait_for(
        lambda: any(a.get("status") == 200 for a in stack.runpod.state()["jobs"][job_id]["webhook_attempts"]),
        what="RunPod's webhook",
    )
    wait_for(lambda: api_calls(stack, "status") > status_calls_before, timeout=20, what="a refused /status")
    wait_for(lambda: time.monotonic() - down_at > 2 * WORKER_LIVENESS_S, what="the outage to outlast")
    run.refresh_from_db()
    assert (run.status, run.cost_usd) == ("completed", None)
    stack.runpod.set_faults(public_down=False)
    back_at = time.monotonic()

    run = wait_for(
        lambda: TrainingRun.objects.filter(pk=run.pk, cost_usd__isnull=False).first(),
        timeout=40,
        what="the cost once RunPod answers",
    )

    job = stack.runpod.state()["jobs"][job_id]
    assert run.execution_ms == job["executionTime"] and run.cost_usd > 0
    assert_one_job_one_lora(stack, run)
    print(f"outage {back_at - down_at:.1f} s; cost filled {time.monotonic() - back_at:.1f} s after it")


def test_runpod_unreachable_at_submission_for_several_grace_periods_keeps_the_run_pending(
    alice: Any, shared_stack: Any
) -> None:
    # Every /run's connection is closed unanswered: each attempt's outcome is unknown, so the backend
    # waits a grace period (1 s here, 10 min in production) before the next, and no Celery retry applies.
    stack = shared_stack(
        faults={"public_down": "true"}, worker_env={"TRAINING_SUBMIT_UNCERTAIN_GRACE_SECONDS": "1"}
    )
    run = start(character_ready_to_train(alice))

    wait_for(lambda: TrainingRun.objects.get(pk=run.pk).attempts >= 3, timeout=30, what="three attempts")
    run.refresh_from_db()
    assert (run.status, run.runpod_job_id, stack.jobs()) == ("pending", "", [])
    stack.runpod.set_faults(public_down=False)

    run = final(run, timeout=60)

    assert_one_job_one_lora(stack, run)
    assert statuses(run) == ["pending", "queued", "training", "completed"]
    assert run.attempts <= 5


def test_runpod_unreachable_past_every_submission_attempt_fails_the_run_and_retry_trains_it(
    alice: Any, shared_stack: Any
) -> None:
    stack = shared_stack(
        faults={"public_down": "true"}, worker_env={"TRAINING_SUBMIT_UNCERTAIN_GRACE_SECONDS": "1"}
    )

    run = final(start(character_ready_to_train(alice)), timeout=60)

    # TRAINING_SUBMIT_MAX_ATTEMPTS (5) unanswered /run calls, a grace period apart: in production that is
    # 40 minutes of RunPod unreachable before the user reads this.
    assert (run.status, run.error_code) == ("failed", "submit_failed"), explain(stack)
    assert run.error_message == (
        "The run could not be sent to RunPod after 5 attempts. RunPod may be down or rate-limiting; "
        "retry the run in a few minutes."
    )
    assert (run.attempts, api_calls(stack, "run"), stack.jobs()) == (5, 5, [])
    stack.runpod.set_faults(public_down=False)

    retried = final(training_run_retry(run=run, requested_by=alice, source="user"), timeout=60)

    assert_one_job_one_lora(stack, retried)
