"""Starts the local RunPod stand-in (`python -m runpod_worker.local_runpod`) for a test run.

    with LocalRunPod(workdir=tmp_path, workers=2) as runpod:
        job_id = runpod.run({"contract_version": 1, ...})
        final = runpod.wait_for(job_id)

The stand-in runs as a subprocess in its own process group; `stop()` ends that whole group (server,
worker processes, their ping processes and trainers), so nothing outlives the test.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

from tests.support.ports import free_port, wait_for_port
from tests.support.processes import REPO_ROOT, log_tails, spawn, stop_group

FINAL_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"})
# The simulated trainer's LoRAs hold the first two blocks of each kind (3 MB for FLUX.1 at rank 4, not
# 43 MB: runpod_worker/simulated_ai_toolkit/run.py) for the tests that do not test the LoRA's size or
# layout. Every save is written, hashed, uploaded and downloaded again to be verified.
LIGHT_LORA = {"SIMULATED_TRAINER_LORA_BLOCKS": "2"}


class LocalRunPod:
    def __init__(
        self,
        *,
        workdir: Path,
        workers: int = 1,
        endpoint_id: str = "local-endpoint",
        api_key: str = "local-test-key",
        result_ttl: float = 1800.0,
        webhook_retry_interval: float = 0.2,
        max_attempts: int = 2,
        env: dict[str, str] | None = None,
        faults: dict[str, Any] | None = None,
        port: int | None = None,
        worker_key: str = "",
        max_workers: int | None = None,
        execution_timeout: float | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.workers = workers
        self.endpoint_id = endpoint_id
        self.api_key = api_key
        self.result_ttl = result_ttl
        self.webhook_retry_interval = webhook_retry_interval
        self.max_attempts = max_attempts
        self.env = dict(env or {})
        self.faults = dict(faults or {})
        self.port = port or free_port()
        self.worker_key = worker_key
        self.max_workers = max_workers
        self.execution_timeout = execution_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {api_key}"

    # ------------------------------------------------------------------------- lifecycle

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/v2/{self.endpoint_id}"

    @property
    def log_dir(self) -> Path:
        return self.workdir / "local-runpod-logs"

    def start(self, *, timeout: float = 30.0) -> LocalRunPod:
        self.workdir.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-m",
            "runpod_worker.local_runpod",
            f"--port={self.port}",
            f"--endpoint-id={self.endpoint_id}",
            f"--api-key={self.api_key}",
            f"--workers={self.workers}",
            f"--result-ttl={self.result_ttl}",
            f"--webhook-retry-interval={self.webhook_retry_interval}",
            f"--max-attempts={self.max_attempts}",
            f"--log-dir={self.log_dir}",
            "--seed=7",
            *([f"--worker-key={self.worker_key}"] if self.worker_key else []),
            *([f"--max-workers={self.max_workers}"] if self.max_workers is not None else []),
            *([f"--execution-timeout={self.execution_timeout}"] if self.execution_timeout else []),
            *(f"--env={key}={value}" for key, value in self.env.items()),
            *(f"--fault={key}={value}" for key, value in self.faults.items()),
        ]
        environment = {**os.environ, "WORKER_WORKSPACE": str(self.workdir / "workspaces")}
        log_path = self.workdir / "local-runpod.log"
        self.process = spawn(command, log_path=log_path, cwd=REPO_ROOT, env=environment)
        try:
            wait_for_port(self.port, timeout=timeout)
        except TimeoutError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        # Worker processes live in their own groups; the stand-in ends them on SIGTERM.
        stop_group(self.process, grace=15)
        self.session.close()

    def kill(self) -> None:
        """Stop the stand-in with its worker processes SIGKILLed rather than given their grace, for a test
        that is over: their jobs no longer matter. The stand-in still reaps them."""
        try:
            workers = list(self.state()["workers"].values())
        except requests.RequestException:
            workers = []
        if self.process is not None:
            # First, so that it no longer replaces the workers that die.
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
        for worker in workers:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(int(worker["pid"]), signal.SIGKILL)
        self.stop()

    def __enter__(self) -> LocalRunPod:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------------- public API

    def run(
        self, job_input: dict[str, Any], *, webhook: str | None = None, policy: dict[str, Any] | None = None
    ) -> str:
        body: dict[str, Any] = {"input": job_input}
        if webhook:
            body["webhook"] = webhook
        if policy:
            body["policy"] = policy
        response = self.session.post(f"{self.api_url}/run", json=body, timeout=10)
        response.raise_for_status()
        return str(response.json()["id"])

    def status(self, job_id: str) -> dict[str, Any] | None:
        """The job object, or None once RunPod would answer 404 (unknown or expired)."""
        response = self.session.get(f"{self.api_url}/status/{job_id}", timeout=10)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return dict(response.json())

    def cancel(self, job_id: str) -> dict[str, Any]:
        response = self.session.post(f"{self.api_url}/cancel/{job_id}", timeout=10)
        response.raise_for_status()
        return dict(response.json())

    def health(self) -> dict[str, Any]:
        response = self.session.get(f"{self.api_url}/health", timeout=10)
        response.raise_for_status()
        return dict(response.json())

    def wait_for(
        self, job_id: str, *, statuses: frozenset[str] | set[str] = FINAL_STATES, timeout: float = 60.0
    ) -> dict[str, Any]:
        """Polls until the job reaches one of `statuses`; raises TimeoutError with the last status."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            last = self.status(job_id)
            if last is not None and last["status"] in statuses:
                return last
            time.sleep(0.1)
        raise TimeoutError(f"job {job_id} did not reach {sorted(statuses)} in {timeout}s; last: {last}")

    def wait_until(self, job_id: str, predicate: Any, *, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            last = self.status(job_id)
            if last is not None and predicate(last):
                return last
            time.sleep(0.05)
        raise TimeoutError(f"job {job_id}: condition not met in {timeout}s; last: {last}")

    # ------------------------------------------------------------------------- control

    def set_faults(self, **faults: Any) -> dict[str, Any]:
        response = self.session.post(f"{self.base_url}/_control/faults", json=faults, timeout=10)
        response.raise_for_status()
        return dict(response.json())

    def reset(self) -> dict[str, Any]:
        """The stand-in as it started (its worker processes kept): start-up faults, no jobs, no counts;
        a job still running is stopped on its worker."""
        response = self.session.post(f"{self.base_url}/_control/reset", timeout=10)
        response.raise_for_status()
        return dict(response.json())

    def wait_idle(self, *, timeout: float = 60.0) -> None:
        """Until every worker process is up and waiting for a job (since the last `reset`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            response = self.session.get(f"{self.base_url}/_control/idle", timeout=10)
            response.raise_for_status()
            if response.json()["idle"]:
                return
            time.sleep(0.1)
        raise TimeoutError(f"the stand-in's workers were not all idle in {timeout}s:\n{self.logs()}")

    @property
    def rest_url(self) -> str:
        """RunPod's REST v2 management API, as the stand-in serves it."""
        return f"{self.base_url}/v2"

    def endpoint(self) -> dict[str, Any]:
        """The stand-in's endpoint as `GET /v2/serverless/<id>` shows it."""
        response = self.session.get(f"{self.rest_url}/serverless/{self.endpoint_id}", timeout=10)
        response.raise_for_status()
        return dict(response.json())

    def set_endpoint_max_workers(self, value: int) -> dict[str, Any]:
        response = self.session.patch(
            f"{self.rest_url}/serverless/{self.endpoint_id}", json={"workers": {"max": value}}, timeout=10
        )
        response.raise_for_status()
        return dict(response.json())

    def state(self) -> dict[str, Any]:
        response = self.session.get(f"{self.base_url}/_control/state", timeout=10)
        response.raise_for_status()
        return dict(response.json())

    def scripted_worker(self, worker_id: str = "scripted-worker") -> ScriptedWorker:
        """A worker played by the test over the worker-side protocol (start the stand-in with
        `workers=0` and a `worker_key`), for behaviours that need exact timing."""
        return ScriptedWorker(self, worker_id)

    def logs(self) -> str:
        """Everything the stand-in and its workers printed, for assertion messages."""
        return log_tails(self.workdir / "local-runpod.log", *sorted(self.log_dir.glob("*.log")))


class ScriptedWorker:
    """Speaks the worker side as the pinned SDK does (runpod 1.12.0 rp_job.py `get_job`, rp_http.py
    `_transmit`: a JSON string under a form content type, the worker key bare in `Authorization`)."""

    def __init__(self, runpod: LocalRunPod, worker_id: str) -> None:
        assert runpod.worker_key, "start the stand-in with a worker_key to script a worker"
        self.worker_id = worker_id
        self.base = f"{runpod.base_url}/_worker/{runpod.endpoint_id}"
        self.session = requests.Session()
        self.session.headers["Authorization"] = runpod.worker_key

    def take(self) -> dict[str, Any] | None:
        """One job-take long poll: the job handed out, or None (204)."""
        response = self.session.get(
            f"{self.base}/job-take/{self.worker_id}?gpu=local&job_in_progress=0", timeout=10
        )
        response.raise_for_status()
        return None if response.status_code == 204 else dict(response.json())

    def take_until(self, job_id: str, *, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.take()
            if job is not None and job["id"] == job_id:
                return job
        raise TimeoutError(f"job {job_id} was not handed out in {timeout}s")

    def progress(self, job_id: str, output: Any) -> None:
        self._post(job_id, {"status": "IN_PROGRESS", "output": output})

    def finish(self, job_id: str, *, output: Any = None, error: str | None = None) -> None:
        self._post(job_id, {"error": error} if error is not None else {"output": output})

    def _post(self, job_id: str, body: dict[str, Any]) -> None:
        response = self.session.post(
            f"{self.base}/job-done/{self.worker_id}/{job_id}?gpu=local&isStream=false",
            data=json.dumps(body),
            headers={"Content-Type": "application/x-www-form-urlencoded", "X-Request-ID": job_id},
            timeout=30,
        )
        response.raise_for_status()
