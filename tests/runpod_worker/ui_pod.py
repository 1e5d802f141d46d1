"""A running AI Toolkit UI stand-in for a test, the studio's client pointed at it, and job configs."""

from __future__ import annotations

import io
import sqlite3
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from runpod_worker.config import build_config
from runpod_worker.contract import GpuPreset, JobInput
from runpod_worker.local_ai_toolkit_ui.cron import SIMULATED_RUN_PY
from runpod_worker.local_ai_toolkit_ui.server import Pod
from tests.support.local_runpod import LIGHT_LORA
from training.aitoolkit import AIToolkitClient, AIToolkitJob, ui_job_config

TOKEN = "pod-token"


@dataclass
class UIPod:
    pod: Pod
    client: AIToolkitClient
    dataset_folder: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.pod.port}"

    def config(self, name: str, *, steps: int = 100, sample_every: int = 50) -> dict[str, Any]:
        """The studio's serverless config for a 100-step run, made UI-ready as a pod run makes it."""
        training_folder = self.client.settings().training_folder
        job_input = JobInput.from_dict(
            {
                "contract_version": 1,
                "run_id": str(uuid.uuid4()),
                "trigger_word": "ohwx",
                "params": {
                    "steps": steps,
                    "rank": 4,
                    "save_every": 50,
                    "resolutions": [512],
                    "sample_prompts": ["a photo of ohwx"] if sample_every else [],
                    "sample_every": sample_every,
                },
                "images": [
                    {"url": "https://x.test/a.jpg", "sha256": "a" * 64, "filename": "a.jpg", "caption": None}
                ],
                "output": {"lora_name": name, "lora_upload_url": "https://x.test/a.safetensors"},
            }
        )
        config = build_config(
            job_input,
            preset=GpuPreset.HIGH_VRAM_80GB,
            dataset_dir=Path(self.dataset_folder),
            training_folder=Path(training_folder),
        )
        return ui_job_config(
            config, name=name, training_folder=training_folder, dataset_folder=self.dataset_folder
        )

    def create(self, name: str | None = None, **kwargs: Any) -> AIToolkitJob:
        name = name or f"run_{uuid.uuid4().hex[:8]}"
        return self.client.job_create(name=name, job_config=self.config(name, **kwargs))

    def row(self, job_id: str) -> sqlite3.Row:
        """The Job row in the pod's own database, as the real UI would read it."""
        conn = sqlite3.connect(str(self.pod.paths.db))
        conn.row_factory = sqlite3.Row
        try:
            row: sqlite3.Row = conn.execute('SELECT * FROM "Job" WHERE id = ?', (job_id,)).fetchone()
            return row
        finally:
            conn.close()

    def wait_for(
        self, job_id: str, done: Callable[[AIToolkitJob], bool], timeout: float = 30.0
    ) -> AIToolkitJob:
        deadline = time.monotonic() + timeout
        while True:
            job = self.client.job_get(job_id)
            if done(job):
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} never got there; last seen {job}")
            time.sleep(0.1)


def jpeg(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (seed * 50 % 256, 80, 120)).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.fixture
def ui_pod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[UIPod]:
    # The trainers the pod starts inherit these: a 100-step simulated run takes about half a second, and its
    # LoRA files hold the first two blocks of each kind (3 MB at rank 4, not 43: no test here weighs them).
    monkeypatch.setenv("SIMULATED_TRAINER_SECONDS_PER_STEP", "0.005")
    for name, value in LIGHT_LORA.items():
        monkeypatch.setenv(name, value)
    pod = Pod(
        root=tmp_path / "pod",
        run_py=SIMULATED_RUN_PY,
        token=TOKEN,
        host="127.0.0.1",
        port=0,
        python=sys.executable,
    )
    pod.start()
    client = AIToolkitClient(
        base_url=f"http://127.0.0.1:{pod.port}", token=TOKEN, timeout_seconds=5.0, backoff_seconds=0.01
    )
    dataset = client.dataset_create("photos")
    listing = client.dataset_upload_all(dataset, [("a.jpg", jpeg(1)), ("a.txt", b"a photo of ohwx")])
    try:
        yield UIPod(pod=pod, client=client, dataset_folder=listing.folder)
    finally:
        client.close()
        pod.stop()
