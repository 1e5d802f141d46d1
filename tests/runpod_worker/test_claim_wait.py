"""The handler's side of the claim: one delivery id per invocation, re-asking "started" while the backend
answers "wait", giving up after a bounded wait, and a keep-alive that lets the backend tell it is alive."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from runpod_worker import handler as worker
from runpod_worker.callbacks import CallbackClient
from runpod_worker.contract import Callback, Progress, parse_error
from tests.runpod_worker.conftest import FakeBackend
from tests.runpod_worker.factories import job_input


def run_handler(fake_backend: FakeBackend, job_id: str = "job-1") -> dict[str, Any]:
    job = {"id": job_id, "input": job_input(callback=fake_backend.callback())}
    return asyncio.run(worker.handler(job))


def waits_then(final: dict[str, Any], waits: int) -> Any:
    def decide(event: dict[str, Any], seen: list[dict[str, Any]]) -> dict[str, Any]:
        if event["event"] == "started" and len(seen) < waits:
            return {
                "action": "wait",
                "reason": "another worker of this job called back lately",
                "retry_after_s": 0.2,
            }
        return final

    return decide


def test_the_handler_asks_again_after_each_wait_with_the_same_delivery_id(fake_backend: FakeBackend) -> None:
    fake_backend.decide = waits_then({"action": "stop", "reason": "the run is already completed"}, waits=2)

    result = run_handler(fake_backend)

    asks = fake_backend.of("started")
    assert len(asks) == 3
    assert len({ask["delivery_id"] for ask in asks}) == 1 and len(asks[0]["delivery_id"]) == 32
    assert "claim_wait_s" not in asks[0]
    assert 0.2 <= asks[1]["claim_wait_s"] < asks[2]["claim_wait_s"]
    error = parse_error(result["error"])
    assert error.code == "cancelled" and "the run is already completed" in error.message


@pytest.mark.parametrize(
    ("answer", "code"),
    [
        (
            {"action": "stop", "reason": "another worker holds the run", "code": "claimed_elsewhere"},
            "claimed_elsewhere",
        ),
        ({"action": "stop", "reason": "the run was cancelled"}, "cancelled"),
        ({"action": "stop", "reason": "the run was cancelled", "code": 7}, "cancelled"),
    ],
)
def test_a_stop_at_start_ends_with_the_code_the_answer_gives(
    fake_backend: FakeBackend, answer: dict[str, Any], code: str
) -> None:
    fake_backend.decide = lambda event, seen: answer

    result = run_handler(fake_backend)

    assert parse_error(result["error"]).code == code
    assert [e["event"] for e in fake_backend.events] == ["started"]


def test_each_invocation_of_the_handler_is_its_own_delivery(fake_backend: FakeBackend) -> None:
    fake_backend.decide = lambda event, seen: {"action": "stop", "reason": "cancelled"}

    run_handler(fake_backend)
    run_handler(fake_backend)

    first, second = fake_backend.of("started")
    assert first["job_id"] == second["job_id"] and first["delivery_id"] != second["delivery_id"]


def test_a_delivery_kept_waiting_gives_up_after_the_bound_and_says_the_run_is_claimed_elsewhere(
    fake_backend: FakeBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker, "CLAIM_WAIT_MAX_S", 0.7)
    fake_backend.decide = waits_then({}, waits=1000)

    result = run_handler(fake_backend)

    error = parse_error(result["error"])
    assert error.code == "claimed_elsewhere"
    assert "claimed elsewhere" in error.message and "gave up after waiting" in error.message
    assert 3 <= len(fake_backend.of("started")) <= 5
    assert fake_backend.of("progress") == []  # nothing downloaded, nothing trained


def test_a_continue_after_waiting_lets_the_delivery_train(fake_backend: FakeBackend) -> None:
    fake_backend.decide = waits_then({"action": "continue"}, waits=1)
    callbacks = CallbackClient(Callback(**fake_backend.callback()), "job-1", "delivery-a")

    decision = asyncio.run(worker._claim_run(callbacks))

    assert decision.action == "continue"
    assert [ask["delivery_id"] for ask in fake_backend.of("started")] == ["delivery-a", "delivery-a"]


@pytest.mark.parametrize(("given", "kept"), [(0, 0.1), (1e9, 30.0), ("soon", 5.0), (None, 5.0), (2.5, 2.5)])
def test_retry_after_is_kept_within_bounds(fake_backend: FakeBackend, given: Any, kept: float) -> None:
    fake_backend.decide = lambda event, seen: {"action": "wait", "retry_after_s": given}
    callbacks = CallbackClient(Callback(**fake_backend.callback()), "job-1", "delivery-a")

    decision = callbacks.started()

    assert (decision.wait, decision.retry_after_s) == (True, kept)


class RecordingCallbacks:
    def __init__(self) -> None:
        self.progress_calls: list[Progress] = []
        self.lock = threading.Lock()

    def progress(self, progress: Progress) -> Any:
        with self.lock:
            self.progress_calls.append(progress)
        return worker.Decision("continue")


def test_the_keep_alive_repeats_the_last_progress_while_the_trainer_is_quiet(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(worker, "HEARTBEAT_INTERVAL_S", 0.1)
    monkeypatch.setattr(worker.runpod.serverless, "progress_update", lambda job, data: None)
    callbacks = RecordingCallbacks()
    reporter = worker.ProgressReporter({"id": "job-1"}, callbacks)  # type: ignore[arg-type]

    async def quiet_download() -> None:
        keep_alive = asyncio.create_task(reporter.keep_alive())
        await reporter.report(Progress(stage="downloading", step=0, total_steps=100))
        await asyncio.sleep(0.65)  # no progress from the work itself meanwhile
        keep_alive.cancel()

    asyncio.run(quiet_download())

    assert len(callbacks.progress_calls) >= 4
    assert {call.stage for call in callbacks.progress_calls} == {"downloading"}


@pytest.mark.parametrize(
    ("code", "ends_with"), [("claimed_elsewhere", "claimed_elsewhere"), ("", "cancelled")]
)
def test_a_stop_heard_by_the_keep_alive_stops_the_job_before_training(
    monkeypatch: pytest.MonkeyPatch, code: str, ends_with: str
) -> None:
    monkeypatch.setattr(worker, "HEARTBEAT_INTERVAL_S", 0.1)
    monkeypatch.setattr(worker.runpod.serverless, "progress_update", lambda job, data: None)

    class Stopping(RecordingCallbacks):
        def progress(self, progress: Progress) -> Any:
            super().progress(progress)
            if len(self.progress_calls) > 1:
                return worker.Decision("stop", "the run was claimed by another worker", code=code)
            return worker.Decision("continue")

    reporter = worker.ProgressReporter({"id": "job-1"}, Stopping())  # type: ignore[arg-type]

    async def quiet_download() -> None:
        keep_alive = asyncio.create_task(reporter.keep_alive())
        await reporter.report(Progress(stage="downloading", step=0, total_steps=100))
        await asyncio.wait_for(keep_alive, timeout=5)

    asyncio.run(quiet_download())

    with pytest.raises(worker.JobFailed) as stopped:
        reporter.check_stopped()
    assert stopped.value.code == ends_with and "claimed by another worker" in stopped.value.message
