"""Secrets stay secret (responses, logs, job input), links expire, headers are set, log-in is limited.

The secrets: the RunPod API key, API tokens, webhook signing secrets, the bucket's secret key, the
per-run callback token and Django's SECRET_KEY. Only the job input of a run may carry that run's own
callback token, and only the response that created an API token or a webhook secret may show it.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import responses
import time_machine
from django.conf import settings as django_settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from studio import transfer
from studio.celery import app
from studio.log_redaction import REDACTED
from tests.characters.images import distinct_jpegs
from tests.developer.api_helpers import api_isolation
from tests.support.ports import free_port, wait_for_port
from training.models import TrainingRun
from training.tokens import run_token

__all__ = ["api_isolation"]

pytestmark = pytest.mark.django_db

RUNPOD_KEY = "rpa_SECRET_RUNPOD_KEY_" + "7" * 24


@pytest.fixture
def runpod(settings: Any) -> Any:
    """RunPod's job API at one seam (the HTTP client), answering like the real one."""
    settings.RUNPOD_API_KEY = RUNPOD_KEY
    settings.RUNPOD_API_BASE = "https://api.runpod.test/v2"
    settings.RUNPOD_ENDPOINT_ID = "endpoint"
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.post("https://api.runpod.test/v2/endpoint/run", json={"id": "job-1", "status": "IN_QUEUE"})
        mock.get(
            "https://api.runpod.test/v2/endpoint/status/job-1", json={"id": "job-1", "status": "IN_PROGRESS"}
        )
        yield mock


@pytest.fixture
def eager_tasks() -> Any:
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = False


def test_no_secret_reaches_a_response_a_log_or_the_job_input_in_a_whole_flow(
    alice: Any,
    bob: Any,
    s3_storage: Any,
    runpod: Any,
    eager_tasks: None,
    settings: Any,
    caplog: pytest.LogCaptureFixture,
    django_capture_on_commit_callbacks: Any,
) -> None:
    settings.TRAINING_MIN_IMAGES = 3
    settings.WEBHOOKS_ALLOW_PRIVATE_URLS = True
    caplog.set_level(logging.DEBUG)
    session = Client()
    session.force_login(alice)
    bodies: list[str] = []

    def keep(response: Any) -> Any:
        bodies.append(response.content.decode(errors="replace"))
        return response

    created_token = session.post("/api/v1/tokens", {"name": "ci"}, content_type="application/json")
    raw_token = created_token.json()["token"]
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_token}")
    created_hook = api.post("/api/v1/webhooks", {"url": "http://127.0.0.1:9/hook"}, format="json")
    hook_secret = created_hook.json()["secret"]
    character = keep(
        api.post("/api/v1/characters", {"name": "Anna", "trigger_word": "ohwx_anna"}, format="json")
    )
    character_id = character.json()["id"]
    keep(api.put(f"/api/v1/characters/{character_id}/consent", {"basis": "self"}, format="json"))
    files = [
        SimpleUploadedFile(f"{i}.jpg", content, "image/jpeg") for i, content in enumerate(distinct_jpegs(3))
    ]
    keep(api.post(f"/api/v1/characters/{character_id}/images", {"files": files}, format="multipart"))
    with django_capture_on_commit_callbacks(execute=True):
        started = keep(api.post(f"/api/v1/characters/{character_id}/runs", {"preset": "fast"}, format="json"))
    run = TrainingRun.objects.get(pk=started.json()["id"])
    token = run_token(run.pk)
    [submitted] = [call.request for call in runpod.calls if call.request.url.endswith("/run")]
    body = json.loads(submitted.body)
    job_input = json.dumps(body["input"])

    callback = reverse("training:worker-callback", args=[run.pk])
    worker = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    keep(worker.post(callback, {"event": "started", "job_id": "job-1"}, content_type="application/json"))
    progress = {"event": "progress", "job_id": "job-1", "step": 5, "total_steps": 600, "loss": 0.3}
    keep(worker.post(callback, progress, content_type="application/json"))
    hook = reverse("training:runpod-webhook", args=[run.pk, token])
    keep(Client().post(hook, "{not json", content_type="application/json"))  # logged as a bad request
    keep(
        Client().post(
            reverse("training:runpod-webhook", args=[run.pk, "guessed"]),
            "{}",
            content_type="application/json",
        )
    )
    keep(Client().get(reverse("transfer", args=["forged-token"])))
    for path in (
        "/api/v1/me",
        f"/api/v1/runs/{run.pk}",
        "/api/v1/runs",
        "/api/v1/tokens",
        "/api/v1/webhooks",
        f"/api/v1/characters/{character_id}/images",
    ):
        keep(api.get(path))
    for path in (
        reverse("characters:detail", args=[character_id]),
        reverse("developer:tokens"),
        reverse("developer:webhooks"),
    ):
        keep(session.get(path))

    secrets = {
        "RunPod API key": RUNPOD_KEY,
        "API token": raw_token,
        "webhook secret": hook_secret,
        "bucket secret key": s3_storage.secret_key,
        "run token": token,
        "SECRET_KEY": django_settings.SECRET_KEY,
    }
    assert submitted.headers["Authorization"] == f"Bearer {RUNPOD_KEY}"  # the key goes to RunPod only
    assert body["input"]["callback"]["token"] == token
    for label, secret in secrets.items():
        assert secret not in caplog.text, f"the {label} was logged"
        for index, text in enumerate(bodies):
            assert secret not in text, f"the {label} is in response {index}"
        if label != "run token":
            assert secret not in job_input, f"the {label} is in the job input"
    assert job_input.count(token) == 1, "the run token appears only as the callback token"
    assert run_token(uuid.uuid4()) not in job_input
    assert f"/hooks/runpod/{run.pk}/{REDACTED}" in caplog.text  # the bad request was logged, redacted
    # Shown once: the token and the secret appear in their creation responses and nowhere after.
    assert raw_token in created_token.content.decode() and hook_secret in created_hook.content.decode()


# --- Access logs ----------------------------------------------------------------------------------------


def test_runservers_access_log_keeps_neither_run_tokens_nor_transfer_tokens(
    capsys: pytest.CaptureFixture[str],
) -> None:
    run_id, token = uuid.uuid4(), "f" * 64
    server_logger = logging.getLogger("django.server")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    server_logger.addHandler(handler)
    try:
        server_logger.info('"%s" %s %s', f"POST /hooks/runpod/{run_id}/{token} HTTP/1.1", "200", "17")
        server_logger.info('"%s" %s %s', "GET /transfer/eyJuIjoi.secret:sig HTTP/1.1", "200", "9")
    finally:
        server_logger.removeHandler(handler)
    written = stream.getvalue()
    assert token not in written and "eyJuIjoi.secret:sig" not in written
    assert f"/hooks/runpod/{run_id}/{REDACTED}" in written and f"/transfer/{REDACTED}" in written


def test_gunicorns_access_log_keeps_neither_run_tokens_nor_transfer_tokens(
    tmp_path: Path, django_db_setup: Any
) -> None:
    port = free_port()
    access_log = tmp_path / "access.log"
    database = django_settings.DATABASES["default"]
    env = {
        **os.environ,
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "WEB_CONCURRENCY": "1",
        "GUNICORN_ACCESS_LOG": str(access_log),
    }
    if database["ENGINE"].endswith("postgresql"):
        env["DATABASE_URL"] = (
            f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']}"
        )
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py", "studio.wsgi:application"],
        cwd=django_settings.BASE_DIR,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, timeout=30)
        run_id, token = uuid.uuid4(), "a" * 64
        base = f"http://127.0.0.1:{port}"
        requests.post(f"{base}/hooks/runpod/{run_id}/{token}", data="{}", timeout=10)
        requests.get(f"{base}/transfer/eyJuIjoi.transfer-secret:sig?x=1", timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and access_log.read_text().count("\n") < 2:
            time.sleep(0.1)
    finally:
        process.terminate()
        process.wait(timeout=15)
    written = access_log.read_text()
    assert written.count("\n") >= 2, written
    assert token not in written and "transfer-secret" not in written
    assert f"/hooks/runpod/{run_id}/{REDACTED}" in written and f"/transfer/{REDACTED}" in written


# --- Links expire ---------------------------------------------------------------------------------------


def test_a_signed_transfer_link_expires(client: Client, settings: Any) -> None:
    settings.PUBLIC_BASE_URL = ""
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    default_storage.save("characters/x/images/a.jpg", ContentFile(b"data"))
    link = transfer.download_url("characters/x/images/a.jpg", ttl=60)
    assert client.get(link).status_code == 200
    with time_machine.travel(timedelta(seconds=61), tick=False):
        assert client.get(link).status_code == 403


def test_a_presigned_bucket_link_expires(s3_storage: Any) -> None:
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    default_storage.save("characters/x/images/b.jpg", ContentFile(b"data"))
    fresh = transfer.download_url("characters/x/images/b.jpg", ttl=60)
    assert requests.get(fresh, timeout=10).status_code == 200
    with time_machine.travel(-timedelta(hours=1), tick=True):  # signed an hour ago for 60 seconds
        stale = transfer.download_url("characters/x/images/b.jpg", ttl=60)
    assert requests.get(stale, timeout=10).status_code == 403
    upload = transfer.upload_url("characters/x/loras/c.safetensors", ttl=60)
    with time_machine.travel(-timedelta(hours=1), tick=True):
        stale_upload = transfer.upload_url("characters/x/loras/d.safetensors", ttl=60)
    assert requests.put(upload, data=b"lora", timeout=10).status_code == 200
    assert requests.put(stale_upload, data=b"lora", timeout=10).status_code == 403


# --- Headers and pages under the Content-Security-Policy -------------------------------------------------

INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>\s*\S", re.IGNORECASE)
INLINE_HANDLER = re.compile(r"<[^>]+\son[a-z]+\s*=", re.IGNORECASE)


def test_every_response_carries_the_security_headers(client: Client, alice: Any) -> None:
    client.force_login(alice)
    for path in ("/", "/characters/", "/api/v1/me", "/healthz", "/accounts/login/"):
        response = client.get(path, follow=False)
        assert response["X-Frame-Options"] == "DENY", path
        assert response["X-Content-Type-Options"] == "nosniff", path
        assert response["Referrer-Policy"] == "same-origin", path
        assert response["Cross-Origin-Opener-Policy"] == "same-origin", path
        policy = response["Content-Security-Policy"]
        assert "script-src 'self';" in policy and "frame-ancestors 'none'" in policy, path
        assert "default-src 'self'" in policy and "object-src 'none'" in policy, path


def test_the_pages_run_no_inline_script_so_the_policy_breaks_none_of_them(
    client: Client, staff: Any, settings: Any
) -> None:
    from tests.characters.factories import CharacterFactory

    client.force_login(staff)
    character = CharacterFactory(owner=staff)
    pages = [
        "/",
        "/characters/",
        f"/characters/{character.pk}/",
        "/characters/new/",
        "/developer/tokens/",
        "/developer/webhooks/",
        "/accounts/password_change/",
        "/admin/",
        "/admin/training/trainingrun/",
        "/api/docs/",
    ]
    for path in pages:
        response = client.get(path, follow=True)
        assert response.status_code == 200, path
        page = response.content.decode()
        assert not INLINE_SCRIPT.search(page), f"{path} has an inline script the policy would block"
        assert not INLINE_HANDLER.search(page), f"{path} has an inline event handler the policy would block"
    script = client.get("/api/docs/?script=")
    assert script.status_code == 200 and "javascript" in script["Content-Type"]


# --- Log-in is rate-limited ------------------------------------------------------------------------------


def test_the_eleventh_failed_log_in_locks_out_even_the_right_password(client: Client, alice: Any) -> None:
    for _ in range(10):
        client.post(reverse("login"), {"username": "alice", "password": "wrong"})
    response = client.post(
        reverse("login"), {"username": "alice", "password": "correct horse battery staple"}
    )
    assert "_auth_user_id" not in client.session
    assert response.status_code in {403, 429}
