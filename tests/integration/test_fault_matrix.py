"""The fault matrix on the live stack: for each fault, what the user sees, and that no run, LoRA or
image is lost and no run gets a second GPU job. Faults already told as stories in test_training_live.py
(429 storm, dropped webhooks, Celery SIGKILLed after /run, a job handed out twice, the trainer out of
GPU memory, cancel) are not repeated here.

The faults that kill or restart nothing (a 5xx storm, a GPU worker killed inside the stand-in, a job
handed out twice) share one stack in test_fault_matrix_shared_stack.py.

    make test PYTEST_ARGS=tests/integration/test_fault_matrix.py
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
import time_machine
from django.conf import settings as django_settings
from django.db import connection
from django.urls import reverse

from tests.integration.conftest import Stack, wait_for
from tests.integration.test_training_live import (
    assert_only_stored_lora,
    character_ready_to_train,
    explain,
    final,
    lora_objects,
    start,
    statuses,
)
from tests.support.broker import private_redis
from tests.support.local_runpod import LocalRunPod
from training.models import TrainingRun
from training.selectors import character_current_lora
from training.services import training_run_retry
from training.tokens import run_token

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def assert_one_job_one_lora(stack: Stack, run: TrainingRun, jobs: int | None = None) -> None:
    """Nothing doubled, nothing lost: one GPU job, one stored LoRA that is the character's current one,
    every reference image still there, one completion event. `jobs`: the count taken before the test
    replaced the stand-in (a new one knows no job)."""
    assert run.status == "completed", run.error_message + explain(stack)
    assert (len(stack.jobs()) if jobs is None else jobs) == 1, stack.jobs()
    assert_only_stored_lora(stack, run)
    assert character_current_lora(run.character) == run
    assert run.events.filter(to_status="completed").count() == 1
    assert run.character.images.count() == 3


def replace_runpod(stack: Stack, **options: Any) -> LocalRunPod:
    """Stop the stand-in and start another on the same port (RunPod gone, then back)."""
    port, workdir, env = stack.runpod.port, stack.runpod.workdir, stack.runpod.env
    stack.runpod.stop()
    stack.runpod = LocalRunPod(workdir=workdir, workers=2, env=env, port=port, **options).start()
    return stack.runpod


def started_and_result_expired(stack_factory: Any, owner: Any) -> tuple[Stack, TrainingRun]:
    """A run whose job ran and ended while no Celery worker polled, webhooks dropped, and whose result
    RunPod then forgot (404); a Celery worker runs again when this returns."""
    stack = stack_factory(faults={"drop_webhooks": "true"})
    stack.worker.stop()  # nobody polls while the job runs and its result expires
    replace_runpod(stack, result_ttl=0.5)
    stack.runpod.set_faults(drop_webhooks=True)
    run = start(character_ready_to_train(owner))
    stack.worker.start()
    job_id = wait_for(lambda: TrainingRun.objects.get(pk=run.pk).runpod_job_id, what="a job id")
    stack.worker.stop()
    stack.runpod.wait_for(job_id, timeout=60)
    wait_for(lambda: stack.runpod.status(job_id) is None, timeout=10, what="the result to expire")
    stack.worker.start()
    return stack, run


def test_runpod_unreachable_at_submission_then_back_trains_once(alice: Any, stack_factory: Any) -> None:
    stack = stack_factory(worker_env={"TRAINING_SUBMIT_UNCERTAIN_GRACE_SECONDS": "3"})
    port, workdir, env = stack.runpod.port, stack.runpod.workdir, stack.runpod.env
    stack.runpod.stop()

    run = start(character_ready_to_train(alice))
    wait_for(lambda: TrainingRun.objects.get(pk=run.pk).attempts >= 1, what="a submission attempt")
    time.sleep(2)
    run.refresh_from_db()
    assert run.status == "pending" and not run.is_final  # the user sees it waiting, not failed

    stack.runpod = LocalRunPod(workdir=workdir, workers=2, env=env, port=port).start()
    run = final(run, timeout=90)

    assert_one_job_one_lora(stack, run)


def test_duplicate_out_of_order_and_days_late_webhooks_change_nothing(
    alice: Any, stack_factory: Any, live_server: Any
) -> None:
    stack = stack_factory()
    run = final(start(character_ready_to_train(alice)))
    assert run.status == "completed", explain(stack)
    # The worker's "finished" callback completed it; RunPod's own webhook then brings the cost.
    run = wait_for(
        lambda: TrainingRun.objects.filter(pk=run.pk, cost_usd__isnull=False).first(), what="the cost"
    )
    before = (statuses(run), run.lora_sha256, run.cost_usd, run.finished_at, run.progress_step)
    url = live_server.url + reverse("training:runpod-webhook", args=[run.pk, run_token(run.pk)])

    for body in (
        {"id": run.runpod_job_id, "status": "COMPLETED", "output": {}},  # a duplicate
        {"id": run.runpod_job_id, "status": "IN_PROGRESS"},  # out of order
        {"id": run.runpod_job_id, "status": "FAILED", "error": "forged"},  # contradicting
        {"id": "some-other-job", "status": "COMPLETED"},  # another job's result
    ):
        assert requests.post(url, json=body, timeout=10).status_code == 200
    jobs = len(stack.jobs())
    # Replayed three days later, after RunPod forgot the job.
    replace_runpod(stack, result_ttl=0.1)
    with time_machine.travel(timedelta(days=3)):
        assert (
            requests.post(url, json={"id": run.runpod_job_id, "status": "COMPLETED"}, timeout=10).status_code
            == 200
        )
    time.sleep(3)  # long enough for any queued poll to have run

    run.refresh_from_db()
    assert (statuses(run), run.lora_sha256, run.cost_usd, run.finished_at, run.progress_step) == before
    assert_one_job_one_lora(stack, run, jobs=jobs)


def test_a_result_that_expired_before_we_read_it_still_completes_from_the_stored_lora(
    alice: Any, stack_factory: Any
) -> None:
    stack, run = started_and_result_expired(stack_factory, alice)

    run = final(run, timeout=90)

    # RunPod no longer knows the job; the worker's "finished" callback (the live server answered it while
    # no Celery worker ran) completed the run from the LoRA it uploaded, verified in storage.
    assert run.status == "completed", run.error_message + explain(stack)
    assert stack.jobs() == []  # the stand-in forgot the expired job; the run made one attempt
    assert_one_job_one_lora(stack, run, jobs=run.attempts)
    assert run.cost_usd is None  # RunPod's execution time was never read: no cost is made up


def test_postgres_dropping_every_connection_mid_run_loses_nothing(alice: Any, stack_factory: Any) -> None:
    stack = stack_factory()
    run = start(character_ready_to_train(alice), steps=400)
    wait_for(lambda: TrainingRun.objects.filter(pk=run.pk, progress_step__gt=0).exists(), what="progress")

    database = django_settings.DATABASES["default"]
    dsn = f"postgresql://{database['USER']}@{database['HOST']}:{database['PORT']}/postgres"
    with connection.cursor() as cursor:  # the test's own connection holds its fixtures: spare it
        cursor.execute("SELECT pg_backend_pid()")
        (own_pid,) = cursor.fetchone()
    with psycopg.connect(dsn, autocommit=True) as admin:
        killed = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid() AND pid <> %s",
            [database["NAME"], own_pid],
        ).fetchone()
    assert killed and killed[0] >= 1

    run = final(run, timeout=90)

    assert_one_job_one_lora(stack, run)
    assert json.dumps(run.manifest)  # the frozen dataset survived


def test_redis_restarted_with_tasks_in_flight_loses_no_run(
    alice: Any, stack_factory: Any, settings: Any
) -> None:
    redis = private_redis()
    if redis is None:
        pytest.skip(
            "needs a redis-server binary for a Redis of the test's own (the shared one is never restarted)"
        )
    # The run is created here and swept there: both look again at a pending run after 2 s, not 60 s.
    stack = stack_factory(worker_env={"TRAINING_PENDING_RECHECK_SECONDS": "2"})
    settings.TRAINING_PENDING_RECHECK_SECONDS = 2
    stack.worker.stop()  # the submission waits in Redis...
    run = start(character_ready_to_train(alice))
    redis.restart()  # ...and is gone with it (no persistence): a lost task, not a slow one
    stack.worker.start()

    run = final(run, timeout=90)

    assert_one_job_one_lora(stack, run)
    assert run.attempts == 1


class RefusingBucket(BaseHTTPRequestHandler):
    """Stands in front of the S3 server: forwards every request as it came (so presigned signatures still
    match), but while `refusing` is set answers PUTs with S3's 403 AccessDenied."""

    target = ""
    refusing = threading.Event()
    refused: list[str] = []

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._forward()

    def do_HEAD(self) -> None:
        self._forward()

    def do_POST(self) -> None:
        self._forward()

    def do_DELETE(self) -> None:
        self._forward()

    def do_PUT(self) -> None:
        if self.refusing.is_set():
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.refused.append(self.path.split("?", 1)[0])
            body = b"<?xml version='1.0'?><Error><Code>AccessDenied</Code><Message>Denied</Message></Error>"
            self._answer(403, {"Content-Type": "application/xml"}, body)
            return
        self._forward()

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {key: value for key, value in self.headers.items() if key.lower() != "connection"}
        upstream = requests.request(
            self.command, self.target + self.path, data=body or None, headers=headers, timeout=30,
            allow_redirects=False,
        )  # fmt: skip
        keep = {"content-type", "etag", "last-modified", "x-amz-request-id", "accept-ranges", "content-range"}
        self._answer(
            upstream.status_code,
            {key: value for key, value in upstream.headers.items() if key.lower() in keep},
            upstream.content,
            length=upstream.headers.get("Content-Length") if self.command == "HEAD" else None,
        )

    def _answer(self, status: int, headers: dict[str, str], body: bytes, length: str | None = None) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", length if length is not None else str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


@pytest.fixture
def refusing_bucket(stack_factory: Any) -> Iterator[tuple[Stack, type[RefusingBucket]]]:
    stack = stack_factory()
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), RefusingBucket)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    RefusingBucket.target = stack.s3.endpoint_url.rstrip("/")
    RefusingBucket.refused = []
    RefusingBucket.refusing.set()
    # The backend presigns through the stand-in, so the worker's LoRA upload goes to it.
    stack.restart_worker(AWS_S3_ENDPOINT_URL=f"http://127.0.0.1:{proxy.server_port}")
    try:
        yield stack, RefusingBucket
    finally:
        RefusingBucket.refusing.clear()
        proxy.shutdown()


def test_the_bucket_refusing_the_lora_upload_fails_the_run_with_its_reason_and_retry_trains_it(
    alice: Any, refusing_bucket: tuple[Stack, type[RefusingBucket]]
) -> None:
    stack, bucket = refusing_bucket
    character = character_ready_to_train(alice)

    run = final(start(character), timeout=90)

    assert (run.status, run.error_code) == ("failed", "upload_failed"), run.error_message + explain(stack)
    assert "refused the upload of the trained LoRA (HTTP 403)" in run.error_message
    assert "Retry the run" in run.error_message
    assert bucket.refused and all(path.endswith(".safetensors") for path in bucket.refused)
    assert lora_objects(stack, character) == []
    assert character_current_lora(character) is None
    assert character.images.count() == 3

    bucket.refusing.clear()  # the bucket takes writes again
    retried = final(training_run_retry(run=run, requested_by=alice, source="user"), timeout=90)

    assert retried.status == "completed", retried.error_message + explain(stack)
    assert len(stack.jobs()) == 2  # one GPU job per run
    assert_only_stored_lora(stack, retried)
    assert character_current_lora(character) == retried
    assert retried.events.filter(to_status="completed").count() == 1
    assert character.images.count() == 3


@pytest.mark.parametrize("moment", ["poll", "sweep"])
def test_a_celery_worker_sigkilled_inside_a_task_leaves_one_job_and_the_run_completes(
    alice: Any, stack_factory: Any, tmp_path: Path, moment: str, finished_callback_lost: list[str]
) -> None:
    # Webhooks and the worker's "finished" callback lost: the sweep and its polls finish the run.
    marker = tmp_path / f"killed-in-{moment}"
    stack = stack_factory(
        faults={"drop_webhooks": "true"},
        worker_env={"STUDIO_FAULT_KILL_IN": moment, "STUDIO_FAULT_MARKER": str(marker)},
        worker_args=["--include=tests.integration.celery_faults"],
    )

    run = start(character_ready_to_train(alice), steps=200)
    wait_for(marker.exists, timeout=60, what=f"the worker to be killed inside the {moment}")
    assert stack.worker.process is not None
    stack.worker.process.wait(timeout=10)  # the whole worker is gone, beat with it
    run.refresh_from_db()
    assert not run.is_final  # what the user sees meanwhile: the run still training
    stack.worker.start()  # a fresh worker (the hook does not fire twice)

    run = final(run, timeout=90)

    assert_one_job_one_lora(stack, run)
    assert run.attempts == 1
    assert len(finished_callback_lost) == 1  # the poll, not the callback, completed it
