"""The job input of a run: what the GPU job is given — presigned photo links, an upload link per file the
run will make, its parameters, the callback and what to resume from. The serverless worker is sent it
(`submission`); a pod run's config is built from it (`pod_runs`)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.urls import reverse

from runpod_worker.contract import (
    MAX_SAMPLE_UPLOADS,
    BaseModel,
    Callback,
    CheckpointTarget,
    ImageSpec,
    JobInput,
    OutputTarget,
    SampleTarget,
    TrainingParams,
    checkpoint_steps,
    sample_steps,
)
from studio.transfer import download_url, upload_url
from training.artifacts import LOW_NOISE, lora_output_name, lora_upload_name
from training.models import TrainingRun
from training.run_files import checkpoint_file, optimizer_file, sample_file
from training.services.checkpoints import training_run_resume_spec
from training.tokens import run_token


def training_job_input(run: TrainingRun) -> dict[str, Any]:
    """The worker's job input: presigned image URLs, the upload targets of the LoRA and of every checkpoint,
    optimizer state and sample the run will make, the callback, params, and the checkpoint to resume from
    when an earlier job of the run saved one."""
    ttl = settings.TRAINING_JOB_TTL_SECONDS  # URLs must outlive the time the job may wait in the queue
    params = TrainingParams.from_dict(run.params)
    spec = JobInput(
        run_id=str(run.id),
        trigger_word=run.trigger_word,
        images=[
            ImageSpec(
                url=download_url(item["storage_name"], ttl),
                sha256=item["sha256"],
                filename=item["name"],
                caption=item.get("caption"),
            )
            for item in run.manifest
        ],
        output=OutputTarget(
            lora_name=lora_output_name(run),
            lora_upload_url=upload_url(lora_upload_name(run), ttl),
            lora_low_noise_upload_url=(
                upload_url(lora_upload_name(run, LOW_NOISE), ttl)
                if run.base_model in BaseModel.SPLIT
                else None
            ),
            checkpoints=_checkpoint_targets(run, params, ttl),
            samples=_sample_targets(run, params, ttl),
        ),
        params=params,
        base_model=run.base_model,
        callback=Callback(url=absolute_url("training:worker-callback", run.id), token=run_token(run.id)),
        resume=training_run_resume_spec(run),
    )
    document = spec.to_dict()
    JobInput.from_dict(document)  # the worker would refuse it; better to know before paying for a GPU
    return document


def _checkpoint_targets(run: TrainingRun, params: TrainingParams, ttl: int) -> list[CheckpointTarget]:
    """One PUT per checkpoint and per optimizer state AI Toolkit will save (at most 119: steps <= 6000,
    save_every >= 50); each key is the run's own (`training.run_files`)."""
    return [
        CheckpointTarget(
            step=step,
            upload_url=upload_url(checkpoint_file(run, step), ttl),
            optimizer_upload_url=upload_url(optimizer_file(run, step), ttl),
        )
        for step in checkpoint_steps(params)
    ]


def _sample_targets(run: TrainingRun, params: TrainingParams, ttl: int) -> list[SampleTarget]:
    """One PUT per sample the run renders (step x prompt), the latest MAX_SAMPLE_UPLOADS when a short
    sample interval would make more: the worker skips a sample with no target."""
    wanted = [(step, index) for step in sample_steps(params) for index in range(len(params.sample_prompts))]
    return [
        SampleTarget(step=step, prompt_index=index, upload_url=upload_url(sample_file(run, step, index), ttl))
        for step, index in wanted[-MAX_SAMPLE_UPLOADS:]
    ]


def absolute_url(name: str, *args: Any) -> str:
    return settings.PUBLIC_BASE_URL + reverse(name, args=args)
