"""`make demo` as a new user meets it: it trains its character, serves the studio's own pages with DEBUG off,
takes several "Start training" at once, starts a crashed worker again and says so, and Ctrl-C stops it all.
It runs with `--pod`, so a second character trains at the same time on the AI Toolkit UI stand-in.

One demo runs for the whole module (starting it takes most of a minute); the tests use it in order and the
last one stops it. Its run and the runs started through the site train at rank 4, and its simulated trainer
writes the first two blocks of each LoRA (`LIGHT_LORA`): every save is still hashed, uploaded and verified,
and what is tested here is the demo, not the size of its files.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from studio.management.commands.demo import SESSION_VARIABLE, processes_of_session
from tests.support.grouping import in_one_process
from tests.support.local_runpod import LIGHT_LORA
from tests.support.ports import free_port
from tests.support.processes import sigint_ignored

REPO = Path(__file__).resolve().parents[2]
CONCURRENT_STARTS = 4

pytestmark = [pytest.mark.integration, in_one_process(__name__)]


@dataclass
class Demo:
    process: subprocess.Popen[str]
    session: str
    var: Path
    url: str
    pod_url: str
    lines: list[str] = field(default_factory=list)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for_line(self, text: str, *, timeout: float) -> None:
        wait_for(lambda: text in self.output, timeout=timeout, what=lambda: self.output[-4000:])

    def logged_in(self) -> requests.Session:
        """A browser-like session of the demo user, logged in through the login form."""
        session = requests.Session()
        form = session.get(f"{self.url}/accounts/login/", timeout=10)
        password = (self.var / "demo" / "password").read_text().strip()
        response = session.post(
            f"{self.url}/accounts/login/",
            data={"username": "demo", "password": password, "csrfmiddlewaretoken": csrf_token(form.text)},
            timeout=10,
        )
        assert response.url == f"{self.url}/characters/", response.text[:2000]
        return session

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            # Ctrl-C lets Celery finish its tasks (warm shutdown): on two cores busy with the rest of the
            # suite that has taken over a minute.
            self.process.wait(timeout=180)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    var = tmp_path_factory.mktemp("demo") / "var"
    session = uuid.uuid4().hex
    port, pod_port = free_port(), free_port()
    # The embedded default, in a folder of its own: SQLite, the file-system broker, local files.
    environment = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    environment.update({"STUDIO_VAR_DIR": str(var), SESSION_VARIABLE: session, **LIGHT_LORA})
    command = [
        sys.executable, "manage.py", "demo", "--port", str(port), "--runpod-port", str(free_port()),
        "--steps", "150", "--seconds-per-step", "0.02", "--rank", "4", "--pod", "--pod-port", str(pod_port),
    ]  # fmt: skip
    # Started the way a shell starts a background job (`make demo &`, a CI runner without job control):
    # with SIGINT ignored, which a child inherits. Ctrl-C must stop the demo all the same.
    with sigint_ignored():
        process = subprocess.Popen(
            command, cwd=REPO, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
    running = Demo(
        process=process,
        session=session,
        var=var,
        url=f"http://127.0.0.1:{port}",
        pod_url=f"http://127.0.0.1:{pod_port}",
    )
    reader = threading.Thread(target=lambda: running.lines.extend(process.stdout or []), daemon=True)
    reader.start()
    try:
        running.wait_for_line("Press Ctrl-C", timeout=240)
        yield running
    finally:
        try:
            running.stop()
        finally:
            # Even a demo that did not stop in time leaves nothing running behind the suite.
            reader.join(timeout=5)
            for pid in processes_of_session(session):
                os.kill(pid, signal.SIGKILL)


def test_the_demo_trains_its_character(demo: Demo) -> None:
    lora = Path(re.search(r"LoRA: (\S+)", demo.output).group(1))  # type: ignore[union-attr]
    sha256 = re.search(r"SHA-256: ([0-9a-f]{64})", demo.output).group(1)  # type: ignore[union-attr]

    assert lora.is_relative_to(demo.var)
    assert hashlib.sha256(lora.read_bytes()).hexdigest() == sha256
    # Its samples turn into the portraits it trains on, so the last step's copy them: the checkpoint
    # before is chosen for its likeness, and that is the LoRA printed.
    assert "The studio chose the checkpoint at step 100" in demo.output, demo.output[-3000:]


def test_the_demo_trains_its_second_character_on_its_pod_the_ai_toolkit_ui_stand_in(demo: Demo) -> None:
    report = demo.output.split("Demo character (pod), on the pod demo-pod:\n", 1)[1]
    run_id = re.search(r"Run (\S+) completed, on pod demo-pod\.", report).group(1)  # type: ignore[union-attr]
    lora = Path(re.search(r"LoRA: (\S+)", report).group(1))  # type: ignore[union-attr]
    sha256 = re.search(r"SHA-256: ([0-9a-f]{64})", report).group(1)  # type: ignore[union-attr]

    provider, status, job_id, pod_name, pod_url = run_on_its_pod(demo, run_id)
    assert (provider, status, pod_name, pod_url) == ("pod", "completed", "demo-pod", demo.pod_url)
    # The job was made and started on the stand-in, once, and the LoRA came back from it whole.
    assert pod_state(demo)["api_calls"].get(f"/api/jobs/{job_id}/start") == 1
    assert lora.is_relative_to(demo.var)
    assert hashlib.sha256(lora.read_bytes()).hexdigest() == sha256


def test_the_demo_answers_a_missing_page_with_the_studios_own_page(demo: Demo) -> None:
    response = requests.get(f"{demo.url}/no-such-page/", timeout=10)

    assert response.status_code == 404
    assert "Page not found" in response.text and "Character LoRA Studio" in response.text
    assert "URLconf" not in response.text and "DEBUG = True" not in response.text


def test_the_demo_serves_its_static_files_with_debug_off(demo: Demo) -> None:
    response = requests.get(f"{demo.url}/static/css/studio.css", timeout=10)

    assert response.status_code == 200
    assert ".site-header" in response.text


def test_the_demo_keeps_a_post_to_a_url_without_its_slash_a_post(demo: Demo) -> None:
    session = demo.logged_in()

    response = session.post(f"{demo.url}/characters/new", data={}, allow_redirects=False, timeout=10)

    assert response.status_code == 308
    assert response.headers["Location"] == "/characters/new/"


def test_several_starts_at_once_through_the_demo_site_all_train(demo: Demo) -> None:
    photos = sorted((demo.var / "demo" / "photos").iterdir())
    owner = demo.logged_in()
    characters = [create_character(owner, demo.url, f"Concurrent {index}", photos) for index in range(4)]
    sessions = [demo.logged_in() for _ in characters]

    with ThreadPoolExecutor(max_workers=CONCURRENT_STARTS) as pool:
        pairs = zip(sessions, characters, strict=True)
        starts = [pool.submit(start_training, session, demo.url, character) for session, character in pairs]
        runs = [start.result() for start in starts]

    for run in runs:
        assert final_status(owner, demo.url, run, timeout=120) == "completed", demo_logs(demo)
    assert "Unrecoverable error" not in (demo.var / "demo" / "logs" / "worker.log").read_text()
    assert "starting it again" not in demo.output


def test_a_crashed_worker_is_started_again_and_the_console_says_so(demo: Demo) -> None:
    worker = next(pid for pid in processes_of_session(demo.session) if is_celery_worker(pid))

    os.kill(worker, signal.SIGKILL)

    demo.wait_for_line("The Celery worker was killed by signal 9; starting it again", timeout=30)
    session = demo.logged_in()
    character = re.search(r'href="/characters/([0-9a-f-]{36})/"', session.get(f"{demo.url}/characters/").text)
    run = start_training(session, demo.url, character.group(1))  # type: ignore[union-attr]
    assert final_status(session, demo.url, run, timeout=120) == "completed", demo_logs(demo)


def test_ctrl_c_stops_every_process_of_the_demo(demo: Demo) -> None:
    demo.stop()

    assert "Every demo process has stopped." in demo.output
    assert demo.process.returncode == 0
    assert processes_of_session(demo.session) == []


# --- Helpers ------------------------------------------------------------------------------------------


def csrf_token(html: str) -> str:
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)  # type: ignore[union-attr]


def create_character(session: requests.Session, base: str, name: str, photos: list[Path]) -> str:
    form = session.get(f"{base}/characters/new/", timeout=10)
    trigger = "ohwx_" + re.sub(r"\W", "", name.lower())
    created = session.post(
        f"{base}/characters/new/",
        data={"name": name, "trigger_word": trigger, "csrfmiddlewaretoken": csrf_token(form.text)},
        timeout=10,
    )
    character_id = re.search(r"/characters/([0-9a-f-]{36})/$", created.url).group(1)  # type: ignore[union-attr]
    consent_form = session.get(f"{base}/characters/{character_id}/consent/", timeout=10)
    agreed = session.post(
        f"{base}/characters/{character_id}/consent/",
        data={
            "basis": "self",
            "agree": "on",
            "wording_version": re.search(r'name="wording_version" value="([^"]+)"', consent_form.text).group(
                1
            ),  # type: ignore[union-attr]
            "csrfmiddlewaretoken": csrf_token(consent_form.text),
        },
        timeout=10,
    )
    assert agreed.status_code == 200, agreed.text[:2000]
    field_name = re.search(r'id="upload-input" type="file" name="(\w+)"', created.text).group(1)  # type: ignore[union-attr]
    files = [(field_name, (photo.name, photo.read_bytes(), "image/jpeg")) for photo in photos]
    uploaded = session.post(
        f"{base}/characters/{character_id}/images/",
        data={"csrfmiddlewaretoken": csrf_token(created.text)},
        files=files,
        timeout=60,
    )
    assert uploaded.status_code == 200, uploaded.text[:2000]
    return character_id


def start_training(session: requests.Session, base: str, character_id: str) -> str:
    form = session.get(f"{base}/characters/{character_id}/train/", timeout=10)
    # Rank 4, the smallest the studio allows: these runs are about starting and completing, and each
    # checkpoint the simulated trainer writes is a LoRA of the rank's size (16 is the preset's).
    data = {
        "preset": "fast",
        "steps": "100",
        "rank": "4",
        "confirm": "1",
        "csrfmiddlewaretoken": csrf_token(form.text),
    }
    started = session.post(f"{base}/characters/{character_id}/train/", data=data, timeout=30)
    match = re.search(r"/runs/([0-9a-f-]{36})/$", started.url)
    assert match, f"{started.status_code} {started.url}\n{started.text[:2000]}"
    return match.group(1)


def final_status(session: requests.Session, base: str, run_id: str, *, timeout: float) -> str:
    def status() -> str | None:
        run = session.get(f"{base}/runs/{run_id}/progress.json", timeout=10).json()
        return str(run["status"]) if run["is_final"] else None

    return str(wait_for(status, timeout=timeout, what=lambda: run_id))


def run_on_its_pod(demo: Demo, run_id: str) -> tuple[str, str, str, str, str]:
    """The run's provider, status and job id, and its pod's name and UI address, from the demo's database."""
    database = sqlite3.connect(f"file:{demo.var / 'studio.sqlite3'}?mode=ro", uri=True)
    try:
        row = database.execute(
            "SELECT r.provider, r.status, r.runpod_job_id, p.name, p.ui_url FROM training_trainingrun r"
            " JOIN training_pod p ON p.id = r.pod_id WHERE r.id = ?",
            (uuid.UUID(run_id).hex,),
        ).fetchone()
    finally:
        database.close()
    assert row is not None, run_id
    return tuple(row)  # type: ignore[return-value]


def pod_state(demo: Demo) -> dict[str, Any]:
    """The stand-in's own record of the calls it answered (`GET /_control/state`, behind the pod's token)."""
    token = (demo.var / "demo" / "pod-token").read_text().strip()
    response = requests.get(
        f"{demo.pod_url}/_control/state", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    response.raise_for_status()
    return dict(response.json())


def is_celery_worker(pid: int) -> bool:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"celery" in b" ".join(command) and b"worker" in command


def demo_logs(demo: Demo) -> str:
    logs = demo.var / "demo" / "logs"
    return "\n".join(f"== {path.name}\n{path.read_text()[-3000:]}" for path in logs.glob("*.log"))


def wait_for(condition: Callable[[], Any], *, timeout: float, what: Callable[[], str]) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not there in {timeout}s:\n{what()}")
        time.sleep(0.5)
    return result
