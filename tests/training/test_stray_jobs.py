"""A RunPod job no run owns is written down where it is found, in the same transaction, and cancelled from
that row: by the task queued on commit, again by beat's sweep when that task is lost or RunPod cannot be
reached, until RunPod could no longer be running the job."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from celery.exceptions import Retry
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from tests.training.conftest import FakeProvider, make_run
from training import services
from training.models import StrayJob, TrainingRun
from training.runpod import RunPodEndpointNotFound, RunPodJobNotFound, RunPodRejected, RunPodUnavailable
from training.services import (
    STRAY_CANCEL_RETRY,
    ending,
    stray_job_record,
    stray_jobs_claim_due,
    training_run_cancel,
    training_run_start,
    training_run_submit,
    training_run_worker_started,
)
from training.tasks import cancel_runpod_job, sweep_training_runs

pytestmark = pytest.mark.django_db

# RunPod cannot be running a job this long after it was found stray (time to live + execution timeout).
LIFETIME_S = 12 * 3600 + 3 * 3600


@pytest.fixture(autouse=True)
def runpod_limits(settings: Any) -> None:
    settings.TRAINING_JOB_TTL_SECONDS = 12 * 3600
    settings.TRAINING_EXECUTION_TIMEOUT_SECONDS = 3 * 3600
    settings.TRAINING_SWEEP_INTERVAL_SECONDS = 15.0


@pytest.fixture
def clock() -> Iterator[Any]:
    with time_machine.travel(timezone.now(), tick=False) as traveller:
        yield traveller


@pytest.fixture
def pending(character: Any) -> TrainingRun:
    # Created without the on-commit enqueue running, so each test submits by hand.
    return training_run_start(character=character, requested_by=character.owner, source="user")


@pytest.fixture
def claimed(character: Any) -> TrainingRun:
    return make_run(character, status="training", runpod_job_id="job-1")


def unreachable(provider: FakeProvider, monkeypatch: pytest.MonkeyPatch, times: int = 1000) -> list[str]:
    """RunPod refuses connections for the next `times` cancels; returns the job ids it was asked about."""
    asked: list[str] = []
    answer = provider.cancel

    def cancel(job_id: str) -> Any:
        asked.append(job_id)
        if len(asked) <= times:
            raise RunPodUnavailable("RunPod did not accept a connection for POST cancel (refused).")
        return answer(job_id)

    monkeypatch.setattr(provider, "cancel", cancel)
    return asked


def recorded(job_id: str = "job-stray", run: TrainingRun | None = None, **fields: Any) -> StrayJob:
    """A stray job written down whose queued cancel never ran (a lost message)."""
    stray_job_record(job_id=job_id, run_id=run.pk if run else None, reason="test")
    StrayJob.objects.filter(runpod_job_id=job_id).update(**fields)
    return StrayJob.objects.get(runpod_job_id=job_id)


class Killed(BaseException):
    """Stands for SIGKILL inside a task: nothing after it runs."""


def overdue(stray: StrayJob, seconds: float = 16) -> None:
    StrayJob.objects.filter(pk=stray.pk).update(next_attempt_at=timezone.now() - timedelta(seconds=seconds))


# --- Where stray jobs are found ------------------------------------------------------------------


def test_a_job_answered_after_its_run_was_cancelled_is_recorded_and_cancelled(
    pending: TrainingRun,
    provider: FakeProvider,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    submit = provider.submit

    def submit_while_user_cancels(**kwargs: Any) -> Any:
        training_run_cancel(run=TrainingRun.objects.get(pk=pending.pk), source="user")
        return submit(**kwargs)

    monkeypatch.setattr(provider, "submit", submit_while_user_cancels)
    with django_capture_on_commit_callbacks(execute=True):
        training_run_submit(run=pending)

    stray = StrayJob.objects.get()
    assert (stray.runpod_job_id, stray.run_id, stray.status) == ("job-1", pending.pk, "cancelled")
    assert stray.reason == "/run answered after its run was cancelled"
    assert provider.cancelled == ["job-1"]


def test_a_job_answered_after_another_job_claimed_its_run_is_recorded(
    pending: TrainingRun,
    provider: FakeProvider,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    submit = provider.submit

    def submit_while_an_earlier_job_claims(**kwargs: Any) -> Any:
        TrainingRun.objects.filter(pk=pending.pk).update(runpod_job_id="job-earlier", status="training")
        return submit(**kwargs)

    monkeypatch.setattr(provider, "submit", submit_while_an_earlier_job_claims)
    with django_capture_on_commit_callbacks(execute=False) as queued:
        training_run_submit(run=pending)

    stray = StrayJob.objects.get()
    assert (stray.runpod_job_id, stray.status, stray.attempts) == ("job-1", "pending", 0)
    assert stray.reason == "/run answered after its run was claimed by another job"
    assert len(queued) == 1  # the cancel, queued once the decision is committed


def test_a_second_job_calling_back_is_recorded_in_the_transaction_that_answers_stop(
    claimed: TrainingRun, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=False) as queued:
        answer = training_run_worker_started(run=claimed, job_id="job-2", delivery_id="d-2")

    assert answer.code == "claimed_elsewhere"
    stray = StrayJob.objects.get()
    assert (stray.runpod_job_id, stray.run_id, stray.status) == ("job-2", claimed.pk, "pending")
    assert stray.next_attempt_at is not None and len(queued) == 1


def test_a_job_calling_back_after_its_run_ended_is_recorded(
    character: Any, django_capture_on_commit_callbacks: Any
) -> None:
    run = make_run(character, status="cancelled", runpod_job_id="")

    with django_capture_on_commit_callbacks(execute=False):
        answer = training_run_worker_started(run=run, job_id="job-late", delivery_id="d-1")

    assert answer.action == "stop"
    assert StrayJob.objects.get().reason == "it called back after its run cancelled"


def test_a_job_that_claims_its_run_while_it_is_cancelled_is_recorded(
    pending: TrainingRun,
    provider: FakeProvider,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    # The run's /run answer was lost; its job starts and claims the run just before the cancel locks it.
    lock = ending.run_locked

    def claimed_first(run_id: Any) -> TrainingRun:
        TrainingRun.objects.filter(pk=run_id).update(runpod_job_id="job-late", status="training")
        return lock(run_id)

    monkeypatch.setattr(ending, "run_locked", claimed_first)
    with django_capture_on_commit_callbacks(execute=True):
        run = training_run_cancel(run=pending, source="user")

    assert run.status == "cancelled"
    stray = StrayJob.objects.get()
    assert (stray.runpod_job_id, stray.status) == ("job-late", "cancelled")
    assert stray.reason == "it claimed its run while the run was being cancelled"
    assert provider.cancelled == ["job-late"]


def test_a_job_runpod_could_not_be_told_to_cancel_is_recorded(
    claimed: TrainingRun,
    provider: FakeProvider,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    unreachable(provider, monkeypatch)

    with django_capture_on_commit_callbacks(execute=False):
        run = training_run_cancel(run=claimed, source="user")

    assert run.status == "cancelled"
    stray = StrayJob.objects.get()
    assert (stray.runpod_job_id, stray.status) == ("job-1", "pending")
    assert stray.reason == "its run was cancelled while RunPod could not be reached"


def test_a_job_found_stray_again_keeps_one_row_and_queues_one_cancel(
    claimed: TrainingRun, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=False) as queued:
        for _ in range(3):
            training_run_worker_started(run=claimed, job_id="job-2", delivery_id="d-2")

    assert StrayJob.objects.count() == 1 and len(queued) == 1


def test_a_stray_job_outlives_its_run(character: Any, claimed: TrainingRun) -> None:
    stray = recorded(run=claimed)

    character.delete()

    stray.refresh_from_db()
    assert (stray.run_id, stray.status) == (None, "pending")


# --- The cancel --------------------------------------------------------------------------------


def test_the_cancel_stops_the_job_and_records_it(provider: FakeProvider, clock: Any) -> None:
    stray = recorded()

    cancel_runpod_job.delay("job-stray")

    stray.refresh_from_db()
    assert (stray.status, stray.attempts, stray.next_attempt_at) == ("cancelled", 1, None)
    assert stray.ended_at == timezone.now()
    assert provider.cancelled == ["job-stray"]


def test_a_job_runpod_no_longer_knows_is_recorded_gone(
    provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    stray = recorded()

    def not_found(job_id: str) -> None:
        raise RunPodJobNotFound("RunPod does not know this job (POST cancel: HTTP 404)")

    monkeypatch.setattr(provider, "cancel", not_found)
    cancel_runpod_job.delay("job-stray")

    stray.refresh_from_db()
    assert (stray.status, stray.attempts, stray.next_attempt_at) == ("gone", 1, None)


def test_a_404_while_runpod_does_not_know_the_endpoint_keeps_the_cancel_pending(
    provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A wrong or deleted endpoint answers 404 too (docs serverless/endpoints/send-requests.mdx:215): the
    # job may still be running on the endpoint it was sent to, so its cancel is not given up as gone.
    stray = recorded()

    def not_found(job_id: str) -> None:
        raise RunPodJobNotFound("RunPod does not know this job (POST cancel: HTTP 404)")

    monkeypatch.setattr(provider, "cancel", not_found)
    provider.health_errors.append(RunPodEndpointNotFound("RunPod does not know the endpoint"))
    cancel_runpod_job.delay("job-stray")

    stray.refresh_from_db()
    assert (stray.status, stray.attempts) == ("pending", 1) and stray.next_attempt_at is not None
    assert "RunPod does not know the endpoint" in stray.last_error


def test_an_ended_cancel_sends_nothing_again(provider: FakeProvider) -> None:
    stray = recorded()
    cancel_runpod_job.delay("job-stray")

    cancel_runpod_job.delay("job-stray")
    overdue(stray)
    sweep_training_runs()

    stray.refresh_from_db()
    assert (stray.status, stray.attempts) == ("cancelled", 1)
    assert provider.cancelled == ["job-stray"]


def test_a_duplicate_task_sends_no_second_cancel_while_the_first_holds_the_row(
    provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    stray = recorded()
    inner: list[Any] = []

    def cancel_while_a_duplicate_runs(job_id: str) -> Any:
        inner.append(services.runpod_job_cancel(job_id=job_id))
        return FakeProvider.cancel(provider, job_id)

    monkeypatch.setattr(provider, "cancel", cancel_while_a_duplicate_runs)
    cancel_runpod_job.delay("job-stray")

    assert inner[0].attempt == 0  # the duplicate found the row claimed and did nothing
    stray.refresh_from_db()
    assert (stray.status, stray.attempts) == ("cancelled", 1)
    assert provider.cancelled == ["job-stray"]


def test_runpod_unreachable_leaves_the_cancel_due_after_a_backoff(
    provider: FakeProvider, monkeypatch: pytest.MonkeyPatch, clock: Any
) -> None:
    stray = recorded()
    asked = unreachable(provider, monkeypatch)

    outcome = services.runpod_job_cancel(job_id="job-stray")

    stray.refresh_from_db()
    assert outcome.retry_in == STRAY_CANCEL_RETRY[0].total_seconds()
    assert (stray.status, stray.attempts) == ("pending", 1)
    assert stray.next_attempt_at == timezone.now() + STRAY_CANCEL_RETRY[0]
    assert "did not accept a connection" in stray.last_error
    assert asked == ["job-stray"]


def test_the_backoff_doubles_per_attempt_up_to_ten_minutes(
    provider: FakeProvider, monkeypatch: pytest.MonkeyPatch, clock: Any
) -> None:
    stray = recorded()
    unreachable(provider, monkeypatch)
    delays = []
    for _ in range(8):
        StrayJob.objects.filter(pk=stray.pk).update(next_attempt_at=timezone.now())
        delays.append(services.runpod_job_cancel(job_id="job-stray").retry_in)

    assert delays == [15, 30, 60, 120, 240, 480, 600, 600]


def test_a_refused_cancel_is_left_to_the_sweep_without_a_task_retry(
    provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    stray = recorded()

    def refused(job_id: str) -> None:
        raise RunPodRejected("RunPod refused the API key (HTTP 401).")

    monkeypatch.setattr(provider, "cancel", refused)
    outcome = services.runpod_job_cancel(job_id="job-stray")

    stray.refresh_from_db()
    assert outcome.retry_in is None
    assert (stray.status, stray.attempts) == ("pending", 1) and stray.next_attempt_at is not None
    assert "HTTP 401" in stray.last_error


def test_a_cancel_runpod_did_not_take_is_sent_again_by_the_sweep_once_runpod_answers(
    provider: FakeProvider, monkeypatch: pytest.MonkeyPatch, clock: Any
) -> None:
    stray = recorded()
    asked = unreachable(provider, monkeypatch, times=1)
    with pytest.raises(Retry, match="Retry in 15"):
        cancel_runpod_job.delay("job-stray")  # the task's own retry is lost too: the sweep takes over

    clock.shift(timedelta(seconds=14))
    sweep_training_runs()
    stray.refresh_from_db()
    assert (stray.status, asked) == ("pending", ["job-stray"])  # due in 1 s: not overdue yet

    clock.shift(timedelta(seconds=17))  # now past due by more than a sweep interval
    sweep_training_runs()

    stray.refresh_from_db()
    assert (stray.status, stray.attempts) == ("cancelled", 2)
    assert asked == ["job-stray", "job-stray"]


# --- The sweep ----------------------------------------------------------------------------------


def test_a_lost_cancel_is_sent_by_the_sweep(provider: FakeProvider, clock: Any) -> None:
    stray = recorded()  # the task queued on commit never ran: broker down, Redis restarted

    clock.shift(timedelta(seconds=10))
    assert stray_jobs_claim_due() == []  # its task may still be on its way
    clock.shift(timedelta(seconds=6))
    sweep_training_runs()

    stray.refresh_from_db()
    assert (stray.status, stray.attempts) == ("cancelled", 1)
    assert provider.cancelled == ["job-stray"]


def test_a_cancel_whose_worker_was_killed_is_sent_again_after_its_lease(
    provider: FakeProvider, monkeypatch: pytest.MonkeyPatch, clock: Any, settings: Any
) -> None:
    stray = recorded()
    answer = provider.cancel

    def killed_once(job_id: str) -> Any:
        if not provider.cancelled:
            provider.cancelled.append("(killed)")
            raise Killed  # the worker dies while RunPod is asked: nothing after the claim is recorded
        return answer(job_id)

    monkeypatch.setattr(provider, "cancel", killed_once)
    with pytest.raises(Killed):
        services.runpod_job_cancel(job_id="job-stray")

    lease = 4 * (2 * settings.RUNPOD_TIMEOUT_SECONDS + 10)
    clock.shift(timedelta(seconds=lease))
    assert stray_jobs_claim_due() == []
    clock.shift(timedelta(seconds=settings.TRAINING_SWEEP_INTERVAL_SECONDS + 1))
    sweep_training_runs()

    stray.refresh_from_db()
    assert (stray.status, stray.attempts) == ("cancelled", 2)
    assert provider.cancelled == ["(killed)", "job-stray"]


def test_the_sweep_gives_up_once_runpod_could_no_longer_be_running_the_job(
    provider: FakeProvider, monkeypatch: pytest.MonkeyPatch, clock: Any, caplog: Any
) -> None:
    stray = recorded()
    unreachable(provider, monkeypatch)
    with pytest.raises(Retry):
        cancel_runpod_job.delay("job-stray")

    clock.shift(timedelta(seconds=LIFETIME_S - 60))
    assert stray_jobs_claim_due() == ["job-stray"]  # still possibly running: still cancelled
    clock.shift(timedelta(seconds=60 + 5 * 60 + 1))
    with caplog.at_level(logging.ERROR, logger="training.services"):
        assert stray_jobs_claim_due() == []

    stray.refresh_from_db()
    assert (stray.status, stray.next_attempt_at, stray.ended_at) == ("given_up", None, timezone.now())
    assert "job-stray" in caplog.text and "given up" in caplog.text
    assert "did not accept a connection" in caplog.text


def test_a_cancel_task_past_the_bound_gives_up_without_calling_runpod(
    provider: FakeProvider, clock: Any
) -> None:
    stray = recorded()

    clock.shift(timedelta(seconds=LIFETIME_S + 5 * 60 + 1))
    cancel_runpod_job.delay("job-stray")

    stray.refresh_from_db()
    assert stray.status == "given_up" and provider.cancelled == []


def test_the_sweep_takes_at_most_a_batch_of_stray_jobs_oldest_first(settings: Any, clock: Any) -> None:
    settings.TRAINING_SWEEP_BATCH_SIZE = 2
    for age in (20, 60, 40):
        overdue(recorded(f"job-{age}"), seconds=age)

    assert stray_jobs_claim_due() == ["job-60", "job-40"]
    assert StrayJob.objects.filter(next_attempt_at=timezone.now()).count() == 2


def test_the_stray_sweep_costs_the_same_queries_for_a_few_or_many_jobs(clock: Any) -> None:
    def count_queries() -> int:
        with CaptureQueriesContext(connection) as queries:
            stray_jobs_claim_due(batch_size=100)
        return len(queries)

    def add(prefix: str, n: int) -> None:
        for i in range(n):
            overdue(recorded(f"{prefix}-due-{i}"))
            expired = recorded(f"{prefix}-expired-{i}")
            StrayJob.objects.filter(pk=expired.pk).update(
                created_at=timezone.now() - timedelta(seconds=LIFETIME_S + 3600)
            )
            overdue(expired)

    add("few", 2)
    few = count_queries()
    add("many", 40)
    many = count_queries()

    assert few == many
    assert StrayJob.objects.filter(status="given_up").count() == 42


# --- The operator console --------------------------------------------------------------------------


def test_staff_see_stray_jobs_and_how_their_cancel_went_but_cannot_change_them(
    client: Any, staff: Any, claimed: TrainingRun
) -> None:
    stray = recorded("job-orphan", run=claimed, attempts=3, last_error="RunPod answered HTTP 503")
    client.force_login(staff)

    listing = client.get(reverse("admin:training_strayjob_changelist"))
    detail = client.get(reverse("admin:training_strayjob_change", args=[stray.pk]))
    posted = client.post(reverse("admin:training_strayjob_change", args=[stray.pk]), {"status": "cancelled"})

    assert listing.status_code == 200
    assert "job-orphan" in listing.text and "RunPod answered HTTP 503" in listing.text
    assert detail.status_code == 200 and 'name="_save"' not in detail.text
    assert posted.status_code == 403
    stray.refresh_from_db()
    assert stray.status == "pending"
