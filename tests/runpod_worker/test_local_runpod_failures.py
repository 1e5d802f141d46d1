"""The stand-in's harsher settings: one attempt per job, short result retention, a trainer out of memory."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from runpod_worker.contract import parse_error
from tests.runpod_worker.conftest import Bucket, image_entry
from tests.support.grouping import in_one_process
from tests.support.local_runpod import LocalRunPod

pytestmark = [pytest.mark.integration, in_one_process(__name__)]


@pytest.fixture(scope="module")
def runpod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRunPod]:
    with LocalRunPod(
        workdir=tmp_path_factory.mktemp("local-runpod-harsh"),
        workers=1,
        max_attempts=1,
        result_ttl=2.0,
        env={"SIMULATED_TRAINER_FAIL": "oom", "SIMULATED_TRAINER_FAIL_AT_STEP": "20"},
    ) as stand_in:
        yield stand_in


def _job(bucket: Bucket) -> dict[str, Any]:
    return {
        "contract_version": 1,
        "run_id": str(uuid.uuid4()),
        "trigger_word": "ohwx",
        "params": {"steps": 100, "rank": 4, "save_every": 50},
        "images": [image_entry(bucket, 0)],
        "output": {"lora_name": "bob_v1", "lora_upload_url": bucket.put_url("loras/bob_v1.safetensors")},
    }


def test_an_out_of_memory_trainer_fails_as_out_of_memory(runpod: LocalRunPod, bucket: Bucket) -> None:
    final = runpod.wait_for(runpod.run(_job(bucket)), timeout=60)
    error = parse_error(final["error"])
    assert (final["status"], error.code) == ("FAILED", "out_of_memory")
    assert any("OOM during training step" in line for line in error.log_tail)


def test_a_killed_worker_fails_the_job_after_its_last_attempt(runpod: LocalRunPod, bucket: Bucket) -> None:
    runpod.set_faults(kill_worker_mid_job=1)
    final = runpod.wait_for(runpod.run(_job(bucket)), timeout=60)
    assert final["status"] == "FAILED"
    assert parse_error(final["error"]).message.startswith("WorkerLost")
    workers = runpod.health()["workers"]  # the dead worker was replaced by one new worker
    assert workers["idle"] + workers["running"] + workers["initializing"] + workers["throttled"] == 1


def test_results_expire_after_the_retention_time(runpod: LocalRunPod) -> None:
    job_id = runpod.run({"contract_version": 99})
    runpod.wait_for(job_id, timeout=30)
    time.sleep(2.5)
    assert runpod.status(job_id) is None


def test_a_slow_queue_holds_the_job_in_queue(runpod: LocalRunPod) -> None:
    runpod.set_faults(queue_delay_s=1.5)
    try:
        job_id = runpod.run({"contract_version": 99})
        time.sleep(0.8)
        assert runpod.status(job_id)["status"] == "IN_QUEUE"
        final = runpod.wait_for(job_id, timeout=30)
    finally:
        runpod.set_faults(queue_delay_s=0)
    assert final["delayTime"] >= 1500


def test_a_failed_run_carries_the_trainers_last_200_lines_with_signed_urls_redacted(
    runpod: LocalRunPod, bucket: Bucket
) -> None:
    job = _job(bucket)
    # AI Toolkit prints the process config as it starts (run.py), sample prompts included: a prompt that
    # holds a signed URL stands for any secret the trainer might print.
    signed = bucket.get_url("private/photo.jpg")
    job["params"]["sample_prompts"] = [f"[trigger] like {signed}"]

    final = runpod.wait_for(runpod.run(job), timeout=60)

    error = parse_error(final["error"])
    assert error.code == "out_of_memory"
    assert 20 < len(error.log_tail) <= 200
    assert any("Running job: bob_v1" in line for line in error.log_tail)  # from the start of the output
    text = "\n".join(error.log_tail)
    assert signed.split("?")[0] + "?[REDACTED]" in text
    assert "X-Amz-Signature" not in text and signed not in text
