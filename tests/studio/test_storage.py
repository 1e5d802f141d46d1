"""The bucket client's bounds: every call to S3 has a timeout and a bounded number of retries."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ReadTimeoutError
from botocore.loaders import JSONFileLoader
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from storages.backends.s3 import S3Storage

from studio import storage as studio_storage
from studio.storage import s3_media_storage


def test_the_media_storage_client_has_the_studios_timeouts_and_retries(s3_storage: Any) -> None:
    config = default_storage.connection.meta.client.meta.config

    assert (config.connect_timeout, config.read_timeout) == (
        studio_storage.S3_CONNECT_TIMEOUT,
        studio_storage.S3_READ_TIMEOUT,
    )
    assert config.retries == {"total_max_attempts": studio_storage.S3_MAX_ATTEMPTS, "mode": "standard"}
    assert (config.signature_version, config.s3) == ("s3v4", {"addressing_style": "path"})


def test_files_round_trip_through_the_configured_client(s3_storage: Any) -> None:
    name = default_storage.save("checks/round-trip.txt", ContentFile(b"kept"))

    with default_storage.open(name, "rb") as handle:
        assert handle.read() == b"kept"
    default_storage.delete(name)


def test_a_new_thread_opens_its_own_connection_without_reading_botocores_data_files_again(
    s3_storage: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # django-storages opens a connection per thread (boto3 resources are not thread-safe), and a threaded
    # server starts a thread per request: each would parse the S3 model and endpoint data (JSON) again.
    connections: list[Any] = []

    def connect() -> None:
        connections.append(default_storage.connection)

    first = threading.Thread(target=connect)
    first.start()
    first.join()
    reads: list[str] = []
    load_file = JSONFileLoader.load_file

    def counted(loader: JSONFileLoader, path: str) -> Any:
        reads.append(path)
        return load_file(loader, path)

    monkeypatch.setattr(JSONFileLoader, "load_file", counted)

    second = threading.Thread(target=connect)
    second.start()
    second.join()

    assert connections[0] is not connections[1]
    assert reads == []
    assert connections[1].meta.client.meta.config.read_timeout == studio_storage.S3_READ_TIMEOUT


def test_the_shared_loader_does_not_grow_with_each_threads_session(s3_storage: Any) -> None:
    # boto3.Session adds its own data folder to its loader's search paths as it starts (boto3/session.py
    # `_setup_loader`): once per thread's session, with one loader for the process.
    def connect() -> None:
        assert default_storage.connection is not None

    for _ in range(2):
        thread = threading.Thread(target=connect)
        thread.start()
        thread.join()
    before = list(studio_storage._BOTOCORE_LOADER.search_paths)

    for _ in range(5):
        thread = threading.Thread(target=connect)
        thread.start()
        thread.join()

    assert studio_storage._BOTOCORE_LOADER.search_paths == before


@pytest.fixture
def silent_bucket() -> Iterator[str]:
    """An endpoint that takes connections and never answers, like a bucket behind a stalled proxy: the
    kernel completes each connection into the listening socket's backlog, and nothing reads it."""
    with socket.create_server(("127.0.0.1", 0), backlog=16) as server:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


def test_a_bucket_that_never_answers_fails_the_call_within_the_read_timeout_and_retries(
    silent_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(studio_storage, "S3_READ_TIMEOUT", 1)
    monkeypatch.setattr(studio_storage, "S3_MAX_ATTEMPTS", 2)
    options = s3_media_storage(
        bucket_name="media",
        access_key="key",
        secret_key="secret",
        endpoint_url=silent_bucket,
        region_name="us-east-1",
    )["OPTIONS"]
    bucket = S3Storage(**options)

    began = time.monotonic()
    with pytest.raises(ReadTimeoutError):
        bucket.exists("characters/1/images/a.jpg")

    # Two attempts of one second each, plus the standard mode's jittered backoff (under a second here).
    assert time.monotonic() - began < 10
