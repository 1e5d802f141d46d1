"""Stored samples and checkpoints as the worker uploads them, and the progress reports that name them."""

from __future__ import annotations

import hashlib
import io
from typing import Any

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image

from tests.training.conftest import lora_bytes, make_run
from training.models import TrainingRun
from training.run_files import checkpoint_file, optimizer_file, sample_file
from training.services import ArtifactReport, artifact_report_parse

PROMPTS = ["a portrait of [trigger]", "[trigger] on a beach", "[trigger] full body"]
PARAMS = {"steps": 300, "rank": 4, "save_every": 100, "sample_every": 100, "sample_prompts": PROMPTS}


def artifact_run(character: Any, **fields: Any) -> TrainingRun:
    """A run training on job-1 with 3 prompts, a checkpoint and samples every 100 of 300 steps."""
    values = {"status": "training", "runpod_job_id": "job-1", "params": dict(PARAMS), **fields}
    return make_run(character, **values)


def store(name: str, data: bytes) -> None:
    if default_storage.exists(name):
        default_storage.delete(name)
    default_storage.save(name, ContentFile(data))


def jpeg(shade: int = 120) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (shade, 80, 40)).save(out, "JPEG")
    return out.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def uploaded_checkpoint(run: TrainingRun, step: int, *, optimizer: bytes = b"adamw state") -> dict[str, Any]:
    """Stores a checkpoint and its optimizer state where the job's links put them; returns the report."""
    data = lora_bytes()
    store(checkpoint_file(run, step), data)
    store(optimizer_file(run, step), optimizer)
    return {
        "step": step,
        "name": f"{run.trigger_word}_{run.id.hex[:8]}_{step:09d}.safetensors",
        "bytes": len(data),
        "sha256": sha(data),
        "optimizer_bytes": len(optimizer),
        "optimizer_sha256": sha(optimizer),
    }


def uploaded_sample(run: TrainingRun, step: int, index: int, *, shade: int = 120) -> dict[str, Any]:
    data = jpeg(shade)
    store(sample_file(run, step, index), data)
    return {
        "step": step,
        "prompt_index": index,
        "filename": f"1700000000000__{step:09d}_{index}.jpg",
        "bytes": len(data),
        "sha256": sha(data),
    }


def report(**fields: Any) -> ArtifactReport:
    return artifact_report_parse(fields)
