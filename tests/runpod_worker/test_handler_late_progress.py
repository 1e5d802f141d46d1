"""The handler never lets a progress post land after its result, whichever way the job ends.

The SDK posts progress from a thread of its own, with retries (runpod 1.12.0 rp_progress.py:47-53,
rp_http.py:33); a post landing after the result left a finished job IN_PROGRESS for good
(runpod-python#250). The stand-in holds every progress post `progress_delay_s` before applying it, and
applies a late one as RunPod did: the job reads IN_PROGRESS again.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runpod_worker.contract import parse_error
from tests.runpod_worker.conftest import Bucket, FakeBackend, image_entry
from tests.support.local_runpod import LocalRunPod

pytestmark = pytest.mark.integration

# Every step is posted; each post lands 0.3 s late, within the handler's 1 s settle.
WORKER_ENV = {
    "SIMULATED_TRAINER_SECONDS_PER_STEP": "0.01",
    "WORKER_PROGRESS_INTERVAL_S": "0.01",
    "WORKER_PROGRESS_SETTLE_S": "1.0",
}
LATE = {"progress_delay_s": "0.3"}


def _job(bucket: Bucket, **extra: Any) -> dict[str, Any]:
    return {
        "contract_version": 1,
        "run_id": str(uuid.uuid4()),
        "trigger_word": "ohwx",
        "base_model": "flux-dev",
        "gpu_preset": None,
        "callback": None,
        "params": {"steps": 100, "rank": 4, "save_every": 50},
        "images": [image_entry(bucket, 0)],
        "output": {"lora_name": "late_v1", "lora_upload_url": bucket.put_url("loras/late_v1.safetensors")},
        **extra,
    }


def _settled(runpod: LocalRunPod, job_id: str) -> dict[str, Any]:
    """The job's final status, read again after every held progress post had time to land."""
    final = runpod.wait_for(job_id, timeout=60)
    time.sleep(1.0)
    again = runpod.status(job_id)
    assert again is not None
    assert again["status"] == final["status"], f"a progress post landed after the result: {again}"
    return final


@pytest.fixture
def crashing(tmp_path: Path) -> Iterator[LocalRunPod]:
    env = {**WORKER_ENV, "SIMULATED_TRAINER_FAIL": "crash", "SIMULATED_TRAINER_FAIL_AT_STEP": "30"}
    with LocalRunPod(workdir=tmp_path, workers=1, env=env, faults=LATE) as runpod:
        yield runpod


@pytest.fixture
def training(tmp_path: Path) -> Iterator[LocalRunPod]:
    with LocalRunPod(workdir=tmp_path, workers=1, env=WORKER_ENV, faults=LATE) as runpod:
        yield runpod


def test_a_failed_training_stays_failed_though_its_last_progress_lands_late(
    crashing: LocalRunPod, bucket: Bucket
) -> None:
    final = _settled(crashing, crashing.run(_job(bucket)))

    assert final["status"] == "FAILED", crashing.logs()
    assert parse_error(final["error"]).code == "trainer_failed"


def test_a_run_the_backend_stops_stays_failed_though_its_last_progress_lands_late(
    training: LocalRunPod, bucket: Bucket, fake_backend: FakeBackend
) -> None:
    fake_backend.decide = lambda event, seen: (
        {"action": "stop", "reason": "the run was cancelled"}
        if event.get("stage") == "training" and event.get("step", 0) >= 10
        else {"action": "continue"}
    )

    final = _settled(training, training.run(_job(bucket, callback=fake_backend.callback())))

    assert final["status"] == "FAILED", training.logs()
    assert parse_error(final["error"]).code == "cancelled"


def test_a_completed_training_stays_completed_though_its_last_progress_lands_late(
    training: LocalRunPod, bucket: Bucket
) -> None:
    final = _settled(training, training.run(_job(bucket)))

    assert final["status"] == "COMPLETED", training.logs()
