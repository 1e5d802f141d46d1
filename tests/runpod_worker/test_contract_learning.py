"""The contract's samples, checkpoints and resume: which steps AI Toolkit makes what at, the upload targets
the backend signs for them, the resume block, and the output that reports them."""

from __future__ import annotations

from typing import Any

import pytest

from runpod_worker.contract import (
    CheckpointArtifact,
    ContractError,
    JobInput,
    JobOutput,
    ResumeSpec,
    SampleArtifact,
    checkpoint_steps,
    sample_steps,
)
from tests.runpod_worker.factories import SHA, job_input

PARAMS = {"steps": 1000, "rank": 4, "save_every": 250, "sample_every": 250, "sample_prompts": ["a", "b"]}
URL = "https://storage.example/put?X-Amz-Signature=abc"


def _spec(**overrides: Any) -> JobInput:
    data = job_input(params=dict(PARAMS))
    for key, value in overrides.items():
        if key == "params":
            data["params"].update(value)
        elif key == "output":
            data["output"].update(value)
        else:
            data[key] = value
    return JobInput.from_dict(data)


def _refused(**overrides: Any) -> str:
    with pytest.raises(ContractError) as caught:
        _spec(**overrides)
    return caught.value.field


def test_checkpoints_come_at_each_multiple_of_save_every_before_the_last_step() -> None:
    # BaseSDTrainProcess.py:2533,2554,2706: inside range(start, steps), never at the start step; the last
    # step is the final LoRA, `<name>.safetensors`.
    assert checkpoint_steps(_spec().params) == [250, 500, 750]
    assert checkpoint_steps(_spec(params={"steps": 1001}).params) == [250, 500, 750, 1000]


def test_samples_come_at_each_multiple_of_sample_every_and_after_the_last_step() -> None:
    assert sample_steps(_spec().params) == [250, 500, 750, 1000]


def test_the_baseline_sample_at_step_0_only_when_asked_for() -> None:
    assert sample_steps(_spec(params={"sample_first": True}).params) == [0, 250, 500, 750, 1000]


def test_no_samples_without_prompts_or_without_an_interval() -> None:
    assert sample_steps(_spec(params={"sample_prompts": []}).params) == []
    assert sample_steps(_spec(params={"sample_every": 0}).params) == []


def test_the_sample_seed_falls_back_to_the_run_seed_then_42() -> None:
    assert _spec().params.effective_sample_seed == 42
    assert _spec(params={"seed": 7}).params.effective_sample_seed == 7
    assert _spec(params={"seed": 7, "sample_seed": 3}).params.effective_sample_seed == 3


def test_upload_targets_are_read_and_found_by_step_and_prompt() -> None:
    spec = _spec(
        output={
            "checkpoints": [{"step": 250, "upload_url": URL, "optimizer_upload_url": URL + "1"}],
            "samples": [{"step": 1000, "prompt_index": 1, "upload_url": URL + "2"}],
        }
    )
    target = spec.output.checkpoint_for(250)
    assert target is not None and target.optimizer_upload_url == URL + "1"
    assert spec.output.checkpoint_for(500) is None
    sample = spec.output.sample_for(1000, 1)
    assert sample is not None and sample.upload_url == URL + "2"
    assert spec.output.sample_for(1000, 0) is None
    assert JobInput.from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize(
    ("output", "field"),
    [
        ({"checkpoints": [{"step": 300, "upload_url": URL, "optimizer_upload_url": URL}]}, "step"),
        ({"checkpoints": [{"step": 1000, "upload_url": URL, "optimizer_upload_url": URL}]}, "step"),
        ({"checkpoints": [{"step": 250, "upload_url": URL}]}, "optimizer_upload_url"),
        (
            {"checkpoints": [{"step": 250, "upload_url": "ftp://x", "optimizer_upload_url": URL}]},
            "upload_url",
        ),
        ({"samples": [{"step": 0, "prompt_index": 0, "upload_url": URL}]}, "step"),
        ({"samples": [{"step": 250, "prompt_index": 2, "upload_url": URL}]}, "prompt_index"),
        ({"samples": [{"step": 250, "prompt_index": 0, "url": URL}]}, "url"),
        ({"samples": "all"}, "output.samples"),
    ],
)
def test_a_target_the_trainer_will_never_fill_is_refused(output: dict[str, Any], field: str) -> None:
    assert _refused(output=output).endswith(field)


def test_a_repeated_target_is_refused() -> None:
    twice = [{"step": 250, "prompt_index": 0, "upload_url": URL}] * 2
    assert _refused(output={"samples": twice}) == "output.samples[1]"


def test_the_resume_block_names_a_checkpoint_step_and_both_files() -> None:
    resume = {
        "step": 500,
        "checkpoint_url": URL,
        "checkpoint_sha256": SHA,
        "optimizer_url": URL + "o",
        "optimizer_sha256": SHA,
    }
    spec = _spec(resume=resume)
    assert spec.resume == ResumeSpec(500, URL, SHA, URL + "o", SHA)
    assert JobInput.from_dict(spec.to_dict()) == spec


def test_resuming_without_optimizer_state_is_allowed() -> None:
    spec = _spec(resume={"step": 250, "checkpoint_url": URL, "checkpoint_sha256": SHA})
    assert spec.resume is not None and spec.resume.optimizer_url is None


@pytest.mark.parametrize(
    ("resume", "field"),
    [
        ({"step": 600, "checkpoint_url": URL, "checkpoint_sha256": SHA}, "resume.step"),
        ({"step": 250, "checkpoint_url": URL, "checkpoint_sha256": "x"}, "resume.checkpoint_sha256"),
        ({"step": 250, "checkpoint_sha256": SHA}, "resume.checkpoint_url"),
        (
            {"step": 250, "checkpoint_url": URL, "checkpoint_sha256": SHA, "optimizer_url": URL},
            "resume.optimizer_sha256",
        ),
        (
            {"step": 250, "checkpoint_url": URL, "checkpoint_sha256": SHA, "start_step": 0},
            "resume.start_step",
        ),
    ],
)
def test_a_bad_resume_block_is_refused(resume: dict[str, Any], field: str) -> None:
    assert _refused(resume=resume) == field


def test_an_output_with_checkpoints_and_samples_round_trips() -> None:
    output = JobOutput.from_dict(
        {
            "lora": {"name": "alice_v1.safetensors", "bytes": 10, "sha256": SHA},
            "steps": 1000,
            "trainer_version": "x",
            "gpu": {"name": "g", "memory_gb": 1.0},
            "timings": {"download_s": 1.0, "train_s": 2.0, "upload_s": 3.0},
            "checkpoints": [
                {
                    "step": 750,
                    "name": "alice_v1_000000750.safetensors",
                    "bytes": 5,
                    "sha256": SHA,
                    "optimizer_bytes": None,
                    "optimizer_sha256": None,
                }
            ],
            "samples": [
                {"step": 1000, "prompt_index": 0, "filename": "1__000001000_0.jpg", "bytes": 3, "sha256": SHA}
            ],
            "resumed_from_step": 500,
        }
    )
    assert output.checkpoints == [CheckpointArtifact(750, "alice_v1_000000750.safetensors", 5, SHA)]
    assert output.samples == [SampleArtifact(1000, 0, "1__000001000_0.jpg", 3, SHA)]
    assert JobOutput.from_dict(output.to_dict()) == output


def test_a_job_using_none_of_the_new_fields_is_the_document_older_workers_take() -> None:
    document = JobInput.from_dict(job_input()).to_dict()

    assert "resume" not in document
    assert set(document["output"]) == {"lora_name", "lora_upload_url"}
    assert "sample_seed" not in document["params"] and "sample_first" not in document["params"]
