"""Runs the web process as the image does (`gunicorn --config gunicorn.conf.py studio.wsgi:application`) for
a test, with the environment the test gives it, on a free loopback port.

    with WebServer(env={"DATABASE_URL": ..., ...}, workdir=tmp_path) as web:
        requests.get(f"{web.url}/healthz")

gunicorn runs in its own process group; `stop()` sends SIGTERM to the group, then SIGKILL, and waits, so
neither the arbiter nor a worker outlives the test.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.ports import free_port, wait_for_port
from tests.support.processes import REPO_ROOT, log_tails, spawn, stop_group

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
        self.process = spawn(command, log_path=self.log_path, cwd=REPO_ROOT, env=environment)
        try:
            wait_for_port(self.port, timeout=timeout)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"gunicorn did not listen in {timeout}s:\n{self.logs()}") from None
        return self

    def stop(self) -> None:
        stop_group(self.process)
        self.process = None

    def logs(self) -> str:
        return log_tails(self.log_path, self.workdir / "access.log")

    def __enter__(self) -> WebServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
