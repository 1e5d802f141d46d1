"""The processes of `make demo`, kept running: each line of `Procfile.demo` is started in a process group of
its own with its output in `var/demo/logs/<name>.log`, and one that stops while the demo runs is started
again, saying so on the demo's console. One that keeps stopping (more than `MAX_RESTARTS` times within
`RESTART_WINDOW_SECONDS`) is left stopped and the console says which and where its log is, while the others
go on: the demo never stops the site without a word.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

MAX_RESTARTS = 5
RESTART_WINDOW_SECONDS = 300.0
LABELS = {
    "web": "web app",
    "worker": "Celery worker",
    "beat": "Celery beat",
    "runpod": "local RunPod",
    "pod": "local AI Toolkit UI",
}


def read_procfile(path: Path) -> dict[str, str]:
    """`name: command` lines (comments and blank lines skipped), in order."""
    commands: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, command = line.partition(":")
            commands[name.strip()] = command.strip()
    return commands


@dataclass
class Supervised:
    name: str
    command: str
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    restarts: list[float] = field(default_factory=list)
    given_up: bool = False

    @property
    def label(self) -> str:
        return LABELS.get(self.name, self.name)


class Supervisor:
    """Starts the demo's processes, restarts any that stops, and stops them all on request."""

    def __init__(
        self,
        commands: dict[str, str],
        *,
        env: dict[str, str],
        cwd: Path,
        logs: Path,
        say: Callable[[str], None],
    ) -> None:
        self.env = env
        self.cwd = cwd
        self.say = say
        self.processes = [
            Supervised(name, command, logs / f"{name}.log") for name, command in commands.items()
        ]

    def start(self) -> None:
        for supervised in self.processes:
            self._spawn(supervised)

    def check(self) -> None:
        """Restart every process that has stopped since the last check (called every half second)."""
        for supervised in self.processes:
            process = supervised.process
            if supervised.given_up or process is None or process.poll() is None:
                continue
            self._stopped(supervised, process.returncode)

    def watch(self, done: threading.Event, *, interval: float = 0.5) -> None:
        """Keep every process running until `done` is set (run in a thread beside the demo's own work)."""
        while not done.wait(interval):
            self.check()

    def running(self, name: str) -> bool:
        supervised = next(item for item in self.processes if item.name == name)
        return supervised.process is not None and supervised.process.poll() is None

    def stop(self, *, grace: float = 15.0) -> None:
        """SIGTERM every group, wait up to `grace` seconds in all, then SIGKILL what is left."""
        for supervised in self.processes:
            _signal_group(supervised.process, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for supervised in self.processes:
            if supervised.process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    supervised.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            _signal_group(supervised.process, signal.SIGKILL)

    def _stopped(self, supervised: Supervised, returncode: int) -> None:
        how = f"was killed by signal {-returncode}" if returncode < 0 else f"exited with code {returncode}"
        now = time.monotonic()
        supervised.restarts = [at for at in supervised.restarts if now - at < RESTART_WINDOW_SECONDS]
        if len(supervised.restarts) >= MAX_RESTARTS:
            supervised.given_up = True
            minutes = RESTART_WINDOW_SECONDS / 60
            self.say(
                f"!! The {supervised.label} {how} and has stopped {MAX_RESTARTS + 1} times in {minutes:.0f} "
                f"minutes, so it is left stopped; see {supervised.log_path}. The rest of the demo keeps "
                "running; press Ctrl-C and start `make demo` again once it is fixed."
            )
            return
        supervised.restarts.append(now)
        self.say(
            f"!! The {supervised.label} {how}; starting it again (restart {len(supervised.restarts)} of at "
            f"most {MAX_RESTARTS} in {RESTART_WINDOW_SECONDS / 60:.0f} minutes). Log: {supervised.log_path}"
        )
        self._spawn(supervised)

    def _spawn(self, supervised: Supervised) -> None:
        log: IO[bytes]
        with open(supervised.log_path, "ab") as log:
            # `exec` so the shell (which expands the Procfile's $VARIABLES) becomes the process itself.
            supervised.process = subprocess.Popen(
                ["/bin/sh", "-c", f"exec {supervised.command}"],
                cwd=self.cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: stopping it reaches its children too
            )


def _signal_group(process: subprocess.Popen[bytes] | None, sig: int) -> None:
    # The whole group even when its leader has ended: a child it left behind must not outlive the demo.
    if process is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)
