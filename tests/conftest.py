"""Fixtures for every suite: personas, isolated media, and the real S3 test server."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import override_settings

from studio.storage import s3_media_storage
from tests.studio.factories import UserFactory
from tests.support.s3server import S3Server, SeaweedProcess

# The face engine answers each distinct photo once per run (tests/support/face_memo.py says why);
# the live stack's broker is one session fixture for every folder (tests/support/broker.py); a flush
# Postgres aborted to break a deadlock with the stack is run again (tests/support/flush.py).
pytest_plugins = ["tests.support.face_memo", "tests.support.broker", "tests.support.flush"]

S3_TEST_BUCKET = "studio-media"
_OWN_BASETEMP = pytest.StashKey[str]()


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    # pytest's shared temporary root keeps only the newest three runs and deletes older ones,
    # which would pull the files (and the S3 server's data) out from under a suite that is still
    # running beside another one on the same machine. Each run gets a folder of its own instead.
    if config.option.basetemp is None:
        config.option.basetemp = tempfile.mkdtemp(prefix="studio-tests-")
        config.stash[_OWN_BASETEMP] = config.option.basetemp
    # Celery takes CELERY_BROKER_URL from the environment over every broker setting (celery 5.7.0
    # celery/app/utils.py:110-115): this process and every worker it starts would share that broker,
    # and a live-stack test restarting its Redis would lose nothing. The suite's broker is REDIS_URL.
    os.environ.pop("CELERY_BROKER_URL", None)


def pytest_unconfigure(config: pytest.Config) -> None:
    own = config.stash.get(_OWN_BASETEMP, None)
    if own:
        shutil.rmtree(own, ignore_errors=True)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    from tests.browser.conftest import report_browser_tests_not_run

    report_browser_tests_not_run(terminalreporter, config)


def pytest_report_header(config: pytest.Config) -> list[str]:
    database = settings.DATABASES["default"]
    engine = database["ENGINE"].rsplit(".", 1)[-1]
    where = database.get("HOST") or database["NAME"]
    broker = settings.CELERY_BROKER_URL.split("@")[-1]
    return [
        f"studio services: database={engine} {where} · broker={broker}"
        " · S3=SeaweedFS started by the test run when a test needs it",
    ]


@pytest.fixture(scope="session", autouse=True)
def fast_password_hashing() -> Iterator[None]:
    """Personas are created thousands of times; PBKDF2's deliberate cost protects nothing in tests and
    took about 0.3 s per user made or logged in. Set once for the session (`override_settings` also
    clears Django's cached hashers)."""
    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):
        yield


@pytest.fixture(autouse=True)
def isolated_media(settings: Any, tmp_path: Path) -> Path:
    """Every test writes its files under its own temporary folder."""
    media = tmp_path / "media"
    media.mkdir()
    settings.MEDIA_ROOT = str(media)
    return media


@pytest.fixture(autouse=True)
def isolated_cache(settings: Any, request: pytest.FixtureRequest) -> None:
    """Every test starts with an empty cache of its own (rate limits and cached health never leak)."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": request.node.nodeid,
        }
    }


@pytest.fixture
def alice(db: None) -> Any:
    """Owns the characters in most tests."""
    return UserFactory(username="alice")


@pytest.fixture
def bob(db: None) -> Any:
    """Another user, who must never see alice's things."""
    return UserFactory(username="bob")


@pytest.fixture
def staff(db: None) -> Any:
    return UserFactory(username="staff", is_staff=True, is_superuser=True)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3-compatible server on loopback, checking signatures, for the whole run."""
    process = SeaweedProcess(tmp_path_factory.mktemp("seaweedfs"))
    try:
        server = process.start()
        server.create_bucket(S3_TEST_BUCKET)
        yield server
    finally:
        process.stop()


@pytest.fixture
def s3_storage(settings: Any, s3_server: S3Server) -> Iterator[S3Server]:
    """Switch the media storage to the S3 test server for one test."""
    settings.STORAGES = {
        **settings.STORAGES,
        "default": s3_media_storage(
            bucket_name=S3_TEST_BUCKET,
            access_key=s3_server.access_key,
            secret_key=s3_server.secret_key,
            endpoint_url=s3_server.endpoint_url,
            region_name=s3_server.region,
        ),
    }
    yield s3_server
