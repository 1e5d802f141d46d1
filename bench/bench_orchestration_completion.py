"""(a) Job done → run `completed` in the database, three ways; and how soon progress becomes visible.

    .venv/bin/python bench/bench_orchestration_completion.py [--repeat 3] [--steps 300]

Real time on the live stack, as in tests/integration: Postgres (scratch database `bench_completion`,
dropped at the end), a real Celery worker with its beat on Redis, gunicorn serving the studio on a free
loopback port (webhooks, worker callbacks, signed transfer links to local media files), and the local
RunPod stand-in running the unmodified worker with the simulated trainer. Production timings: sweep
every 15 s, finishing poll 5 s, worker progress at most every WORKER_PROGRESS_INTERVAL_S (1.5 s).

Paths, `--repeat` runs each, one after the other:
  webhook     RunPod's webhook queues a poll, which reads /status and completes the run;
  sweep only  the stand-in drops webhooks (`drop_webhooks`): the beat's sweep finds the end;
  SDK         `runpod.Endpoint(...).run(...)` then `job.output(timeout=...)` against the stand-in
              (`runpod.endpoint_url_base`), then the same status application and LoRA check.
Job done = `finished_ms` in the stand-in's `/_control/state` (when the worker's final result arrived);
completed = the run's `finished_at`, written in the completing transaction.

Progress: the trainer runs behind a wrapper (AI_TOOLKIT_PYTHON) that timestamps every step it prints;
a sampler reads the run's `progress_step` from Postgres every 50 ms and the job's /status every 100 ms
during the webhook and sweep-only runs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import requests

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from runpod_worker.handler import PROGRESS_INTERVAL_S  # noqa: E402
from tests.support.celery_worker import CeleryWorker  # noqa: E402
from tests.support.local_runpod import LocalRunPod  # noqa: E402
from tests.support.ports import free_port, wait_for_port  # noqa: E402

BASE_URL = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
REDIS_BASE = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
BENCH_DB = "bench_completion"
SECONDS_PER_STEP = 0.02
WRAPPER = """#!{python}
# Runs the trainer and timestamps every progress step it prints (bench_orchestration_completion.py).
import json, os, re, subprocess, sys, time
name = json.load(open(sys.argv[-1]))["config"]["name"]
proc = subprocess.Popen([{python!r}, *sys.argv[1:]], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
step = re.compile(rb"\\| (\\d+)/\\d+ \\[")
pending = b""
with open(os.environ["BENCH_PRINT_LOG"], "a") as log:
    while chunk := proc.stdout.read1(65536):
        now = time.time()
        sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()
        *lines, pending = re.split(rb"[\\r\\n]", pending + chunk)
        for line in lines:
            found = step.search(line)
            if found:
                log.write(f"{{now}} {{name}} {{found.group(1).decode()}}\\n")
        log.flush()
sys.exit(proc.wait())
"""


def database(action: str) -> str:
    admin = BASE_URL.replace("postgres://", "postgresql://", 1)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
        if action == "create":
            conn.execute(f"CREATE DATABASE {BENCH_DB}")
    return BASE_URL.rsplit("/", 1)[0] + f"/{BENCH_DB}"


class Gunicorn:
    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(workdir / "gunicorn.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py", "studio.wsgi:application"],
            cwd=REPO_ROOT,
            env={**os.environ, **env, "GUNICORN_BIND": f"127.0.0.1:{self.port}", "WEB_CONCURRENCY": "2"},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for_port(self.port, timeout=30)

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=5)
        self.log.close()


@dataclass
class Samples:
    """Progress steps seen, as (wall time, step) when the value changed."""

    db: list[tuple[float, int]] = field(default_factory=list)
    status: list[tuple[float, int]] = field(default_factory=list)


class Sampler(threading.Thread):
    def __init__(self, run_id: Any, runpod: LocalRunPod) -> None:
        super().__init__(daemon=True)
        self.run_id, self.runpod = run_id, runpod
        self.samples = Samples()
        self.stopping = threading.Event()

    def run(self) -> None:
        from django.db import connection

        from training.models import TrainingRun

        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {self.runpod.api_key}"
        job_id, next_status = "", 0.0
        try:
            while not self.stopping.is_set():
                row = TrainingRun.objects.filter(pk=self.run_id).values("progress_step", "runpod_job_id")[0]
                now = time.time()
                _note(self.samples.db, now, row["progress_step"])
                job_id = row["runpod_job_id"]
                if job_id and now >= next_status:
                    response = session.get(f"{self.runpod.api_url}/status/{job_id}", timeout=5)
                    output = response.json().get("output") if response.ok else None
                    if isinstance(output, dict) and "step" in output:
                        _note(self.samples.status, time.time(), int(output["step"]))
                    next_status = now + 0.1
                time.sleep(0.05)
        finally:
            session.close()
            connection.close()


def _note(series: list[tuple[float, int]], at: float, step: int) -> None:
    if not series or series[-1][1] != step:
        series.append((at, step))


@dataclass
class Measured:
    path: str
    latency_s: float
    samples: Samples | None = None
    lora_name: str = ""


def make_character(index: int) -> Any:
    from django.core.files.base import ContentFile

    from characters.models import Character
    from studio.models import User
    from tests.characters.factories import ReferenceImageFactory
    from tests.characters.images import jpeg_bytes

    owner = User.objects.create(username=f"bench-{index}")
    character = Character.objects.create(owner=owner, name=f"C{index}", trigger_word=f"ohwx_c{index}")
    for n in range(3):
        content = jpeg_bytes(size=(64 + n, 64))
        ReferenceImageFactory(
            character=character, content=content, file=ContentFile(content, name=f"photo-{n}.jpg")
        )
    return character


def finished(run: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run.refresh_from_db()
        if run.is_final:
            return run
        time.sleep(0.05)
    raise TimeoutError(f"run {run.pk} did not end in {timeout:.0f} s")


def job_done_at(runpod: LocalRunPod, job_id: str) -> float:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        job = runpod.state()["jobs"].get(job_id) or {}
        if job.get("finished_ms"):
            return float(job["finished_ms"]) / 1000
        time.sleep(0.05)
    raise TimeoutError(f"job {job_id} has no finish time")


def measure_backend(path: str, index: int, steps: int, runpod: LocalRunPod) -> Measured:
    from training.services import training_run_start

    character = make_character(index)
    params = {"steps": steps, "rank": 4, "save_every": steps}
    run = training_run_start(character=character, requested_by=character.owner, params=params, source="user")
    sampler = Sampler(run.pk, runpod)
    sampler.start()
    try:
        run = finished(run, timeout=90)
    finally:
        sampler.stopping.set()
        sampler.join(timeout=5)
    if run.status != "completed":
        raise RuntimeError(f"{path}: run ended {run.status}: {run.error_message}")
    latency = run.finished_at.timestamp() - job_done_at(runpod, run.runpod_job_id)
    lora_name = f"{character.trigger_word}_{run.id.hex[:8]}"
    return Measured(path, latency, sampler.samples, lora_name)


def measure_sdk(index: int, steps: int, runpod: LocalRunPod) -> Measured:
    import runpod as runpod_sdk

    from training import services
    from training.models import TrainingRun
    from training.runpod import RunPodJob
    from training.services import queue

    character = make_character(index)
    params = {"steps": steps, "rank": 4, "save_every": steps}
    real_enqueue = queue.enqueue_on_commit
    queue.enqueue_on_commit = lambda *args: None  # this run is driven by the SDK, not by our Celery tasks
    try:
        run = services.training_run_start(
            character=character, requested_by=character.owner, params=params, source="user"
        )
    finally:
        queue.enqueue_on_commit = real_enqueue
    # Keep the sweep off it, and the worker's callbacks too: only the SDK learns of the end.
    TrainingRun.objects.filter(pk=run.pk).update(next_poll_at=None)
    job_input = {**services.training_job_input(run), "callback": None}
    runpod_sdk.api_key = runpod.api_key
    runpod_sdk.endpoint_url_base = f"{runpod.base_url}/v2"
    job = runpod_sdk.Endpoint(runpod.endpoint_id).run({"input": job_input})
    output = job.output(timeout=120)
    TrainingRun.objects.filter(pk=run.pk).update(runpod_job_id=job.job_id)
    payload = {"id": job.job_id, "status": job.job_status or "COMPLETED", "output": output}
    run = services.training_run_apply_status(
        run_id=run.pk, job=RunPodJob.from_payload(payload), source="poll"
    )
    if run.status != "completed":
        raise RuntimeError(f"SDK: run ended {run.status}: {run.error_message}")
    return Measured("SDK job.output()", run.finished_at.timestamp() - job_done_at(runpod, job.job_id))


def progress_figures(measured: list[Measured], print_log: Path) -> dict[str, dict[str, list[float]]]:
    """Per channel: latency of each reported step, and staleness of every printed step."""
    printed: dict[str, dict[int, float]] = defaultdict(dict)
    for line in print_log.read_text().splitlines():
        at, name, step = line.split()
        printed[name].setdefault(int(step), float(at))
    figures: dict[str, dict[str, list[float]]] = {
        channel: {"reported": [], "stale": []} for channel in ("database", "RunPod /status")
    }
    for item in measured:
        if item.samples is None or item.lora_name not in printed:
            continue
        prints = printed[item.lora_name]
        for channel, series in (("database", item.samples.db), ("RunPod /status", item.samples.status)):
            for at, step in series:
                if step in prints and step > 0 and step != max(prints):
                    figures[channel]["reported"].append(at - prints[step])
            for step, printed_at in prints.items():
                if step == 0 or step == max(prints):
                    continue  # the last step is reported with the upload, not as training progress
                seen = [at for at, visible in series if visible >= step]
                if seen:
                    figures[channel]["stale"].append(min(seen) - printed_at)
    return figures


def describe(values: list[float]) -> str:
    if not values:
        return "no samples"
    ordered = sorted(values)
    p90 = ordered[int(0.9 * (len(ordered) - 1))]
    return (
        f"median {statistics.median(ordered):.2f} s, p90 {p90:.2f} s, max {ordered[-1]:.2f} s "
        f"(n={len(ordered)})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per path")
    parser.add_argument("--steps", type=int, default=300, help=f"simulated steps, {SECONDS_PER_STEP} s each")
    args = parser.parse_args()
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="bench-completion-"))
    print_log = workdir / "trainer-prints.log"
    print_log.touch()
    wrapper = workdir / "timestamping-python"
    wrapper.write_text(WRAPPER.format(python=sys.executable))
    wrapper.chmod(0o755)
    database_url = database("create")
    queue = f"bench-completion-{os.getpid()}"
    runpod = LocalRunPod(
        workdir=workdir / "runpod",
        workers=1,
        env={
            "SIMULATED_TRAINER_SECONDS_PER_STEP": str(SECONDS_PER_STEP),
            "AI_TOOLKIT_PYTHON": str(wrapper),
            "BENCH_PRINT_LOG": str(print_log),
        },
    )
    web: Gunicorn | None = None
    worker: CeleryWorker | None = None
    measured: list[Measured] = []
    try:
        runpod.start()
        env = {
            "DATABASE_URL": database_url,
            "REDIS_URL": REDIS_BASE.rsplit("/", 1)[0] + "/12",
            "CELERY_TASK_DEFAULT_QUEUE": queue,
            "DJANGO_DEBUG": "true",
            "MEDIA_ROOT": str(workdir / "media"),
            "RUNPOD_API_BASE": f"{runpod.base_url}/v2",
            "RUNPOD_ENDPOINT_ID": runpod.endpoint_id,
            "RUNPOD_API_KEY": runpod.api_key,
            "TRAINING_MIN_IMAGES": "3",
            "GUNICORN_ACCESS_LOG": str(workdir / "access.log"),
        }
        os.environ.update(env)
        os.environ.pop("AWS_STORAGE_BUCKET_NAME", None)
        os.environ["DJANGO_SETTINGS_MODULE"] = "studio.settings"
        os.environ["STUDIO_VAR_DIR"] = str(workdir / "var")
        web = Gunicorn({**env, "STUDIO_VAR_DIR": str(workdir / "var")}, workdir)
        env["STUDIO_PUBLIC_URL"] = os.environ["STUDIO_PUBLIC_URL"] = web.url
        import django
        from django.core.management import call_command

        django.setup()
        call_command("migrate", verbosity=0)
        worker = CeleryWorker(env=env, workdir=workdir / "celery")
        worker.start()
        index = 0
        for path in ("webhook", "sweep only", "SDK job.output()"):
            runpod.set_faults(drop_webhooks=path == "sweep only")
            for _ in range(args.repeat):
                index += 1
                if path == "SDK job.output()":
                    measured.append(measure_sdk(index, args.steps, runpod))
                else:
                    measured.append(measure_backend(path, index, args.steps, runpod))
                print(f"  {measured[-1].path}: {measured[-1].latency_s:.3f} s", flush=True)
    finally:
        if worker is not None:
            worker.stop()
        if web is not None:
            web.stop()
        runpod.stop()
        with contextlib.suppress(Exception):
            from django.db import connections

            connections.close_all()
        database("drop")
    report(measured, progress_figures(measured, print_log), args, time.monotonic() - started)
    return 0


def report(
    measured: list[Measured],
    progress: dict[str, dict[str, list[float]]],
    args: argparse.Namespace,
    wall: float,
) -> None:
    from django.conf import settings

    print("(a) job done (final result at the stand-in) -> run completed in the database")
    print(
        f"Method: REAL TIME, live stack; {args.repeat} runs per path, {args.steps} simulated steps at "
        f"{SECONDS_PER_STEP} s; sweep every {settings.TRAINING_SWEEP_INTERVAL_SECONDS:g} s, finishing poll "
        f"{settings.TRAINING_FINISHING_POLL_SECONDS:g} s; the SDK's job.output() polls /status once a second."
    )
    medians: dict[str, float] = {}
    for path in dict.fromkeys(m.path for m in measured):
        values = [m.latency_s for m in measured if m.path == path]
        medians[path] = statistics.median(values)
        runs = ", ".join(f"{v:.3f}" for v in values)
        print(f"  {path:<18} median {medians[path]:7.3f} s   runs: {runs}")
    webhook = medians.get("webhook")
    if webhook is not None and webhook <= 0:
        # The worker's `finished` callback completes the run before the handler returns its result to
        # RunPod, so on every path the run is completed before RunPod records the job as done.
        print("  negative = completed before RunPod recorded the job done (the worker's finished callback)")
    elif webhook:
        for path, value in medians.items():
            if path != "webhook":
                print(f"  ratio {path} / webhook: {value / webhook:.0f}x")
    if webhook is not None:
        print(f"  target: webhook completion within 1 s -> {'met' if webhook < 1 else 'NOT met'}")
    every = f"worker progress at most every {PROGRESS_INTERVAL_S:g} s"
    print(f"progress: trainer prints a step -> visible ({every})")
    for channel, figures in progress.items():
        print(f"  {channel:<15} reported step: {describe(figures['reported'])}")
        print(f"  {channel:<15} any printed step: {describe(figures['stale'])}")
    reported = progress["database"]["reported"] + progress["RunPod /status"]["reported"]
    stale = progress["database"]["stale"] + progress["RunPod /status"]["stale"]
    if reported:
        print(
            f"  target: within 2 s -> reported steps {'met' if max(reported) < 2 else 'NOT met'} "
            f"(max {max(reported):.2f} s); every printed step "
            f"{'met' if stale and max(stale) < 2 else 'NOT met'} (max {max(stale):.2f} s)"
        )
    print(f"bench wall time {wall:.1f} s")


if __name__ == "__main__":
    sys.exit(main())
