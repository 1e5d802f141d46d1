"""Runs a real `celery -A studio worker` (with its embedded beat) as a subprocess for a test.

    with CeleryWorker(env={"DATABASE_URL": ..., "REDIS_URL": ...}, workdir=tmp_path) as worker:
        ...                       # tasks queued by the test run in that process
        worker.kill()             # SIGKILL the whole process group, as a crashed host would
        worker.start()            # a fresh worker picks up from there

The worker runs in its own process group; `stop()` sends SIGTERM to the group, then SIGKILL, and waits,
so no worker, pool child or beat process outlives the test.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tests.support.processes import REPO_ROOT, kill_group, log_tails, spawn, stop_group

# Modules every test worker imports before it forks: the face engine's answers shared with the test run.
INCLUDED = ("tests.support.face_memo_in_worker",)


def _with_includes(args: list[str]) -> list[str]:
    """`args` with every `--include=` merged into one: Celery takes one comma-separated list, and of
    several `--include` options only the last."""
    includes = [*INCLUDED, *(arg.split("=", 1)[1] for arg in args if arg.startswith("--include="))]
    return [f"--include={','.join(includes)}", *(arg for arg in args if not arg.startswith("--include="))]


class CeleryWorker:
    def __init__(
        self, *, env: dict[str, str], workdir: Path, concurrency: int = 2, beat: bool = True
    ) -> None:
        self.env = env
        self.workdir = Path(workdir)
        self.concurrency = concurrency
        self.beat = beat
        # e.g. ["--include=module"]: a test's fault hooks, imported by the worker before it forks.
        self.extra_args: list[str] = []
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def log_path(self) -> Path:
        return self.workdir / f"celery-{self.starts}.log"

    def start(self, *, timeout: float = 30.0, wait_ready: bool = True) -> CeleryWorker:
        """Starts the worker and waits until it says it is ready; `wait_ready=False` for a worker a fault
        hook kills in a task its beat sends at once, which may die before it has said so."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        command = [
            sys.executable, "-m", "celery", "-A", "studio", "worker",
            "--loglevel=INFO", f"--concurrency={self.concurrency}", "--pool=prefork",
            f"--hostname=test-{os.getpid()}-{self.starts}@%h", "--without-gossip", "--without-mingle",
        ]  # fmt: skip
        command += _with_includes(self.extra_args)
        if self.beat:
            command += ["--beat", f"--schedule={self.workdir / 'beat-schedule'}"]
        environment = {**os.environ, **self.env, "STUDIO_VAR_DIR": str(self.workdir / "var")}
        self.process = spawn(command, log_path=self.log_path, cwd=REPO_ROOT, env=environment)
        if wait_ready:
            self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"the Celery worker exited at start:\n{self.logs()}")
            if b" ready." in self.log_path.read_bytes():
                return
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"the Celery worker was not ready in {timeout}s:\n{self.logs()}")

    def kill(self) -> None:
        """SIGKILL the worker and its children at once: no shutdown, no acknowledgements."""
        kill_group(self.process)
        self.process = None

    def stop(self) -> None:
        # Pool children and beat share the group; whatever outlasts SIGTERM gets SIGKILL.
        stop_group(self.process)
        self.process = None

    def logs(self) -> str:
        return log_tails(*(self.workdir / f"celery-{index}.log" for index in range(1, self.starts + 1)))

    def __enter__(self) -> CeleryWorker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
