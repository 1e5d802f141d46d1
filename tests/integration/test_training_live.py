"""Training end to end on the live stack: each test is one story a user or an operator could tell."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from runpod_worker.contract import parse_error
from tests.characters.factories import CharacterFactory, ReferenceImageFactory
from tests.characters.images import jpeg_bytes
from tests.integration.conftest import Stack, wait_for
from training.models import TrainingRun
from training.selectors import character_current_lora
from training.services import TRAINING_POLL, training_run_cancel, training_run_start

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
# The first step of a training run's poll backoff (training.services.schedule.TRAINING_POLL).
BACKOFF_POLL_S = TRAINING_POLL[0].total_seconds()


def character_ready_to_train(owner: Any) -> Any:
    character = CharacterFactory(owner=owner, name="Anna", trigger_word="ohwx_anna")
    for index in range(3):
        content = jpeg_bytes(size=(64 + index, 64))
        ReferenceImageFactory(
            character=character,
            content=content,
            file=ContentFile(content, name=f"photo-{index}.jpg"),
        )
    return character


def start(character: Any, steps: int = 100) -> TrainingRun:
    return training_run_start(
        character=character,
        requested_by=character.owner,
        params={"steps": steps, "save_every": 50},
        source="user",
    )


def final(run: TrainingRun, timeout: float = 60.0) -> TrainingRun:
    def done() -> TrainingRun | None:
        run.refresh_from_db()
        return run if run.is_final else None

    return wait_for(done, timeout=timeout, what=f"run {run.pk} to end")


def statuses(run: TrainingRun) -> list[str]:
    return list(run.events.order_by("created_at", "id").values_list("to_status", flat=True))


def lora_objects(stack: Stack, character: Any) -> list[str]:
    listing = stack.s3.client().list_objects_v2(
        Bucket="studio-media", Prefix=f"characters/{character.pk}/loras/"
    )
    return [item["Key"] for item in listing.get("Contents", [])]


def assert_only_stored_lora(stack: Stack, run: TrainingRun) -> None:
    """The run's own LoRA is the only one its character has in the bucket, once the completion has tidied
    up after its transaction (the upload, and any copy that was not kept, go right after it commits)."""
    with contextlib.suppress(TimeoutError):
        wait_for(lambda: lora_objects(stack, run.character) == [run.lora_name], timeout=15)
    assert lora_objects(stack, run.character) == [run.lora_name]


def explain(stack: Stack) -> str:
    return stack.worker.logs() + "\n" + stack.runpod.logs()


def test_a_run_goes_from_start_to_the_characters_current_lora(alice: Any, stack_factory: Any) -> None:
    stack = stack_factory()
    character = character_ready_to_train(alice)

    run = final(start(character))

    assert run.status == "completed", explain(stack) + run.error_message
    assert statuses(run) == ["pending", "queued", "training", "completed"]
    assert character_current_lora(character) == run
    stored = default_storage.open(run.lora_name).read()
    assert (len(stored), hashlib.sha256(stored).hexdigest()) == (run.lora_bytes, run.lora_sha256)
    assert run.progress_step == 100
    # Completed by the worker's "finished" callback; the cost follows from RunPod's execution time once its
    # webhook for the job's end arrives.
    assert run.events.get(to_status="completed").source == "worker"
    run = wait_for(
        lambda: TrainingRun.objects.filter(pk=run.pk, cost_usd__isnull=False).first(), what="the cost"
    )
    assert run.cost_usd > 0 and run.execution_ms


def test_a_trainer_failure_reaches_the_run_with_its_message(alice: Any, stack_factory: Any) -> None:
    stack = stack_factory(
        runpod_env={"SIMULATED_TRAINER_FAIL": "oom", "SIMULATED_TRAINER_FAIL_AT_STEP": "20"}
    )

    run = final(start(character_ready_to_train(alice)))

    assert (run.status, run.error_code) == ("failed", "out_of_memory"), explain(stack)
    assert "ran out of memory" in run.error_message
    assert character_current_lora(run.character) is None


def test_cancel_while_training_stops_the_job(alice: Any, stack_factory: Any) -> None:
    stack = stack_factory()
    character = character_ready_to_train(alice)
    run = start(character, steps=3000)  # 30 s of simulated training: long enough to cancel
    wait_for(lambda: TrainingRun.objects.filter(pk=run.pk, progress_step__gt=0).exists(), what="progress")

    training_run_cancel(run=run, source="user")

    run.refresh_from_db()
    assert run.status == "cancelled"
    job = stack.runpod.wait_for(run.runpod_job_id, timeout=20)
    assert job["status"] == "CANCELLED"
    assert lora_objects(stack, character) == []


def test_with_webhooks_dropped_the_sweep_completes_the_run_seconds_after_the_job_ends(
    alice: Any, stack_factory: Any, finished_callback_lost: list[str]
) -> None:
    stack = stack_factory(faults={"drop_webhooks": "true"})
    run = start(character_ready_to_train(alice), steps=300)  # long enough for the worker to report an ETA
    job_id = wait_for(lambda: TrainingRun.objects.get(pk=run.pk).runpod_job_id, what="a job id")

    stack.runpod.wait_for(job_id, timeout=60)  # polls every 0.1 s: this is when the job ended
    job_ended_at = time.time()
    run = final(run)

    assert run.status == "completed", explain(stack)
    assert stack.runpod.state()["jobs"][job_id]["webhook_attempts"] == [{"dropped": True}]
    assert run.finished_at is not None
    lag_s = run.finished_at.timestamp() - job_ended_at
    # The finishing poll (1 s here) plus one sweep interval (1 s) plus the poll's own work: seconds. Without
    # the finishing poll the run would wait for its backoff poll, 30 s or more after the last one. The
    # figure itself is measured by `make bench` (bench/bench_orchestration_completion.py), not bounded
    # tightly here, where a loaded machine stretches the poll's work.
    assert lag_s < BACKOFF_POLL_S, f"completed {lag_s:.2f}s after the job ended\n" + explain(stack)


def test_a_429_storm_creates_no_duplicate_runpod_job(alice: Any, stack_factory: Any) -> None:
    stack = stack_factory(faults={"rate_429": "0.6"})

    run = final(start(character_ready_to_train(alice)), timeout=90)

    assert run.status == "completed", run.error_message + explain(stack)
    assert len(stack.jobs()) == 1


class _KillAfterRun(BaseHTTPRequestHandler):
    """Forwards RunPod calls; after the first `/run` reached RunPod, SIGKILLs the Celery worker before
    the answer gets back to it, as if its host died at that instant."""

    target = ""
    worker_pid = 0
    fired = threading.Event()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._forward("GET")

    def do_POST(self) -> None:
        self._forward("POST")

    def _forward(self, method: str) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        upstream = requests.request(
            method,
            self.target + self.path,
            data=body or None,
            headers={
                "Authorization": self.headers.get("Authorization", ""),
                "Content-Type": "application/json",
            },
            timeout=10,
        )
        if self.path.endswith("/run") and not self.fired.is_set():
            self.fired.set()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.worker_pid, signal.SIGKILL)
            return
        self.send_response(upstream.status_code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(upstream.content)))
        self.end_headers()
        self.wfile.write(upstream.content)


def test_a_celery_worker_killed_right_after_run_leaves_one_job_and_the_run_completes(
    alice: Any, stack_factory: Any
) -> None:
    stack = stack_factory()
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), _KillAfterRun)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        _KillAfterRun.target = stack.runpod.base_url
        stack.restart_worker(RUNPOD_API_BASE=f"http://127.0.0.1:{proxy.server_port}/v2")
        assert stack.worker.process is not None
        _KillAfterRun.worker_pid = stack.worker.process.pid

        run = start(character_ready_to_train(alice))
        wait_for(_KillAfterRun.fired.is_set, timeout=30, what="the /run call")
        stack.worker.process.wait(timeout=10)
        stack.restart_worker()  # a fresh worker, straight to RunPod, carries on with the sweep

        run = final(run)
    finally:
        proxy.shutdown()

    assert run.status == "completed", explain(stack)
    assert len(stack.jobs()) == 1
    assert run.attempts == 1


def test_a_job_handed_out_twice_gives_one_lora_and_one_completion(alice: Any, stack_factory: Any) -> None:
    # RunPod keeps the first final result to arrive, and the duplicate's comes first: it is stopped after
    # one liveness window (3 s), while the holder trains for 10 s. Its FAILED `claimed_elsewhere` must not
    # end the run; the holder's "finished" callback completes it.
    stack = stack_factory(faults={"duplicate_jobs": "1", "duplicate_result": "first"})
    character = character_ready_to_train(alice)

    run = final(start(character, steps=1000), timeout=90)

    assert run.status == "completed", explain(stack) + run.error_message
    job = stack.runpod.state()["jobs"][run.runpod_job_id]
    assert len(job["deliveries"]) == 2
    assert job["status"] == "FAILED" and parse_error(job["error"]).code == "claimed_elsewhere"
    assert run.events.filter(to_status="completed").count() == 1
    assert run.events.filter(to_status="failed").count() == 0
    assert_only_stored_lora(stack, run)
    stored = default_storage.open(run.lora_name).read()
    assert (len(stored), hashlib.sha256(stored).hexdigest()) == (run.lora_bytes, run.lora_sha256)
    [ignored] = wait_for(
        lambda: stack.runpod.state()["jobs"][run.runpod_job_id]["ignored_results"], what="the holder's result"
    )
    assert ignored["output"]["lora"]["sha256"] == run.lora_sha256
