"""Fixtures for the worker's tests: a real S3 server, images in it, and a stand-in backend callback."""

from __future__ import annotations

import hashlib
import io
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.support.s3server import S3Server

BUCKET = "worker-tests"


@pytest.fixture(scope="session")
def worker_s3(s3_server: S3Server) -> S3Server:
    # One SeaweedFS per test run: the shared session server from tests/conftest.py, with our own bucket.
    s3_server.create_bucket(BUCKET)
    return s3_server


def jpeg_bytes(seed: int, size: int = 64) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (seed * 37 % 256, seed * 91 % 256, 120)).save(buffer, "JPEG")
    return buffer.getvalue()


@dataclass
class Bucket:
    server: S3Server
    prefix: str

    def put(self, key: str, data: bytes) -> str:
        self.server.client().put_object(Bucket=BUCKET, Key=f"{self.prefix}/{key}", Body=data)
        return self.get_url(key)

    def get_url(self, key: str, expires: int = 600) -> str:
        return self.server.client().generate_presigned_url(
            "get_object", Params={"Bucket": BUCKET, "Key": f"{self.prefix}/{key}"}, ExpiresIn=expires
        )

    def put_url(self, key: str, expires: int = 600) -> str:
        return self.server.client().generate_presigned_url(
            "put_object", Params={"Bucket": BUCKET, "Key": f"{self.prefix}/{key}"}, ExpiresIn=expires
        )

    def read(self, key: str) -> bytes:
        return self.server.client().get_object(Bucket=BUCKET, Key=f"{self.prefix}/{key}")["Body"].read()

    def stored(self) -> list[str]:
        listing = self.server.client().list_objects_v2(Bucket=BUCKET, Prefix=f"{self.prefix}/")
        return sorted(item["Key"][len(self.prefix) + 1 :] for item in listing.get("Contents", []))


@pytest.fixture
def bucket(worker_s3: S3Server, request: pytest.FixtureRequest) -> Bucket:
    return Bucket(worker_s3, request.node.name.replace("[", "-").replace("]", ""))


def image_entry(
    bucket: Bucket, index: int, data: bytes | None = None, caption: str | None = None
) -> dict[str, Any]:
    data = jpeg_bytes(index) if data is None else data
    filename = f"img{index:02d}.jpg"
    return {
        "url": bucket.put(f"images/{filename}", data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "filename": filename,
        "caption": caption,
    }


@dataclass
class FakeBackend:
    """Stands where the studio's worker-callback view stands; `decide` chooses each answer."""

    url: str
    token: str
    events: list[dict[str, Any]] = field(default_factory=list)
    auth_headers: list[str] = field(default_factory=list)
    decide: Callable[[dict[str, Any], list[dict[str, Any]]], dict[str, Any]] = lambda event, seen: {
        "action": "continue"
    }

    def callback(self) -> dict[str, str]:
        return {"url": self.url, "token": self.token}

    def of(self, event: str) -> list[dict[str, Any]]:
        return [item for item in self.events if item["event"] == event]


@pytest.fixture
def fake_backend() -> Iterator[FakeBackend]:
    lock = threading.Lock()
    backend = FakeBackend(url="", token="callback-secret-token")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with lock:
                backend.auth_headers.append(self.headers.get("Authorization", ""))
                answer = backend.decide(body, list(backend.events))
                backend.events.append(body)
            payload = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    backend.url = f"http://127.0.0.1:{server.server_address[1]}/api/worker/callback"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield backend
    server.shutdown()
    server.server_close()


@pytest.fixture
def golden_dir() -> Path:
    return Path(__file__).parent / "golden"


# A running AI Toolkit UI stand-in with a dataset, and the studio's client for it.
from tests.runpod_worker.ui_pod import ui_pod  # noqa: E402, F401
