"""Watching a run learn, end to end: the unmodified handler on the local RunPod stand-in with the simulated
trainer uploads every sample and checkpoint to its pre-signed URL as it appears and reports it (with the
loss from loss_log.db) in progress callbacks; a worker lost part way resumes from the last checkpoint;
a cancelled run keeps the checkpoints it made. The test's fake backend plays the studio's part."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from safetensors import safe_open

from runpod_worker.contract import (
    LOSS_POINTS_PER_CALLBACK,
    JobInput,
    JobOutput,
    checkpoint_steps,
    parse_error,
    sample_steps,
)
from runpod_worker.trainer import safetensors_metadata, steps_from_metadata
from tests.runpod_worker.conftest import Bucket, FakeBackend, image_entry
from tests.support.grouping import in_one_process
from tests.support.local_runpod import LIGHT_LORA, LocalRunPod

pytestmark = [pytest.mark.integration, in_one_process(__name__)]

PROMPTS = ["[trigger], portrait", "[trigger], three-quarter view", "[trigger], full body"]


def _stand_in(workdir: Path, seconds_per_step: float, **env: str) -> LocalRunPod:
    return LocalRunPod(
        workdir=workdir,
        workers=2,
        env={
            "SIMULATED_TRAINER_SECONDS_PER_STEP": str(seconds_per_step),
            "WORKER_PROGRESS_INTERVAL_S": "0.2",
            "WORKER_ARTIFACT_POLL_S": "0.2",
            **env,
        },
    )


@pytest.fixture(scope="module")
def runpod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRunPod]:
    with _stand_in(tmp_path_factory.mktemp("local-runpod-learning"), 0.005, **LIGHT_LORA) as stand_in:
        yield stand_in


@pytest.fixture
def slower_runpod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRunPod]:
    """Steps slow enough that a checkpoint's upload (43 MB: every block, as the resumed LoRA's whole
    layout is checked) ends well within the 200 steps (4 s) between a save and the kill, as it does on a
    GPU, where 100 steps take minutes (with the kill after step 600, 2 s were not always enough on two busy
    cores)."""
    with _stand_in(tmp_path_factory.mktemp("local-runpod-resume"), 0.02) as stand_in:
        yield stand_in


def _job(
    bucket: Bucket, backend: FakeBackend, *, steps: int, save_every: int, prompts: list[str]
) -> dict[str, Any]:
    """A job with an upload target for every checkpoint and sample the run will make, as the studio
    signs them up front (the keys follow from steps, save_every, sample_every and the prompts)."""
    params = {"steps": steps, "rank": 4, "save_every": save_every, "sample_every": save_every,
              "sample_prompts": prompts, "sample_seed": 1234}  # fmt: skip
    job: dict[str, Any] = {
        "contract_version": 1,
        "run_id": str(uuid.uuid4()),
        "trigger_word": "ohwx",
        "params": params,
        "images": [image_entry(bucket, n) for n in range(3)],
        "output": {"lora_name": "alice_v1", "lora_upload_url": bucket.put_url("loras/alice_v1.safetensors")},
        "callback": backend.callback(),
    }
    spec = JobInput.from_dict(job)
    job["output"]["checkpoints"] = [
        {
            "step": step,
            "upload_url": bucket.put_url(f"checkpoints/{step}.safetensors"),
            "optimizer_upload_url": bucket.put_url(f"checkpoints/{step}.optimizer.pt"),
        }
        for step in checkpoint_steps(spec.params)
    ]
    job["output"]["samples"] = [
        {"step": step, "prompt_index": index, "upload_url": bucket.put_url(f"samples/{step}_{index}.jpg")}
        for step in sample_steps(spec.params)
        for index in range(len(prompts))
    ]
    return job


def _finish(runpod: LocalRunPod, job_id: str, timeout: float = 120) -> dict[str, Any]:
    try:
        return runpod.wait_for(job_id, timeout=timeout)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n{runpod.logs()}") from exc


def _reported(backend: FakeBackend, field: str, delivery: str | None = None) -> list[dict[str, Any]]:
    events = [e for e in backend.of("progress") if delivery is None or e["delivery_id"] == delivery]
    return [item for event in events for item in event.get(field, [])]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_every_sample_and_checkpoint_is_uploaded_verified_and_reported(
    runpod: LocalRunPod, bucket: Bucket, fake_backend: FakeBackend
) -> None:
    """The issue's live-stack case on the worker side: 3 prompts, save_every 100, 300 steps: 9 samples, 2
    checkpoints and the final LoRA (the third save) in storage, each reported with its sha256."""
    received: dict[str, float] = {}

    def note_arrival(event: dict[str, Any], seen: list[dict[str, Any]]) -> dict[str, Any]:
        for sample in event.get("samples", []):
            received.setdefault(sample["filename"], time.time())
        return {"action": "continue"}

    fake_backend.decide = note_arrival
    job_id = runpod.run(_job(bucket, fake_backend, steps=300, save_every=100, prompts=PROMPTS))
    final = _finish(runpod, job_id)
    assert final["status"] == "COMPLETED", runpod.logs()
    output = JobOutput.from_dict(final["output"])

    stored = bucket.stored()
    assert [k for k in stored if k.startswith("samples/")] == sorted(
        f"samples/{step}_{index}.jpg" for step in (100, 200, 300) for index in range(3)
    )
    assert {k for k in stored if k.startswith(("checkpoints/", "loras/"))} == {
        "checkpoints/100.safetensors", "checkpoints/100.optimizer.pt",
        "checkpoints/200.safetensors", "checkpoints/200.optimizer.pt",
        "loras/alice_v1.safetensors",
    }  # fmt: skip

    samples = _reported(fake_backend, "samples")
    assert sorted((s["step"], s["prompt_index"]) for s in samples) == [
        (step, index) for step in (100, 200, 300) for index in range(3)
    ]
    for sample in samples:
        data = bucket.read(f"samples/{sample['step']}_{sample['prompt_index']}.jpg")
        assert (sample["sha256"], sample["bytes"]) == (_sha(data), len(data))
        assert sample["filename"].endswith(f"__{sample['step']:09d}_{sample['prompt_index']}.jpg")
        assert data[:3] == b"\xff\xd8\xff"
    checkpoints = _reported(fake_backend, "checkpoints")
    assert [c["step"] for c in checkpoints] == [100, 200]
    for checkpoint in checkpoints:
        data = bucket.read(f"checkpoints/{checkpoint['step']}.safetensors")
        optimizer = bucket.read(f"checkpoints/{checkpoint['step']}.optimizer.pt")
        assert (checkpoint["sha256"], checkpoint["bytes"]) == (_sha(data), len(data))
        assert checkpoint["optimizer_sha256"] == _sha(optimizer)
        assert checkpoint["name"] == f"alice_v1_{checkpoint['step']:09d}.safetensors"
    # Each reported once (every callback here was answered 200), and all of it again in the output.
    assert [c.step for c in output.checkpoints] == [100, 200]
    assert len(output.samples) == 9 and output.resumed_from_step is None
    # Each sample reached the backend before the run finished, not only at the end, and within 5 s of the
    # time in its name (when AI Toolkit began rendering it: toolkit/config_modules.py:1223-1227): the
    # worker's share of the gallery's "visible within 5 s".
    first_sample_at = next(i for i, e in enumerate(fake_backend.events) if e.get("samples"))
    assert first_sample_at < len(fake_backend.events) - 3
    delays = [received[name] - int(name.split("__")[0]) / 1000 for name in received]
    assert len(delays) == 9 and max(delays) < 5.0, delays


def test_the_loss_comes_from_the_loss_log_bounded_per_callback(
    runpod: LocalRunPod, bucket: Bucket, fake_backend: FakeBackend
) -> None:
    job_id = runpod.run(_job(bucket, fake_backend, steps=300, save_every=100, prompts=PROMPTS[:1]))
    assert _finish(runpod, job_id)["status"] == "COMPLETED", runpod.logs()

    carrying = [e["loss_series"] for e in fake_backend.of("progress") if "loss_series" in e]
    assert len(carrying) >= 2
    assert all(len(loss["loss"]) <= LOSS_POINTS_PER_CALLBACK for loss in carrying)
    points = [point for loss in carrying for point in loss["loss"]]
    steps = [step for step, _ in points]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)  # acknowledged points are not resent
    assert steps[-1] == 299  # the last logged step (0-based, BaseSDTrainProcess.py:2794)
    assert points[-1][1] < points[0][1]  # the simulated loss falls


def test_a_worker_lost_after_step_700_resumes_from_its_last_checkpoint(
    slower_runpod: LocalRunPod, bucket: Bucket, fake_backend: FakeBackend, tmp_path: Path
) -> None:
    """The fault matrix's resume case: 1000 steps, save_every 250, the worker killed after step 700;
    RunPod runs the job again, the backend answers the new delivery's "started" with the last checkpoint
    it was told of, and the run completes having trained at most one save interval twice."""
    job = _job(bucket, fake_backend, steps=1000, save_every=250, prompts=PROMPTS[:2])

    def backend(event: dict[str, Any], seen: list[dict[str, Any]]) -> dict[str, Any]:
        if event["event"] != "started":
            return {"action": "continue"}
        earlier = [
            c for e in seen if e.get("delivery_id") != event["delivery_id"] for c in e.get("checkpoints", [])
        ]
        if not earlier:
            return {"action": "continue"}
        last = max(earlier, key=lambda c: c["step"])
        return {
            "action": "continue",
            "resume": {
                "step": last["step"],
                "checkpoint_url": bucket.get_url(f"checkpoints/{last['step']}.safetensors"),
                "checkpoint_sha256": last["sha256"],
                "optimizer_url": bucket.get_url(f"checkpoints/{last['step']}.optimizer.pt"),
                "optimizer_sha256": last["optimizer_sha256"],
            },
        }

    fake_backend.decide = backend
    slower_runpod.set_faults(kill_worker_after_step=700)
    job_id = slower_runpod.run(job)
    final = _finish(slower_runpod, job_id, timeout=240)
    assert final["status"] == "COMPLETED", slower_runpod.logs()
    output = JobOutput.from_dict(final["output"])

    lost, resumed = slower_runpod.state()["jobs"][job_id]["deliveries"]
    killed_at = lost["killed_at_step"]
    assert 700 <= killed_at < 1000
    assert "killed_at_step" not in resumed
    [first_started, second_started] = fake_backend.of("started")
    # The resumed delivery starts at the newest checkpoint the lost one reported: at most one interval back.
    assert output.resumed_from_step is not None
    assert killed_at - 250 <= output.resumed_from_step <= killed_at
    second = [e for e in fake_backend.of("progress") if e["delivery_id"] == second_started["delivery_id"]]
    trained = [e["step"] for e in second if e["stage"] == "training"]
    assert min(trained) >= output.resumed_from_step and max(trained) == 1000
    assert all(e["resumed_from_step"] == output.resumed_from_step for e in second)
    total_trained = killed_at + (1000 - output.resumed_from_step)
    assert total_trained <= 1250
    # The LoRA is complete: every tensor, the step count of the whole run, its upload verified.
    stored = bucket.read("loras/alice_v1.safetensors")
    assert output.lora.sha256 == _sha(stored) and output.steps == 1000
    (tmp_path / "lora.safetensors").write_bytes(stored)
    assert steps_from_metadata(safetensors_metadata(tmp_path / "lora.safetensors")) == 1000
    with safe_open(str(tmp_path / "lora.safetensors"), "np") as lora:
        assert len(list(lora.keys())) == 2 * (19 * 14 + 38 * 6)
    # Between them, the two deliveries uploaded every sample and checkpoint once.
    assert [k for k in bucket.stored() if k.startswith("samples/")] == sorted(
        f"samples/{step}_{index}.jpg" for step in (250, 500, 750, 1000) for index in range(2)
    )
    reported = sorted(c["step"] for c in _reported(fake_backend, "checkpoints"))
    assert reported == [250, 500, 750]
    assert first_started["delivery_id"] != second_started["delivery_id"]


def test_a_run_cancelled_after_step_251_keeps_its_checkpoint_at_250(
    runpod: LocalRunPod, bucket: Bucket, fake_backend: FakeBackend
) -> None:
    def stop_after_251(event: dict[str, Any], seen: list[dict[str, Any]]) -> dict[str, Any]:
        if event["event"] == "progress" and event.get("stage") == "training" and event["step"] > 251:
            return {"action": "stop", "reason": "cancelled by its owner"}
        return {"action": "continue"}

    fake_backend.decide = stop_after_251
    job_id = runpod.run(_job(bucket, fake_backend, steps=1000, save_every=250, prompts=PROMPTS[:1]))
    final = _finish(runpod, job_id)

    assert final["status"] == "FAILED", runpod.logs()
    assert parse_error(final["error"]).code == "cancelled"
    [checkpoint] = [c for c in _reported(fake_backend, "checkpoints") if c["step"] == 250]
    assert checkpoint["sha256"] == _sha(bucket.read("checkpoints/250.safetensors"))
    assert "loras/alice_v1.safetensors" not in bucket.stored()


def test_a_new_job_with_a_resume_block_continues_from_that_checkpoint(
    runpod: LocalRunPod, bucket: Bucket, fake_backend: FakeBackend
) -> None:
    """The other way a lost run comes back: the backend submits a new job whose input carries `resume`."""
    first = _job(bucket, fake_backend, steps=300, save_every=100, prompts=PROMPTS[:1])
    assert _finish(runpod, runpod.run(first))["status"] == "COMPLETED", runpod.logs()
    [checkpoint] = [c for c in _reported(fake_backend, "checkpoints") if c["step"] == 200]
    fake_backend.events.clear()

    again = _job(bucket, fake_backend, steps=300, save_every=100, prompts=PROMPTS[:1])
    again["resume"] = {
        "step": 200,
        "checkpoint_url": bucket.get_url("checkpoints/200.safetensors"),
        "checkpoint_sha256": checkpoint["sha256"],
        "optimizer_url": bucket.get_url("checkpoints/200.optimizer.pt"),
        "optimizer_sha256": checkpoint["optimizer_sha256"],
    }
    final = _finish(runpod, runpod.run(again))

    assert final["status"] == "COMPLETED", runpod.logs()
    output = JobOutput.from_dict(final["output"])
    assert (output.resumed_from_step, output.steps) == (200, 300)
    trained = [e["step"] for e in fake_backend.of("progress") if e["stage"] == "training"]
    assert min(trained) >= 200
    # Nothing at or before the resumed step is made again: only the final samples.
    assert output.checkpoints == [] and [s.step for s in output.samples] == [300]


def test_a_resume_checkpoint_that_does_not_match_its_sha256_fails_before_training(
    runpod: LocalRunPod, bucket: Bucket, fake_backend: FakeBackend
) -> None:
    job = _job(bucket, fake_backend, steps=300, save_every=100, prompts=[])
    job["resume"] = {
        "step": 100,
        "checkpoint_url": bucket.put("checkpoints/forged.safetensors", b"not the checkpoint"),
        "checkpoint_sha256": "0" * 64,
    }

    final = _finish(runpod, runpod.run(job))

    assert final["status"] == "FAILED"
    error = parse_error(final["error"])
    assert error.code == "download_failed" and "checkpoint to resume from" in error.message
    assert not [e for e in fake_backend.of("progress") if e["stage"] == "training"]


def test_an_invalid_resume_answer_fails_the_run_before_training(
    runpod: LocalRunPod, bucket: Bucket, fake_backend: FakeBackend
) -> None:
    def resume_at_an_odd_step(event: dict[str, Any], seen: list[dict[str, Any]]) -> dict[str, Any]:
        if event["event"] == "started":
            return {"action": "continue", "resume": {"step": 123, "checkpoint_url": bucket.get_url("x"),
                                                     "checkpoint_sha256": "0" * 64}}  # fmt: skip
        return {"action": "continue"}

    fake_backend.decide = resume_at_an_odd_step
    final = _finish(runpod, runpod.run(_job(bucket, fake_backend, steps=300, save_every=100, prompts=[])))

    error = parse_error(final["error"])
    assert (final["status"], error.code) == ("FAILED", "bad_input")
    assert "resume.step" in error.message
    assert not fake_backend.of("progress")
