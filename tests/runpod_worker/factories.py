"""Valid job input documents to start each test from."""

from __future__ import annotations

import copy
from typing import Any

RUN_ID = "3f2b8a9c-1d4e-4f6a-9b7c-2e5d8f0a1b3c"
SHA = "a" * 64


SPLIT = ("wan22",)


def job_input(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "contract_version": 1,
        "run_id": RUN_ID,
        "trigger_word": "ohwx",
        "base_model": "flux-dev",
        "gpu_preset": None,
        "params": {"steps": 100, "rank": 4, "save_every": 50},
        "images": [
            {
                "url": "https://storage.example/img01.jpg",
                "sha256": SHA,
                "filename": "img01.jpg",
                "caption": None,
            }
        ],
        "output": {
            "lora_name": "alice_v1",
            "lora_upload_url": "https://storage.example/alice_v1.safetensors",
        },
        "callback": None,
    }
    data.update(copy.deepcopy(overrides))
    if data["base_model"] in SPLIT and "lora_low_noise_upload_url" not in data["output"]:
        # A model with two experts uploads two LoRA files.
        data["output"]["lora_low_noise_upload_url"] = "https://storage.example/alice_v1_low_noise.safetensors"
    return data
