"""The demo stops on Ctrl-C and on SIGTERM even when started with SIGINT ignored, as a shell without job
control starts a background job (`make demo &`). Without that, Python never turns SIGINT into
KeyboardInterrupt and the demo's `finally`, which stops every process it started, never runs.

A small Python process stands in for the demo's main loop: it calls `stop_on_interrupt`, says it is ready,
sleeps as the demo does, and prints what ended it.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import sigint_ignored

REPO = Path(__file__).resolve().parents[2]
MAIN_LOOP = """
import os, signal, sys, time
import django
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studio.settings")
django.setup()
assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
from studio.management.commands.demo import stop_on_interrupt
stop_on_interrupt()
try:
    print("ready", flush=True)
    time.sleep(60)
except KeyboardInterrupt:
    print("stopping every process", flush=True)
"""


@pytest.mark.parametrize("sent", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_the_demo_runs_its_stop_on_ctrl_c_and_sigterm_though_started_with_sigint_ignored(sent: int) -> None:
    with sigint_ignored():
        child = subprocess.Popen(
            [sys.executable, "-c", MAIN_LOOP], cwd=REPO, stdout=subprocess.PIPE, text=True
        )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"

        child.send_signal(sent)
        output, _ = child.communicate(timeout=30)
    finally:
        child.kill()

    assert output.strip() == "stopping every process"
    assert child.returncode == 0
