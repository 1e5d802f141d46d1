"""Builds the AI Toolkit job config with every key explicit, and picks the GPU preset.

AI Toolkit's class defaults are bad for Flux (lr 1e-6, ddpm scheduler, fp32, alpha 1.0), so nothing
here relies on them: every key the upstream `train_lora_flux_24gb.yaml` example sets is written, except
its process `device`, which nothing reads. The other base models change what their own example and the
UI's defaults change (runpod_worker/model_presets.py).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

from runpod_worker.contract import BaseModel, GpuInfo, GpuPreset, JobInput
from runpod_worker.model_presets import PRESETS, model_section
from runpod_worker.weights import adapter_source, base_model_source, schnell_adapter_source

# Cards with at least this much memory get the 80 GB preset (A100/H100 report about 79-80 GiB).
HIGH_VRAM_THRESHOLD_GB = 40.0
# What a machine without nvidia-smi reports as its GPU (CI, laptops running the simulator).
NO_GPU = "no GPU (CPU only)"


def detect_gpu() -> GpuInfo:
    """The first GPU as nvidia-smi reports it; a CPU machine (CI, the simulator) says so in the name."""
    if shutil.which("nvidia-smi") is None:
        return GpuInfo(name=NO_GPU, memory_gb=0.0)
    try:
        result = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=15,
            check=True,
        )
        name, memory_mib = result.stdout.strip().splitlines()[0].rsplit(",", 1)
        return GpuInfo(name=name.strip(), memory_gb=round(float(memory_mib) / 1024, 1))
    except (subprocess.SubprocessError, ValueError, IndexError, OSError):
        return GpuInfo(name="unknown", memory_gb=0.0)


def gpu_too_small(base_model: str, gpu: GpuInfo) -> str | None:
    """Why `gpu` cannot train `base_model` (its card is under the model's `BaseModel.MIN_VRAM_GB`), with what
    to do; None when it fits, or when no card size could be read (a CPU, an nvidia-smi that failed)."""
    need = BaseModel.MIN_VRAM_GB[base_model]
    # nvidia-smi's memory.total is a little under the size a card is sold and pooled as (what the driver
    # and ECC reserve), so a card fits at 90% of the model's minimum: every 24 GB card does, no 16 or 20 GB
    # one.
    if gpu.memory_gb <= 0 or gpu.memory_gb >= 0.9 * need:
        return None
    return (
        f"This worker's GPU ({gpu.name}, {gpu.memory_gb:g} GB) is too small for {base_model}, which needs a "
        f"{need} GB card; nothing was downloaded or trained. RunPod placed the job on a GPU pool the model "
        f"does not fit: retry the run, and remove the pools under {need} GB from RUNPOD_GPU_POOLS."
    )


def choose_preset(requested: str | None, gpu: GpuInfo) -> str:
    if requested is not None:
        return requested
    # An unknown card gets the low-VRAM preset: slower on a big card, but never out of memory on a 4090.
    return GpuPreset.HIGH_VRAM_80GB if gpu.memory_gb >= HIGH_VRAM_THRESHOLD_GB else GpuPreset.LOW_VRAM_24GB


def _model_section(job: JobInput, preset: str, source: str, adapter: str | None) -> dict[str, Any]:
    if job.base_model in PRESETS:
        ara = adapter_source(job.base_model, preset)
        return model_section(job.base_model, preset, source, adapter or (ara.name_or_path if ara else None))
    low_vram_card = preset == GpuPreset.LOW_VRAM_24GB
    model: dict[str, Any] = {
        "name_or_path": source,
        "is_flux": True,
        "arch": "flux",
        # 8-bit weights are what let Flux train in 24 GB; on 80 GB they only cost minutes of quantising.
        "quantize": low_vram_card,
        "qtype": "qfloat8",
        "quantize_te": low_vram_card,
        "qtype_te": "qfloat8",
        # low_vram quantises on the CPU: meant for cards that also drive a display, never ours.
        "low_vram": False,
    }
    if job.base_model == BaseModel.FLUX_SCHNELL:
        model["assistant_lora_path"] = adapter or schnell_adapter_source().name_or_path
    return model


def _sample_section(job: JobInput) -> dict[str, Any]:
    schnell = job.base_model == BaseModel.FLUX_SCHNELL
    spec = PRESETS.get(job.base_model)
    return {
        "sampler": "flowmatch",
        "sample_every": job.params.sample_every if job.params.sample_every > 0 else job.params.steps,
        "width": 1024,
        "height": 1024,
        "prompts": list(job.params.sample_prompts),
        "neg": "",
        # One seed for every prompt and every step: with walk_seed on, prompt i would get seed + i
        # (jobs/process/BaseSDTrainProcess.py:290-302); off, a gallery column changes only by training.
        "seed": job.params.effective_sample_seed,
        "walk_seed": False,
        "guidance_scale": spec.guidance_scale if spec else 1 if schnell else 4,
        "sample_steps": spec.sample_steps if spec else 4 if schnell else 20,
        "format": "jpg",
        **(spec.sample if spec else {}),
    }


def _train_section(job: JobInput, preset: str) -> dict[str, Any]:
    sampling = job.params.sampling
    spec = PRESETS.get(job.base_model)
    return {
        "batch_size": job.params.batch_size,
        "steps": job.params.steps,
        "gradient_accumulation_steps": 1,
        "train_unet": True,
        "train_text_encoder": False,
        "gradient_checkpointing": True,
        "noise_scheduler": "flowmatch",
        # 8-bit Adam saves several GB on 24 GB cards; full AdamW is affordable with 80 GB.
        "optimizer": "adamw8bit" if preset == GpuPreset.LOW_VRAM_24GB else "adamw",
        "optimizer_params": {"weight_decay": 1e-4},
        "lr": job.params.learning_rate,
        "lr_scheduler": "constant",
        "timestep_type": spec.timestep_type if spec else "sigmoid",
        "ema_config": {"use_ema": True, "ema_decay": 0.99},
        "dtype": "bf16",
        # The baseline sample at step 0 costs minutes of GPU time and shows only the base model: off unless
        # the job asks (BaseSDTrainProcess.py:2477-2481). `start_step` is never set: it would make AI Toolkit
        # ignore the step in a resumed checkpoint's metadata (:884) and train it all again.
        "skip_first_sample": not job.params.sample_first,
        "disable_sampling": not sampling,
        **(spec.train if spec else {}),
    }


def build_config(
    job: JobInput,
    *,
    preset: str,
    dataset_dir: Path,
    training_folder: Path,
    model_path: str | None = None,
    adapter_path: str | None = None,
) -> dict[str, Any]:
    """The AI Toolkit config for this job, as a JSON-serialisable dict; every key is one AI Toolkit reads
    at the pinned commit (tests/runpod_worker/upstream/ai_toolkit_config_keys.json)."""
    name = job.output.lora_name
    spec = PRESETS.get(job.base_model)
    process: dict[str, Any] = {
        "type": "sd_trainer",
        # No process-level `device`: upstream's examples set it, but nothing reads it (the accelerate
        # device is used; only the job-level config.device is read, by jobs/ExtensionJob.py).
        "training_folder": str(training_folder),
        "trigger_word": job.trigger_word,
        "performance_log_every": 0,
        # FLUX LoRAs are saved in PEFT format and AI Toolkit forces alpha = rank (toolkit/lora_special.py);
        # every other example sets alpha = rank too.
        "network": {
            "type": "lora",
            "linear": job.params.rank,
            "linear_alpha": job.params.rank,
            **(spec.network if spec else {}),
        },
        "save": {
            "dtype": "float16",
            "save_every": job.params.save_every,
            "max_step_saves_to_keep": 4,
            # push_to_hub without HF_TOKEN would open an interactive login and hang the worker.
            "push_to_hub": False,
        },
        "datasets": [
            {
                "folder_path": str(dataset_dir),
                "caption_ext": "txt",
                "caption_dropout_rate": job.params.caption_dropout,
                "shuffle_tokens": False,
                "cache_latents_to_disk": True,
                "resolution": list(job.params.resolutions),
                "default_caption": f"a photo of {job.trigger_word}",
                "num_repeats": 1,
                **(spec.dataset if spec else {}),
            }
        ],
        "train": _train_section(job, preset),
        "model": _model_section(
            job, preset, model_path or base_model_source(job.base_model).name_or_path, adapter_path
        ),
        "sample": _sample_section(job),
        # The UI logger writes every step's loss to <training_folder>/<name>/loss_log.db
        # (toolkit/logging_aitk.py:338-342), read for the loss chart instead of parsing the progress bar.
        "logging": {"log_every": 1, "use_ui_logger": True, "use_wandb": False},
    }
    return {
        "job": "extension",
        "config": {"name": name, "process": [process]},
        "meta": {"name": "[name]", "version": "1.0", "run_id": job.run_id, "preset": preset},
    }
