"""RunPod serverless handler: validate -> started -> download -> captions -> config -> train -> upload.

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

from runpod_worker.artifacts import ArtifactCollector, Report
from runpod_worker.callbacks import CallbackClient, Decision
from runpod_worker.captions import CaptionRun, caption_missing
from runpod_worker.config import build_config, choose_preset, detect_gpu, gpu_too_small
from runpod_worker.contract import (
    CALLBACK_ACTION_STOP,
    CALLBACK_FIELD_RESUMED_FROM_STEP,
    BaseModel,
    ContractError,
    ErrorCode,
    GpuInfo,
    JobInput,
    JobOutput,
    LoraArtifact,
    Progress,
    ResumeSpec,
    Stage,
    Timings,
)
from runpod_worker.dataset import download_images, refuse_undecodable, write_captions, write_given_captions
from runpod_worker.errors import JobFailed
from runpod_worker.failures import classify_failure
from runpod_worker.redact import forget_secrets, register_secret
from runpod_worker.resume import lay_out_resume
from runpod_worker.trainer import (
    final_artifacts,
    is_simulator,
    run_trainer,
    safetensors_metadata,
    steps_from_metadata,
    toolkit_dir,
    trainer_version,
)
from runpod_worker.upload import upload_file
from runpod_worker.weights import adapter_source, run_sources, trainer_env

log = logging.getLogger("runpod_worker")

# progress_update spawns a thread, a loop and an HTTP client per call, so it is throttled; 1.5 s keeps
# every printed step visible within 2 s (docs/BENCHMARKS.md) at under one call a second.
PROGRESS_INTERVAL_S = float(os.environ.get("WORKER_PROGRESS_INTERVAL_S", 1.5))
# A progress post landing after the final result leaves the job stuck IN_PROGRESS (runpod-python#250),
# so the handler never returns sooner than this after its last progress post.
PROGRESS_SETTLE_S = float(os.environ.get("WORKER_PROGRESS_SETTLE_S", 1.0))
# While the job runs, the backend hears from the worker at least this often (the last progress again when
# the trainer is quiet: downloading, loading the model, uploading), so it can tell a live worker from a
# dead one well within its liveness window (TRAINING_WORKER_LIVENESS_SECONDS, 30 s by default).
HEARTBEAT_INTERVAL_S = float(os.environ.get("WORKER_HEARTBEAT_INTERVAL_S", 10.0))
# A delivery told to "wait" (another delivery of this job holds the run) gives up after this long.
CLAIM_WAIT_MAX_S = float(os.environ.get("WORKER_CLAIM_WAIT_MAX_S", 180.0))
# How often the samples folder is looked at: a new sample is uploaded and reported within about this much
# of AI Toolkit moving it into place, plus its upload and one callback.
ARTIFACT_POLL_S = float(os.environ.get("WORKER_ARTIFACT_POLL_S", 0.5))


def workspace_root() -> Path:
    return Path(os.environ.get("WORKER_WORKSPACE") or Path(tempfile.gettempdir()) / "lora-jobs")


class ProgressReporter:
    """Throttled progress to RunPod and to the backend callback; remembers a "stop" answer."""

    def __init__(self, job: dict[str, Any], callbacks: CallbackClient) -> None:
        self._job = job
        self._callbacks = callbacks
        self._stage: str | None = None
        self._last_sent = 0.0
        self._last_callback = time.monotonic()
        self._progress: Progress | None = None
        self._pending: asyncio.Task[tuple[Decision, Report | None]] | None = None
        self.stop_reason: str | None = None
        self.stop_code = ErrorCode.CANCELLED
        self._finished = False
        # Samples, checkpoints and loss ride on progress callbacks once training has begun.
        self.collector: ArtifactCollector | None = None
        self.resumed_from: int | None = None

    async def report(self, progress: Progress) -> bool:
        """Returns False once the backend has answered "stop"."""
        self._collect()
        if self.stop_reason is not None:
            return False
        self._progress = progress
        now = time.monotonic()
        if progress.stage == self._stage and now - self._last_sent < PROGRESS_INTERVAL_S:
            return True
        self._stage, self._last_sent = progress.stage, now
        runpod.serverless.progress_update(self._job, progress.to_dict())
        self._call_back(progress)
        return True

    async def keep_alive(self) -> None:
        """Runs beside the job: re-sends the last progress whenever the backend heard nothing lately, and
        at once when a sample or checkpoint has been uploaded."""
        while self.stop_reason is None and not self._finished:
            await asyncio.sleep(min(ARTIFACT_POLL_S, HEARTBEAT_INTERVAL_S / 2))
            self._collect()
            if self.collector is not None:
                self.collector.scan_samples()
            quiet_for = time.monotonic() - self._last_callback
            news = self.collector is not None and self.collector.has_news
            due = quiet_for >= HEARTBEAT_INTERVAL_S or news
            if self._progress is not None and due and not self._finished:
                self._call_back(self._progress)  # never after "finished"

    def _call_back(self, progress: Progress) -> None:
        if self._pending is None:
            # In the background: a slow backend must not stall reading the trainer's output.
            self._last_callback = time.monotonic()
            self._pending = asyncio.create_task(asyncio.to_thread(self._send, progress))

    def _send(self, progress: Progress) -> tuple[Decision, Report | None]:
        """One progress callback with what is new (in a worker thread: it reads the loss log)."""
        report = self.collector.report() if self.collector is not None else None
        extra = dict(report.fields) if report is not None else {}
        if self.resumed_from is not None:
            extra[CALLBACK_FIELD_RESUMED_FROM_STEP] = self.resumed_from
        decision = self._callbacks.progress(progress, extra) if extra else self._callbacks.progress(progress)
        return decision, report

    async def flush(self) -> None:
        """One more progress callback with whatever is not yet reported (the last samples and loss)."""
        if self._pending is not None:
            await asyncio.wait({self._pending}, timeout=20)
        self._collect()
        if self._progress is not None and self._pending is None:
            self._call_back(self._progress)
            if self._pending is not None:
                await asyncio.wait({self._pending}, timeout=20)
            self._collect()

    def _collect(self) -> None:
        if self._pending is not None and self._pending.done():
            decision, report = self._pending.result()
            self._pending = None
            if decision.delivered and report is not None and self.collector is not None:
                self.collector.acknowledge(report)
            if decision.stop:
                self.stop_reason = decision.reason
                self.stop_code = _stop_code(decision)

    def stopped(self) -> bool:
        self._collect()
        return self.stop_reason is not None

    def check_stopped(self) -> None:
        if self.stopped():
            raise JobFailed(self.stop_code, f"Training was stopped: {self.stop_reason}.")

    async def finished(self, output: JobOutput) -> None:
        """Tells the backend the LoRA is uploaded, after any progress callback still in flight."""
        self._finished = True
        if self._pending is not None:
            await asyncio.wait({self._pending}, timeout=20)
        decision = await asyncio.to_thread(self._callbacks.finished, output)
        if decision.stop:
            log.warning("the backend did not take this delivery's result: %s", decision.reason)

    async def settle(self) -> None:
        if self._pending is not None:
            await asyncio.wait({self._pending}, timeout=20)
        quiet_for = time.monotonic() - self._last_sent
        if quiet_for < PROGRESS_SETTLE_S:
            await asyncio.sleep(PROGRESS_SETTLE_S - quiet_for)


def _stop_code(decision: Decision) -> str:
    return ErrorCode.CLAIMED_ELSEWHERE if decision.claimed_elsewhere else ErrorCode.CANCELLED


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
    # One id per handler invocation: RunPod may run the same job again after a lost worker, or twice at once.
    delivery_id = uuid.uuid4().hex
    callbacks = CallbackClient(spec.callback, str(job["id"]), delivery_id)
    workspace = workspace_root() / f"{job['id']}-{delivery_id[:8]}"
    secrets = _secrets_of(spec)
    for secret in secrets:
        register_secret(secret)
    try:
        decision = await _claim_run(callbacks)
        if decision.stop:
            # RunPod may hand a job out twice, and a run may be cancelled while queued: do no work.
            return _failure(JobFailed(_stop_code(decision), f"The run was not started: {decision.reason}."))
        resume = _resume_of(spec, decision)
        output = await _train(job, spec, callbacks, workspace, resume)
        return output.to_dict()
    except JobFailed as failure:
        return _failure(failure)
    finally:
        callbacks.close()
        forget_secrets(secrets)
        shutil.rmtree(workspace, ignore_errors=True)


def _secrets_of(spec: JobInput) -> list[str]:
    """Values of this job that must never leave the worker in a log tail."""
    values = [image.url for image in spec.images] + [spec.output.lora_upload_url]
    values += [spec.output.lora_low_noise_upload_url or ""]
    values += [t.upload_url for t in spec.output.samples]
    values += [u for t in spec.output.checkpoints for u in (t.upload_url, t.optimizer_upload_url)]
    if spec.callback is not None:
        values += [spec.callback.token, spec.callback.url]
    if spec.resume is not None:
        values += [spec.resume.checkpoint_url, spec.resume.optimizer_url or ""]
    return [value for value in values if value]


def _resume_of(spec: JobInput, decision: Decision) -> ResumeSpec | None:
    """The backend's `resume` in its answer to "started" (RunPod ran the job again), else the input's."""
    if decision.resume is None:
        return spec.resume
    try:
        resume = ResumeSpec.from_dict(decision.resume, spec.params)
    except ContractError as exc:
        raise JobFailed(
            ErrorCode.BAD_INPUT, f"The studio's resume answer is invalid: {exc.field} {exc.message}."
        ) from exc
    if resume is not None:
        register_secret(resume.checkpoint_url)
        register_secret(resume.optimizer_url)
    return resume


async def _claim_run(callbacks: CallbackClient) -> Decision:
    """Says "started" until the backend answers "continue" or "stop"; "wait" means another delivery of
    this job still holds the run (a worker RunPod lost a moment ago, or a duplicate hand-out)."""
    began, waited = time.monotonic(), 0.0
    while True:
        decision = await asyncio.to_thread(callbacks.started, waited)
        if not decision.wait:
            return decision
        waited = time.monotonic() - began
        if waited + decision.retry_after_s > CLAIM_WAIT_MAX_S:
            return Decision(
                CALLBACK_ACTION_STOP,
                f"the run is claimed elsewhere ({decision.reason}; gave up after waiting {waited:.0f} s)",
                code=ErrorCode.CLAIMED_ELSEWHERE,
            )
        log.info("the run is held by another delivery (%s): asking again in %.1f s", decision.reason,
                 decision.retry_after_s)  # fmt: skip
        await asyncio.sleep(decision.retry_after_s)
        waited = time.monotonic() - began


async def _train(
    job: dict[str, Any],
    spec: JobInput,
    callbacks: CallbackClient,
    workspace: Path,
    resume: ResumeSpec | None = None,
) -> JobOutput:
    reporter = ProgressReporter(job, callbacks)
    keep_alive = asyncio.create_task(reporter.keep_alive())
    try:
        return await _train_reporting(job, spec, workspace, reporter, resume)
    except Exception:
        # A failure's result must not overtake a progress post either (runpod-python#250).
        await reporter.settle()
        raise
    finally:
        keep_alive.cancel()


async def _train_reporting(
    job: dict[str, Any],
    spec: JobInput,
    workspace: Path,
    reporter: ProgressReporter,
    resume: ResumeSpec | None = None,
) -> JobOutput:
    gpu = await asyncio.to_thread(detect_gpu)
    if too_small := gpu_too_small(spec.base_model, gpu):
        raise JobFailed(ErrorCode.OUT_OF_MEMORY, too_small)
    started = time.monotonic()
    # Known from the claim on: every progress callback of this delivery says it.
    reporter.resumed_from = resume.step if resume is not None else None
    await reporter.report(Progress(stage=Stage.DOWNLOADING, step=0, total_steps=spec.params.steps))
    dataset_dir = await asyncio.to_thread(_prepare_dataset, spec, workspace)
    save_root = workspace / "output" / spec.output.lora_name
    if resume is not None:
        await asyncio.to_thread(lay_out_resume, resume, save_root, spec.output.lora_name)
    download_s = time.monotonic() - started
    reporter.check_stopped()

    captioning = await _caption(spec, dataset_dir, workspace, gpu, reporter)
    started = time.monotonic()
    collector = ArtifactCollector(
        spec, save_root, workspace / "outbox", start_step=resume.step if resume is not None else 0
    )
    artifacts, steps = await _run_training(spec, gpu, dataset_dir, workspace, reporter, collector)
    train_s = time.monotonic() - started

    started = time.monotonic()
    await reporter.report(Progress(stage=Stage.UPLOADING, step=steps, total_steps=spec.params.steps))
    urls = [spec.output.lora_upload_url, spec.output.lora_low_noise_upload_url]
    loras = []
    for artifact, url in zip(artifacts, urls, strict=False):
        uploaded = await asyncio.to_thread(upload_file, artifact, url or "")
        loras.append(LoraArtifact(name=artifact.name, bytes=uploaded.bytes, sha256=uploaded.sha256))
    upload_s = time.monotonic() - started
    output = JobOutput(
        lora=loras[0],
        lora_low_noise=loras[1] if len(loras) > 1 else None,
        steps=steps,
        trainer_version=trainer_version(toolkit_dir()),
        gpu=gpu,
        timings=Timings(
            download_s=round(download_s, 3),
            train_s=round(train_s, 3),
            upload_s=round(upload_s, 3),
            caption_s=captioning.seconds,
        ),
        checkpoints=sorted(collector.checkpoints, key=lambda c: c.step),
        samples=sorted(collector.samples, key=lambda s: (s.step, s.prompt_index)),
        resumed_from_step=resume.step if resume is not None else None,
        captions=captioning.captions,
        captioner=captioning.captioner,
        caption_error=captioning.error,
    )
    # The backend completes the run from this, whichever delivery's result RunPod keeps for the job.
    await reporter.finished(output)
    await reporter.settle()
    return output


def _prepare_dataset(spec: JobInput, workspace: Path) -> Path:
    dataset_dir = workspace / "dataset"
    paths = download_images(spec.images, dataset_dir)
    # AI Toolkit skips an image it cannot decode without a word and trains on the rest, so every image is
    # decoded here first: a bad one fails the job before any GPU time is spent.
    refuse_undecodable(paths)
    write_given_captions(spec.images, dataset_dir, spec.trigger_word)
    return dataset_dir


async def _caption(
    spec: JobInput, dataset_dir: Path, workspace: Path, gpu: GpuInfo, reporter: ProgressReporter
) -> CaptionRun:
    """Captions the images sent without one (a job of its own, before training: its GPU memory is free again
    when the trainer starts), then writes every caption file AI Toolkit trains on."""
    captioning = await caption_missing(spec, dataset_dir, workspace, gpu, should_stop=reporter.stopped)
    if captioning.error:
        log.warning("captioning: %s", captioning.error)
    await asyncio.to_thread(write_captions, spec.images, dataset_dir, spec.trigger_word, captioning.made())
    reporter.check_stopped()
    return captioning


async def _run_training(
    spec: JobInput,
    gpu: GpuInfo,
    dataset_dir: Path,
    workspace: Path,
    reporter: ProgressReporter,
    collector: ArtifactCollector,
) -> tuple[list[Path], int]:
    name = spec.output.lora_name
    training_folder = workspace / "output"
    preset = choose_preset(spec.gpu_preset, gpu)
    sources = run_sources(spec.base_model, preset)
    adapter = adapter_source(spec.base_model, preset)
    config = build_config(
        spec,
        preset=preset,
        dataset_dir=dataset_dir,
        training_folder=training_folder,
        model_path=sources[0].name_or_path,
        adapter_path=adapter.name_or_path if adapter else None,
    )
    config_path = workspace / "config.json"
    config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    log.info("training %s on %s (%s GB) with the %s preset; weights: %s", name, gpu.name, gpu.memory_gb,
             preset, ", ".join(f"{s.name_or_path} ({s.kind})" for s in sources))  # fmt: skip
    env = trainer_env(sources)
    if spec.params.seed is not None:
        env["SEED"] = str(spec.params.seed)
    reporter.collector = collector
    collector.start()
    run = await run_trainer(
        config_path, name=name, on_progress=reporter.report, env=env, on_line=collector.on_line
    )
    # Whatever the outcome, the samples and checkpoints made so far are uploaded and reported: a cancelled
    # or failed run keeps them.
    await collector.finish()
    await reporter.flush()
    tail = list(run.tail)
    if run.stopped:
        raise JobFailed(reporter.stop_code, f"Training was stopped: {reporter.stop_reason}.", tail)
    if run.returncode != 0:
        raise classify_failure(run.returncode, tail, model=sources[0].name_or_path)
    if any(line.strip() == "Job stopped" for line in tail):
        raise JobFailed(
            ErrorCode.TRAINER_FAILED, "The trainer was interrupted before it finished; retry the run.", tail
        )
    artifacts = final_artifacts(training_folder, name, spec.base_model in BaseModel.SPLIT)
    steps = steps_from_metadata(safetensors_metadata(artifacts[0]))
    if steps is None:
        steps = run.last_progress.step if run.last_progress else spec.params.steps
    return artifacts, steps


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
