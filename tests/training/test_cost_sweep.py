"""The cost of a run completed by the worker's "finished" callback: the sweep reads RunPod's final status
while RunPod keeps the job's result (30 minutes after the job ends), and gives the cost up after that."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from runpod_worker.contract import JobOutput
from tests.characters.factories import CharacterFactory
from tests.training.conftest import FakeProvider, make_run, store_lora
from training.models import TrainingRun
from training.pricing import actual_cost
from training.runpod import RunPodJob, RunPodJobNotFound, RunPodUnavailable
from training.selectors import user_spend_this_month
from training.services import (
    training_run_apply_status,
    training_run_cancel,
    training_run_worker_finished,
    training_runs_claim_due,
)
from training.tasks import sweep_training_runs

pytestmark = pytest.mark.django_db

HOLDER = "delivery-holder"


@pytest.fixture
def clock() -> Iterator[Any]:
    with time_machine.travel(timezone.now(), tick=False) as traveller:
        yield traveller


def completed_by_the_worker(character: Any) -> tuple[TrainingRun, dict[str, Any]]:
    """A run its holder's "finished" callback completed; RunPod's final status not read yet."""
    run = make_run(character, status="training", runpod_job_id="job-1", worker_delivery_id=HOLDER)
    output = store_lora(run)
    training_run_worker_finished(
        run=run, job_id="job-1", delivery_id=HOLDER, output=JobOutput.from_dict(output)
    )
    run.refresh_from_db()
    assert (run.status, run.cost_usd) == ("completed", None)
    return run, output


def test_a_run_completed_by_the_finished_callback_is_due_for_its_cost(character: Any, clock: Any) -> None:
    run, _ = completed_by_the_worker(character)

    assert run.next_poll_at == timezone.now() + timedelta(seconds=15)


def test_the_sweep_reads_the_cost_when_runpods_final_webhook_was_lost(
    character: Any, provider: FakeProvider, clock: Any
) -> None:
    run, output = completed_by_the_worker(character)
    provider.statuses["job-1"] = RunPodJob(
        id="job-1", status="COMPLETED", output=output, execution_ms=100_000
    )
    clock.shift(timedelta(seconds=16))

    assert sweep_training_runs() == 1

    run.refresh_from_db()
    assert provider.status_calls == ["job-1"]
    assert run.execution_ms == 100_000 and run.cost_usd is not None and run.cost_usd > 0
    assert run.next_poll_at is None
    assert run.events.filter(to_status="completed").count() == 1
    assert sweep_training_runs() == 0  # read once


def test_the_sweep_asks_again_while_runpod_has_not_ended_the_job(
    character: Any, provider: FakeProvider, clock: Any
) -> None:
    run, _ = completed_by_the_worker(character)
    provider.statuses["job-1"] = RunPodJob(id="job-1", status="IN_PROGRESS")
    clock.shift(timedelta(seconds=16))

    sweep_training_runs()

    run.refresh_from_db()
    assert run.cost_usd is None
    assert run.next_poll_at == timezone.now() + timedelta(seconds=15)  # then 30, 60, … up to 5 min


def test_a_cost_runpod_still_keeps_is_read_on_the_last_poll_of_the_window(
    character: Any, provider: FakeProvider, clock: Any
) -> None:
    run, output = completed_by_the_worker(character)
    provider.statuses["job-1"] = RunPodJob(id="job-1", status="IN_PROGRESS")
    while run.next_poll_at is not None and run.cost_usd is None:
        clock.move_to(run.next_poll_at)
        if timezone.now() - run.finished_at >= timedelta(minutes=29):
            provider.statuses["job-1"] = RunPodJob(
                id="job-1", status="COMPLETED", output=output, execution_ms=100_000
            )
        sweep_training_runs()
        run.refresh_from_db()

    assert run.cost_usd is not None
    assert timezone.now() <= run.finished_at + timedelta(minutes=30)
    assert len(provider.status_calls) <= 12  # a short backoff, not a poll every sweep


def test_after_runpods_retention_the_sweep_gives_the_cost_up_and_logs_it(
    character: Any, provider: FakeProvider, clock: Any, caplog: Any
) -> None:
    run, _ = completed_by_the_worker(character)
    clock.shift(timedelta(minutes=31))

    with caplog.at_level(logging.WARNING, logger="training.services"):
        assert sweep_training_runs() == 0

    run.refresh_from_db()
    assert provider.status_calls == []  # RunPod has deleted the result: nothing to ask
    assert (run.status, run.cost_usd, run.next_poll_at) == ("completed", None, None)
    assert f"run {run.pk}: completed, but its cost stays empty" in caplog.text
    clock.shift(timedelta(hours=1))
    assert sweep_training_runs() == 0  # never again


def test_a_job_runpod_no_longer_knows_gives_the_cost_up_at_once(
    character: Any, provider: FakeProvider, clock: Any
) -> None:
    run, _ = completed_by_the_worker(character)
    provider.status_errors.append(RunPodJobNotFound("HTTP 404"))
    clock.shift(timedelta(seconds=16))

    sweep_training_runs()

    run.refresh_from_db()
    assert (run.status, run.cost_usd, run.next_poll_at) == ("completed", None, None)


def test_runpod_unreachable_leaves_the_cost_due_at_the_next_poll(
    character: Any, provider: FakeProvider, clock: Any
) -> None:
    run, _ = completed_by_the_worker(character)
    provider.status_errors.append(RunPodUnavailable("HTTP 503"))
    clock.shift(timedelta(seconds=16))

    sweep_training_runs()

    run.refresh_from_db()
    assert run.cost_usd is None
    assert run.next_poll_at == timezone.now() + timedelta(seconds=15)


def test_a_run_with_its_cost_known_or_given_up_is_never_claimed(character: Any, alice: Any) -> None:
    long_ago = timezone.now() - timedelta(minutes=5)
    make_run(character, status="completed", runpod_job_id="job-a", execution_ms=9000, next_poll_at=long_ago)
    make_run(CharacterFactory(owner=alice), status="completed", runpod_job_id="job-b", next_poll_at=None)
    make_run(CharacterFactory(owner=alice), status="failed", runpod_job_id="job-c", next_poll_at=long_ago)

    assert training_runs_claim_due() == []


def test_a_sweep_costs_the_same_queries_with_completed_runs_awaiting_their_cost(alice: Any) -> None:
    due = timezone.now() - timedelta(seconds=10)
    expired = timezone.now() - timedelta(hours=1)

    def count_queries() -> int:
        TrainingRun.objects.update(next_poll_at=due)
        with CaptureQueriesContext(connection) as queries:
            training_runs_claim_due(batch_size=50)
        return len(queries)

    def add(count: int, prefix: str) -> None:
        for index in range(count):
            make_run(CharacterFactory(owner=alice), "queued", runpod_job_id=f"{prefix}-q{index}")
            for finished_at in (timezone.now(), expired):
                make_run(
                    CharacterFactory(owner=alice),
                    "completed",
                    runpod_job_id=f"{prefix}-c{index}-{finished_at.timestamp()}",
                    finished_at=finished_at,
                )

    add(2, "few")
    few = count_queries()
    add(12, "many")
    many = count_queries()

    assert few == many


def test_an_execution_time_read_while_the_job_ran_never_prices_the_run(
    character: Any, provider: FakeProvider, clock: Any
) -> None:
    # Replayed from a real job: `/status` reports `executionTime` while the job is IN_PROGRESS, a running
    # total (runpod-python#105; runpod/docs `serverless/endpoints/operation-reference.mdx`, "executionTime").
    # A poll 61.5 s in copied it; the worker's "finished" then completed the run, which was priced at that
    # partial time ($0.0468) although the 31-minute job cost about $1.42.
    run = make_run(character, status="training", runpod_job_id="job-1", worker_delivery_id=HOLDER)
    running = {"id": "job-1", "status": "IN_PROGRESS", "executionTime": 61_500, "delayTime": 2_000}
    training_run_apply_status(run_id=run.pk, job=RunPodJob.from_payload(running), source="poll")
    output = store_lora(run)
    training_run_worker_finished(
        run=run, job_id="job-1", delivery_id=HOLDER, output=JobOutput.from_dict(output)
    )

    run.refresh_from_db()
    assert (run.status, run.cost_usd, run.cost_state) == ("completed", None, "pending")

    provider.statuses["job-1"] = RunPodJob(
        id="job-1", status="COMPLETED", output=output, execution_ms=1_864_211
    )
    clock.shift(timedelta(seconds=16))
    sweep_training_runs()

    run.refresh_from_db()
    assert run.execution_ms == 1_864_211
    assert run.cost_usd == actual_cost(execution_ms=1_864_211, gpu_name=run.gpu_type)
    assert run.cost_state == "settled"


# ------------------------------------------------------------------------------ runs we ended ourselves


def cancelled_while_training(character: Any) -> TrainingRun:
    """A run the user cancelled on its GPU: RunPod's `/cancel` answers only `{id, status}` (docs
    serverless/endpoints/operation-reference.mdx:726-729), so the GPU time it billed is still to be read."""
    run = make_run(character, status="training", runpod_job_id="job-1", started_at=timezone.now())
    training_run_cancel(run=run, source="user")
    run.refresh_from_db()
    return run


def test_a_cancelled_runs_cost_is_read_from_runpods_final_status(
    character: Any, provider: FakeProvider, clock: Any
) -> None:
    run = cancelled_while_training(character)
    assert (run.status, run.cost_usd, run.cost_state) == ("cancelled", None, "pending")
    provider.statuses["job-1"] = RunPodJob(id="job-1", status="CANCELLED", execution_ms=754_000)
    clock.shift(timedelta(seconds=16))

    sweep_training_runs()

    run.refresh_from_db()
    assert run.execution_ms == 754_000 and run.cost_state == "settled"
    assert run.cost_usd == actual_cost(execution_ms=754_000, gpu_name=run.gpu_type)
    assert run.events.count() == 1  # only the cancel: reading the cost changes no status


def test_a_run_failed_at_its_deadline_gets_its_cost_from_the_job_runpod_then_stopped(
    character: Any, provider: FakeProvider, clock: Any
) -> None:
    long_ago = timezone.now() - timedelta(hours=4)
    run = make_run(
        character, status="training", runpod_job_id="job-1", started_at=long_ago, next_poll_at=long_ago
    )
    sweep_training_runs()
    run.refresh_from_db()
    assert (run.status, run.error_code, run.cost_state) == ("failed", "timed_out", "pending")
    provider.statuses["job-1"] = RunPodJob(id="job-1", status="CANCELLED", execution_ms=10_800_000)
    clock.shift(timedelta(seconds=16))

    sweep_training_runs()

    run.refresh_from_db()
    assert run.cost_usd == actual_cost(execution_ms=10_800_000, gpu_name=run.gpu_type)


def test_a_run_cancelled_before_a_worker_took_it_settles_with_nothing_billed(
    character: Any, provider: FakeProvider, clock: Any
) -> None:
    run = make_run(character, status="queued", runpod_job_id="job-1")
    training_run_cancel(run=run, source="user")
    provider.statuses["job-1"] = RunPodJob(id="job-1", status="CANCELLED")
    clock.shift(timedelta(seconds=16))

    sweep_training_runs()

    run.refresh_from_db()
    assert (run.cost_usd, run.cost_state, run.next_poll_at) == (None, "settled", None)
    assert user_spend_this_month(character.owner) == 0


def test_a_cancelled_runs_cost_is_given_up_after_runpods_retention(
    character: Any, provider: FakeProvider, clock: Any, caplog: Any
) -> None:
    run = cancelled_while_training(character)
    clock.shift(timedelta(minutes=31))

    with caplog.at_level(logging.WARNING, logger="training.services"):
        sweep_training_runs()

    run.refresh_from_db()
    assert (run.cost_state, run.next_poll_at) == ("settled", None)
    assert f"run {run.pk}: cancelled, but its cost stays empty" in caplog.text
