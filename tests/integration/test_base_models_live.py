"""Every base model trains end to end on the live stack: the studio submits the run, the unmodified worker
runs the simulated trainer, and the run completes with the LoRA kept and verified in the bucket — both files
of Wan 2.2 14B. The stored files are each model's own layout as AI Toolkit 27a03a91 writes it (tensor names,
count and widths of the real models), so a run of one model can never be stored as another's.

One stack for the module; rank 4 and the fewest steps the contract allows, with only the final save, keep the
files and the run short."""

from __future__ import annotations

import contextlib
import json
import struct
from typing import Any

import pytest
from django.core.files.storage import default_storage

from runpod_worker.contract import BaseModel
from tests.integration.conftest import Stack, wait_for
from tests.integration.test_training_live import character_ready_to_train, explain, final, lora_objects
from tests.support.grouping import in_one_process
from training.models import TrainingRun
from training.services import training_run_start

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True), in_one_process(__name__)]
RANK = 4
STEPS = 100  # the contract's minimum


@pytest.fixture(scope="module")
def stand_in_env() -> dict[str, str]:
    """Every block in every LoRA (the suite's stand-ins write the first two only): this module tests the
    whole layout of each model's files."""
    return {"SIMULATED_TRAINER_LORA_BLOCKS": ""}


# What each base model's LoRA file holds, from AI Toolkit 27a03a91 and the real models' widths: the prefix
# of every tensor (diffusers/PEFT keys for FLUX.1, ComfyUI keys for the others), how many tensors, one tensor
# and its shape at rank 4, and `ss_base_model_version` (each model class's get_base_model_version).
LAYOUTS: dict[str, tuple[str, int, str, list[int], str]] = {
    # 19 double blocks x 14 modules + 38 single blocks x 6, two tensors each; width 3072, MLP 12288
    BaseModel.FLUX_DEV: (
        "transformer.", (19 * 14 + 38 * 6) * 2,
        "transformer.single_transformer_blocks.37.proj_out.lora_A.weight", [RANK, 3072 + 12288], "flux.1",
    ),
    BaseModel.FLUX_SCHNELL: (
        "transformer.", (19 * 14 + 38 * 6) * 2, "transformer.transformer_blocks.0.attn.to_q.lora_B.weight",
        [3072, RANK], "flux.1",
    ),
    # 60 blocks x 14 modules (qwen_image.py:418-423 saves diffusion_model.*)
    BaseModel.QWEN_IMAGE: (
        "diffusion_model.transformer_blocks.", 60 * 14 * 2,
        "diffusion_model.transformer_blocks.59.img_mlp.net.0.proj.lora_B.weight", [12288, RANK], "qwen_image",
    ),
    # one file per expert, 40 blocks x 10 modules each at width 5120 (wan21.py's convert_to_original)
    BaseModel.WAN22: (
        "diffusion_model.blocks.", 40 * 10 * 2, "diffusion_model.blocks.39.ffn.0.lora_B.weight",
        [13824, RANK], "wan_2.2_14b",
    ),
    # one file, 30 blocks x 10 modules at width 3072, FFN 14336
    BaseModel.WAN22_5B: (
        "diffusion_model.blocks.", 30 * 10 * 2, "diffusion_model.blocks.29.self_attn.q.lora_A.weight",
        [RANK, 3072], "wan_2.2_5b",
    ),
    # 30 layers x 8 modules at width 3840 (z_image.py:467-472 saves diffusion_model.*)
    BaseModel.Z_IMAGE: (
        "diffusion_model.layers.", 30 * 8 * 2, "diffusion_model.layers.29.feed_forward.w2.lora_A.weight",
        [RANK, 10240], "zimage",
    ),
}  # fmt: skip


def stored_header(name: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The tensor index and metadata of a stored safetensors file, read from the bucket."""
    with default_storage.open(name, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    return header, header.pop("__metadata__", {})


def assert_layout(name: str, base_model: str) -> None:
    prefix, count, tensor, shape, version = LAYOUTS[base_model]
    header, metadata = stored_header(name)
    assert len(header) == count
    assert all(
        key.startswith(prefix) and key.endswith((".lora_A.weight", ".lora_B.weight")) for key in header
    )
    assert header[tensor]["shape"] == shape
    assert metadata["ss_base_model_version"] == version
    assert json.loads(metadata["training_info"])["step"] == STEPS


def train(owner: Any, base_model: str) -> TrainingRun:
    character = character_ready_to_train(owner)
    run = training_run_start(
        character=character,
        requested_by=owner,
        params={"steps": STEPS, "rank": RANK, "save_every": STEPS},
        base_model=base_model,
        source="user",
    )
    return final(run, timeout=120)


def assert_kept(stack: Stack, run: TrainingRun, names: list[str]) -> None:
    """The run's verified copies are the character's only LoRA files: every upload goes once the completion
    that kept them has committed."""
    with contextlib.suppress(TimeoutError):
        wait_for(lambda: sorted(lora_objects(stack, run.character)) == sorted(names), timeout=15)
    assert sorted(lora_objects(stack, run.character)) == sorted(names), explain(stack)


@pytest.mark.parametrize(
    "base_model", [model for model in BaseModel.SUPPORTED if model not in BaseModel.SPLIT]
)
def test_a_run_of_each_one_file_base_model_stores_its_lora_in_that_models_layout(
    alice: Any, shared_stack: Any, base_model: str
) -> None:
    stack = shared_stack()

    run = train(alice, base_model)

    assert run.status == "completed", explain(stack) + run.error_message
    assert (run.base_model, run.lora_low_noise_name) == (base_model, "")
    assert_layout(run.lora_name, base_model)
    assert default_storage.size(run.lora_name) == run.lora_bytes
    assert_kept(stack, run, [run.lora_name])


def test_a_wan22_run_stores_both_expert_files_each_verified_and_in_the_14b_layout(
    alice: Any, shared_stack: Any
) -> None:
    stack = shared_stack()

    run = train(alice, BaseModel.WAN22)

    assert run.status == "completed", explain(stack) + run.error_message
    reported = stack.runpod.wait_for(run.runpod_job_id, timeout=30)["output"]
    # Each kept file is the one the worker reported for its expert, byte for byte.
    assert (run.lora_bytes, run.lora_sha256) == (reported["lora"]["bytes"], reported["lora"]["sha256"])
    low = reported["lora_low_noise"]
    assert (run.lora_low_noise_bytes, run.lora_low_noise_sha256) == (low["bytes"], low["sha256"])
    assert reported["lora"]["name"].endswith("_high_noise.safetensors")
    assert low["name"].endswith("_low_noise.safetensors")
    assert run.lora_sha256 != run.lora_low_noise_sha256
    for name in (run.lora_name, run.lora_low_noise_name):
        assert_layout(name, BaseModel.WAN22)
    assert_kept(stack, run, [run.lora_name, run.lora_low_noise_name])
