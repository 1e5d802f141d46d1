"""Faults inside the Celery tasks around a run, on the live stack: a webhook delivery whose worker is
SIGKILLed after the endpoint answered, a queued delivery lost with a Redis restart, and the cancel of an
orphaned RunPod job whose worker is SIGKILLed. Each still gives one run, one LoRA, and every event to the
developer's endpoint, signed, with the same `webhook-id` on every copy.

    make test PYTEST_ARGS=tests/integration/test_fault_tasks.py
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from django.db.models import Q
from standardwebhooks.webhooks import Webhook

from developer.models import WebhookDelivery
from developer.services import webhook_endpoint_create
from runpod_worker.contract import parse_error
from tests.developer.receiver import Receiver, receiver
from tests.integration.conftest import Stack, wait_for
from tests.integration.test_fault_matrix import assert_one_job_one_lora
from tests.integration.test_training_live import (
    assert_only_stored_lora,
    character_ready_to_train,
    explain,
    final,
    start,
)
from tests.support.broker import private_redis
from training.models import StrayJob, TrainingRun
from training.selectors import character_current_lora

__all__ = ["receiver"]

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

# The Celery worker may post to the test's receiver on loopback; an attempt times out after 3 s (one whose
# worker died is due again once its lease, `attempt_lease()`, 9 s, has run out), a delivery due for 1 s is
# taken as lost, and an attempt the loaded machine let time out is tried again within seconds (the
# product's pauses start at 10 s and reach a minute at the second retry, past this module's waits).
WEBHOOK_WORKER_ENV = {
    "WEBHOOKS_ALLOW_PRIVATE_URLS": "true",
    "WEBHOOK_TIMEOUT_SECONDS": "3",
    "WEBHOOK_SWEEP_INTERVAL_SECONDS": "1",
    "WEBHOOK_RETRY_DELAYS_SECONDS": "1,2,4,8,16",
}


@pytest.fixture
def endpoint_secret(alice: Any, receiver: Receiver, settings: Any) -> str:
    """Alice's endpoint, registered through the product, listening on loopback; returns its secret."""
    settings.WEBHOOKS_ALLOW_PRIVATE_URLS = True
    _, secret = webhook_endpoint_create(user=alice, url=receiver.url)
    return secret


def with_fault(moment: str, marker: Path, **env: str) -> dict[str, Any]:
    """The stack options for a Celery worker that SIGKILLs itself once, inside `moment`."""
    return {
        "worker_env": {"STUDIO_FAULT_KILL_IN": moment, "STUDIO_FAULT_MARKER": str(marker), **env},
        "worker_args": ["--include=tests.integration.celery_faults"],
    }


def killed_by_the_fault(stack: Stack, marker: Path, moment: str) -> None:
    wait_for(marker.exists, timeout=60, what=f"the worker to be killed inside the {moment}")
    assert stack.worker.process is not None
    stack.worker.process.wait(timeout=10)  # the whole worker is gone, beat with it


def all_delivered(run: TrainingRun) -> list[WebhookDelivery]:
    # The run's status events carry the run (`id`); its checkpoints' and samples' carry `run_id`.
    of_run = Q(payload__data__id=str(run.pk)) | Q(payload__data__run_id=str(run.pk))
    deliveries = list(WebhookDelivery.objects.filter(of_run))
    events = {delivery.event_type for delivery in deliveries}
    done = all(delivery.status == "delivered" for delivery in deliveries)
    complete = {"training_run.started", "training_run.completed"} <= events
    return deliveries if done and complete else []


def copies_by_event(receiver: Receiver, secret: str) -> Counter[str]:
    """How many times the endpoint got each event; every copy must carry a valid signature."""
    for request in receiver.received:
        Webhook(secret).verify(request.body, request.headers)
    return Counter(request.headers["webhook-id"] for request in receiver.received)


def test_a_celery_worker_sigkilled_after_the_endpoint_answered_sends_the_event_again_under_its_id(
    alice: Any, stack_factory: Any, receiver: Receiver, endpoint_secret: str, tmp_path: Path
) -> None:
    marker = tmp_path / "killed-in-deliver"
    stack = stack_factory(**with_fault("deliver", marker, **WEBHOOK_WORKER_ENV))

    run = start(character_ready_to_train(alice))
    killed_by_the_fault(stack, marker, "deliver")
    [sent] = receiver.received  # the endpoint answered 2xx...
    killed = WebhookDelivery.objects.get(event_id=sent.headers["webhook-id"])
    assert (killed.status, killed.attempts) == ("pending", 1)  # ...and the log does not know it yet
    stack.worker.start()  # a fresh worker (the hook does not fire twice)
    ready_at = time.time()

    deliveries = wait_for(lambda: all_delivered(run), timeout=60, what="every event delivered")

    killed.refresh_from_db()
    assert (killed.status, killed.attempts) == ("delivered", 2), explain(stack)
    copies = copies_by_event(receiver, endpoint_secret)
    assert copies[killed.event_id] == 2  # at least once: the receiver drops the copy by its webhook-id
    assert set(copies) == {delivery.event_id for delivery in deliveries}
    # Once its lease ran out (seconds after the killed attempt began), the next sweep sent it: not an hour
    # later, when Redis would hand the killed task's message out again.
    assert killed.delivered_at is not None
    sent_again_after_s = killed.delivered_at.timestamp() - ready_at
    # Lease plus a sweep interval or two (1 s) plus the send; generous for a loaded machine, and still
    # two orders of magnitude below Redis's redelivery.
    assert sent_again_after_s < 60, f"sent again {sent_again_after_s:.1f} s after a worker was ready"
    assert_one_job_one_lora(stack, final(run))


@pytest.mark.parametrize("sweep_killed", [False, True], ids=["task-lost", "task-lost-and-sweep-killed"])
def test_redis_restarted_with_a_webhook_delivery_queued_delivers_it_once_when_a_worker_runs_again(
    alice: Any,
    stack_factory: Any,
    receiver: Receiver,
    endpoint_secret: str,
    tmp_path: Path,
    sweep_killed: bool,
) -> None:
    redis = private_redis()
    if redis is None:
        pytest.skip(
            "needs a redis-server binary for a Redis of the test's own (the shared one is never restarted)"
        )
    stack = stack_factory(worker_env=WEBHOOK_WORKER_ENV)
    run = start(character_ready_to_train(alice))
    started = WebhookDelivery.objects.filter(event_type="training_run.started", status="delivered")
    wait_for(started.exists, what="the started event delivered")
    stack.worker.stop()
    # The worker's "finished" callback reaches the live server, which completes the run and records the
    # event; its delivery task waits in Redis...
    run = final(run)
    completed = wait_for(
        lambda: WebhookDelivery.objects.filter(event_type="training_run.completed").first(),
        what="the completed event recorded",
    )
    assert (completed.status, completed.attempts) == ("pending", 0)
    redis.restart()  # ...and is gone with it (no persistence)
    if sweep_killed:
        # The next worker dies inside the webhook sweep, after it made the delivery due and before it
        # queued the task: the sweep after that finds it overdue again.
        marker = tmp_path / "killed-in-webhook-sweep"
        options = with_fault("webhook_sweep", marker, **WEBHOOK_WORKER_ENV)
        stack.worker.env = {**stack.worker_env, **options["worker_env"]}
        stack.worker.extra_args = options["worker_args"]
        stack.worker.start(wait_ready=False)  # its beat's first sweep finds the delivery due at once
        killed_by_the_fault(stack, marker, "webhook sweep")
    stack.worker.start()

    wait_for(lambda: all_delivered(run), timeout=30, what="every event delivered")

    completed.refresh_from_db()
    assert (completed.status, completed.attempts) == ("delivered", 1)
    assert copies_by_event(receiver, endpoint_secret)[completed.event_id] == 1
    # The sweep logs after queueing, so another worker process may deliver before the line is written.
    requeued = f"queued 1 lost delivery(ies) again: {completed.pk}"
    with contextlib.suppress(TimeoutError):
        wait_for(lambda: requeued in stack.worker.logs(), timeout=10)
    assert requeued in stack.worker.logs()
    assert_one_job_one_lora(stack, run)


def test_a_celery_worker_sigkilled_inside_the_cancel_of_an_orphaned_job_bills_no_training(
    alice: Any, stack_factory: Any, settings: Any, tmp_path: Path
) -> None:
    # The first /run creates its job but its answer is lost; the run is submitted again after the grace.
    # That first job waits in RunPod's queue past the resubmission, so when its worker starts the run
    # already has its job: the worker is told to stop, and its cancel is queued, then killed.
    marker = tmp_path / "killed-in-cancel"
    stack = stack_factory(
        faults={"lose_run_answer": "1", "queue_delay_s": "5"},
        # A 1 s RunPod timeout shortens how long a claimed cancel holds its row (the client's longest
        # call: 48 s instead of 120 s), after which the sweep takes the killed attempt for dead.
        **with_fault(
            "cancel", marker, TRAINING_SUBMIT_UNCERTAIN_GRACE_SECONDS="1", RUNPOD_TIMEOUT_SECONDS="1"
        ),
    )
    settings.TRAINING_SUBMIT_UNCERTAIN_GRACE_SECONDS = 1

    run = start(character_ready_to_train(alice))
    killed_by_the_fault(stack, marker, "cancel")
    run.refresh_from_db()
    assert not run.is_final  # what the user sees meanwhile: the run waiting for its job, or training
    stack.worker.start()

    run = final(run, timeout=90)

    jobs = {job["id"]: job for job in stack.jobs()}
    assert run.status == "completed", run.error_message + explain(stack)
    [orphan] = [job for job_id, job in jobs.items() if job_id != run.runpod_job_id]
    owner = jobs[run.runpod_job_id]
    assert run.attempts == 2 and len(jobs) == 2
    # The orphan's worker was told to stop at its first callback: no training, no LoRA, under a second
    # billed. The killed cancel is not lost with its message (which would come back only after Redis's
    # one-hour visibility timeout): its row is due again, and the new worker's sweep sends it.
    orphan = stack.runpod.wait_for(orphan["id"], timeout=10)
    assert orphan["status"] == "FAILED" and "output" not in orphan
    assert parse_error(orphan["error"]).code == "claimed_elsewhere"
    assert orphan["executionTime"] < owner["executionTime"]
    stray = wait_for(
        lambda: StrayJob.objects.filter(runpod_job_id=orphan["id"]).exclude(status="pending").first(),
        timeout=90,
        what="the orphan's cancel sent again by the sweep",
    )
    assert stray.status == "cancelled" and stray.run_id == run.pk
    assert_only_stored_lora(stack, run)
    assert character_current_lora(run.character) == run
    assert run.events.filter(to_status="completed").count() == 1
