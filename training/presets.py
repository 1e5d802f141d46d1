"""Named parameter sets a user can pick instead of tuning every knob.

A preset is only defaults: explicit params given with it win, and the result is validated by the
worker's own schema (`runpod_worker.contract.TrainingParams`), so both sides agree on every value.
"""

from __future__ import annotations

from typing import Any

DEFAULT_PRESET = "balanced"

PRESETS: dict[str, dict[str, Any]] = {
    # A quick likeness check: fewer steps at a higher learning rate, no 1024 px bucket.
    "fast": {"steps": 600, "rank": 16, "learning_rate": 4e-4, "resolutions": [512, 768]},
    # The usual Flux character LoRA: ~1500 steps at 1e-4 over 10-20 photos.
    "balanced": {"steps": 1500, "rank": 16, "learning_rate": 1e-4, "resolutions": [512, 768, 1024]},
    # More capacity and steps for fine detail (faces, tattoos); roughly twice the cost of balanced.
    "quality": {"steps": 3000, "rank": 32, "learning_rate": 1e-4, "resolutions": [512, 768, 1024]},
}

# The samples a run renders at each save unless its params say otherwise: the character as a portrait, in a
# three-quarter view, full-body, and somewhere else, so a gallery column shows likeness and flexibility.
# AI Toolkit puts the trigger word where `[trigger]` stands (BaseSDTrainProcess.py:326-328 at 27a03a91).
TRIGGER = "[trigger]"
DEFAULT_SAMPLE_PROMPTS: list[str] = [
    "a close-up portrait photo of [trigger], looking at the camera, soft window light",
    "a three-quarter view photo of [trigger], head turned slightly to the side, neutral background",
    "a full-body photo of [trigger] standing in a city street, natural daylight",
    "a photo of [trigger] sitting in a cafe by the sea, warm evening light",
]
