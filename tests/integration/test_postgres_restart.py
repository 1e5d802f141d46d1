"""A real Postgres server restart while a run trains, with the whole product out of process.

The product runs as it is deployed, against a throw-away Postgres cluster of this test's own (the shared
server is never restarted): `manage.py migrate` and `collectstatic`, gunicorn with gunicorn.conf.py and
DEBUG off, a Celery worker with beat, a Redis of its own, the S3 test server, and the local RunPod stand-in
running the unmodified GPU worker with the simulated trainer. The test is an API client (docs/API.md): a
user signs up and gets a token, creates a character, uploads three photos and starts a run. While the run
trains, Postgres gets a fast shutdown (what `pg_ctl restart` does) and stays down a few seconds, the
client asking about its run meanwhile; then it starts again. The story runs once; each test below checks
one thing that must come of it.

    make test PYTEST_ARGS=tests/integration/test_postgres_restart.py
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
from django.conf import settings as django_settings
from psycopg import sql

from tests.characters.images import distinct_jpegs
from tests.conftest import S3_TEST_BUCKET
from tests.integration.conftest import WORKER_ENV
from tests.support.broker import PrivateRedis
from tests.support.celery_worker import CeleryWorker
from tests.support.grouping import in_one_process
from tests.support.local_runpod import LocalRunPod
from tests.support.postgres import PostgresCluster, PostgresUnavailable
from tests.support.s3server import S3Server
from tests.support.web_server import REPO_ROOT, WebServer
from training.models import TrainingEvent, TrainingRun

pytestmark = [pytest.mark.integration, in_one_process(__name__)]

DATABASE = "studio"
QUEUE = f"postgres-restart-{os.getpid()}"
REDIS_DB = 12  # only without a redis-server binary: a database of the shared Redis, with our own queue
DOWN_FOR_S = 2.5
STEPS = 400  # 4 s of simulated training, longer under load: the outage starts at the first progress
FINAL = {"completed", "failed", "cancelled"}
PASSWORD = "restart-test-password-7"
# With DEBUG off the error pages need the static manifest; the admin's and the API docs' bundles are served
# to no request here, and compressing them takes minutes.
STATIC_SKIPPED = ("-i", "admin", "-i", "rest_framework", "-i", "drf_spectacular_sidecar")
SIGN_UP = f"""
from developer.services import api_token_create
from studio.forms import SignupForm
form = SignupForm({{"username": "alice", "email": "alice@example.com",
                   "password1": "{PASSWORD}", "password2": "{PASSWORD}"}})
assert form.is_valid(), form.errors.as_json()
print(api_token_create(user=form.save(), name="postgres restart")[1])
"""


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


@dataclass
class Product:
    """The studio's processes, as deployed, and an API client with its user's token."""

    cluster: PostgresCluster
    web: WebServer
    worker: CeleryWorker
    runpod: LocalRunPod
    api: requests.Session

    def get(self, path: str) -> requests.Response:
        return self.api.get(self.web.url + path, timeout=10)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.api.post(self.web.url + path, timeout=30, **kwargs)

    def put(self, path: str, **kwargs: Any) -> requests.Response:
        return self.api.put(self.web.url + path, timeout=30, **kwargs)

    def rows(self, model: type[Any], columns: tuple[str, ...], *, where: str, value: str) -> list[Any]:
        """Straight from the database: `columns` of `model`'s rows whose `where` column is `value`, oldest
        first."""
        query = sql.SQL("SELECT {} FROM {} WHERE {} = %s ORDER BY created_at, id").format(
            sql.SQL(", ").join(map(sql.Identifier, columns)),
            sql.Identifier(model._meta.db_table),
            sql.Identifier(where),
        )
        with self.cluster.connect(DATABASE) as connection:
            return connection.execute(query, [value]).fetchall()

    def logs(self) -> str:
        return "\n".join([self.web.logs(), self.worker.logs(), self.runpod.logs(), self.cluster.logs()])


@dataclass(frozen=True)
class Answer:
    """One HTTP answer as the client saw it."""

    path: str
    status: int
    content_type: str
    retry_after: str | None
    body: str

    @classmethod
    def of(cls, path: str, response: requests.Response) -> Answer:
        headers = response.headers
        return cls(path, response.status_code, headers.get("Content-Type", ""), headers.get("Retry-After"),
                   response.text[:400])  # fmt: skip

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Outcome:
    """What the client, the database, the bucket and the stand-in hold after the story."""

    run: dict[str, Any]
    run_row: dict[str, Any]
    events: list[str]
    jobs: list[dict[str, Any]]
    loras: list[str]
    images: list[dict[str, Any]]
    image_downloads: list[int]
    step_before: int
    refused_while_down: bool
    down_s: float
    while_down: list[Answer]
    first_answer_after: Answer
    logs: str


# --- the product, out of process -----------------------------------------------------------------------


def private_cluster() -> PostgresCluster:
    try:
        return PostgresCluster.create()
    except PostgresUnavailable as exc:
        if in_ci():
            pytest.fail(f"CI=true and a Postgres of the test's own cannot be made: {exc}")
        pytest.skip(f"a real Postgres restart needs a Postgres of the test's own: {exc}")


def private_redis(workdir: Path) -> tuple[str, PrivateRedis | None]:
    if shutil.which("redis-server"):
        redis = PrivateRedis(workdir).start()
        return redis.url, redis
    if not django_settings.REDIS_URL:
        if in_ci():
            pytest.fail("CI=true and there is neither a redis-server binary nor a shared Redis")
        pytest.skip("the Celery worker needs Redis: install redis-server or set REDIS_URL")
    return django_settings.REDIS_URL.rsplit("/", 1)[0] + f"/{REDIS_DB}", None


def manage(env: dict[str, str], *args: str) -> str:
    finished = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=REPO_ROOT, env={**os.environ, **env},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert finished.returncode == 0, f"manage.py {args[0]}:\n{finished.stdout}\n{finished.stderr}"
    return finished.stdout


def product_env(
    cluster: PostgresCluster, broker: str, web: WebServer, runpod: LocalRunPod, s3: S3Server, workdir: Path
) -> dict[str, str]:
    """Production settings (DEBUG off) pointed at this test's Postgres, Redis, bucket and RunPod."""
    return {
        "DATABASE_URL": cluster.url(DATABASE),
        "REDIS_URL": broker,
        "CELERY_TASK_DEFAULT_QUEUE": QUEUE,
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": "postgres-restart-test-" + "k" * 40,
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "DJANGO_SECURE_SSL_REDIRECT": "false",
        "STATIC_ROOT": str(workdir / "static"),
        "STUDIO_VAR_DIR": str(workdir / "var"),
        "STUDIO_PUBLIC_URL": web.url,
        "AWS_STORAGE_BUCKET_NAME": S3_TEST_BUCKET,
        "AWS_ACCESS_KEY_ID": s3.access_key,
        "AWS_SECRET_ACCESS_KEY": s3.secret_key,
        "AWS_S3_ENDPOINT_URL": s3.endpoint_url,
        "AWS_S3_REGION_NAME": s3.region,
        "RUNPOD_API_BASE": f"{runpod.base_url}/v2",
        "RUNPOD_ENDPOINT_ID": runpod.endpoint_id,
        "RUNPOD_API_KEY": runpod.api_key,
        "TRAINING_MIN_IMAGES": "3",
        "TRAINING_SWEEP_INTERVAL_SECONDS": "1",
        "TRAINING_FINISHING_POLL_SECONDS": "1",
    }


@pytest.fixture(scope="module")
def product(tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server) -> Iterator[Product]:
    workdir = tmp_path_factory.mktemp("postgres-restart")
    cluster = private_cluster()
    redis: PrivateRedis | None = None
    processes: list[WebServer | CeleryWorker | LocalRunPod] = []
    try:
        cluster.start()
        cluster.create_database(DATABASE)
        broker, redis = private_redis(workdir / "redis")
        runpod = LocalRunPod(workdir=workdir / "runpod", workers=2, env=WORKER_ENV)
        web = WebServer(env={}, workdir=workdir / "web")
        env = web.env = product_env(cluster, broker, web, runpod, s3_server, workdir)
        worker = CeleryWorker(env=env, workdir=workdir / "celery")
        processes += [runpod, web, worker]
        # Whatever needs no schema starts while the database is migrated.
        with ThreadPoolExecutor(max_workers=4) as pool:
            static = pool.submit(manage, env, "collectstatic", "--noinput", "-v0", *STATIC_SKIPPED)
            stand_in = pool.submit(runpod.start)
            manage(env, "migrate", "--noinput", "-v0")
            signed_up = pool.submit(manage, env, "shell", "-c", SIGN_UP)
            celery = pool.submit(worker.start)
            static.result()
            for started in (pool.submit(web.start), stand_in, celery):
                started.result()
            token = signed_up.result().strip().splitlines()[-1]
        with requests.Session() as api:
            api.headers["Authorization"] = f"Bearer {token}"
            yield Product(cluster, web, worker, runpod, api)
    finally:
        try:
            with ThreadPoolExecutor(max_workers=3) as pool:
                list(pool.map(lambda process: process.stop(), processes))
        finally:
            if redis is not None:
                redis.kill()
            cluster.cleanup()


def wait_for(predicate: Callable[[], Any], *, timeout: float, what: str, app: Product) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(f"{what} not reached in {timeout}s\n{app.logs()}")


# --- the story -----------------------------------------------------------------------------------------


def start_a_run(app: Product) -> tuple[str, str]:
    """A character with three photos and a run started for it, through the API. Returns both ids."""
    character = app.post("/api/v1/characters", json={"name": "Anna", "trigger_word": "ohwx_anna"})
    assert character.status_code == 201, character.text
    character_id = character.json()["id"]
    consented = app.put(f"/api/v1/characters/{character_id}/consent", json={"basis": "self"})
    assert consented.status_code == 200, consented.text
    photos = [("files", (f"photo-{i}.jpg", jpeg, "image/jpeg")) for i, jpeg in enumerate(distinct_jpegs(3))]
    added = app.post(f"/api/v1/characters/{character_id}/images", files=photos)
    assert added.status_code == 201 and len(added.json()["added"]) == 3, added.text
    started = app.post(
        f"/api/v1/characters/{character_id}/runs", json={"preset": "fast", "params": {"steps": STEPS}}
    )
    assert started.status_code == 202, started.text
    return character_id, started.json()["id"]


def run_document(app: Product, run_path: str) -> dict[str, Any] | None:
    response = app.get(run_path)
    return dict(response.json()) if response.status_code == 200 else None


@pytest.fixture(scope="module")
def outcome(product: Product, s3_server: S3Server) -> Outcome:
    app = product
    character_id, run_id = start_a_run(app)
    run_path = f"/api/v1/runs/{run_id}"

    def training() -> dict[str, Any] | None:
        run = run_document(app, run_path)
        return run if run and run["status"] == "training" and run["progress"]["step"] > 0 else None

    before = wait_for(training, timeout=60, what="the run training", app=app)

    while_down: list[Answer] = []
    with app.cluster.stopped():
        down_at = time.monotonic()
        try:
            app.cluster.connect(DATABASE, timeout=1).close()
            refused = False
        except psycopg.OperationalError:
            refused = True
        while time.monotonic() - down_at < DOWN_FOR_S:
            while_down += [Answer.of(path, app.get(path)) for path in (run_path, "/healthz")]
            time.sleep(0.2)  # a client's polling pace, not a wait for a condition
    down_s = time.monotonic() - down_at
    first_after = Answer.of(run_path, app.get(run_path))

    def ended() -> dict[str, Any] | None:
        run = run_document(app, run_path)
        return run if run and run["status"] in FINAL else None

    run = wait_for(ended, timeout=90, what="the run to end", app=app)
    columns = ("runpod_job_id", "lora_name", "lora_sha256", "attempts")
    (row,) = app.rows(TrainingRun, columns, where="id", value=run_id)
    events = app.rows(TrainingEvent, ("to_status",), where="run_id", value=run_id)
    images = app.get(f"/api/v1/characters/{character_id}/images").json()["results"]

    def stored_loras() -> list[str]:
        listing = s3_server.client().list_objects_v2(
            Bucket=S3_TEST_BUCKET, Prefix=f"characters/{character_id}/loras/"
        )
        return [item["Key"] for item in listing.get("Contents", [])]

    # The completion tidies storage right after its transaction commits (the upload, copies not kept).
    with contextlib.suppress(TimeoutError):
        wait_for(lambda: stored_loras() == [row[1]], timeout=15, what="storage tidied", app=app)
    return Outcome(
        run=run,
        run_row=dict(zip(columns, row, strict=True)),
        events=[status for (status,) in events],
        jobs=list(app.runpod.state()["jobs"].values()),
        loras=stored_loras(),
        images=images,
        image_downloads=[requests.get(image["url"], timeout=10).status_code for image in images],
        step_before=before["progress"]["step"],
        refused_while_down=refused,
        down_s=down_s,
        while_down=while_down,
        first_answer_after=first_after,
        logs=app.logs(),
    )


# --- what must come of it ------------------------------------------------------------------------------


def test_postgres_was_really_down_while_the_run_trained(outcome: Outcome) -> None:
    assert outcome.refused_while_down
    assert outcome.down_s >= DOWN_FOR_S
    assert 0 < outcome.step_before < STEPS


def test_a_run_training_through_a_postgres_restart_completes_with_one_job_and_one_lora(
    outcome: Outcome,
) -> None:
    run = outcome.run
    assert run["status"] == "completed", f"{run['error']}\n{outcome.logs}"
    assert run["progress"]["step"] == STEPS
    assert [job["id"] for job in outcome.jobs] == [outcome.run_row["runpod_job_id"]]
    assert outcome.run_row["attempts"] == 1
    assert outcome.loras == [outcome.run_row["lora_name"]]
    assert run["lora"]["sha256"] == outcome.run_row["lora_sha256"]
    # A GPU worker that takes the job at once may report it before the submission has recorded it queued:
    # the run then goes from pending straight to training (a forward skip, training/services/transitions.py).
    assert outcome.events in (
        ["pending", "queued", "training", "completed"],
        ["pending", "training", "completed"],
    )


def test_every_reference_image_survives_a_postgres_restart(outcome: Outcome) -> None:
    assert len(outcome.images) == 3
    assert outcome.image_downloads == [200, 200, 200]


def test_while_postgres_is_down_healthz_answers_503_naming_the_database(outcome: Outcome) -> None:
    health = [answer for answer in outcome.while_down if answer.path == "/healthz"]
    assert health
    for answer in health:
        assert (answer.status, answer.content_type) == (503, "application/json"), answer
        checks = answer.json()["checks"]
        assert checks["database"] == {"ok": False, "error": "OperationalError"}
        assert checks["broker"]["ok"] and checks["storage"]["ok"]


def test_while_postgres_is_down_the_api_answers_503_in_its_error_shape_with_retry_after(
    outcome: Outcome,
) -> None:
    answers = [answer for answer in outcome.while_down if answer.path != "/healthz"]
    assert answers
    for answer in answers:
        assert (answer.status, answer.content_type) == (503, "application/json"), answer
        assert answer.retry_after is not None and answer.retry_after.isdigit(), answer
        error = answer.json()["error"]
        assert error["code"] == "service_unavailable" and error["message"], answer


def test_the_first_request_after_postgres_is_back_is_answered(outcome: Outcome) -> None:
    assert outcome.first_answer_after.status == 200, outcome.first_answer_after
