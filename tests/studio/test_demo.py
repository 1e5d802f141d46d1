from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from studio.management.commands.demo import SESSION_VARIABLE, processes_of_session
from tests.support.ports import free_port

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def test_the_demo_trains_its_character_and_stops_every_process_on_ctrl_c(tmp_path: Path) -> None:
    session = uuid.uuid4().hex
    # The embedded default, in a folder of its own: SQLite, the file-system broker, local files.
    environment = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    environment.update({"STUDIO_VAR_DIR": str(tmp_path / "var"), SESSION_VARIABLE: session})
    command = [
        sys.executable, "manage.py", "demo", "--port", str(free_port()), "--runpod-port", str(free_port()),
        "--photos", "10", "--steps", "100", "--seconds-per-step", "0.02",
    ]  # fmt: skip
    demo = subprocess.Popen(
        command, cwd=REPO, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(demo.stdout or []), daemon=True)
    reader.start()
    try:
        wait_for(lambda: any("Press Ctrl-C" in line for line in lines), timeout=240, what=lines)
    finally:
        demo.send_signal(signal.SIGINT)
        demo.wait(timeout=60)
        reader.join(timeout=5)

    output = "".join(lines)
    lora = Path(re.search(r"LoRA: (\S+)", output).group(1))  # type: ignore[union-attr]
    sha256 = re.search(r"SHA-256: ([0-9a-f]{64})", output).group(1)  # type: ignore[union-attr]
    assert lora.is_relative_to(tmp_path)
    assert hashlib.sha256(lora.read_bytes()).hexdigest() == sha256
    assert "Every demo process has stopped." in output
    assert demo.returncode == 0
    assert processes_of_session(session) == []


def wait_for(condition: object, *, timeout: float, what: list[str]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("the demo did not get there in time:\n" + "".join(what[-40:]))
        time.sleep(0.5)
