"""The pod of `manage.py demo --pod`: AI Toolkit's UI, as our stand-in (`runpod_worker.local_ai_toolkit_ui`,
simulated trainer), run as one more demo process, registered as a pod and trained on beside the serverless
run.

The stand-in listens on loopback only, with a token made once and kept in var/demo/pod-token, as the real
UI is given its AI_TOOLKIT_AUTH (ui/src/middleware.ts at 27a03a91). It is registered through
`manage.py pod_register` run with the demo processes' environment, because the token is stored encrypted
under the site's SECRET_KEY (training/pod_secrets.py), and the demo's processes run with a key of their
own that this process does not have. The studio imports no app, so the pod run is trained through
`train_character` too, in a thread: its lines are kept until the serverless run's report is on the
console, where two progress bars would mix.
"""

from __future__ import annotations

import io
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connections

DEMO_POD = "demo-pod"
DEMO_POD_CHARACTER = "Demo character (pod)"
DEMO_POD_TRIGGER = "ohwx_demo_pod"
# The UI has no webhooks: a pod run moves only when polled. On loopback a poll costs nothing, so the demo
# reads the pod every 2 s (production: TRAINING_POD_POLL_SECONDS, 10 s) and the sweep that notices a
# poll is due runs as often (production: 15 s); otherwise the pod run's page would move in 15 s jumps.
POD_POLL_SECONDS = "2"
REGISTER_TIMEOUT_SECONDS = 120


def pod_url(options: dict[str, Any]) -> str:
    return f"http://127.0.0.1:{options['pod_port']}"


def pod_environment(demo_dir: Path, options: dict[str, Any], *, token_file: Path) -> dict[str, str]:
    """What the demo's processes add for the pod: the stand-in's port, folder and token file
    (Procfile.demo), and the quicker polls."""
    return {
        "DEMO_POD_PORT": str(options["pod_port"]),
        "DEMO_POD_ROOT": str(demo_dir / "pod"),
        "DEMO_POD_TOKEN_FILE": str(token_file),
        "TRAINING_POD_POLL_SECONDS": POD_POLL_SECONDS,
        "TRAINING_SWEEP_INTERVAL_SECONDS": POD_POLL_SECONDS,
    }


def pod_health_check(options: dict[str, Any], *, token: str) -> tuple[str, dict[str, str]]:
    """`GET /api/auth` answers 200 only past the UI's token check (`ui/src/app/api/auth/route.ts`): the UI
    is up, and it is ours."""
    return f"{pod_url(options)}/api/auth", {"Authorization": f"Bearer {token}"}


def pod_registration(
    options: dict[str, Any], *, token_file: Path, environment: dict[str, str]
) -> subprocess.Popen[str]:
    """Starts registering the stand-in as the pod `demo-pod` (again, at its address of this demo). It only
    writes the pod's row, so it runs while the demo's processes start."""
    command = [
        sys.executable, "manage.py", "pod_register", DEMO_POD,
        "--url", pod_url(options), "--token-file", str(token_file),
    ]  # fmt: skip
    return subprocess.Popen(
        command,
        cwd=settings.BASE_DIR,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def pod_registered(registration: subprocess.Popen[str]) -> str:
    """What `pod_register` said once it is done. Raises CommandError when it could not register the pod."""
    try:
        said, errors = registration.communicate(timeout=REGISTER_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired as error:
        registration.kill()
        raise CommandError(f"Registering the demo pod took over {REGISTER_TIMEOUT_SECONDS} s.") from error
    if registration.returncode != 0:
        raise CommandError(f"The demo pod could not be registered: {errors.strip()[-2000:]}")
    return said.strip()


# How long the console waits for the pod run once the serverless one has ended (a stuck stand-in must not
# hold back the welcome for train_character's default of 6 h).
POD_RUN_WAIT_SECONDS = 1800


class PodRun:
    """`train_character --provider pod --wait` at verbosity 0 (no progress bar) in a thread; its lines are
    kept for the console until the run has ended and been reported."""

    def __init__(self, train_arguments: list[str]) -> None:
        self.output = io.StringIO()
        self.error = ""
        self._thread = threading.Thread(
            target=self._train, args=(train_arguments,), name="demo-pod-run", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def running(self) -> bool:
        return self._thread.is_alive()

    def wait(self) -> list[str]:
        """Its lines once it has ended (train_character's own --timeout bounds the wait)."""
        self._thread.join()
        return self.output.getvalue().splitlines()

    def _train(self, train_arguments: list[str]) -> None:
        try:
            call_command(
                "train_character",
                *train_arguments,
                "--provider", "pod",
                "--wait",
                # The console waits at most this long for it before the welcome; its page follows it on.
                "--timeout", str(POD_RUN_WAIT_SECONDS),
                verbosity=0,
                stdout=self.output,
                stderr=self.output,
            )  # fmt: skip
        except CommandError as error:
            self.error = str(error)
        except Exception as error:  # said on the console, not lost with the thread
            self.error = f"{type(error).__name__}: {error}"
        finally:
            connections.close_all()  # this thread's own connections
