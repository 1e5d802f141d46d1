"""(b) RunPod API calls per training run: with and without webhooks, against polling once a second.

    .venv/bin/python bench/bench_orchestration_calls.py [--minutes 10 60]

Simulated clock, real backend code, real stand-in. Nothing sleeps for the length of the run: the
clock is moved with time-machine from event to event, and at each event the script calls the backend
as production would — the beat's `sweep_training_runs` every TRAINING_SWEEP_INTERVAL_SECONDS (Celery
tasks run eagerly, in this process), the worker-callback and webhook views through Django's test
client — while a scripted GPU worker takes the job from the local RunPod stand-in
(`python -m runpod_worker.local_runpod --workers 0`) over its worker protocol, posts progress every
WORKER_PROGRESS_INTERVAL_S (the handler's default, 1.5 s) and the final result. Every RunPod API call the
backend makes is real HTTP to the stand-in, which counts them (`/_control/state` → `api_calls`).

Scenarios, for each run length: webhooks delivered; webhooks dropped (the sweep finds the end);
webhooks dropped and the worker's callbacks lost too (the backend learns everything by polling: the
worst case). The webhook is the stand-in's real POST, caught here and replayed to the view at the
simulated time it arrived. Scratch Postgres database `bench_calls` on DATABASE_URL's server, dropped at
the end.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import queue
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import requests

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from tests.support.ports import free_port, wait_for_port  # noqa: E402

BASE_URL = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
BENCH_DB = "bench_calls"
ENDPOINT_ID = "bench-endpoint"
API_KEY = "bench-api-key"
WORKER_KEY = secrets.token_hex(16)
WORKER_ID = "bench-worker-1"
QUEUE_DELAY_S = 10.0  # a warm endpoint; a cold start adds a few queued polls, see the notes printed
DOWNLOAD_S = 5.0
UPLOAD_S = 10.0
PROGRESS_INTERVAL_S = 1.5  # runpod_worker.handler.PROGRESS_INTERVAL_S default (WORKER_PROGRESS_INTERVAL_S)
SWEEP_PHASE_S = 7.0  # where the beat's ticks fall relative to the start


# ------------------------------------------------------------------------------------------ processes


def recreate_database() -> str:
    admin = BASE_URL.replace("postgres://", "postgresql://", 1)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {BENCH_DB}")
    return BASE_URL.rsplit("/", 1)[0] + f"/{BENCH_DB}"


def drop_database() -> None:
    from django.db import connections

    connections.close_all()
    admin = BASE_URL.replace("postgres://", "postgresql://", 1)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")


@contextlib.contextmanager
def stand_in(workdir: Path) -> Iterator[str]:
    """The local RunPod stand-in with no worker processes: this script plays the GPU worker."""
    port = free_port()
    log = open(workdir / "local-runpod.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "runpod_worker.local_runpod",
            f"--port={port}",
            "--workers=0",
            f"--endpoint-id={ENDPOINT_ID}",
            f"--api-key={API_KEY}",
            f"--worker-key={WORKER_KEY}",
            f"--log-dir={workdir / 'logs'}",
            "--webhook-retry-interval=0.2",
        ],
        cwd=REPO_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for_port(port, timeout=30)
        yield f"http://127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)
        log.close()


class WebhookCatcher:
    """Receives the stand-in's webhooks; the script replays each to the studio's view."""

    def __init__(self) -> None:
        self.received: queue.Queue[tuple[str, bytes]] = queue.Queue()
        catcher = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                catcher.received.put((self.path, body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def setup_django(database_url: str, runpod_url: str, webhook_url: str, media: Path) -> None:
    os.environ.update(
        {
            "DATABASE_URL": database_url,
            "DJANGO_SETTINGS_MODULE": "studio.settings",
            "DJANGO_DEBUG": "true",
            "CELERY_TASK_ALWAYS_EAGER": "true",
            "STUDIO_VAR_DIR": str(media.parent),
            "MEDIA_ROOT": str(media),
            "STUDIO_PUBLIC_URL": webhook_url,
            "RUNPOD_API_BASE": f"{runpod_url}/v2",
            "RUNPOD_ENDPOINT_ID": ENDPOINT_ID,
            "RUNPOD_API_KEY": API_KEY,
            "TRAINING_MIN_IMAGES": "3",
        }
    )
    os.environ.pop("REDIS_URL", None)
    os.environ.pop("AWS_STORAGE_BUCKET_NAME", None)
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    logging.disable(logging.WARNING)  # the eager tasks' INFO lines would bury the figures


# ------------------------------------------------------------------------------------------ scenario


@dataclass
class Outcome:
    minutes: int
    label: str
    calls: dict[str, int]
    status: str
    seen_after_s: float  # simulated seconds from the job's end to the run being final

    @property
    def total(self) -> int:
        return sum(self.calls.values())


class ScriptedWorker:
    """The GPU side of the stand-in's protocol, as the runpod SDK speaks it."""

    def __init__(self, runpod_url: str) -> None:
        self.base = f"{runpod_url}/_worker/{ENDPOINT_ID}"
        self.session = requests.Session()
        self.session.headers["Authorization"] = WORKER_KEY

    def take(self) -> dict[str, Any]:
        for _ in range(5):
            response = self.session.get(f"{self.base}/job-take/{WORKER_ID}?gpu=local", timeout=10)
            if response.status_code == 200:
                return dict(response.json())
        raise RuntimeError("the stand-in handed out no job")

    def post(self, job_id: str, body: dict[str, Any]) -> None:
        url = f"{self.base}/job-done/{WORKER_ID}/{job_id}?gpu=local"
        self.session.post(url, data=json.dumps(body), timeout=10).raise_for_status()


def run_scenario(
    *, minutes: int, webhooks: bool, callbacks: bool, runpod_url: str, catcher: WebhookCatcher, index: int
) -> Outcome:
    import time_machine
    from django.conf import settings
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage
    from django.test import Client

    from characters.models import Character, ReferenceImage
    from studio.models import User
    from training import tasks
    from training.artifacts import lora_upload_name
    from training.services import training_run_start
    from training.tokens import run_token

    control = requests.Session()
    control.headers["Authorization"] = f"Bearer {API_KEY}"
    control.post(f"{runpod_url}/_control/faults", json={"drop_webhooks": not webhooks}, timeout=10)
    calls_before = dict(control.get(f"{runpod_url}/_control/state", timeout=10).json()["api_calls"])
    worker = ScriptedWorker(runpod_url)
    client = Client(HTTP_HOST="127.0.0.1")
    duration = minutes * 60.0
    sweep_every = float(settings.TRAINING_SWEEP_INTERVAL_SECONDS)
    t0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC) + timedelta(days=index)

    with time_machine.travel(t0, tick=False) as clock:

        def at(seconds: float) -> None:
            clock.move_to(t0 + timedelta(seconds=seconds))

        owner = User.objects.create(username=f"bench-{index}")
        character = Character.objects.create(owner=owner, name=f"C{index}", trigger_word=f"ohwx_c{index}")
        for n in range(3):
            content = f"image {index}-{n}".encode()
            ReferenceImage.objects.create(
                character=character,
                file=ContentFile(content, name=f"photo-{n}.jpg"),
                original_filename=f"photo-{n}.jpg",
                sha256=hashlib.sha256(content).hexdigest(),
                width=1024,
                height=1024,
                bytes=len(content),
            )
        steps = 1500
        run = training_run_start(
            character=character, requested_by=owner, params={"steps": steps}, source="user"
        )  # queues the submission: /run, eagerly
        token = run_token(run.id)

        def callback(event: str, job_id: str, **progress: Any) -> None:
            if callbacks:
                body = {"event": event, "job_id": job_id, **progress}
                client.post(
                    f"/hooks/worker/{run.id}",
                    data=json.dumps(body),
                    content_type="application/json",
                    HTTP_AUTHORIZATION=f"Bearer {token}",
                )

        # The worker's timeline: taken after the queue delay, then downloading, training, uploading.
        train_from, train_to = QUEUE_DELAY_S + DOWNLOAD_S, duration - UPLOAD_S
        worker_events: list[tuple[float, str, dict[str, Any]]] = [(QUEUE_DELAY_S, "take", {})]
        worker_events.append((QUEUE_DELAY_S, "progress", {"stage": "downloading", "step": 0}))
        moment = train_from
        while moment < train_to:
            done = int(steps * (moment - train_from) / (train_to - train_from))
            worker_events.append(
                (moment, "progress", {"stage": "training", "step": done, "eta_s": train_to - moment})
            )
            moment += PROGRESS_INTERVAL_S
        worker_events.append((train_to, "progress", {"stage": "uploading", "step": steps}))
        worker_events.append((duration, "done", {}))

        sweep_at = SWEEP_PHASE_S
        job_id = ""
        ended_at: float | None = None
        now = 0.0
        while True:
            run.refresh_from_db()
            if run.is_final or now > duration + 3600:
                break
            next_worker = worker_events[0][0] if worker_events else float("inf")
            if next_worker <= sweep_at:
                now, kind, fields = worker_events.pop(0)
                at(now)
                if kind == "take":
                    job_id = str(worker.take()["id"])
                    callback("started", job_id)
                elif kind == "progress":
                    progress = {"total_steps": steps, "loss": 0.1, "eta_s": None, **fields}
                    worker.post(job_id, {"status": "IN_PROGRESS", "output": progress})
                    callback("progress", job_id, **progress)
                else:
                    lora = f"simulated lora {index}".encode()
                    default_storage.save(lora_upload_name(run), ContentFile(lora))
                    digest = hashlib.sha256(lora).hexdigest()
                    output = {
                        "lora": {"name": "x.safetensors", "bytes": len(lora), "sha256": digest},
                        "steps": steps,
                        "trainer_version": "simulated",
                        "gpu": {"name": "NVIDIA A100 80GB PCIe", "memory_gb": 80.0},
                        "timings": {"download_s": DOWNLOAD_S, "train_s": 1.0, "upload_s": UPLOAD_S},
                    }
                    worker.post(job_id, {"output": output})
                    ended_at = now
                    if webhooks:
                        path, body = catcher.received.get(timeout=10)
                        now += 0.5  # RunPod's delivery delay, roughly
                        at(now)
                        client.post(path, data=body, content_type="application/json")
            else:
                now = sweep_at
                at(now)
                tasks.sweep_training_runs()
                sweep_at += sweep_every
        run.refresh_from_db()
        seen_after = (run.finished_at - t0).total_seconds() - (ended_at or 0.0) if run.finished_at else -1.0

    calls_after = control.get(f"{runpod_url}/_control/state", timeout=10).json()["api_calls"]
    calls = {key: calls_after.get(key, 0) - calls_before.get(key, 0) for key in calls_after}
    label = "webhooks delivered" if webhooks else "webhooks dropped"
    if not callbacks:
        label += ", worker callbacks lost"
    worker.session.close()
    control.close()
    return Outcome(minutes, label, {k: v for k, v in calls.items() if v}, run.status, seen_after)


def schedule_polls(seconds: float) -> int:
    """Polls of a run nobody hears from, by the schedule in training/services/schedule.py (no simulation)."""
    from training.services import QUEUED_POLL, TRAINING_POLL

    polls, clock, n = 0, 0.0, 0
    first, cap = QUEUED_POLL  # queued until the first poll sees IN_PROGRESS (a transition resets n)
    queued = True
    while True:
        delay = min(cap, first * 2 ** min(n, 10)).total_seconds()
        if clock + delay > seconds:
            return polls + 1  # the poll after the end finds the result
        clock += delay
        polls += 1
        n += 1
        if queued and clock >= QUEUE_DELAY_S:
            queued, n = False, 0
            first, cap = TRAINING_POLL


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=int, nargs="+", default=[10, 60])
    args = parser.parse_args()
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="bench-calls-"))
    database_url = recreate_database()
    catcher = WebhookCatcher()
    outcomes: list[Outcome] = []
    try:
        with stand_in(workdir) as runpod_url:
            setup_django(database_url, runpod_url, catcher.url, workdir / "media")
            index = 0
            for minutes in args.minutes:
                for webhooks, callbacks in ((True, True), (False, True), (False, False)):
                    index += 1
                    outcomes.append(
                        run_scenario(
                            minutes=minutes,
                            webhooks=webhooks,
                            callbacks=callbacks,
                            runpod_url=runpod_url,
                            catcher=catcher,
                            index=index,
                        )
                    )
    finally:
        catcher.close()
        drop_database()
    report(outcomes, time.monotonic() - started)
    return 0 if all(o.status == "completed" for o in outcomes) else 1


def report(outcomes: list[Outcome], wall: float) -> None:
    from django.conf import settings

    print("(b) RunPod API calls per training run")
    print(
        "Method: SIMULATED CLOCK (time-machine). The backend's own code (sweep task, poll, worker-callback "
        "and webhook views) ran against the local RunPod stand-in over HTTP; a scripted worker played the "
        f"GPU. Sweep every {settings.TRAINING_SWEEP_INTERVAL_SECONDS:g} s, finishing poll "
        f"{settings.TRAINING_FINISHING_POLL_SECONDS:g} s, worker progress every {PROGRESS_INTERVAL_S:g} s, "
        f"job queued {QUEUE_DELAY_S:g} s. Calls counted by the stand-in."
    )
    print(
        f"{'run':>6}  {'scenario':<42} {'calls':>5} {'breakdown':<22} {'vs 1/s polling':>15}  end seen after"
    )
    for o in outcomes:
        polling = o.minutes * 60 + 1  # one /status a second plus the /run
        breakdown = ", ".join(f"{k} {v}" for k, v in sorted(o.calls.items()))
        print(
            f"{o.minutes:>4} m  {o.label:<42} {o.total:>5} {breakdown:<22} "
            f"{polling:>5} = {polling / o.total:>5.0f}x  {o.seen_after_s:6.1f} s  ({o.status})"
        )
    grid = settings.TRAINING_SWEEP_INTERVAL_SECONDS
    for minutes in sorted({o.minutes for o in outcomes}):
        polls = schedule_polls(minutes * 60.0)
        print(
            f"schedule arithmetic, {minutes} min, nobody heard from: /run + {polls} polls "
            f"(QUEUED_POLL, TRAINING_POLL in training/services/schedule.py; "
            f"ignores the {grid:g} s sweep grid)"
        )
    hour = [o for o in outcomes if o.minutes == 60]
    if hour:
        worst = max(o.total for o in hour)
        verdict = "met" if worst < 20 else "NOT met"
        print(f"target: fewer than 20 RunPod calls for a one-hour run -> worst measured {worst}: {verdict}")
    print(f"bench wall time {wall:.1f} s")


if __name__ == "__main__":
    sys.exit(main())
