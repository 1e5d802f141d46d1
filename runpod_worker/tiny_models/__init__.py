"""Tiny random-weight base models in their real diffusers layout, built locally with no download.

AI Toolkit loads a base model from a diffusers folder component by component, with the classes that folder
names. A model built here has the same folders, the same classes and the same configuration keys as the
real one, only with a few small layers, so the real trainer runs through its real code paths on a CPU
in seconds. Each base model is one builder in `BUILDERS`, keyed by the contract's `base_model`; a new base
model is one more module with a `build(dest, seed)` function. The captioner
(Qwen3-VL, `qwen3-vl-captioner`) is built the same way.

    python -m runpod_worker.tiny_models BASE_MODEL|qwen3-vl-captioner DEST [--seed N]

These builders import torch, diffusers and transformers: they run with AI Toolkit's Python (the lock),
never in the studio's environment.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


def _flux_dev(dest: Path, seed: int) -> Path:
    from runpod_worker.tiny_models import flux

    return flux.build(dest, flux.DEV, seed=seed)


def _flux_schnell(dest: Path, seed: int) -> Path:
    from runpod_worker.tiny_models import flux

    return flux.build(dest, flux.SCHNELL, seed=seed)


def _qwen_image(dest: Path, seed: int) -> Path:
    from runpod_worker.tiny_models import qwen_image

    return qwen_image.build(dest, seed=seed)


def _wan22(dest: Path, seed: int) -> Path:
    from runpod_worker.tiny_models import wan22

    return wan22.build(dest, seed=seed)


def _wan22_5b(dest: Path, seed: int) -> Path:
    from runpod_worker.tiny_models import wan22_5b

    return wan22_5b.build(dest, seed=seed)


def _z_image(dest: Path, seed: int) -> Path:
    from runpod_worker.tiny_models import z_image

    return z_image.build(dest, seed=seed)


def _qwen3_vl(dest: Path, seed: int) -> Path:
    from runpod_worker.tiny_models import qwen3_vl

    return qwen3_vl.build(dest, seed=seed)


# The captioner's tiny model (runpod_worker/captions.py), built beside the base models.
CAPTIONER = "qwen3-vl-captioner"

# Keyed by runpod_worker.contract.BaseModel values, and the captioner's.
BUILDERS: dict[str, Callable[[Path, int], Path]] = {
    "flux-dev": _flux_dev,
    "flux-schnell": _flux_schnell,
    "qwen-image": _qwen_image,
    "wan22": _wan22,
    "wan22-5b": _wan22_5b,
    "z-image": _z_image,
    CAPTIONER: _qwen3_vl,
}


def build(base_model: str, dest: Path, *, seed: int = 0) -> Path:
    """Writes the tiny `base_model` into `dest` (created) and returns it."""
    try:
        builder = BUILDERS[base_model]
    except KeyError:
        raise ValueError(f"no tiny model for {base_model!r}; known: {sorted(BUILDERS)}") from None
    return builder(dest, seed)
