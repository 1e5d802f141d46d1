"""The stand-in's state: one queue endpoint's jobs, the worker-side protocol, timeouts and expiry.

Everything sits behind one lock; a condition wakes long-polling job takes and stop polls. The HTTP face
(`server.py`) only translates requests into calls here.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import random
import secrets
import signal
import subprocess
import threading
import time
import uuid
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from runpod_worker.local_runpod.faults import DEFAULT_FAULTS, coerce_fault, parse_faults, parse_pairs
from runpod_worker.local_runpod.jobs import FINAL_STATES, Job, now_ms
from runpod_worker.local_runpod.rest_v2 import RestStore
from runpod_worker.local_runpod.webhooks import deliver_webhook
from runpod_worker.local_runpod.workers import (
    WorkerProc,
    kill_group,
    spawn_worker,
    worker_env,
    worker_state,
    worker_states,
)

log = logging.getLogger("local_runpod")

# The SDK's job-take loop retries at once after a 204, so the take is a long poll, as on RunPod.
TAKE_HOLD_S = 2.0
STOP_HOLD_S = 2.0


class Platform:
    """All state behind one lock; a condition wakes long-polling job takes and stop polls."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.lock = threading.Condition()
        self.jobs: dict[str, Job] = {}
        self.queue: deque[str] = deque()
        self.stops: dict[str, set[str]] = {}
        self.workers: dict[str, WorkerProc] = {}
        self.faults: dict[str, Any] = dict(DEFAULT_FAULTS)
        self.retried = 0
        self.worker_key = args.worker_key or secrets.token_hex(16)
        # Public API requests by route ("run", "status", ...), refused ones included: benchmarks count them.
        self.api_calls: dict[str, int] = {}
        self.random = random.Random(args.seed)
        self.shutting_down = False
        self.log_dir = Path(args.log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.generation = 0
        # RunPod's default is 3 (v2 OpenAPI `CreateEndpointRequest.workers.max`); the stand-in's default also
        # lets every process it starts work, and scripted workers (`--workers 0`) take jobs.
        max_workers = max(3, args.workers) if args.max_workers is None else args.max_workers
        # The endpoint as REST v2 shows it (oa2 `Endpoint`); `workers.max` caps the workers that take jobs
        # and `timeout` is the default execution timeout (ms), so a PATCH through REST v2 changes both.
        self.endpoint: dict[str, Any] = {
            "id": args.endpoint_id,
            "name": args.endpoint_id,
            "type": "QUEUE",
            "gpu": {"pools": ["ADA_24"], "count": 1, "allowedCudaVersions": [], "minCudaVersion": None},
            "workers": {"min": 0, "max": max_workers, "idleTimeout": 5},
            "scaling": {"type": "QUEUE_DELAY", "queueDelay": 4},
            "timeout": int(args.execution_timeout * 1000),
            "flashboot": "OFF",
            "dataCenterIds": [],
            "networkVolumes": [],
            "image": "runpod_worker (local processes)",
            "args": "",
            "disk": 50,
            "ports": [],
            "env": {},
            "registry": None,
            "createdAt": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        self.rest = RestStore(lock=self.lock, own_endpoint=self.endpoint, workers_of=self._worker_list)
        self.set_faults(parse_faults(args.fault))
        # What `reset` goes back to: the start-up switches and max workers.
        self.start_max_workers = max_workers
        self.reset_at = time.monotonic()

    def serves_endpoint(self, endpoint_id: str) -> bool:
        """The job API answers for the stand-in's endpoint until it is deleted through REST v2; any other
        id gets 404, as RunPod answers a wrong endpoint id (docs send-requests.mdx:215)."""
        with self.lock:
            return endpoint_id == self.args.endpoint_id and endpoint_id in self.rest.endpoints

    def set_faults(self, changes: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            for key, value in changes.items():
                if key not in DEFAULT_FAULTS:
                    raise ValueError(f"unknown fault {key!r}")
                self.faults[key] = coerce_fault(key, value)
            if "idle_days" in changes:
                self._idle_scale_down(int(self.faults["idle_days"]))
            self.lock.notify_all()
            return dict(self.faults)

    def reset(self) -> dict[str, Any]:
        """Back to the state the stand-in started in, its worker processes kept, for a test suite that
        shares one stand-in between tests: the start-up fault switches and max workers, no jobs (any still
        running is stopped on its worker, no webhook sent), no counts. `idle()` tells when every worker is
        waiting for a job again."""
        with self.lock:
            self.faults = dict(DEFAULT_FAULTS)
            self.faults.update(parse_faults(self.args.fault))
            self.endpoint["workers"]["max"] = self.start_max_workers
            held = {job_id for worker in self.workers.values() for job_id in worker.jobs}
            stopped = 0
            for job in self.jobs.values():
                if job.status not in FINAL_STATES or job.id in held:
                    self._stop_everywhere(job)
                    stopped += 1
            for worker in self.workers.values():
                worker.jobs.clear()
            self.jobs.clear()
            self.queue.clear()
            self.retried = 0
            self.api_calls = {}
            self.random.seed(self.args.seed)
            self.reset_at = time.monotonic()
            self.lock.notify_all()
            return {"stopped": stopped}

    def idle(self) -> bool:
        """Every worker process the stand-in runs is up, has asked for a job since the last `reset` and
        waits for one now: nothing a test before left is still running."""
        with self.lock:
            now = time.monotonic()
            workers = list(self.workers.values())
            return len(workers) == self.args.workers and all(
                worker.polled_at > self.reset_at and now - worker.polled_at < 1.0 and not worker.jobs
                for worker in workers
            )

    def _idle_scale_down(self, days: int) -> None:
        """RunPod's rule for an endpoint without requests (docs serverless/endpoints/
        endpoint-configurations.mdx:80-88): after 3 days max workers drops to 2, after 7 to 0, for good."""
        workers = self.endpoint["workers"]
        if days >= 7:
            workers["max"] = 0
        elif days >= 3:
            workers["max"] = min(workers["max"], 2)

    # ----------------------------------------------------------------------------------- public API

    def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        job = Job(
            id=f"{uuid.uuid4()}-u1",
            input=body["input"],
            webhook=body.get("webhook"),
            policy=dict(body.get("policy") or {}),
            created_ms=now_ms(),
            available_at=time.monotonic() + float(self.faults["queue_delay_s"]),
        )
        with self.lock:
            self.jobs[job.id] = job
            self.queue.append(job.id)
            job.duplicate_pending = self._use_count("duplicate_jobs")
            job.kill_on_progress = self._use_count("kill_worker_mid_job")
            job.kill_after_step = self.faults["kill_worker_after_step"]
            self.faults["kill_worker_after_step"] = 0
            job.rerun_pending = self._use_count("rerun_after_result")
            self.lock.notify_all()
        return {"id": job.id, "status": "IN_QUEUE"}

    def take_fault(self, name: str) -> bool:
        """Uses up one of a counted fault (`lose_run_answer`, `garble_run_answer`): True when it fires."""
        with self.lock:
            return self._use_count(name)

    def _use_count(self, name: str) -> bool:
        if self.faults[name] > 0:
            self.faults[name] -= 1
            return True
        return False

    def find(self, job_id: str) -> dict[str, Any] | None:
        """The job's `/status` document, or None once RunPod would answer 404."""
        with self.lock:
            self._expire()
            job = self.jobs.get(job_id)
            return None if job is None else job.public(with_retries=bool(self.faults["status_retries"]))

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
        """`/health` (docs serverless/endpoints/operation-reference.mdx:904-920 for the jobs; the worker
        states are those of the SDK docs' example, runpod/docs sdks/*/endpoints.mdx before f5cdf4b4)."""
        with self.lock:
            counts = {"completed": 0, "failed": 0, "inProgress": 0, "inQueue": 0, "retried": self.retried}
            for job in self.jobs.values():
                key = {"COMPLETED": "completed", "IN_PROGRESS": "inProgress", "IN_QUEUE": "inQueue"}.get(
                    job.status, "failed" if job.status in FINAL_STATES - {"COMPLETED"} else None
                )
                if key:
                    counts[key] += 1
            return {"jobs": counts, "workers": worker_states(self._allocated(), self._throttled())}

    # ----------------------------------------------------------------------------------- worker side

    def take(self, worker_id: str) -> dict[str, Any] | None:
        deadline = time.monotonic() + TAKE_HOLD_S
        with self.lock:
            worker = self.workers.get(worker_id)
            if worker is not None:
                worker.ready = True  # it got past its start-up: no longer "initializing"
            while not self.shutting_down:
                if worker is not None:
                    worker.polled_at = time.monotonic()
                job = self._next_for(worker_id)
                if job is not None:
                    return job
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self.lock.wait(min(remaining, 0.2))
        return None

    def _next_for(self, worker_id: str) -> dict[str, Any] | None:
        if not self._may_work(worker_id):
            return None
        now = time.monotonic()
        for job_id in list(self.queue):
            job = self.jobs[job_id]
            if job.available_at > now:
                continue
            if job.status == "IN_PROGRESS" and worker_id in {d["worker_id"] for d in job.deliveries}:
                continue  # the second copy of a duplicated job goes to another worker
            self.queue.remove(job_id)
            if job.status in FINAL_STATES:
                self._rerun(job, worker_id)
            else:
                self._deliver(job, worker_id)
            return {"id": job.id, "input": job.input}
        return None

    def _may_work(self, worker_id: str) -> bool:
        """Within the endpoint's max workers, and not throttled (a worker "waiting on compute capacity",
        v2 OpenAPI `WorkerStatus`). Max workers 0 leaves every job queued until its TTL."""
        limit = int(self.endpoint["workers"]["max"])
        worker = self.workers.get(worker_id)
        if worker is not None and (worker not in self._allocated() or worker in self._throttled()):
            return False
        busy = {
            job.worker_id for job in self.jobs.values() if job.status == "IN_PROGRESS" and not job.reopened
        }
        return worker_id in busy or len(busy) < limit

    def _worker_list(self, endpoint_id: str) -> list[dict[str, Any]]:
        """`GET /v2/serverless/<id>/workers` (oa2 `Worker`, `WorkerStatus`), called with the lock held."""
        if endpoint_id != self.args.endpoint_id:
            return []
        states = {
            "running": "RUNNING",
            "initializing": "INITIALIZING",
            "throttled": "THROTTLED",
            "idle": "IDLE",
        }
        throttled = self._throttled()
        return [
            {
                "id": worker.worker_id,
                "status": states[worker_state(worker, throttled)],
                "isStale": False,
                "version": 1,
                "gpuCount": 1,
                "image": self.endpoint["image"],
                "gpuTypeId": None,
                "dataCenterId": None,
            }
            for worker in self._allocated()
        ]

    def _allocated(self) -> list[WorkerProc]:
        """The worker processes RunPod would run: as many as max workers allows, oldest first."""
        ordered = sorted(self.workers.values(), key=lambda worker: worker.number)
        return ordered[: max(0, int(self.endpoint["workers"]["max"]))]

    def _throttled(self) -> list[WorkerProc]:
        return self._allocated()[: int(self.faults["throttled_workers"])]

    def _deliver(self, job: Job, worker_id: str) -> None:
        duplicate = job.status == "IN_PROGRESS"
        job.deliveries.append({"worker_id": worker_id, "at_ms": now_ms(), "duplicate": duplicate})
        worker = self.workers.get(worker_id)
        if worker is not None:
            worker.jobs.add(job.id)
        if duplicate:
            return
        job.attempts += 1
        job.status = "IN_PROGRESS"
        job.worker_id = worker_id
        job.output = None
        job.started_ms = job.started_ms or now_ms()
        if job.duplicate_pending:
            # Handed out to a second worker while the first runs it: our worst case of runpod-python#402,
            # which reports the second run after the first finished (see `rerun_after_result`).
            job.duplicate_pending = False
            self.queue.appendleft(job.id)

    def _rerun(self, job: Job, worker_id: str) -> None:
        """A finished job handed out again (runpod-python#402). What /status says meanwhile is not
        reported: `rerun_result=ignored` keeps the first result, `replaces` reopens the job."""
        job.deliveries.append({"worker_id": worker_id, "at_ms": now_ms(), "rerun": True})
        job.rerun_worker = worker_id
        worker = self.workers.get(worker_id)
        if worker is not None:
            worker.jobs.add(job.id)
        if self.faults["rerun_result"] == "replaces":
            job.attempts += 1
            job.status, job.worker_id, job.result_worker = "IN_PROGRESS", worker_id, None
            job.output = job.error = job.finished_ms = job.finished_at = None

    def result(self, worker_id: str, job_id: str, body: dict[str, Any]) -> None:
        to_kill: WorkerProc | None = None
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None:
                return
            if body.get("status") == "IN_PROGRESS":
                to_kill = self._progress(job, worker_id, body.get("output"))
            else:
                self._final(job, worker_id, body)
        if to_kill is not None:
            log.warning("fault: killing worker %s in the middle of job %s", to_kill.worker_id, job_id)
            kill_group(to_kill.process)

    def _progress(self, job: Job, worker_id: str, output: Any) -> WorkerProc | None:
        """A progress post (runpod 1.12.0 rp_progress.py:21: `{"status": "IN_PROGRESS", "output": …}`)."""
        if job.status in FINAL_STATES and job.rerun_worker == worker_id:
            job.ignored_results.append({"worker_id": worker_id, "status": "IN_PROGRESS", "output": output})
            return None
        if job.status in {"COMPLETED", "FAILED"} and job.result_worker == worker_id:
            # runpod-python#250: a progress post landing after the result the same worker posted leaves the
            # job IN_PROGRESS with the progress as output, for good (its executionTime frozen).
            job.status, job.output, job.error, job.reopened = "IN_PROGRESS", output, None, True
            return None
        if job.worker_id != worker_id or job.status != "IN_PROGRESS":
            return None
        job.output = output
        if job.kill_on_progress:
            job.kill_on_progress = False
            return self.workers.get(worker_id)
        if job.kill_after_step and _training_step(output) >= job.kill_after_step:
            job.kill_after_step = 0
            # Recorded on the delivery, so a test can count the steps the lost worker had trained.
            for delivery in job.deliveries:
                if delivery["worker_id"] == worker_id:
                    delivery["killed_at_step"] = _training_step(output)
            return self.workers.get(worker_id)
        return None

    def _final(self, job: Job, worker_id: str, body: dict[str, Any]) -> None:
        """A final result (rp_job.py:266-283: `{"output": …}`, or `{"error": …}` and maybe an output)."""
        worker = self.workers.get(worker_id)
        if worker is not None:
            worker.jobs.discard(job.id)
        if not self._final_counts(job, worker_id):
            # A late, duplicate or re-run delivery (by default RunPod keeps the final result of the
            # assigned worker; see `duplicate_result`): recorded for tests to inspect.
            job.ignored_results.append({"worker_id": worker_id, **body})
            return
        if "error" in body:
            self._finish(job, "FAILED", error=body["error"], output=body.get("output"))
        else:
            self._finish(job, "COMPLETED", output=body.get("output"))
        job.result_worker = worker_id
        if job.rerun_pending:
            job.rerun_pending = False
            self.queue.append(job.id)
            self.lock.notify_all()

    def _final_counts(self, job: Job, worker_id: str) -> bool:
        """Whether this worker's final result ends the job (called with the lock held)."""
        if job.status != "IN_PROGRESS" or job.reopened:
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
        job.finished_ms = now_ms()
        job.finished_at = time.monotonic()
        with contextlib.suppress(ValueError):
            self.queue.remove(job.id)
        for worker in self.workers.values():
            worker.jobs.discard(job.id)
        if job.webhook and (status != "CANCELLED" or self.faults["webhook_on_cancel"]):
            threading.Thread(target=self._send_webhook, args=(job, job.webhook_body()), daemon=True).start()

    def _send_webhook(self, job: Job, body: dict[str, Any]) -> None:
        deliver_webhook(
            job,
            body,
            lock=self.lock,
            dropped=bool(self.faults["drop_webhooks"]),
            retry_interval_s=self.args.webhook_retry_interval,
        )

    def _expire(self) -> None:
        """TTL (from submission, whatever the state) and result retention (from the end) both delete the
        job: /status answers 404 (docs serverless/endpoints/send-requests.mdx:124-131, 156-163)."""
        now = time.monotonic()
        for job in list(self.jobs.values()):
            ttl_s = float(job.policy.get("ttl", 86_400_000)) / 1000
            expired_result = job.finished_at is not None and now - job.finished_at > self.args.result_ttl
            expired_ttl = (now_ms() - job.created_ms) / 1000 > ttl_s and not job.expired_in_queue
            if expired_ttl and job.status == "IN_QUEUE" and self.faults["queued_expiry"] == "TIMED_OUT":
                # docs serverless/endpoints/job-states.mdx:20: TIMED_OUT "expired before it was picked up".
                job.expired_in_queue = True
                self._finish(job, "TIMED_OUT")
                continue
            if expired_result or expired_ttl:
                with contextlib.suppress(ValueError):
                    self.queue.remove(job.id)
                if job.status == "IN_PROGRESS":
                    self._stop_everywhere(job)
                del self.jobs[job.id]

    def enforce_timeouts(self) -> None:
        """Past its execution timeout a job is stopped (the stop channel, rp_scale.py:275-339) and ends
        TIMED_OUT (job-states.mdx:20), or FAILED with `timeout_status=FAILED` (v1 OpenAPI
        `executionTimeoutMs`: "the request is marked as failed"). No source shows an `error` with it."""
        with self.lock:
            self._expire()
            for job in self.jobs.values():
                limit_ms = job.policy.get("executionTimeout", self.endpoint["timeout"])
                if job.status != "IN_PROGRESS" or job.started_ms is None or job.reopened:
                    continue
                if now_ms() - job.started_ms > limit_ms:
                    self._stop_everywhere(job)
                    self._finish(job, str(self.faults["timeout_status"]))

    # ----------------------------------------------------------------------------------- processes

    def spawn(self, base_url: str) -> None:
        with self.lock:
            self.generation += 1
            number = self.generation
            worker_id = f"local-worker-{number}"
        env = worker_env(
            worker_id=worker_id,
            base_url=base_url,
            endpoint_id=self.args.endpoint_id,
            worker_key=self.worker_key,
            extra=parse_pairs(self.args.env),
        )
        worker = spawn_worker(worker_id, number, env, self.log_dir)
        with self.lock:
            self.workers[worker_id] = worker
        log.info("started worker %s (pid %s)", worker_id, worker.process.pid)

    def reap(self, base_url: str) -> None:
        """Replaces dead workers; their jobs are retried or, after the last attempt, FAILED."""
        dead: list[WorkerProc] = []
        with self.lock:
            for worker_id, worker in list(self.workers.items()):
                if worker.process.poll() is not None:
                    dead.append(worker)
                    del self.workers[worker_id]
                    kill_group(worker.process)  # the ping process and trainer share its group
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
            job.retries += 1
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
            kill_group(worker.process, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for worker in workers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            kill_group(worker.process)
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.process.wait(timeout=5)


def _training_step(output: Any) -> int:
    """The step of a training progress post (runpod_worker.contract.Progress), else -1."""
    if not isinstance(output, dict) or output.get("stage") != "training":
        return -1
    step = output.get("step")
    return step if isinstance(step, int) and not isinstance(step, bool) else -1
