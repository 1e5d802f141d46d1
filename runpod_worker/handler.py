"""RunPod serverless handler: validate -> started callback -> download -> config -> train -> upload.

Run in production with `python -u -m runpod_worker.handler`: the pinned `runpod` SDK takes jobs from
the platform, and the handler's cancellation (RunPod's stop channel) kills the trainer subprocess.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import runpod

from runpod_worker.callbacks import CallbackClient, Decision
from runpod_worker.config import build_config, choose_preset, detect_gpu
from runpod_worker.contract import (
    ContractError,
    ErrorCode,
    GpuInfo,
    JobInput,
    JobOutput,
    LoraArtifact,
    Progress,
    Stage,
    Timings,
)
from runpod_worker.dataset import download_images, write_captions
from runpod_worker.errors import JobFailed
from runpod_worker.trainer import (
    classify_failure,
    final_artifact,
    is_simulator,
    run_trainer,
    safetensors_metadata,
    steps_from_metadata,
    toolkit_dir,
    trainer_version,
)
from runpod_worker.upload import upload_file

log = logging.getLogger("runpod_worker")

# progress_update spawns a thread, a loop and an HTTP client per call: keep it rare.
PROGRESS_INTERVAL_S = float(os.environ.get("WORKER_PROGRESS_INTERVAL_S", 5.0))
# A progress post landing after the final result leaves the job stuck IN_PROGRESS (runpod-python#250),
# so the handler never returns sooner than this after its last progress post.
PROGRESS_SETTLE_S = float(os.environ.get("WORKER_PROGRESS_SETTLE_S", 1.0))


def workspace_root() -> Path:
    return Path(os.environ.get("WORKER_WORKSPACE") or Path(tempfile.gettempdir()) / "lora-jobs")


class ProgressReporter:
    """Throttled progress to RunPod and to the backend callback; remembers a "stop" answer."""

    def __init__(self, job: dict[str, Any], callbacks: CallbackClient) -> None:
        self._job = job
        self._callbacks = callbacks
        self._stage: str | None = None
        self._last_sent = 0.0
        self._pending: asyncio.Task[Decision] | None = None
        self.stop_reason: str | None = None

    async def report(self, progress: Progress) -> bool:
        """Returns False once the backend has answered "stop"."""
        self._collect()
        if self.stop_reason is not None:
            return False
        now = time.monotonic()
        if progress.stage == self._stage and now - self._last_sent < PROGRESS_INTERVAL_S:
            return True
        self._stage, self._last_sent = progress.stage, now
        runpod.serverless.progress_update(self._job, progress.to_dict())
        if self._pending is None:
            # In the background: a slow backend must not stall reading the trainer's output.
            self._pending = asyncio.create_task(asyncio.to_thread(self._callbacks.progress, progress))
        return True

    def _collect(self) -> None:
        if self._pending is not None and self._pending.done():
            decision = self._pending.result()
            self._pending = None
            if decision.stop:
                self.stop_reason = decision.reason

    async def settle(self) -> None:
        if self._pending is not None:
            await asyncio.wait({self._pending}, timeout=20)
        quiet_for = time.monotonic() - self._last_sent
        if quiet_for < PROGRESS_SETTLE_S:
            await asyncio.sleep(PROGRESS_SETTLE_S - quiet_for)


def _failure(failure: JobFailed) -> dict[str, Any]:
    log.warning("job failed: %s: %s", failure.code, failure.message)
    return {"error": failure.to_worker_error().to_json()}


async def handler(job: dict[str, Any]) -> dict[str, Any]:
    try:
        spec = JobInput.from_dict(job.get("input"))
    except ContractError as exc:
        return _failure(
            JobFailed(ErrorCode.BAD_INPUT, f"The job input is invalid: {exc.field} {exc.message}.")
        )
    callbacks = CallbackClient(spec.callback, str(job["id"]))
    workspace = workspace_root() / f"{job['id']}-{uuid.uuid4().hex[:8]}"
    try:
        decision = await asyncio.to_thread(callbacks.started)
        if decision.stop:
            # RunPod may hand a job out twice, and a run may be cancelled while queued: do no work.
            return _failure(JobFailed(ErrorCode.CANCELLED, f"The run was not started: {decision.reason}."))
        output = await _train(job, spec, callbacks, workspace)
        return output.to_dict()
    except JobFailed as failure:
        return _failure(failure)
    finally:
        callbacks.close()
        shutil.rmtree(workspace, ignore_errors=True)


async def _train(
    job: dict[str, Any], spec: JobInput, callbacks: CallbackClient, workspace: Path
) -> JobOutput:
    reporter = ProgressReporter(job, callbacks)
    gpu = await asyncio.to_thread(detect_gpu)
    started = time.monotonic()
    await reporter.report(Progress(stage=Stage.DOWNLOADING, step=0, total_steps=spec.params.steps))
    dataset_dir = await asyncio.to_thread(_prepare_dataset, spec, workspace)
    download_s = time.monotonic() - started

    started = time.monotonic()
    artifact, steps = await _run_training(spec, gpu, dataset_dir, workspace, reporter)
    train_s = time.monotonic() - started

    started = time.monotonic()
    await reporter.report(Progress(stage=Stage.UPLOADING, step=steps, total_steps=spec.params.steps))
    uploaded = await asyncio.to_thread(upload_file, artifact, spec.output.lora_upload_url)
    upload_s = time.monotonic() - started
    await reporter.settle()
    return JobOutput(
        lora=LoraArtifact(name=artifact.name, bytes=uploaded.bytes, sha256=uploaded.sha256),
        steps=steps,
        trainer_version=trainer_version(toolkit_dir()),
        gpu=gpu,
        timings=Timings(
            download_s=round(download_s, 3), train_s=round(train_s, 3), upload_s=round(upload_s, 3)
        ),
    )


def _prepare_dataset(spec: JobInput, workspace: Path) -> Path:
    dataset_dir = workspace / "dataset"
    download_images(spec.images, dataset_dir)
    write_captions(spec.images, dataset_dir, spec.trigger_word)
    return dataset_dir


async def _run_training(
    spec: JobInput, gpu: GpuInfo, dataset_dir: Path, workspace: Path, reporter: ProgressReporter
) -> tuple[Path, int]:
    name = spec.output.lora_name
    training_folder = workspace / "output"
    preset = choose_preset(spec.gpu_preset, gpu)
    config = build_config(spec, preset=preset, dataset_dir=dataset_dir, training_folder=training_folder)
    config_path = workspace / "config.json"
    config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    log.info("training %s on %s (%s GB) with the %s preset", name, gpu.name, gpu.memory_gb, preset)
    env = {"SEED": str(spec.params.seed)} if spec.params.seed is not None else {}
    run = await run_trainer(config_path, name=name, on_progress=reporter.report, env=env)
    tail = list(run.tail)
    if run.stopped:
        raise JobFailed(ErrorCode.CANCELLED, f"Training was stopped: {reporter.stop_reason}.", tail)
    if run.returncode != 0:
        raise classify_failure(run.returncode, tail)
    if any(line.strip() == "Job stopped" for line in tail):
        raise JobFailed(
            ErrorCode.TRAINER_FAILED, "The trainer was interrupted before it finished; retry the run.", tail
        )
    artifact = final_artifact(training_folder, name)
    steps = steps_from_metadata(safetensors_metadata(artifact))
    if steps is None:
        steps = run.last_progress.step if run.last_progress else spec.params.steps
    return artifact, steps


def _warn_if_simulated() -> None:
    directory = toolkit_dir()
    if is_simulator(directory):
        banner = "!" * 78
        log.warning(
            "\n%s\n!! AI_TOOLKIT_DIR points at the SIMULATED trainer (%s).\n"
            "!! No real training happens: LoRAs are random tensors. Never use this in production.\n%s",
            banner,
            directory,
            banner,
        )


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _warn_if_simulated()
    runpod.serverless.start({"handler": handler})
