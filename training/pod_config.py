"""What a pod run is on its pod: the names of its job and dataset, the AI Toolkit config it runs, and how
the files AI Toolkit writes there map back to the run's checkpoints and samples.

The config is the one the serverless worker builds for the same run (`runpod_worker/config.py`, the only
worker module the studio imports besides the contract), made UI-ready by `training.aitoolkit.ui_job_config`:
the same parameters train the same LoRA on either provider.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any

from django.conf import settings

from runpod_worker.config import build_config
from runpod_worker.contract import JobInput
from runpod_worker.dataset import caption_text
from runpod_worker.weights import HUB_IDS
from training.aitoolkit import ui_job_config
from training.artifacts import lora_output_name
from training.models import TrainingRun

# `<milliseconds>__<step:09d>_<prompt index>.<ext>` (toolkit/config_modules.py:1230-1236 at 27a03a91).
SAMPLE_NAME = re.compile(r"^\d+__(\d{9})_(\d+)\.(?:jpg|jpeg|png|webp)$")


def pod_job_name(run: TrainingRun) -> str:
    """The job's name on the pod, unique there (`schema.prisma:26`) and the same for every submission of
    the run, so a repeated create meets the run's own job (409) instead of making a second. It is also
    `config.name`, which names the LoRA and checkpoints as the serverless worker names them."""
    return lora_output_name(run)


def pod_dataset_name(run: TrainingRun) -> str:
    # Already in the form the UI makes names (`datasets/create/route.tsx:11`): lower case, digits, `_`.
    return f"run_{run.id.hex}"


def pod_dataset_files(run: TrainingRun, read: Any) -> list[tuple[str, bytes]]:
    """Each frozen photo under its manifest name and its caption beside it, as the worker writes them
    (`runpod_worker/dataset.py`): `read(storage_name)` gives a photo's bytes."""
    files: list[tuple[str, bytes]] = []
    for item in run.manifest:
        stem = PurePosixPath(item["name"]).stem
        files.append((item["name"], read(item["storage_name"])))
        files.append((f"{stem}.txt", caption_text(item.get("caption"), run.trigger_word).encode()))
    return files


def pod_job_config(
    run: TrainingRun, job_input: dict[str, Any], *, training_folder: str, dataset_folder: str
) -> dict[str, Any]:
    """The worker's config for the run, with the weights named by their Hub ids (the pod downloads them with
    its own HF_TOKEN setting), made one the UI runs and follows."""
    config = build_config(
        JobInput.from_dict(job_input),
        preset=settings.TRAINING_POD_GPU_PRESET,
        dataset_dir=Path(dataset_folder),
        training_folder=Path(training_folder),
        model_path=HUB_IDS[run.base_model],
    )
    return ui_job_config(
        config, name=pod_job_name(run), training_folder=training_folder, dataset_folder=dataset_folder
    )


def checkpoint_step(run: TrainingRun, filename: str) -> int | None:
    """The step of `<job name>_<step:09d>.safetensors`; None for any other file (the final LoRA)."""
    match = re.fullmatch(rf"{re.escape(pod_job_name(run))}_(\d{{9}})\.safetensors", filename)
    return int(match.group(1)) if match else None


def sample_key(filename: str) -> tuple[int, int] | None:
    """(step, prompt index) of a sample file's name; None for anything else."""
    match = SAMPLE_NAME.match(filename)
    return (int(match.group(1)), int(match.group(2))) if match else None
