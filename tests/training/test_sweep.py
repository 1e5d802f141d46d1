from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tests.characters.factories import CharacterFactory
from tests.training.conftest import FakeProvider, make_run, store_lora
from training.models import TrainingRun
from training.runpod import RunPodJob, RunPodJobNotFound
from training.services import training_runs_claim_due
from training.tasks import sweep_training_runs


def due(character: Any, status: str, seconds_ago: int, **fields: Any) -> TrainingRun:
    return make_run(
        character, status=status, next_poll_at=timezone.now() - timedelta(seconds=seconds_ago), **fields
    )


def fresh_character(alice: Any) -> Any:
    return CharacterFactory(owner=alice)


def test_only_due_active_runs_are_polled(alice: Any, provider: FakeProvider) -> None:
    overdue = due(fresh_character(alice), "training", 30, runpod_job_id="job-a")
    not_yet = make_run(
        fresh_character(alice),
        "training",
        runpod_job_id="job-b",
        next_poll_at=timezone.now() + timedelta(minutes=5),
    )
    finished = due(fresh_character(alice), "completed", 30, runpod_job_id="job-c", execution_ms=9000)
    provider.statuses["job-a"] = RunPodJob(id="job-a", status="IN_PROGRESS")

    assert sweep_training_runs() == 1

    assert provider.status_calls == ["job-a"]
    for run in (overdue, not_yet, finished):
        run.refresh_from_db()
    assert overdue.next_poll_at > timezone.now()
    assert not_yet.status == "training" and finished.status == "completed"


def test_a_sweep_completes_a_run_whose_webhook_never_came(alice: Any, provider: FakeProvider) -> None:
    run = due(fresh_character(alice), "training", 5, runpod_job_id="job-a")
    provider.statuses["job-a"] = RunPodJob(
        id="job-a", status="COMPLETED", output=store_lora(run), execution_ms=9000
    )

    sweep_training_runs()

    run.refresh_from_db()
    assert run.status == "completed" and run.cost_usd is not None


def test_a_pending_run_nobody_submitted_is_submitted_by_the_sweep(
    character: Any, provider: FakeProvider
) -> None:
    from training.services import training_run_start

    run = training_run_start(character=character, requested_by=character.owner, source="user")
    TrainingRun.objects.filter(pk=run.pk).update(submit_due_at=timezone.now() - timedelta(seconds=1))

    sweep_training_runs()

    run.refresh_from_db()
    assert (run.status, run.runpod_job_id) == ("queued", "job-1")


def test_a_run_runpod_forgot_fails_with_a_message(alice: Any, provider: FakeProvider) -> None:
    run = due(fresh_character(alice), "queued", 5, runpod_job_id="job-a", submitted_at=timezone.now())
    provider.status_errors.append(RunPodJobNotFound("HTTP 404"))

    sweep_training_runs()

    run.refresh_from_db()
    assert (run.status, run.error_code) == ("failed", "job_lost")
    assert "Retry the run" in run.error_message


def test_a_run_whose_job_runpod_dropped_at_its_ttl_unstarted_says_no_worker_took_it(
    alice: Any, provider: FakeProvider, settings: Any
) -> None:
    # At its TTL RunPod deletes a job that no worker took, and /status answers 404 (docs
    # serverless/endpoints/send-requests.mdx:124-131): an endpoint scaled to zero does this to every run.
    settings.TRAINING_JOB_TTL_SECONDS = 12 * 3600
    submitted = timezone.now() - timedelta(hours=12, seconds=30)
    run = due(fresh_character(alice), "queued", 5, runpod_job_id="job-a", submitted_at=submitted)
    provider.status_errors.append(RunPodJobNotFound("HTTP 404"))

    sweep_training_runs()

    run.refresh_from_db()
    assert (run.status, run.error_code) == ("failed", "timed_out")
    assert run.error_message.startswith("No GPU worker took the run within 12 h")
    assert "nothing was billed" in run.error_message


def test_a_run_never_taken_past_its_ttl_and_the_margin_says_no_worker_took_it(
    alice: Any, provider: FakeProvider, settings: Any
) -> None:
    submitted = timezone.now() - timedelta(seconds=settings.TRAINING_JOB_TTL_SECONDS + 3600)
    run = due(fresh_character(alice), "queued", 5, runpod_job_id="job-a", submitted_at=submitted)

    sweep_training_runs()

    run.refresh_from_db()
    assert (run.status, run.error_code) == ("failed", "timed_out")
    assert run.error_message.startswith("No GPU worker took the run within")
    assert provider.cancelled == ["job-a"]


def test_a_run_past_its_time_limit_is_failed_and_its_job_cancelled(
    alice: Any, provider: FakeProvider, settings: Any
) -> None:
    long_ago = timezone.now() - timedelta(seconds=settings.TRAINING_EXECUTION_TIMEOUT_SECONDS + 3600)
    run = due(fresh_character(alice), "training", 5, runpod_job_id="job-a", started_at=long_ago)

    sweep_training_runs()

    run.refresh_from_db()
    assert (run.status, run.error_code) == ("failed", "timed_out")
    assert provider.cancelled == ["job-a"]


def test_a_sweep_takes_at_most_a_batch(alice: Any, settings: Any) -> None:
    settings.TRAINING_SWEEP_BATCH_SIZE = 3
    for _ in range(5):
        due(fresh_character(alice), "queued", 10, runpod_job_id=f"job-{_}")

    claimed = training_runs_claim_due()

    assert len(claimed) == 3
    assert TrainingRun.objects.filter(next_poll_at__lte=timezone.now()).count() == 2


def test_the_oldest_due_runs_go_first(alice: Any, settings: Any) -> None:
    settings.TRAINING_SWEEP_BATCH_SIZE = 1
    due(fresh_character(alice), "queued", 10, runpod_job_id="job-new")
    oldest = due(fresh_character(alice), "queued", 600, runpod_job_id="job-old")

    assert training_runs_claim_due() == [(oldest.pk, "queued")]


def test_the_poll_interval_grows_while_nothing_changes(alice: Any) -> None:
    run = due(fresh_character(alice), "queued", 1, runpod_job_id="job-a")
    intervals = []
    for _ in range(4):
        now = timezone.now() + timedelta(hours=1 + _)
        TrainingRun.objects.filter(pk=run.pk).update(next_poll_at=now)
        training_runs_claim_due(now=now)
        run.refresh_from_db()
        intervals.append((run.next_poll_at - now).total_seconds())

    assert intervals == [15, 30, 60, 120]


def test_a_sweep_costs_the_same_queries_for_a_few_or_many_runs(alice: Any) -> None:
    def count_queries() -> int:
        with CaptureQueriesContext(connection) as queries:
            training_runs_claim_due(batch_size=50)
        return len(queries)

    for _ in range(3):
        due(fresh_character(alice), "queued", 10, runpod_job_id=f"few-{_}")
    few = count_queries()
    for _ in range(40):
        due(fresh_character(alice), "queued", 10, runpod_job_id=f"many-{_}")
    many = count_queries()

    assert few == many


@pytest.mark.django_db(transaction=True)
def test_two_sweeps_at_once_never_take_the_same_run(alice: Any) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("SKIP LOCKED needs Postgres")
    import threading

    for _ in range(20):
        due(fresh_character(alice), "queued", 10, runpod_job_id=f"job-{_}")
    taken: list[list[Any]] = []
    barrier = threading.Barrier(2)

    def sweep() -> None:
        try:
            barrier.wait()
            taken.append(training_runs_claim_due(batch_size=15))
        finally:
            connection.close()

    threads = [threading.Thread(target=sweep) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    ids = [run_id for batch in taken for run_id, _ in batch]
    assert len(ids) == len(set(ids)) == 20
