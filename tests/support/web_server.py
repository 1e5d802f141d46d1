"""Runs the web process as the image does (`gunicorn --config gunicorn.conf.py studio.wsgi:application`) for
a test, with the environment the test gives it, on a free loopback port.

    with WebServer(env={"DATABASE_URL": ..., ...}, workdir=tmp_path) as web:
        requests.get(f"{web.url}/healthz")

gunicorn runs in its own process group; `stop()` sends SIGTERM to the group, then SIGKILL, and waits, so
neither the arbiter nor a worker outlives the test.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.support.ports import free_port, wait_for_port

REPO_ROOT = Path(__file__).resolve().parents[2]
APPLICATION = ["--config", "gunicorn.conf.py", "studio.wsgi:application"]  # the image's CMD


class WebServer:
    def __init__(
        self, *, env: dict[str, str], workdir: Path, workers: int = 2, port: int | None = None
    ) -> None:
        self.env = env
        self.workdir = Path(workdir)
        self.workers = workers
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "gunicorn.log"

    def start(self, *, timeout: float = 30.0) -> WebServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "gunicorn", *APPLICATION]
        environment = {
            **os.environ,
            **self.env,
            "GUNICORN_BIND": f"127.0.0.1:{self.port}",
            "WEB_CONCURRENCY": str(self.workers),
            "GUNICORN_ACCESS_LOG": str(self.workdir / "access.log"),
        }
        log = open(self.log_path, "ab")  # noqa: SIM115 - the process owns it
        self.process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        log.close()
        try:
            wait_for_port(self.port, timeout=timeout)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"gunicorn did not listen in {timeout}s:\n{self.logs()}") from None
        return self

    def stop(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        self.process = None

    def logs(self) -> str:
        parts = []
        for path in (self.log_path, self.workdir / "access.log"):
            if path.exists():
                parts.append(f"==== {path.name}\n{path.read_text(errors='replace')[-6000:]}")
        return "\n".join(parts)

    def __enter__(self) -> WebServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
