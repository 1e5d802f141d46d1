"""A local stand-in for a RunPod queue endpoint: the public job API and the worker-side protocol.

    python -m runpod_worker.local_runpod --port 8765 --endpoint-id local --api-key secret --workers 1

Public side (Bearer auth): POST /v2/<eid>/run, GET /v2/<eid>/status/<id>, POST /v2/<eid>/cancel/<id>,
GET /v2/<eid>/health; webhooks with the cloud body on final states, 3 attempts, `--webhook-retry-interval`
apart. Worker side: it starts N processes of the unmodified `python -m runpod_worker.handler` in
production mode (RUNPOD_WEBHOOK_GET_JOB and friends) and replaces any that die. Protocol taken from the
runpod 1.12.0 SDK source (rp_job.py, rp_http.py, rp_ping.py, rp_scale.py).

Faults, at start-up (`--fault KEY=VALUE`) or at run time (`POST /_control/faults`, Bearer auth):
rate_429, rate_5xx (0..1, public API only), drop_webhooks (bool), kill_worker_mid_job (count of jobs whose
worker is SIGKILLed at their first progress post), duplicate_jobs (count of jobs handed to two workers),
queue_delay_s (seconds a new job waits before any worker may take it), duplicate_result (which final result
of a duplicated job counts: `assigned`, the default, `first` or `last` to arrive), public_down (bool: every
public request's connection is closed unanswered, as when RunPod cannot be reached; workers carry on),
slow_rate and slow_s (a share of public requests answered only after slow_s seconds; a /run creates its job
before the wait), lose_run_answer (count of /run calls that create their job, then answer 500).

`GET /_control/state` shows every job with its wall-clock `created_ms`, `started_ms` and `finished_ms`
(when the final result arrived), and `api_calls`: public API requests by route, refused ones included.
`--worker-key` fixes the worker-side key, so a script can play the worker (with `--workers 0`).

A worker that dies mid-job: the job goes back to the queue (`retried` in /health) until it has been
started `--max-attempts` times (default 2), then it ends FAILED. RunPod documents automatic retries
without their count, so the count is a setting here.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import requests

log = logging.getLogger("local_runpod")

REPO_ROOT = Path(__file__).resolve().parent.parent
SIMULATOR_DIR = Path(__file__).resolve().parent / "simulated_ai_toolkit"
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"}
# The SDK's job-take loop retries at once after a 204, so the take is a long poll, as on RunPod.
TAKE_HOLD_S = 2.0
STOP_HOLD_S = 2.0
WEBHOOK_ATTEMPTS = 3
WEBHOOK_TIMEOUT_S = 10.0
DEFAULT_FAULTS: dict[str, Any] = {
    "rate_429": 0.0,
    "rate_5xx": 0.0,
    "drop_webhooks": False,
    "kill_worker_mid_job": 0,
    "duplicate_jobs": 0,
    "queue_delay_s": 0.0,
    # Which final result of a job handed out twice counts: the assigned (first) worker's, the first to
    # arrive, or the last to arrive (RunPod does not document its rule).
    "duplicate_result": "assigned",
    # RunPod's API unreachable from the backend: every public request's connection is closed unanswered
    # (the workers, on RunPod's own network, carry on).
    "public_down": False,
    # A share of public requests answered only after `slow_s` seconds (a /run creates its job first), so a
    # client with a shorter timeout gives up on a call that did happen.
    "slow_rate": 0.0,
    "slow_s": 0.0,
    # Count of /run calls that create their job and then answer 500: the job exists, the answer is lost.
    "lose_run_answer": 0,
}


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Job:
    id: str
    input: Any
    webhook: str | None
    policy: dict[str, Any]
    created_ms: int
    available_at: float
    status: str = "IN_QUEUE"
    output: Any = None
    error: Any = None
    worker_id: str | None = None
    started_ms: int | None = None
    finished_ms: int | None = None
    finished_at: float | None = None
    attempts: int = 0
    duplicate_pending: bool = False
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    ignored_results: list[dict[str, Any]] = field(default_factory=list)
    webhook_attempts: list[dict[str, Any]] = field(default_factory=list)
    kill_on_progress: bool = False

    def public(self) -> dict[str, Any]:
        body: dict[str, Any] = {"id": self.id, "status": self.status}
        if self.started_ms is not None:
            body["delayTime"] = self.started_ms - self.created_ms
        if self.started_ms is not None and self.finished_ms is not None:
            body["executionTime"] = self.finished_ms - self.started_ms
        elif self.started_ms is not None:
            body["executionTime"] = _now_ms() - self.started_ms
        if self.worker_id:
            body["workerId"] = self.worker_id
        if self.error is not None:
            body["error"] = self.error
        elif self.output is not None:
            body["output"] = self.output
        return body

    def internals(self) -> dict[str, Any]:
        return {
            **self.public(),
            # Wall-clock milliseconds (time.time), for measuring how soon the backend learns of an end.
            "created_ms": self.created_ms,
            "started_ms": self.started_ms,
            "finished_ms": self.finished_ms,
            "attempts": self.attempts,
            "deliveries": self.deliveries,
            "ignored_results": self.ignored_results,
            "webhook_attempts": self.webhook_attempts,
        }


@dataclass
class WorkerProc:
    worker_id: str
    process: subprocess.Popen[bytes]
    jobs: set[str] = field(default_factory=set)
    last_ping: float = 0.0


class Platform:
    """All state behind one lock; a condition wakes long-polling job takes and stop polls."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.lock = threading.Condition()
        self.jobs: dict[str, Job] = {}
        self.queue: deque[str] = deque()
        self.stops: dict[str, set[str]] = {}
        self.workers: dict[str, WorkerProc] = {}
        self.faults: dict[str, Any] = {**DEFAULT_FAULTS, **_parse_faults(args.fault)}
        self.retried = 0
        self.worker_key = args.worker_key or secrets.token_hex(16)
        # Public API requests by route ("run", "status", ...), refused ones included: benchmarks count them.
        self.api_calls: dict[str, int] = {}
        self.random = random.Random(args.seed)
        self.shutting_down = False
        self.log_dir = Path(args.log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.generation = 0

    # ----------------------------------------------------------------------------------- public API

    def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        job = Job(
            id=f"{uuid.uuid4()}-u1",
            input=body["input"],
            webhook=body.get("webhook"),
            policy=dict(body.get("policy") or {}),
            created_ms=_now_ms(),
            available_at=time.monotonic() + float(self.faults["queue_delay_s"]),
        )
        with self.lock:
            self.jobs[job.id] = job
            self.queue.append(job.id)
            if self.faults["duplicate_jobs"] > 0:
                self.faults["duplicate_jobs"] -= 1
                job.duplicate_pending = True
            if self.faults["kill_worker_mid_job"] > 0:
                self.faults["kill_worker_mid_job"] -= 1
                job.kill_on_progress = True
            self.lock.notify_all()
        return {"id": job.id, "status": "IN_QUEUE"}

    def take_fault(self, name: str) -> bool:
        """Uses up one of a counted fault (`lose_run_answer`): True when it fires."""
        with self.lock:
            if self.faults[name] > 0:
                self.faults[name] -= 1
                return True
        return False

    def find(self, job_id: str) -> Job | None:
        with self.lock:
            self._expire()
            return self.jobs.get(job_id)

    def cancel(self, job_id: str) -> Job | None:
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None or job.status in FINAL_STATES:
                return job
            if job.status == "IN_QUEUE":
                with contextlib.suppress(ValueError):
                    self.queue.remove(job_id)
            self._stop_everywhere(job)
            self._finish(job, "CANCELLED")
            return job

    def health(self) -> dict[str, Any]:
        with self.lock:
            counts = {"completed": 0, "failed": 0, "inProgress": 0, "inQueue": 0, "retried": self.retried}
            for job in self.jobs.values():
                key = {"COMPLETED": "completed", "IN_PROGRESS": "inProgress", "IN_QUEUE": "inQueue"}.get(
                    job.status, "failed" if job.status in FINAL_STATES - {"COMPLETED"} else None
                )
                if key:
                    counts[key] += 1
            running = sum(1 for w in self.workers.values() if w.jobs)
            return {"jobs": counts, "workers": {"idle": len(self.workers) - running, "running": running}}

    # ----------------------------------------------------------------------------------- worker side

    def take(self, worker_id: str) -> dict[str, Any] | None:
        deadline = time.monotonic() + TAKE_HOLD_S
        with self.lock:
            while not self.shutting_down:
                job = self._next_for(worker_id)
                if job is not None:
                    return job
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self.lock.wait(min(remaining, 0.2))
        return None

    def _next_for(self, worker_id: str) -> dict[str, Any] | None:
        now = time.monotonic()
        for job_id in list(self.queue):
            job = self.jobs[job_id]
            if job.available_at > now:
                continue
            if job.status == "IN_PROGRESS" and worker_id in {d["worker_id"] for d in job.deliveries}:
                continue  # the second copy of a duplicated job goes to another worker
            self.queue.remove(job_id)
            self._deliver(job, worker_id)
            return {"id": job.id, "input": job.input}
        return None

    def _deliver(self, job: Job, worker_id: str) -> None:
        duplicate = job.status == "IN_PROGRESS"
        job.deliveries.append({"worker_id": worker_id, "at_ms": _now_ms(), "duplicate": duplicate})
        worker = self.workers.get(worker_id)
        if worker is not None:
            worker.jobs.add(job.id)
        if duplicate:
            return
        job.attempts += 1
        job.status = "IN_PROGRESS"
        job.worker_id = worker_id
        job.output = None
        job.started_ms = job.started_ms or _now_ms()
        if job.duplicate_pending:
            # Handed out again while the first worker runs it, as RunPod occasionally does (#402).
            job.duplicate_pending = False
            self.queue.appendleft(job.id)

    def result(self, worker_id: str, job_id: str, body: dict[str, Any]) -> None:
        to_kill: WorkerProc | None = None
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None:
                return
            primary = job.worker_id == worker_id and job.status == "IN_PROGRESS"
            final_counts = self._final_counts(job, worker_id)
            if body.get("status") == "IN_PROGRESS":
                if primary:
                    job.output = body.get("output")
                    if job.kill_on_progress:
                        job.kill_on_progress = False
                        to_kill = self.workers.get(worker_id)
            else:
                worker = self.workers.get(worker_id)
                if worker is not None:
                    worker.jobs.discard(job_id)
                if not final_counts:
                    # A late or duplicate delivery (by default RunPod keeps the final result of the
                    # assigned worker; see `duplicate_result`): recorded for tests to inspect.
                    job.ignored_results.append({"worker_id": worker_id, **body})
                elif "error" in body:
                    self._finish(job, "FAILED", error=body["error"], output=body.get("output"))
                else:
                    self._finish(job, "COMPLETED", output=body.get("output"))
        if to_kill is not None:
            log.warning("fault: killing worker %s in the middle of job %s", to_kill.worker_id, job_id)
            _kill_group(to_kill.process)

    def _final_counts(self, job: Job, worker_id: str) -> bool:
        """Whether this worker's final result ends the job (called with the lock held)."""
        if job.status != "IN_PROGRESS":
            return False
        rule = self.faults["duplicate_result"]
        if rule == "first":
            return worker_id in {d["worker_id"] for d in job.deliveries}
        if rule == "last":
            others = [w for w in self.workers.values() if w.worker_id != worker_id and job.id in w.jobs]
            return not others
        return job.worker_id == worker_id

    def stop_signals(self, worker_id: str) -> list[str]:
        deadline = time.monotonic() + STOP_HOLD_S
        with self.lock:
            while not self.shutting_down:
                pending = self.stops.pop(worker_id, set())
                if pending:
                    return sorted(pending)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                self.lock.wait(min(remaining, 0.2))
        return []

    def ping(self, worker_id: str) -> None:
        with self.lock:
            worker = self.workers.get(worker_id)
            if worker is not None:
                worker.last_ping = time.monotonic()

    # ----------------------------------------------------------------------------------- internals

    def _stop_everywhere(self, job: Job) -> None:
        for delivery in job.deliveries:
            self.stops.setdefault(delivery["worker_id"], set()).add(job.id)
        self.lock.notify_all()

    def _finish(self, job: Job, status: str, *, output: Any = None, error: Any = None) -> None:
        job.status = status
        job.output = output if output not in ({}, None) else None
        job.error = error
        job.finished_ms = _now_ms()
        job.finished_at = time.monotonic()
        with contextlib.suppress(ValueError):
            self.queue.remove(job.id)
        for worker in self.workers.values():
            worker.jobs.discard(job.id)
        if job.webhook:
            body = {**job.public(), "input": job.input, "webhook": job.webhook}
            threading.Thread(target=self._send_webhook, args=(job, body), daemon=True).start()

    def _send_webhook(self, job: Job, body: dict[str, Any]) -> None:
        if self.faults["drop_webhooks"]:
            with self.lock:
                job.webhook_attempts.append({"dropped": True})
            return
        assert job.webhook is not None
        for attempt in range(1, WEBHOOK_ATTEMPTS + 1):
            status: int | str
            try:
                status = requests.post(job.webhook, json=body, timeout=WEBHOOK_TIMEOUT_S).status_code
            except requests.RequestException as exc:
                status = type(exc).__name__
            with self.lock:
                job.webhook_attempts.append({"attempt": attempt, "status": status, "at_ms": _now_ms()})
            if status == 200:
                return
            if attempt < WEBHOOK_ATTEMPTS:
                time.sleep(self.args.webhook_retry_interval)

    def _expire(self) -> None:
        now = time.monotonic()
        for job in list(self.jobs.values()):
            ttl_s = float(job.policy.get("ttl", 86_400_000)) / 1000
            expired_result = job.finished_at is not None and now - job.finished_at > self.args.result_ttl
            expired_ttl = (_now_ms() - job.created_ms) / 1000 > ttl_s
            if expired_result or expired_ttl:
                with contextlib.suppress(ValueError):
                    self.queue.remove(job.id)
                if job.status == "IN_PROGRESS":
                    self._stop_everywhere(job)
                del self.jobs[job.id]

    def enforce_timeouts(self) -> None:
        with self.lock:
            self._expire()
            for job in self.jobs.values():
                limit_ms = job.policy.get("executionTimeout", self.args.execution_timeout * 1000)
                if job.status == "IN_PROGRESS" and job.started_ms and _now_ms() - job.started_ms > limit_ms:
                    self._stop_everywhere(job)
                    self._finish(job, "TIMED_OUT", error="execution timeout exceeded")

    # ----------------------------------------------------------------------------------- processes

    def worker_env(self, worker_id: str, base_url: str) -> dict[str, str]:
        eid = self.args.endpoint_id
        env = {
            **os.environ,
            "RUNPOD_WEBHOOK_GET_JOB": f"{base_url}/_worker/{eid}/job-take/$ID?gpu=local",
            "RUNPOD_WEBHOOK_POST_OUTPUT": f"{base_url}/_worker/{eid}/job-done/$RUNPOD_POD_ID/$ID?gpu=local",
            "RUNPOD_WEBHOOK_POST_STREAM": f"{base_url}/_worker/{eid}/job-stream/$RUNPOD_POD_ID/$ID?gpu=local",
            "RUNPOD_WEBHOOK_PING": f"{base_url}/_worker/{eid}/ping/$RUNPOD_POD_ID",
            "RUNPOD_AI_API_KEY": self.worker_key,
            "RUNPOD_POD_ID": worker_id,
            "RUNPOD_ENDPOINT_ID": eid,
            "RUNPOD_PING_INTERVAL": "2000",
            "RUNPOD_SKIP_GPU_CHECK": "true",
            "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true",
            "RUNPOD_DEBUG_LEVEL": os.environ.get("RUNPOD_DEBUG_LEVEL", "INFO"),
            "PYTHONUNBUFFERED": "1",
            "AI_TOOLKIT_DIR": os.environ.get("AI_TOOLKIT_DIR", str(SIMULATOR_DIR)),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        }
        env.update(_parse_pairs(self.args.env))
        return env

    def spawn(self, base_url: str) -> None:
        with self.lock:
            self.generation += 1
            worker_id = f"local-worker-{self.generation}"
        logfile = open(self.log_dir / f"{worker_id}.log", "wb")  # noqa: SIM115 - owned by the process
        process = subprocess.Popen(
            [sys.executable, "-u", "-m", "runpod_worker.handler"],
            cwd=REPO_ROOT,
            env=self.worker_env(worker_id, base_url),
            stdout=logfile,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # killing the group also kills its ping process and trainer
        )
        logfile.close()
        with self.lock:
            self.workers[worker_id] = WorkerProc(worker_id, process)
        log.info("started worker %s (pid %s)", worker_id, process.pid)

    def reap(self, base_url: str) -> None:
        """Replaces dead workers; their jobs are retried or, after the last attempt, FAILED."""
        dead: list[WorkerProc] = []
        with self.lock:
            for worker_id, worker in list(self.workers.items()):
                if worker.process.poll() is not None:
                    dead.append(worker)
                    del self.workers[worker_id]
                    _kill_group(worker.process)  # the ping process and trainer share its group
            for worker in dead:
                for job_id in worker.jobs:
                    self._worker_lost(job_id, worker.worker_id)
        for _ in dead:
            if not self.shutting_down:
                self.spawn(base_url)

    def _worker_lost(self, job_id: str, worker_id: str) -> None:
        job = self.jobs.get(job_id)
        if job is None or job.status != "IN_PROGRESS" or job.worker_id != worker_id:
            return
        if job.attempts < self.args.max_attempts:
            self.retried += 1
            job.status, job.worker_id, job.output = "IN_QUEUE", None, None
            self.queue.appendleft(job.id)
            self.lock.notify_all()
        else:
            self._finish(job, "FAILED", error=json.dumps({"error_type": "WorkerLost", "error_message": (
                f"worker {worker_id} stopped during the job after {job.attempts} attempt(s)")}))  # fmt: skip

    def stop_all(self) -> None:
        with self.lock:
            self.shutting_down = True
            workers = list(self.workers.values())
            self.lock.notify_all()
        for worker in workers:
            _kill_group(worker.process, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for worker in workers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            _kill_group(worker.process)
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.process.wait(timeout=5)


def _kill_group(process: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def _parse_pairs(pairs: list[str] | None) -> dict[str, str]:
    result = {}
    for pair in pairs or []:
        key, _, value = pair.partition("=")
        result[key] = value
    return result


def _parse_faults(pairs: list[str] | None) -> dict[str, Any]:
    faults: dict[str, Any] = {}
    for key, value in _parse_pairs(pairs).items():
        if key not in DEFAULT_FAULTS:
            raise SystemExit(f"unknown fault {key!r}; known: {', '.join(DEFAULT_FAULTS)}")
        faults[key] = _coerce_fault(key, value)
    return faults


def _coerce_fault(key: str, value: Any) -> Any:
    default = DEFAULT_FAULTS[key]
    if isinstance(default, bool):
        return value if isinstance(value, bool) else str(value).lower() in {"1", "true", "yes"}
    return type(default)(value)


# --------------------------------------------------------------------------------------- HTTP layer


class Handler(BaseHTTPRequestHandler):
    platform: Platform
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, the body waits for the client's delayed
    # ACK (~40 ms on Linux) on every kept-alive request.
    disable_nagle_algorithm = True
    _raw_body = b""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        # Read the whole body before any answer, early refusals (401, 429, 5xx, 404) included: bytes left
        # unread on a kept-alive connection would be parsed as the start of the client's next request.
        self._raw_body = self._read_body()
        url = urlparse(self.path)
        parts = [p for p in url.path.split("/") if p]
        try:
            if parts[:1] == ["_worker"]:
                self._worker(method, parts[1:], parse_qs(url.query))
            elif parts[:1] == ["_control"]:
                self._control(method, parts[1:])
            elif parts[:1] == ["v2"] and len(parts) >= 3 and parts[1] == self.platform.args.endpoint_id:
                self._public(method, parts[2:])
            else:
                self._send(404, {"error": "not found"})
        except (ValueError, KeyError) as exc:
            self._send(400, {"error": f"bad request: {exc}"})

    def _read_body(self) -> bytes:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        if length <= 0:
            return b""
        return self.rfile.read(length)

    def _body(self) -> Any:
        return json.loads(self._raw_body) if self._raw_body else {}

    def _send(self, status: int, body: Any = None) -> None:
        payload = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _authorised_public(self) -> bool:
        expected = f"Bearer {self.platform.args.api_key}"
        return secrets.compare_digest(self.headers.get("Authorization", ""), expected)

    def _public(self, method: str, parts: list[str]) -> None:
        with self.platform.lock:
            self.platform.api_calls[parts[0]] = self.platform.api_calls.get(parts[0], 0) + 1
        faults = self.platform.faults
        if faults["public_down"]:
            self.close_connection = True  # no status line at all: the client sees the connection drop
            return
        if not self._authorised_public():
            self._send(401, {"error": "Unauthorized"})
            return
        roll = self.platform.random.random()
        delay = float(faults["slow_s"]) if self.platform.random.random() < faults["slow_rate"] else 0.0
        if roll < faults["rate_429"]:
            self._send(429, {"error": "Too Many Requests"})
            return
        if roll < faults["rate_429"] + faults["rate_5xx"]:
            self._send(500, {"error": "Internal Server Error"})
            return
        route = (method, parts[0], len(parts))
        if route == ("POST", "run", 1):
            self._public_run(delay)
            return
        time.sleep(delay)
        if route == ("GET", "status", 2):
            job = self.platform.find(parts[1])
            self._send(200, job.public()) if job else self._send(404, {"error": "request does not exist"})
        elif route == ("POST", "cancel", 2):
            job = self.platform.cancel(parts[1])
            self._send(200, {"id": job.id, "status": job.status}) if job else self._send(
                404, {"error": "not found"}
            )
        elif route == ("GET", "health", 1):
            self._send(200, self.platform.health())
        else:
            self._send(404, {"error": "not found"})

    def _public_run(self, delay: float) -> None:
        body = self._body()
        if not isinstance(body, dict) or "input" not in body:
            self._send(400, {"error": "body must be an object with 'input'"})
            return
        job = self.platform.submit(body)  # the job exists from here on, whatever the answer says
        time.sleep(delay)
        if self.platform.take_fault("lose_run_answer"):
            self._send(500, {"error": "Internal Server Error"})
            return
        self._send(200, job)

    def _worker(self, method: str, parts: list[str], query: dict[str, list[str]]) -> None:
        if not secrets.compare_digest(self.headers.get("Authorization", ""), self.platform.worker_key):
            self._send(401, {"error": "Unauthorized"})
            return
        if len(parts) < 3 or parts[0] != self.platform.args.endpoint_id:
            self._send(404, {"error": "not found"})
            return
        kind, worker_id = parts[1], parts[2]
        if kind == "job-take" and method == "GET":
            job = self.platform.take(worker_id)
            self._send(200, job) if job else self._send(204)
        elif kind == "job-stop" and method == "GET":
            ids = self.platform.stop_signals(worker_id)
            self._send(200, {"jobsToStop": ids}) if ids else self._send(204)
        elif kind in ("job-done", "job-stream") and method == "POST" and len(parts) == 4:
            # The SDK sends a JSON string under a form content type.
            body = json.loads(self._raw_body or b"{}")
            if kind == "job-done":
                self.platform.result(worker_id, parts[3], body)
            self._send(200, {})
        elif kind == "ping":
            self.platform.ping(worker_id)
            self._send(200, {})
        else:
            self._send(404, {"error": "not found"})

    def _control(self, method: str, parts: list[str]) -> None:
        if not self._authorised_public():
            self._send(401, {"error": "Unauthorized"})
            return
        platform = self.platform
        if parts == ["faults"] and method == "POST":
            changes = self._body()
            with platform.lock:
                for key, value in changes.items():
                    if key not in DEFAULT_FAULTS:
                        raise ValueError(f"unknown fault {key!r}")
                    platform.faults[key] = _coerce_fault(key, value)
                self._send(200, dict(platform.faults))
        elif parts == ["faults"]:
            self._send(200, dict(platform.faults))
        elif parts == ["state"]:
            with platform.lock:
                state = {
                    "jobs": {job.id: job.internals() for job in platform.jobs.values()},
                    "workers": {
                        w.worker_id: {"pid": w.process.pid, "jobs": sorted(w.jobs)}
                        for w in platform.workers.values()
                    },
                    "retried": platform.retried,
                    "faults": dict(platform.faults),
                    "api_calls": dict(platform.api_calls),
                }
            self._send(200, state)
        else:
            self._send(404, {"error": "not found"})


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Local stand-in for a RunPod serverless queue endpoint.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--endpoint-id", default="local-endpoint")
    parser.add_argument("--api-key", default=os.environ.get("RUNPOD_API_KEY", "local-runpod-key"))
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--result-ttl", type=float, default=1800.0, help="seconds a final result stays readable"
    )
    parser.add_argument(
        "--execution-timeout", type=float, default=3 * 3600.0, help="seconds, endpoint default"
    )
    parser.add_argument(
        "--max-attempts", type=int, default=2, help="starts of a job before a lost worker fails it"
    )
    parser.add_argument("--webhook-retry-interval", type=float, default=10.0)
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the worker processes")
    parser.add_argument("--fault", action="append", default=[], help="KEY=VALUE fault switch at start-up")
    parser.add_argument("--log-dir", default=str(Path(tempfile.gettempdir()) / "local-runpod-logs"))
    parser.add_argument("--seed", type=int, default=None, help="seed for the 429/5xx fault dice")
    parser.add_argument(
        "--worker-key", default="", help="key of the worker-side API (default: random), for scripted workers"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    platform = Platform(args)
    Handler.platform = platform
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    base_url = f"http://{args.host}:{server.server_address[1]}"
    stopping = threading.Event()

    def on_signal(_signum: int, _frame: Any) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    for _ in range(args.workers):
        platform.spawn(base_url)
    log.info("local RunPod endpoint %s on %s/v2/%s with %d worker(s)", args.endpoint_id, base_url,
             args.endpoint_id, args.workers)  # fmt: skip
    while not stopping.wait(0.2):
        platform.reap(base_url)
        platform.enforce_timeouts()
    platform.stop_all()
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
