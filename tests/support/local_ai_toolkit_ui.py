"""Starts the AI Toolkit UI stand-in (`python -m runpod_worker.local_ai_toolkit_ui`) as a pod for a test.

    ui = LocalAIToolkitUI(workdir=tmp_path, token="pod-token").start()
    ui.control("faults", {"stick_next_job": 1})    # the stand-in's fault switches
    ui.stop()

SIGTERM makes the stand-in kill the trainers it launched (each in a session of its own) before it exits.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import requests

from tests.support.ports import free_port, wait_for_port
from tests.support.processes import REPO_ROOT, log_tails, spawn, stop_group
from training.aitoolkit import AIToolkitClient


class LocalAIToolkitUI:
    def __init__(self, *, workdir: Path, token: str, env: dict[str, str] | None = None) -> None:
        self.workdir = Path(workdir)
        self.token = token
        self.env = dict(env or {})
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def root(self) -> Path:
        return self.workdir / "toolkit"

    @property
    def log_path(self) -> Path:
        return self.workdir / "aitk-ui.log"

    def start(self) -> LocalAIToolkitUI:
        self.workdir.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "runpod_worker.local_ai_toolkit_ui", "--root", str(self.root),
                   "--port", str(self.port), "--token", self.token]  # fmt: skip
        environment = {**os.environ, **self.env}
        self.process = spawn(command, log_path=self.log_path, cwd=REPO_ROOT, env=environment)
        wait_for_port(self.port, timeout=30)
        return self

    def stop(self) -> None:
        stop_group(self.process)

    def client(self) -> AIToolkitClient:
        return AIToolkitClient(
            base_url=self.url, token=self.token, timeout_seconds=10.0, backoff_seconds=0.05
        )

    def control(self, path: str, body: dict[str, Any] | None = None) -> Any:
        response = requests.post(
            f"{self.url}/_control/{path}",
            json=body or {},
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=10,
        )
        response.raise_for_status()
        return response.json()

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = self.control("state")
        return state

    def logs(self) -> str:
        return log_tails(self.log_path)
