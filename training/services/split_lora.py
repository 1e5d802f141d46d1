"""The second LoRA file of a model with two experts (Wan 2.2 A14B: `<name>_high_noise` and `<name>_low_noise`,
extensions_built_in/diffusion_models/wan22/wan22_14b_model.py:452-493).

The worker uploads the high-noise file where every LoRA goes and the low-noise one beside it (`LOW_NOISE`);
completion keeps, verifies and records both, or neither: a run is complete only with the pair, since
neither file alone reproduces the character on both experts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from runpod_worker.contract import BaseModel, JobOutput
from training.artifacts import (
    LOW_NOISE,
    LoraInvalid,
    StorageUnavailable,
    StoredFile,
    lora_discard,
    lora_keep,
    lora_tidy,
)
from training.models import TrainingRun

LOW_NOISE_MISSING = (
    "The worker reported a trained LoRA, but its low-noise file did not arrive in storage. Retry the run."
)
LOW_NOISE_DIFFERS = (
    "The low-noise LoRA in storage is not the file the worker made (its size or checksum differs), so it "
    "was not accepted. Retry the run."
)


@dataclass(frozen=True)
class SplitKept:
    kept: str
    stored: StoredFile | None
    problem: str


def split_lora_keep_read(
    run: TrainingRun, read: Callable[[str], StoredFile | None], output: JobOutput | None
) -> SplitKept | None:
    """The run's own copy of its low-noise file and its digest; None for a model with one file."""
    if run.base_model not in BaseModel.SPLIT:
        return None
    kept = lora_keep(run, LOW_NOISE) or ""
    try:
        stored = read(kept) if kept else None
    except (StorageUnavailable, LoraInvalid):
        lora_discard(kept)
        raise
    return SplitKept(kept=kept, stored=stored, problem=_problem(stored, output))


def _problem(stored: StoredFile | None, output: JobOutput | None) -> str:
    if stored is None:
        return LOW_NOISE_MISSING
    if output is None:
        return ""
    reported = output.lora_low_noise
    if reported is None or (stored.bytes, stored.sha256) != (reported.bytes, reported.sha256):
        return LOW_NOISE_DIFFERS
    return ""


def split_lora_record(run: TrainingRun, low: SplitKept | None) -> None:
    """Inside the completing transaction, beside the high-noise file's fields."""
    if low is None or low.stored is None:
        return
    run.lora_low_noise_name = low.kept
    run.lora_low_noise_bytes = low.stored.bytes
    run.lora_low_noise_sha256 = low.stored.sha256


def split_lora_settle(run: TrainingRun, low: SplitKept | None, *, kept_by_run: bool) -> None:
    if low is None or not low.kept:
        return
    if kept_by_run:
        lora_tidy(run, low.kept, LOW_NOISE)
    else:
        lora_discard(low.kept)
