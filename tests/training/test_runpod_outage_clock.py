"""RunPod unreachable for ten minutes and more, on a simulated clock, with the production timings.

Nothing sleeps: time-machine moves the clock from event to event, and at each event the test calls the
backend as production would — the beat's `sweep_training_runs` every TRAINING_SWEEP_INTERVAL_SECONDS, the
tasks it queues when they are due (a retry at its countdown), the worker's callbacks every 10 s. The real
RunPod client is used, its HTTP faked at one seam (`responses`): while RunPod is down every call fails in
one of three ways — the connection closed unanswered, no answer within the client's timeout, or no
connection opening at all (a timeout counts RUNPOD_TIMEOUT_SECONDS of the task's time).

Tasks run one at a time but do not hold the clock: as on a Celery worker with several processes, the
beat goes on while a task waits on RunPod, and a retry is due its countdown after the task's own time.
"""

from __future__ import annotations

import ast
import heapq
import itertools
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import responses
import time_machine
from celery.exceptions import Retry
from django.conf import settings as django_settings
from django.utils import timezone

from runpod_worker.contract import Progress, Stage
from tests.training.conftest import store_lora
from training import tasks
from training.models import TrainingRun
from training.runpod import RunPodClient
from training.services import (
    training_run_start,
    training_run_worker_progress,
    training_run_worker_started,
)

pytestmark = pytest.mark.django_db(transaction=True)

# studio/settings.py's defaults, checked against that file below: the test stack shortens them.
PRODUCTION_TIMINGS: dict[str, float] = {
    "RUNPOD_TIMEOUT_SECONDS": 10.0,
    "TRAINING_SWEEP_INTERVAL_SECONDS": 15.0,
    "TRAINING_SUBMIT_UNCERTAIN_GRACE_SECONDS": 600,
    "TRAINING_SUBMIT_MAX_ATTEMPTS": 5,
    "TRAINING_SUBMIT_GIVE_UP_SECONDS": 3600,
    "TRAINING_PENDING_RECHECK_SECONDS": 60.0,
    "TRAINING_FINISHING_POLL_SECONDS": 5.0,
    "TRAINING_WORKER_LEASE_SECONDS": 45,
    "TRAINING_WORKER_LIVENESS_SECONDS": 30.0,
}
SETTINGS_FILE = Path(__file__).resolve().parents[2] / "studio" / "settings.py"
OUTAGE = timedelta(minutes=10)
WORKER_CALLBACK_EVERY = timedelta(seconds=10)  # the worker's heartbeat (runpod_worker/handler.py)
JOB_ID = "job-1"
DELIVERY = "delivery-1"
DROPPED, READ_TIMEOUT, CONNECT_TIMEOUT = "connection dropped", "read timeout", "connect timeout"


@pytest.fixture(autouse=True)
def production_timings(settings: Any) -> None:
    for name, value in PRODUCTION_TIMINGS.items():
        setattr(settings, name, value)


def test_the_clock_runs_on_the_production_defaults() -> None:
    source = SETTINGS_FILE.read_text()
    for name, value in PRODUCTION_TIMINGS.items():
        match = re.search(rf'"{name}", default=([^)]+)\)', source)
        assert match, name
        assert ast.literal_eval(match.group(1)) == value, name
    assert tasks.submit_training_run.max_retries == PRODUCTION_TIMINGS["TRAINING_SUBMIT_MAX_ATTEMPTS"] - 1


# ------------------------------------------------------------------------------------ the machinery


@dataclass(order=True)
class Due:
    at: datetime
    seq: int
    task: Any = field(compare=False)
    argument: str = field(compare=False)
    retries: int = field(compare=False)


class Production:
    """The beat, a Celery worker and the GPU worker's callbacks on a simulated clock."""

    def __init__(self, traveller: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.traveller = traveller
        self.queue: list[Due] = []
        self.seq = itertools.count()
        self.spent = 0.0  # seconds the running task has waited on RunPod (timeouts, the client's backoff)
        self.next_sweep = timezone.now()
        self.callbacks: list[tuple[datetime, Callable[[], None]]] = []
        self.ran: list[tuple[datetime, str, int]] = []  # (when, task, retries)
        for task in (tasks.submit_training_run, tasks.poll_training_run, tasks.cancel_runpod_job):
            monkeypatch.setattr(task, "delay", self._delay_of(task))
        monkeypatch.setattr("training.providers.get_provider", self.client)

    def client(self) -> RunPodClient:
        return RunPodClient(
            api_base=django_settings.RUNPOD_API_BASE,
            endpoint_id=django_settings.RUNPOD_ENDPOINT_ID,
            api_key=django_settings.RUNPOD_API_KEY,
            timeout_seconds=django_settings.RUNPOD_TIMEOUT_SECONDS,
            sleep=self.wait,
        )

    def wait(self, seconds: float) -> None:
        self.spent += seconds

    def _delay_of(self, task: Any) -> Callable[[str], None]:
        return lambda argument: self.enqueue(task, argument, retries=0, at=timezone.now())

    def enqueue(self, task: Any, argument: str, *, retries: int, at: datetime) -> None:
        heapq.heappush(self.queue, Due(at, next(self.seq), task, argument, retries))

    def at(self, when: datetime, callback: Callable[[], None]) -> None:
        self.callbacks.append((when, callback))
        self.callbacks.sort(key=lambda item: item[0])

    def run_until(self, end: datetime, *, check: Callable[[], None] = lambda: None) -> None:
        """Moves the clock event by event up to `end`, calling `check` after each."""
        while True:
            moments = [self.next_sweep, *(d.at for d in self.queue[:1]), *(c[0] for c in self.callbacks[:1])]
            moment = min(moments)
            if moment > end:
                self.traveller.move_to(end)
                return
            if moment > timezone.now():
                self.traveller.move_to(moment)
            if self.callbacks and self.callbacks[0][0] == moment:
                self.callbacks.pop(0)[1]()
            elif self.queue and self.queue[0].at == moment:
                self._execute(heapq.heappop(self.queue))
            else:
                tasks.sweep_training_runs()
                self.next_sweep = moment + timedelta(seconds=django_settings.TRAINING_SWEEP_INTERVAL_SECONDS)
            check()

    def _execute(self, due: Due) -> None:
        self.spent = 0.0
        self.ran.append((timezone.now(), due.task.name.rsplit(".", 1)[-1], due.retries))
        task = due.task
        task.push_request(
            id=f"task-{due.seq}", args=[due.argument], kwargs={}, retries=due.retries,
            is_eager=True, called_directly=False,
        )  # fmt: skip
        try:
            task.run(due.argument)
        except Retry as retry:
            countdown = float(retry.when or 0)
            later = timezone.now() + timedelta(seconds=self.spent + countdown)
            self.enqueue(task, due.argument, retries=due.retries + 1, at=later)
        finally:
            task.pop_request()


class RunPodApi:
    """RunPod's public API behind the real client: answering from `job`, or unreachable."""

    def __init__(self, mock: responses.RequestsMock, production: Production, failure: str) -> None:
        self.production = production
        self.failure = failure
        self.down = False
        self.job: dict[str, Any] = {"id": JOB_ID, "status": "IN_QUEUE"}
        self.calls: list[tuple[datetime, str, bool]] = []  # (when, route, answered)
        base = re.escape(f"{django_settings.RUNPOD_API_BASE}/{django_settings.RUNPOD_ENDPOINT_ID}")
        mock.add_callback(responses.POST, re.compile(base + "/run"), callback=self._run)
        mock.add_callback(responses.GET, re.compile(base + "/status/.+"), callback=self._status)
        mock.add_callback(responses.POST, re.compile(base + "/cancel/.+"), callback=self._cancel)

    def calls_to(self, route: str, *, since: datetime | None = None, until: datetime | None = None) -> int:
        return sum(
            1
            for when, name, _ in self.calls
            if name == route and (since is None or when >= since) and (until is None or when < until)
        )

    def _answer(self, route: str, body: dict[str, Any]) -> Any:
        self.calls.append((timezone.now(), route, not self.down))
        if not self.down:
            return 200, {"Content-Type": "application/json"}, json.dumps(body)
        if self.failure == DROPPED:
            return requests.ConnectionError("Connection aborted: RemoteDisconnected")
        self.production.wait(django_settings.RUNPOD_TIMEOUT_SECONDS)
        if self.failure == READ_TIMEOUT:
            return requests.ReadTimeout("Read timed out")
        return requests.ConnectTimeout("Connection to api.runpod.ai timed out")

    def _run(self, request: Any) -> Any:
        return self._answer("run", {"id": JOB_ID, "status": "IN_QUEUE"})

    def _status(self, request: Any) -> Any:
        return self._answer("status", self.job)

    def _cancel(self, request: Any) -> Any:
        return self._answer("cancel", {"id": JOB_ID, "status": "CANCELLED"})


@pytest.fixture
def clock() -> Iterator[Any]:
    with time_machine.travel(timezone.now(), tick=False) as traveller:
        yield traveller


@pytest.fixture
def production(clock: Any, monkeypatch: pytest.MonkeyPatch) -> Production:
    return Production(clock, monkeypatch)


def runpod_api(production: Production, failure: str) -> Iterator[RunPodApi]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield RunPodApi(mock, production, failure)


@pytest.fixture(params=[DROPPED, READ_TIMEOUT, CONNECT_TIMEOUT])
def runpod(request: pytest.FixtureRequest, production: Production) -> Iterator[RunPodApi]:
    yield from runpod_api(production, request.param)


@pytest.fixture(params=[DROPPED, READ_TIMEOUT])
def runpod_unanswered(request: pytest.FixtureRequest, production: Production) -> Iterator[RunPodApi]:
    """RunPod failing so that a `/run` may have reached it: the client cannot tell whether a job exists."""
    yield from runpod_api(production, request.param)


@pytest.fixture
def runpod_no_connection(production: Production) -> Iterator[RunPodApi]:
    """RunPod failing before any connection opens: the client knows the `/run` never arrived."""
    yield from runpod_api(production, CONNECT_TIMEOUT)


def start_run(character: Any) -> TrainingRun:
    # The test's transaction commits, so the submission task is queued as in production.
    return training_run_start(character=character, requested_by=character.owner, source="user")


def status_of(run: TrainingRun) -> str:
    run.refresh_from_db()
    return run.status


def seconds(delta: timedelta) -> float:
    return delta.total_seconds()


# ------------------------------------------------------------------------------------ a training run


class Worker:
    """The GPU worker: `started`, then progress every 10 s with an honest ETA, then the upload; its result
    goes to RunPod, and its "finished" callback is lost (RunPod is then the only way to learn the end)."""

    def __init__(self, production: Production, runpod: RunPodApi, run: TrainingRun, steps: int) -> None:
        self.production, self.runpod, self.run, self.steps = production, runpod, run, steps
        self.seconds_per_step = 0.36
        self.started = timezone.now()

    def begin(self) -> None:
        training_run_worker_started(run=self.run, job_id=JOB_ID, delivery_id=DELIVERY)
        self.runpod.job = {"id": JOB_ID, "status": "IN_PROGRESS", "delayTime": 20_000}
        self.production.at(timezone.now() + WORKER_CALLBACK_EVERY, self.report)

    def report(self) -> None:
        elapsed = seconds(timezone.now() - self.started)
        step = min(self.steps, int(elapsed / self.seconds_per_step))
        if step < self.steps:
            eta = (self.steps - step) * self.seconds_per_step
            self._progress(Progress(Stage.TRAINING, step, self.steps, eta_s=eta))
        elif elapsed < self.steps * self.seconds_per_step + 30:
            self._progress(Progress(Stage.UPLOADING, step, self.steps, eta_s=0))
        else:
            self.finish()
            return
        self.production.at(timezone.now() + WORKER_CALLBACK_EVERY, self.report)

    def _progress(self, progress: Progress) -> None:
        training_run_worker_progress(run=self.run, job_id=JOB_ID, progress=progress, delivery_id=DELIVERY)

    def finish(self) -> None:
        self.finished_at = timezone.now()
        output = store_lora(self.run)
        execution_ms = int(seconds(self.finished_at - self.started) * 1000)
        self.runpod.job = {
            "id": JOB_ID, "status": "COMPLETED", "output": output, "delayTime": 20_000,
            "executionTime": execution_ms,
        }  # fmt: skip


def test_a_run_training_through_ten_minutes_of_runpod_unreachable_stays_training_then_completes(
    character: Any, production: Production, runpod: RunPodApi
) -> None:
    run = start_run(character)
    production.run_until(timezone.now() + timedelta(seconds=20))
    assert (status_of(run), runpod.calls_to("run")) == ("queued", 1)
    worker = Worker(production, runpod, run, steps=1000)  # six minutes of steps, then 30 s of upload
    worker.begin()
    production.run_until(timezone.now() + timedelta(seconds=30))
    runpod.down = True
    down_at = timezone.now()
    seen: set[str] = set()

    production.run_until(down_at + OUTAGE, check=lambda: seen.add(status_of(run)))

    # The whole outage: the run shows training, is never failed nor submitted again.
    assert seen == {"training"}
    run.refresh_from_db()
    assert (run.attempts, runpod.calls_to("run"), run.runpod_job_id) == (1, 1, JOB_ID)
    # While the worker called back, the backend asked RunPod nothing: the callbacks prove the job alive.
    last_step_at = worker.started + timedelta(seconds=worker.steps * worker.seconds_per_step)
    assert runpod.calls_to("status", since=down_at, until=last_step_at - timedelta(seconds=30)) == 0
    # From the worker's last step the sweep polls every 5 s while it uploads, and for the 45 s lease after
    # its last callback: each sweep that finds the run due starts a poll task, which retries 5 times with
    # backoff (~155 s) and then leaves the run to the sweep, whose next poll backs off to minutes.
    polls = [when for when, name, retries in production.ran if name == "poll_training_run" and retries == 0]
    in_outage = [when for when in polls if when >= down_at]
    last_callback = worker.finished_at - WORKER_CALLBACK_EVERY
    lease = timedelta(seconds=django_settings.TRAINING_WORKER_LEASE_SECONDS)
    sweep = timedelta(seconds=django_settings.TRAINING_SWEEP_INTERVAL_SECONDS)
    assert in_outage and all(
        last_step_at - WORKER_CALLBACK_EVERY <= when <= last_callback + lease + sweep for when in in_outage
    ), [seconds(when - down_at) for when in in_outage]
    tries = sum(1 for when, name, _ in production.ran if name == "poll_training_run" and when >= down_at)
    assert tries <= len(in_outage) * (1 + tasks.poll_training_run.max_retries)
    refused = runpod.calls_to("status", since=down_at)
    assert refused <= tries * 4  # the client's attempts per call
    print(f"\n{runpod.failure}: {len(in_outage)} polls, {tries} tries, {refused} refused /status calls")

    runpod.down = False
    back_at = timezone.now()
    production.run_until(back_at + timedelta(minutes=10), check=lambda: None)

    # The first poll after RunPod answers applies its status: completed with the worker's LoRA, verified in
    # storage, and its cost from RunPod's execution time.
    run.refresh_from_db()
    assert run.status == "completed", run.error_message
    completed = run.events.get(to_status="completed")
    assert completed.source == "poll"
    lag = seconds(completed.created_at - back_at)
    print(f"{runpod.failure}: completed {lag:.0f} s after RunPod answered again")
    assert 0 <= lag <= 300  # the longest poll backoff
    assert run.execution_ms == runpod.job["executionTime"] and run.cost_usd
    assert run.events.filter(to_status="failed").count() == 0


# ------------------------------------------------------------------------------------ a pending run


def test_a_pending_run_rides_out_ten_minutes_of_unanswered_submissions_and_is_sent_once_runpod_answers(
    character: Any, production: Production, runpod_unanswered: RunPodApi
) -> None:
    runpod = runpod_unanswered
    runpod.down = True
    began = timezone.now()
    run = start_run(character)
    seen: set[str] = set()

    production.run_until(began + OUTAGE + timedelta(seconds=30), check=lambda: seen.add(status_of(run)))

    # Each /run's outcome is unknown (a job may exist), so the next waits out the grace period (10 min):
    # one at the start, one after ten minutes, both unanswered. The user sees "pending" all along.
    assert seen == {"pending"}
    assert runpod.calls_to("run") == 2
    runpod.down = False
    back_at = timezone.now()

    production.run_until(back_at + timedelta(minutes=15))

    run.refresh_from_db()
    assert (run.status, run.runpod_job_id, run.attempts) == ("queued", JOB_ID, 3)
    assert runpod.calls_to("run") == 3
    sent_after = seconds(run.submitted_at - back_at)
    print(f"\n{runpod.failure}: sent {sent_after:.0f} s after RunPod answered again")
    # The third attempt waits for the grace period after the second, not for RunPod to come back.
    assert seconds(run.submitted_at - began) == pytest.approx(1200, abs=2 * 15)


def test_a_pending_run_gives_up_after_five_unanswered_submissions_fifty_minutes_in(
    character: Any, production: Production, runpod_unanswered: RunPodApi
) -> None:
    runpod = runpod_unanswered
    runpod.down = True
    began = timezone.now()
    run = start_run(character)

    production.run_until(began + timedelta(minutes=60))

    run.refresh_from_db()
    assert (run.status, run.error_code, run.attempts) == ("failed", "submit_failed", 5)
    assert run.error_message == (
        "The run could not be sent to RunPod after 5 attempts. RunPod may be down or rate-limiting; "
        "retry the run in a few minutes."
    )
    assert runpod.calls_to("run") == 5
    failed_after = seconds(run.finished_at - began)
    print(f"\n{runpod.failure}: failed {failed_after / 60:.1f} min after RunPod became unreachable")
    assert 49 * 60 <= failed_after <= 51 * 60


def test_a_pending_run_whose_connections_to_runpod_never_open_stays_pending_and_is_sent_once_it_answers(
    character: Any, production: Production, runpod_no_connection: RunPodApi
) -> None:
    runpod = runpod_no_connection
    runpod.down = True
    began = timezone.now()
    run = start_run(character)
    seen: set[str] = set()

    production.run_until(began + OUTAGE, check=lambda: seen.add(status_of(run)))

    # A connection that never opened made no job: the task retries it with backoff, then leaves the run
    # pending for the sweep's recheck (60 s), and none of those calls counts against the attempts that
    # bound duplicate jobs. The user sees "pending" all along.
    run.refresh_from_db()
    assert seen == {"pending"}
    assert (run.status, run.attempts, run.submit_attempted_at) == ("pending", 0, None)
    tried = runpod.calls_to("run")
    # One submission at a time: the task's retries with backoff run out, then the sweep's recheck starts the
    # next round, never while a retry is still due. Each try is the client's 4 connection attempts.
    rounds = [retries for _, name, retries in production.ran if name == "submit_training_run"]
    assert rounds == [0, 1, 2, 3, 4] * (len(rounds) // 5) + [0, 1, 2, 3, 4][: len(rounds) % 5], rounds
    assert tried == 4 * len(rounds)
    # A round takes 3 to 4.5 minutes of connection timeouts and jittered backoff: two or three in ten minutes.
    assert 5 < len(rounds) <= 3 * 5, rounds
    runpod.down = False
    back_at = timezone.now()

    production.run_until(back_at + timedelta(minutes=3))

    run.refresh_from_db()
    assert (run.status, run.runpod_job_id, run.attempts) == ("queued", JOB_ID, 1)
    sent_after = seconds(run.submitted_at - back_at)
    print(f"\n{runpod.failure}: {tried} refused /run calls; sent {sent_after:.0f} s after RunPod answered")
    # At the next recheck: no grace period to wait out, since no job can exist.
    recheck = django_settings.TRAINING_PENDING_RECHECK_SECONDS
    assert 0 <= sent_after <= recheck + 4 * django_settings.RUNPOD_TIMEOUT_SECONDS + 2 * 15


def test_a_pending_run_runpod_never_accepts_a_connection_for_fails_after_the_give_up_time(
    character: Any, production: Production, runpod_no_connection: RunPodApi
) -> None:
    runpod = runpod_no_connection
    runpod.down = True
    began = timezone.now()
    run = start_run(character)

    production.run_until(began + timedelta(minutes=65))

    run.refresh_from_db()
    assert (run.status, run.error_code, run.attempts) == ("failed", "submit_failed", 0)
    assert re.fullmatch(
        r"RunPod would not take the run for 6[012] minutes \(unreachable or rate-limiting\), so it was never "
        r"sent and nothing was billed\. Retry the run once RunPod answers again \(status\.runpod\.io\)\.",
        run.error_message,
    ), run.error_message
    failed_after = seconds(run.finished_at - began)
    print(f"\n{runpod.failure}: failed {failed_after / 60:.1f} min after RunPod became unreachable")
    give_up = django_settings.TRAINING_SUBMIT_GIVE_UP_SECONDS
    assert give_up <= failed_after <= give_up + 2 * django_settings.TRAINING_PENDING_RECHECK_SECONDS
