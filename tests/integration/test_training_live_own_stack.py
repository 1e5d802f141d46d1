"""Training end to end on a live stack of the test's own: stories that start the stand-in's GPU workers
differently or kill the Celery worker (the others, sharing one stack, are in test_training_live.py)."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from tests.integration.conftest import wait_for
from tests.integration.test_training_live import character_ready_to_train, explain, final, start
from training.selectors import character_current_lora

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_a_trainer_failure_reaches_the_run_with_its_message(alice: Any, stack_factory: Any) -> None:
    stack = stack_factory(
        runpod_env={"SIMULATED_TRAINER_FAIL": "oom", "SIMULATED_TRAINER_FAIL_AT_STEP": "20"}
    )

    run = final(start(character_ready_to_train(alice)))

    assert (run.status, run.error_code) == ("failed", "out_of_memory"), explain(stack)
    assert "ran out of memory" in run.error_message
    assert character_current_lora(run.character) is None


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
