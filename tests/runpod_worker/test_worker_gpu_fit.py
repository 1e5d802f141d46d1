"""A worker refuses a card smaller than its job's base model needs, before it downloads or trains anything:
RunPod places a job on any pool the endpoint lists, so a 16 GB worker can be handed a model that needs 24 GB.

The unmodified handler reads its card from `nvidia-smi`, which these tests put on its PATH as a script that
answers the worker's query (`--query-gpu=name,memory.total --format=csv,noheader,nounits`) with the figures
real cards report, from a file each test writes."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runpod_worker.config import gpu_too_small
from runpod_worker.contract import BaseModel, GpuInfo, JobOutput, parse_error
from tests.runpod_worker.conftest import Bucket, FakeBackend, image_entry
from tests.support.local_runpod import LocalRunPod

# nvidia-smi's memory.total in MiB: an RTX A4000 and an RTX 4000 Ada (AMPERE_16), an L4 (AMPERE_24, which
# reports less than its 24 GB), an RTX 4090 (ADA_24).
A4000, RTX_4000_ADA, L4, RTX_4090 = (
    ("NVIDIA RTX A4000", 16376),
    ("NVIDIA RTX 4000 Ada Generation", 20475),
    ("NVIDIA L4", 23034),
    ("NVIDIA GeForce RTX 4090", 24564),
)


@pytest.mark.parametrize("card", [A4000, RTX_4000_ADA])
@pytest.mark.parametrize("base_model", sorted(BaseModel.SUPPORTED))
def test_a_card_under_24_gb_is_too_small_for_every_base_model(card: tuple[str, int], base_model: str) -> None:
    name, mib = card
    refusal = gpu_too_small(base_model, GpuInfo(name, round(mib / 1024, 1)))

    assert refusal is not None
    assert name in refusal and "needs a 24 GB card" in refusal and "RUNPOD_GPU_POOLS" in refusal


@pytest.mark.parametrize("card", [L4, RTX_4090, ("NVIDIA A100 80GB PCIe", 81920)])
@pytest.mark.parametrize("base_model", sorted(BaseModel.SUPPORTED))
def test_every_24_gb_card_and_larger_fits_every_base_model(card: tuple[str, int], base_model: str) -> None:
    name, mib = card

    assert gpu_too_small(base_model, GpuInfo(name, round(mib / 1024, 1))) is None


def test_a_machine_without_a_readable_card_is_not_refused() -> None:
    # The simulator and the CPU smoke report 0 GB; so does a worker whose nvidia-smi failed.
    assert gpu_too_small(BaseModel.QWEN_IMAGE, GpuInfo("no GPU (CPU only)", 0.0)) is None


# ----------------------------------------------------------------------------- through the handler


@pytest.fixture(scope="module")
def card_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gpu") / "card.csv"


@pytest.fixture(scope="module")
def runpod(tmp_path_factory: pytest.TempPathFactory, card_file: Path) -> Iterator[LocalRunPod]:
    bin_dir = tmp_path_factory.mktemp("bin")
    script = bin_dir / "nvidia-smi"
    script.write_text(f'#!/bin/sh\ncat "{card_file}"\n')
    script.chmod(0o755)
    stand_in = LocalRunPod(
        workdir=tmp_path_factory.mktemp("local-runpod"),
        workers=1,
        env={"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "SIMULATED_TRAINER_SECONDS_PER_STEP": "0"},
    )
    stand_in.start()
    try:
        yield stand_in
    finally:
        stand_in.kill()


def _job(bucket: Bucket, backend: FakeBackend, base_model: str) -> dict[str, Any]:
    return {
        "contract_version": 1,
        "run_id": str(uuid.uuid4()),
        "trigger_word": "ohwx",
        "base_model": base_model,
        "params": {"steps": 100, "rank": 4, "save_every": 100},
        "images": [image_entry(bucket, n) for n in range(3)],
        "output": {"lora_name": "alice_v1", "lora_upload_url": bucket.put_url("loras/alice_v1.safetensors")},
        "callback": backend.callback(),
    }


@pytest.mark.integration
def test_a_worker_on_a_16_gb_card_fails_the_job_at_once_saying_which_pools_to_remove(
    runpod: LocalRunPod, card_file: Path, bucket: Bucket, fake_backend: FakeBackend
) -> None:
    card_file.write_text(f"{A4000[0]}, {A4000[1]}\n")

    final = runpod.wait_for(runpod.run(_job(bucket, fake_backend, BaseModel.Z_IMAGE)), timeout=60)

    assert final["status"] == "FAILED", runpod.logs()
    error = parse_error(final["error"])
    assert error.code == "out_of_memory"
    assert "NVIDIA RTX A4000, 16 GB" in error.message and "z-image, which needs a 24 GB card" in error.message
    assert "remove the pools under 24 GB from RUNPOD_GPU_POOLS" in error.message
    # Nothing was downloaded, trained or uploaded: no progress past the claim, no LoRA.
    assert [event["event"] for event in fake_backend.events] == ["started"]
    assert bucket.stored() == [f"images/img{n:02d}.jpg" for n in range(3)]


@pytest.mark.integration
def test_a_worker_on_an_l4_trains_a_model_that_needs_24_gb(
    runpod: LocalRunPod, card_file: Path, bucket: Bucket, fake_backend: FakeBackend
) -> None:
    card_file.write_text(f"{L4[0]}, {L4[1]}\n")

    final = runpod.wait_for(runpod.run(_job(bucket, fake_backend, BaseModel.Z_IMAGE)), timeout=60)

    assert final["status"] == "COMPLETED", runpod.logs()
    assert JobOutput.from_dict(final["output"]).gpu == GpuInfo("NVIDIA L4", 22.5)
    assert "loras/alice_v1.safetensors" in bucket.stored()
