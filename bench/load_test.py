"""Load test: gunicorn + Postgres on this machine, 50 concurrent API clients from a second process.

    .venv/bin/python bench/load_test.py [--clients 50] [--seconds 60]      (or: make load-test)

It creates a scratch database `bench_load` on the local Postgres (DATABASE_URL's server), migrates and
seeds it (20 users, each with 5 characters and 10 images, 40 active runs in all), starts gunicorn with
gunicorn.conf.py on a free loopback port, and starts a client process whose 50 threads each loop over
listing characters, listing runs and polling one run's progress with their user's API token. Meanwhile
this process drives the runs forward: progress callbacks over HTTP with each run's token (the worker's
path) and completions through `training_run_apply_status` (the webhook/poll path) with a real LoRA file.
It prints throughput, p50/p95/p99 latency per endpoint and errors. Traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATABASE = "bench_load"


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


# --- the client process -------------------------------------------------------------------------------


def client_main(base: str, tokens_file: str, clients: int, seconds: float, out: str) -> None:
    import requests

    plan = json.loads(Path(tokens_file).read_text())
    results: list[tuple[str, float, int]] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def loop(index: int) -> None:
        user = plan[index % len(plan)]
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {user['token']}"
        mine: list[tuple[str, float, int]] = []
        requests_plan = [
            ("characters", "/api/v1/characters"),
            ("runs", "/api/v1/runs"),
            ("run progress", f"/api/v1/runs/{user['runs'][index % len(user['runs'])]}"),
        ]
        step = 0
        while time.monotonic() < stop_at:
            label, path = requests_plan[step % len(requests_plan)]
            step += 1
            began = time.perf_counter()
            try:
                status = session.get(base + path, timeout=30).status_code
            except requests.RequestException:
                status = 0
            mine.append((label, time.perf_counter() - began, status))
        with lock:
            results.extend(mine)

    threads = [threading.Thread(target=loop, args=(index,)) for index in range(clients)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    Path(out).write_text(json.dumps({"elapsed": elapsed, "results": results}))


# --- the driver (this process) ------------------------------------------------------------------------


def database_url(name: str) -> str:
    base = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
    return base.rsplit("/", 1)[0] + f"/{name}"


def recreate_database() -> None:
    import psycopg

    admin = database_url("postgres").replace("postgres://", "postgresql://", 1)
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        connection.execute(f"CREATE DATABASE {DATABASE}")


def seed(users: int, characters: int, images: int) -> list[dict[str, object]]:
    from django.core.files.base import ContentFile

    from characters.models import Character, ReferenceImage
    from developer.services import api_token_create
    from studio.models import User
    from training.models import TrainingRun

    plan = []
    for u in range(users):
        user = User.objects.create_user(username=f"load{u}", password="load-test-password-1")
        _, raw = api_token_create(user=user, name="load")
        runs = []
        for c in range(characters):
            character = Character.objects.create(owner=user, name=f"C{c}", trigger_word=f"ohwx_c{u}_{c}")
            for i in range(images):
                content = f"{u}-{c}-{i}".encode()
                ReferenceImage.objects.create(
                    character=character,
                    file=ContentFile(content, name=f"{u}-{c}-{i}.jpg"),
                    original_filename=f"{i}.jpg",
                    sha256=hashlib.sha256(content).hexdigest(),
                    width=1024,
                    height=1024,
                    bytes=len(content),
                )
            if c < 2:
                run = TrainingRun.objects.create(
                    character=character,
                    requested_by=user,
                    status=TrainingRun.Status.TRAINING,
                    params={"steps": 1000, "rank": 16},
                    runpod_job_id=f"load-job-{u}-{c}",
                    progress_total=1000,
                )
                runs.append(str(run.pk))
        plan.append({"token": raw, "runs": runs})
    return plan


def drive_runs(
    base: str, plan: list[dict[str, object]], stop: threading.Event, counts: dict[str, int]
) -> None:
    """The worker's progress callbacks over HTTP, then each run's completion through the service."""
    import requests
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    from training.artifacts import lora_upload_name
    from training.models import TrainingRun
    from training.runpod import RunPodJob
    from training.services import training_run_apply_status
    from training.tokens import run_token

    run_ids = [run for user in plan for run in user["runs"]]  # type: ignore[union-attr]
    session = requests.Session()
    step = 0
    while not stop.is_set() and run_ids:
        step += 400  # three rounds of progress, then the completion
        for run_id in list(run_ids):
            if stop.is_set():
                return
            run = TrainingRun.objects.get(pk=run_id)
            if step <= 1000:
                body = {
                    "event": "progress",
                    "job_id": run.runpod_job_id,
                    "stage": "training",
                    "step": step,
                    "total_steps": 1000,
                }
                response = session.post(
                    f"{base}/hooks/worker/{run_id}",
                    json=body,
                    headers={"Authorization": f"Bearer {run_token(run.pk)}"},
                    timeout=30,
                )
                counts["callbacks"] += 1
                if response.status_code != 200:
                    counts["callback_errors"] += 1
                    counts.setdefault("first_error", f"{response.status_code} {response.text[:200]}")  # type: ignore[arg-type]
                continue
            content = f"lora {run_id}".encode()
            default_storage.save(lora_upload_name(run), ContentFile(content))
            output = {
                "lora": {
                    "name": "lora.safetensors",
                    "bytes": len(content),
                    "sha256": hashlib.sha256(content).hexdigest(),
                },
                "steps": 1000,
                "trainer_version": "load test",
                "gpu": {"name": "NVIDIA A100-SXM4-80GB", "memory_gb": 80.0},
                "timings": {"download_s": 1.0, "train_s": 100.0, "upload_s": 1.0},
            }
            job = RunPodJob.from_payload(
                {
                    "id": run.runpod_job_id,
                    "status": "COMPLETED",
                    "output": output,
                    "executionTime": 100000,
                    "delayTime": 1000,
                }
            )
            finished = training_run_apply_status(run_id=run_id, job=job, source="poll")
            counts["completed"] += finished.status == "completed"
            run_ids.remove(run_id)
        time.sleep(0.5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--workers", type=int, default=int(os.environ.get("WEB_CONCURRENCY", "5")))
    parser.add_argument("--client", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        base, tokens_file, out, seconds = args.client
        client_main(base, tokens_file, args.clients, float(seconds), out)
        return 0

    scratch = Path(tempfile.mkdtemp(prefix="load-test-"))
    env = {
        **os.environ,
        "DATABASE_URL": database_url(DATABASE),
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": "load-test-" + "k" * 50,
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "DJANGO_SECURE_SSL_REDIRECT": "false",
        "MEDIA_ROOT": str(scratch / "media"),
        "STUDIO_PUBLIC_URL": "http://127.0.0.1",
        "LOG_LEVEL": "WARNING",
    }
    env.pop("REDIS_URL", None)  # no broker traffic: the API under test reads and writes Postgres only
    os.environ.update(env)
    recreate_database()
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True
    )
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"],
        cwd=ROOT,
        env={**env, "STATIC_ROOT": str(scratch / "static")},
        check=True,
    )

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studio.settings")
    django.setup()
    plan = seed(users=20, characters=5, images=10)
    tokens_file = scratch / "plan.json"
    tokens_file.write_text(json.dumps(plan))

    sys.path.insert(0, str(ROOT / "tests" / "support"))
    from tests.support.ports import free_port, wait_for_port

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    gunicorn = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py", "studio.wsgi:application"],
        cwd=ROOT,
        env={
            **env,
            "GUNICORN_BIND": f"127.0.0.1:{port}",
            "WEB_CONCURRENCY": str(args.workers),
            "GUNICORN_ACCESS_LOG": str(scratch / "access.log"),
            "STATIC_ROOT": str(scratch / "static"),
        },
        stdout=subprocess.DEVNULL,
        stderr=open(scratch / "gunicorn.log", "wb"),  # noqa: SIM115
    )
    counts = {"callbacks": 0, "callback_errors": 0, "completed": 0}
    try:
        wait_for_port(port, timeout=30)
        out = scratch / "results.json"
        client = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--clients",
                str(args.clients),
                "--client",
                base,
                str(tokens_file),
                str(out),
                str(args.seconds),
            ],
            cwd=ROOT,
        )
        stop = threading.Event()
        driver = threading.Thread(target=drive_runs, args=(base, plan, stop, counts))
        driver.start()
        client.wait()
        stop.set()
        driver.join()
    finally:
        gunicorn.terminate()
        gunicorn.wait(timeout=30)
    report(json.loads(out.read_text()), counts, args)
    return 0


def report(data: dict[str, object], counts: dict[str, int], args: argparse.Namespace) -> None:
    results = data["results"]  # type: ignore[assignment]
    elapsed = float(data["elapsed"])  # type: ignore[arg-type]
    print(
        f"load test: {args.clients} clients for {elapsed:.0f} s, gunicorn ({args.workers} workers) + Postgres"
    )
    print(
        f"{'endpoint':<14} {'requests':>9} {'req/s':>7} "
        f"{'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'errors':>7}"
    )
    labels = [*sorted({label for label, _, _ in results}), "all"]  # type: ignore[union-attr]
    for label in labels:
        rows = [(t, s) for name, t, s in results if label in (name, "all")]  # type: ignore[union-attr]
        times = [t * 1000 for t, _ in rows]
        errors = sum(1 for _, status in rows if status != 200)
        print(
            f"{label:<14} {len(rows):>9} {len(rows) / elapsed:>7.1f} {statistics.median(times):>8.1f} "
            f"{percentile(times, 0.95):>8.1f} {percentile(times, 0.99):>8.1f} {errors:>7}"
        )
    print(
        f"meanwhile: {counts['callbacks']} progress callbacks ({counts['callback_errors']} errors), "
        f"{counts['completed']} runs completed"
    )
    if counts.get("first_error"):
        print(f"first callback error: {counts['first_error']}")


if __name__ == "__main__":
    sys.exit(main())
