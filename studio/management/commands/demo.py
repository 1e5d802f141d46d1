"""`make demo`: the whole studio on this machine, training a demo character end to end.

It migrates, creates a `demo` staff user, writes the portraits it trains on (studio/demo_images.py),
starts the web app (gunicorn with DEBUG off, as in production), a Celery worker, beat and the local RunPod
stand-in (real worker, simulated trainer), trains the demo character with `train_character --wait`, prints
the URLs and keeps serving until Ctrl-C (or SIGTERM), which stops every process. A process that stops
meanwhile is started again and the console says so (studio/demo_processes.py). A second run reuses the
user, the photos and the LoRA.

`--pod` (`make demo DEMO_POD=1`) adds pod mode: the AI Toolkit UI stand-in as one more process, registered
as the pod `demo-pod`, and a second character trained there at the same time as the first trains
serverless (studio/demo_pod.py). It is off unless asked for: pod mode is a staff feature, and without it
the demo stays one run, one progress bar and half the disk and CPU (every save of the simulated trainer is
a real-size LoRA, and a pod run's are copied from the pod into storage), which is what a newcomer needs.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import sys
import threading
import time
import uuid
from argparse import ArgumentParser
from pathlib import Path
from typing import Any

import requests
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from studio.demo_images import PortraitsMissing, write_portraits
from studio.demo_pod import (
    DEMO_POD,
    DEMO_POD_CHARACTER,
    DEMO_POD_TRIGGER,
    PodRun,
    pod_environment,
    pod_health_check,
    pod_registered,
    pod_registration,
    pod_url,
)
from studio.demo_processes import Supervisor, read_procfile
from studio.models import User

DEMO_USER = "demo"
DEMO_CHARACTER = "Demo character"
DEMO_TRIGGER = "ohwx_demo"
SESSION_VARIABLE = "STUDIO_DEMO_SESSION"  # every process of one demo carries it: nothing is left behind


class Command(BaseCommand):
    help = "Run the whole studio locally and train a demo character (Ctrl-C stops everything)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--port", type=int, default=8000, help="Web port (default 8000).")
        parser.add_argument("--runpod-port", type=int, default=8765, help="Local RunPod port (default 8765).")
        parser.add_argument(
            "--pod",
            action="store_true",
            help="Also train on a pod: the AI Toolkit UI stand-in, beside the serverless run.",
        )
        parser.add_argument(
            "--pod-port",
            type=int,
            default=8676,
            help="Its port (default 8676: the real UI's 8675 may be in use on this machine).",
        )
        parser.add_argument("--steps", type=int, default=300, help="Training steps (default 300).")
        parser.add_argument("--rank", type=int, help="LoRA rank (default: the fast preset's).")
        parser.add_argument(
            "--seconds-per-step",
            type=float,
            default=0.15,
            help="Speed of the simulated trainer (default 0.15: 300 steps in about a minute, time to watch).",
        )
        parser.add_argument(
            "--save-every",
            type=int,
            default=50,
            help="Steps between checkpoints and samples (default 50: the gallery fills as you watch).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        demo_dir = Path(settings.VAR_DIR) / "demo"
        stop_on_interrupt()
        os.environ.setdefault(SESSION_VARIABLE, uuid.uuid4().hex)
        call_command("migrate", interactive=False, verbosity=0)
        password = self._demo_user(demo_dir)
        photos = demo_dir / "photos"
        try:
            write_portraits(photos)
        except PortraitsMissing as error:
            raise CommandError(str(error)) from error
        environment = self._environment(demo_dir, options)
        supervisor = self._start_processes(demo_dir, options, environment)
        done = threading.Event()
        watcher = threading.Thread(target=supervisor.watch, args=(done,), daemon=True)
        watcher.start()
        try:
            registration = (
                pod_registration(options, token_file=demo_dir / "pod-token", environment=environment)
                if options["pod"]
                else None
            )
            self._wait_until_up(_health_checks(options, environment), supervisor)
            if registration is not None:
                self.say(pod_registered(registration))
            self.say(
                f"Watch it train: log in at http://127.0.0.1:{options['port']}/ as {DEMO_USER} with password "
                f"{password}; the run's page fills with samples, a falling loss curve and checkpoints."
            )
            self._train(photos, options)
            self._welcome(options, password, demo_dir)
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            self.stdout.write("\nStopping the demo…")
        finally:
            done.set()
            watcher.join(timeout=5)
            stop_processes(supervisor)
        self.stdout.write("Every demo process has stopped.")

    def say(self, line: str) -> None:
        """A line on the console at once, even when it is a pipe (the supervisor speaks from its thread)."""
        self.stdout.write(line)
        self.stdout.flush()

    def _demo_user(self, demo_dir: Path) -> str:
        """The demo staff user's password: made once, kept in var/demo/password."""
        demo_dir.mkdir(parents=True, exist_ok=True)
        password = _kept_secret(demo_dir / "password", 12)
        user = User.objects.filter(username=DEMO_USER).first()
        if user is None:
            User.objects.create_superuser(DEMO_USER, f"{DEMO_USER}@localhost", password)
        return password

    def _environment(self, demo_dir: Path, options: dict[str, Any]) -> dict[str, str]:
        secret_key = _kept_secret(demo_dir / "secret-key", 50)  # the site's own: DEBUG off needs one
        environment = demo_environment(demo_dir / "logs", options, secret_key=secret_key)
        if options["pod"]:
            _kept_secret(demo_dir / "pod-token", 32)
            environment.update(pod_environment(demo_dir, options, token_file=demo_dir / "pod-token"))
        return environment

    def _start_processes(
        self, demo_dir: Path, options: dict[str, Any], environment: dict[str, str]
    ) -> Supervisor:
        logs = demo_dir / "logs"
        (logs / "runpod").mkdir(parents=True, exist_ok=True)
        also = "the local RunPod and the local AI Toolkit UI" if options["pod"] else "and the local RunPod"
        self.say(f"Starting the web app, Celery worker and beat, {also} (logs in {logs}).")
        commands = read_procfile(Path(settings.BASE_DIR) / "Procfile.demo")
        if not options["pod"]:
            del commands["pod"]
        root = Path(settings.BASE_DIR)
        supervisor = Supervisor(commands, env=environment, cwd=root, logs=logs, say=self.say)
        supervisor.start()
        return supervisor

    def _wait_until_up(self, checks: dict[str, tuple[str, dict[str, str]]], supervisor: Supervisor) -> None:
        deadline = time.monotonic() + 90
        for name, (url, headers) in checks.items():
            while not _answers(url, headers):
                if time.monotonic() > deadline:
                    raise CommandError(f"The {name} did not start; see its log in var/demo/logs/.")
                time.sleep(0.5)
            self.say(f"The {name} is up.")

    def _train(self, photos: Path, options: dict[str, Any]) -> None:
        pod_run = None
        if options["pod"]:
            pod_run = PodRun(_train_arguments(DEMO_POD_CHARACTER, DEMO_POD_TRIGGER, photos, options))
            pod_run.start()
            self._say_where_the_pod_run_is(options)
        try:
            call_command(
                "train_character",
                *_train_arguments(DEMO_CHARACTER, DEMO_TRIGGER, photos, options),
                "--wait",
                stdout=self.stdout,
                stderr=self.stderr,
            )
        except CommandError as error:
            # Keep serving: the run's page and the admin show what happened.
            self.stderr.write(f"The demo training did not complete: {error}")
        if pod_run is not None:
            self._report_pod_run(pod_run)

    def _say_where_the_pod_run_is(self, options: dict[str, Any]) -> None:
        site = f"http://127.0.0.1:{options['port']}"
        self.say(
            f"Beside it, {DEMO_POD_CHARACTER} trains on the pod {DEMO_POD} (the AI Toolkit UI stand-in at "
            f"{pod_url(options)}, simulated trainer); its report follows this run's. Its run is among the "
            f"pod runs: {site}/admin/training/trainingrun/?provider__exact=pod (the pod: "
            f"{site}/admin/training/pod/)."
        )

    def _report_pod_run(self, pod_run: PodRun) -> None:
        if pod_run.running():
            self.say(f"Waiting for {DEMO_POD_CHARACTER}'s run on the pod {DEMO_POD} to end…")
        lines = pod_run.wait()
        self.stdout.write(f"\n{DEMO_POD_CHARACTER}, on the pod {DEMO_POD}:")
        for line in lines:
            self.stdout.write(f"  {line}")
        if pod_run.error:
            self.stderr.write(f"The demo training on the pod did not complete: {pod_run.error}")

    def _welcome(self, options: dict[str, Any], password: str, demo_dir: Path) -> None:
        site = f"http://127.0.0.1:{options['port']}"
        pods = f"  Pods:      {site}/admin/training/pod/ ({DEMO_POD}: {pod_url(options)})\n"
        self.stdout.write(
            self.style.SUCCESS(
                f"\nThe studio is running.\n"
                f"  Site:      {site}/\n"
                f"  Admin:     {site}/admin/\n"
                f"{pods if options['pod'] else ''}"
                f"  API docs:  {site}/api/docs/\n"
                f"  Log in as {DEMO_USER} with password {password} (kept in {demo_dir / 'password'}).\n"
                "Press Ctrl-C to stop every process."
            )
        )


def stop_on_interrupt() -> None:
    """Ctrl-C and SIGTERM both end the demo through its `finally`, which stops every process it started.

    Python turns SIGINT into KeyboardInterrupt only when SIGINT was not ignored at start-up, and a shell
    without job control starts a background job (`make demo &`, some CI runners) with SIGINT ignored: the
    demo would then ignore Ctrl-C and its processes outlive it. A plain SIGTERM would end it without its
    `finally`, leaving every process (each in a session of its own) running.
    """
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)


def _train_arguments(name: str, trigger: str, photos: Path, options: dict[str, Any]) -> list[str]:
    """`train_character`'s arguments for a demo character: the portraits, the fast preset, the demo's pace."""
    rank = options["rank"]
    return [
        "--user", DEMO_USER,
        "--name", name,
        "--trigger", trigger,
        "--images", str(photos),
        # The portraits are public-domain works; the upload asks for consent all the same, as on the
        # site, and the demo user gives it (with the person's permission: they are not that person).
        "--consent", "permission",
        "--preset", "fast",
        "--steps", str(options["steps"]),
        "--save-every", str(options["save_every"]),
        *(["--rank", str(rank)] if rank else []),
    ]  # fmt: skip


def _health_checks(
    options: dict[str, Any], environment: dict[str, str]
) -> dict[str, tuple[str, dict[str, str]]]:
    """Each process that serves, by its name on the console: the URL that answers 200 once it is up."""
    checks = {
        "web app": (f"http://127.0.0.1:{options['port']}/healthz", {}),
        "local RunPod": (
            f"http://127.0.0.1:{options['runpod_port']}/v2/{settings.RUNPOD_ENDPOINT_ID}/health",
            {"Authorization": f"Bearer {settings.RUNPOD_API_KEY}"},
        ),
    }
    if options["pod"]:
        token = Path(environment["DEMO_POD_TOKEN_FILE"]).read_text().strip()
        checks["local AI Toolkit UI"] = pod_health_check(options, token=token)
    return checks


def demo_environment(logs: Path, options: dict[str, Any], *, secret_key: str) -> dict[str, str]:
    """The processes' environment: the embedded default, served as in production (DEBUG off) on loopback."""
    environment = dict(os.environ)
    environment.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{environment.get('PATH', '')}",
        PYTHONUNBUFFERED="1",
        STUDIO_VAR_DIR=str(settings.VAR_DIR),
        STUDIO_PUBLIC_URL=f"http://127.0.0.1:{options['port']}",
        # DEBUG off, as production runs: the studio's own error pages, never Django's debug pages. Plain
        # http on loopback, so no https redirect or Secure-only cookies; WhiteNoise serves static files.
        DJANGO_DEBUG="false",
        DJANGO_HTTPS="false",
        DJANGO_SECRET_KEY=secret_key,
        DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost",
        STATIC_IN_PLACE="true",
        GUNICORN_BIND=f"127.0.0.1:{options['port']}",
        WEB_CONCURRENCY="3",
        RUNPOD_API_BASE=f"http://127.0.0.1:{options['runpod_port']}/v2",
        RUNPOD_ENDPOINT_ID=settings.RUNPOD_ENDPOINT_ID,
        RUNPOD_API_KEY=settings.RUNPOD_API_KEY,
        DEMO_RUNPOD_PORT=str(options["runpod_port"]),
        DEMO_SECONDS_PER_STEP=str(options["seconds_per_step"]),
        DEMO_LOG_DIR=str(logs),
    )
    return environment


def _kept_secret(path: Path, length: int) -> str:
    """A secret of the demo (its password, its site's key, its pod's token): made once, kept in var/demo."""
    if not path.exists():
        # Created readable by its owner only, never for a moment by others (umask 022 would allow it).
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
            handle.write(secrets.token_urlsafe(length))
    return path.read_text().strip()


def _answers(url: str, headers: dict[str, str]) -> bool:
    try:
        return requests.get(url, headers=headers, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def stop_processes(supervisor: Supervisor, *, grace: float = 15.0) -> None:
    """Stop every process the supervisor started, then make sure nothing of this demo survives."""
    supervisor.stop(grace=grace)
    session = os.environ.get(SESSION_VARIABLE) or ""
    for pid in processes_of_session(session):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def processes_of_session(session: str) -> list[int]:
    """Pids of live processes started for the demo session `session` (read from /proc)."""
    if not session:
        return []
    marker = f"{SESSION_VARIABLE}={session}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue  # gone already, or not ours to read
    return found
