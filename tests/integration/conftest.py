"""The live stack: Postgres, a real Celery worker on Redis, the S3 test server, the local RunPod stand-in
running the unmodified worker with the simulated trainer, and Django served over HTTP for callbacks.

Two ways to get one:
- `shared_stack`: the module's one stack (`module_stack`), shared by its tests, for a test that kills or
  restarts none of it. Faults are switched on the stand-in at run time, settings of the Celery worker through
  `RUNTIME_SETTINGS`; between tests the stand-in is reset (no faults, no jobs, its workers idle again) and
  each test has its own database state, as ever. A test process builds the stack when it runs the module's
  first such test and tears it down when it moves to another module's test. A module whose tests all use
  `shared_stack` runs in one process (`in_one_process`, tests/support/grouping.py), so its stack is built
  once; a module that mixes both is not grouped: its stack and a `stack_factory` stack would share the
  process's queue.
- `stack_factory`: a stack of the test's own, for a test that kills, stops or restarts a part of it (the
  Celery worker, Redis, Postgres, the stand-in), or needs the stand-in's workers started differently.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.db import connection

from tests.support.broker import QUEUE
from tests.support.celery_worker import CeleryWorker
from tests.support.local_ai_toolkit_ui import LocalAIToolkitUI
from tests.support.local_runpod import LIGHT_LORA, LocalRunPod
from tests.support.s3server import S3Server
from training.models import Pod
from training.pod_secrets import pod_token_set

POD_TOKEN = "live-pod-token"
SWEEP_INTERVAL_S = 1.0
FINISHING_POLL_S = 1.0
WORKER_ENV = {
    "SIMULATED_TRAINER_SECONDS_PER_STEP": "0.01",
    "WORKER_PROGRESS_INTERVAL_S": "0.3",
    "WORKER_PROGRESS_SETTLE_S": "0.3",
    "WORKER_HEARTBEAT_INTERVAL_S": "0.5",
    **LIGHT_LORA,
}
# The worker-callback view runs in this process (the live server): a delivery of a job whose holder has
# been silent this long takes the run over (a GPU worker lost mid-job).
WORKER_LIVENESS_S = 3.0
# Settings the Celery worker reads when a task runs, so a shared stack's worker takes them at run time
# (tests/integration/celery_settings.py). Any other `worker_env` needs a stack of the test's own.
RUNTIME_SETTINGS = frozenset(
    {
        "TRAINING_SUBMIT_UNCERTAIN_GRACE_SECONDS",
        "TRAINING_PENDING_RECHECK_SECONDS",
        "TRAINING_JOB_TTL_SECONDS",
        "RUNPOD_TIMEOUT_SECONDS",
        "TRAINING_POD_POLL_SECONDS",
        "TRAINING_POD_STALL_SECONDS",
        "TRAINING_POD_MAX_RESTARTS",
        "TRAINING_POD_TIMEOUT_SECONDS",
    }
)


def wait_for(predicate: Callable[[], Any], *, timeout: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(f"{what} not reached in {timeout}s")


@dataclass
class Stack:
    runpod: LocalRunPod
    worker: CeleryWorker
    worker_env: dict[str, str]
    s3: S3Server

    def restart_worker(self, **overrides: str) -> None:
        self.worker.stop()
        self.worker.env = {**self.worker_env, **overrides}
        self.worker.start()

    def jobs(self) -> list[dict[str, Any]]:
        """Every job the stand-in was given during this test (a stack of the test's own has no other; a shared
        one is reset between tests, which forgets the jobs of the test before)."""
        return list(self.runpod.state()["jobs"].values())

    def stop(self) -> None:
        # The test is over: nothing the Celery worker or a GPU worker holds matters any more, so no warm
        # shutdown to wait for.
        self.worker.kill()
        self.runpod.kill()


def _database_url() -> str:
    db = django_settings.DATABASES["default"]
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


@pytest.fixture
def finished_callback_lost(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The worker's "finished" callback never reaches the backend's service (the worker-callback view runs
    in this process, the live server): RunPod's webhook and `/status` have to finish the run. Returns the
    delivery ids whose "finished" was dropped."""
    from training import services

    dropped: list[str] = []

    def lost(*, delivery_id: str, **_: Any) -> services.WorkerAnswer:
        dropped.append(delivery_id)
        return services.CONTINUE

    monkeypatch.setattr(services, "training_run_worker_finished", lost)
    return dropped


def _worker_environment(
    *, runpod: LocalRunPod, public_url: str, s3: S3Server, broker_url: str, extra: dict[str, str] | None
) -> dict[str, str]:
    return {
        "DATABASE_URL": _database_url(),
        "REDIS_URL": broker_url,
        "CELERY_TASK_DEFAULT_QUEUE": QUEUE,
        "DJANGO_DEBUG": "true",
        "STUDIO_PUBLIC_URL": public_url,
        "AWS_STORAGE_BUCKET_NAME": "studio-media",
        "AWS_ACCESS_KEY_ID": s3.access_key,
        "AWS_SECRET_ACCESS_KEY": s3.secret_key,
        "AWS_S3_ENDPOINT_URL": s3.endpoint_url,
        "AWS_S3_REGION_NAME": s3.region,
        "RUNPOD_API_BASE": f"{runpod.base_url}/v2",
        "RUNPOD_ENDPOINT_ID": runpod.endpoint_id,
        "RUNPOD_API_KEY": runpod.api_key,
        "RUNPOD_REST_API_BASE": runpod.rest_url,
        "TRAINING_MIN_IMAGES": "3",
        "TRAINING_SWEEP_INTERVAL_SECONDS": str(SWEEP_INTERVAL_S),
        "TRAINING_FINISHING_POLL_SECONDS": str(FINISHING_POLL_S),
        "TRAINING_WORKER_LIVENESS_SECONDS": str(WORKER_LIVENESS_S),
        **(extra or {}),
    }


def _start_stack(
    *,
    workdir: Path,
    public_url: str,
    s3: S3Server,
    broker_url: str,
    runpod_env: dict[str, str] | None = None,
    faults: dict[str, Any] | None = None,
    worker_env: dict[str, str] | None = None,
    worker_args: list[str] | None = None,
) -> Stack:
    runpod = LocalRunPod(
        workdir=workdir / "runpod", workers=2, env={**WORKER_ENV, **(runpod_env or {})}, faults=faults
    )
    runpod.start()
    env = _worker_environment(
        runpod=runpod, public_url=public_url, s3=s3, broker_url=broker_url, extra=worker_env
    )
    worker = CeleryWorker(env=env, workdir=workdir / "celery")
    worker.extra_args = list(worker_args or [])
    stack = Stack(runpod=runpod, worker=worker, worker_env=env, s3=s3)
    try:
        worker.start()
    except BaseException:
        runpod.stop()
        raise
    return stack


def _point_at(stack: Stack, settings: Any, public_url: str) -> None:
    """This process (the live server answers the worker's callbacks, which schedule the next poll) talks
    to the stack's stand-in."""
    settings.PUBLIC_BASE_URL = public_url
    settings.TRAINING_MIN_IMAGES = 3
    settings.TRAINING_FINISHING_POLL_SECONDS = FINISHING_POLL_S
    settings.TRAINING_WORKER_LIVENESS_SECONDS = WORKER_LIVENESS_S
    settings.RUNPOD_API_BASE = f"{stack.runpod.base_url}/v2"
    settings.RUNPOD_ENDPOINT_ID = stack.runpod.endpoint_id
    settings.RUNPOD_API_KEY = stack.runpod.api_key
    settings.RUNPOD_REST_API_BASE = stack.runpod.rest_url


@pytest.fixture
def stack_factory(
    live_server: Any, s3_storage: S3Server, settings: Any, tmp_path: Path, broker_url: str
) -> Iterator[Callable[..., Stack]]:
    """Stacks of the test's own (see the module's docstring for when a test needs one)."""
    started: list[Stack] = []

    def build(
        *,
        runpod_env: dict[str, str] | None = None,
        faults: dict[str, Any] | None = None,
        worker_env: dict[str, str] | None = None,
        worker_args: list[str] | None = None,
    ) -> Stack:
        """The stack, its Celery worker started once with `worker_env` over the defaults and `worker_args`
        (e.g. a fault hook's `--include`): cheaper than starting it, then restarting it changed."""
        stack = _start_stack(
            workdir=tmp_path,
            public_url=live_server.url,
            s3=s3_storage,
            broker_url=broker_url,
            runpod_env=runpod_env,
            faults=faults,
            worker_env=worker_env,
            worker_args=worker_args,
        )
        started.append(stack)
        _point_at(stack, settings, live_server.url)
        return stack

    yield build
    for stack in started:
        stack.stop()


@dataclass
class SharedStack:
    stack: Stack
    settings_file: Path

    def worker_settings(self, values: dict[str, str]) -> None:
        """The Celery worker's `RUNTIME_SETTINGS` for the next tasks (written whole, then renamed)."""
        written = self.settings_file.with_suffix(".new")
        written.write_text(json.dumps(values))
        written.replace(self.settings_file)

    def check_alive(self) -> None:
        for name, process in (
            ("Celery worker", self.stack.worker.process),
            ("stand-in", self.stack.runpod.process),
        ):
            if process is None or process.poll() is not None:
                raise RuntimeError(
                    f"the module's shared {name} is gone: a test that kills or stops a part of the stack "
                    f"needs `stack_factory`\n{self.stack.worker.logs()}\n{self.stack.runpod.logs()}"
                )


@pytest.fixture(scope="module")
def stand_in_env() -> dict[str, str]:
    """The module's shared stand-in's worker environment over WORKER_ENV; a module overrides it."""
    return {}


@pytest.fixture(scope="module")
def module_stack(
    live_server: Any,
    s3_server: S3Server,
    session_broker_url: str,
    django_db_setup: None,
    tmp_path_factory: pytest.TempPathFactory,
    stand_in_env: dict[str, str],
) -> Iterator[SharedStack]:
    """One stack for the module's tests (through `shared_stack`)."""
    if connection.vendor != "postgresql":
        pytest.skip("the live stack needs Postgres (make test finds it)")
    workdir = tmp_path_factory.mktemp("shared-stack")
    settings_file = workdir / "worker-settings.json"
    settings_file.write_text("{}")
    stack = _start_stack(
        workdir=workdir,
        public_url=live_server.url,
        s3=s3_server,
        broker_url=session_broker_url,
        runpod_env=stand_in_env,
        worker_env={"STUDIO_TEST_SETTINGS_FILE": str(settings_file)},
        worker_args=["--include=tests.integration.celery_settings"],
    )
    try:
        yield SharedStack(stack=stack, settings_file=settings_file)
    finally:
        stack.stop()


@pytest.fixture
def shared_stack(
    module_stack: SharedStack, live_server: Any, s3_storage: S3Server, settings: Any, broker_url: str
) -> Iterator[Callable[..., Stack]]:
    """The module's stack for this test: `shared_stack(faults=..., worker_env=...)` switches the stand-in's
    faults and the Celery worker's `RUNTIME_SETTINGS` for this test alone. The stand-in is reset and its
    workers idle before the test; after it, the stand-in is reset again (stopping what the test left
    running) and the worker's settings go back to the module's."""
    shared = module_stack
    shared.check_alive()
    shared.stack.runpod.reset()
    shared.worker_settings({})
    shared.stack.runpod.wait_idle()
    _point_at(shared.stack, settings, live_server.url)

    def use(*, faults: dict[str, Any] | None = None, worker_env: dict[str, str] | None = None) -> Stack:
        unknown = set(worker_env or {}) - RUNTIME_SETTINGS
        if unknown:
            raise pytest.UsageError(
                f"{sorted(unknown)} are read by the Celery worker at start-up: use `stack_factory`"
            )
        shared.worker_settings(dict(worker_env or {}))
        if faults:
            shared.stack.runpod.set_faults(**faults)
        return shared.stack

    yield use
    shared.worker_settings({})
    shared.stack.runpod.reset()
    shared.check_alive()


@pytest.fixture
def ui(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LocalAIToolkitUI]:
    """A pod of the test's own (the AI Toolkit UI stand-in); its trainer takes 0.01 s a step unless the test
    asks for another (`indirect`)."""
    seconds_per_step = getattr(request, "param", "0.01")
    env = {"SIMULATED_TRAINER_SECONDS_PER_STEP": seconds_per_step, **LIGHT_LORA}
    pod = LocalAIToolkitUI(workdir=tmp_path / "pod", token=POD_TOKEN, env=env).start()
    yield pod
    pod.stop()


@pytest.fixture
def pod(ui: LocalAIToolkitUI) -> Pod:
    """The test's pod as staff register it: its UI's address and token."""
    pod = Pod(name="live-pod", runpod_pod_id="", ui_url=ui.url, hourly_price_usd=Decimal("0.69"))
    pod_token_set(pod, POD_TOKEN)
    pod.save()
    return pod
