"""Start, stop and read the logs of the processes a test runs: every harness in tests/support uses these.

Each process starts in a session of its own, so stopping it reaches its whole group (pool children,
workers it spawned) and nothing outlives the test.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
LOG_TAIL_CHARS = 6000


def spawn(command: list[str], *, log_path: Path, **popen: Any) -> subprocess.Popen[bytes]:
    """Start `command` in its own process group, its output appended to `log_path`."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **popen
        )


def stop_group(process: subprocess.Popen[bytes] | None, *, grace: float = 10.0) -> None:
    """SIGTERM the process's group, wait up to `grace` seconds, then SIGKILL whatever is left."""
    if process is None:
        return
    _signal_group(process, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace)
    kill_group(process)


def kill_group(process: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL the process's whole group at once, as a crashed host would, and reap it."""
    if process is None:
        return
    _signal_group(process, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


def log_tails(*paths: Path) -> str:
    """The end of each log that exists, headed by its name, for assertion messages."""
    return "\n".join(f"==== {path.name}\n{_tail(path)}" for path in paths if path.exists())


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-LOG_TAIL_CHARS:]


def _signal_group(process: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


@contextlib.contextmanager
def sigint_ignored() -> Iterator[None]:
    """SIGINT ignored in this process meanwhile, so a child started now inherits it ignored, as a shell
    without job control starts a background job."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
