from __future__ import annotations

import json
from typing import Any

import pytest

from runpod_worker.contract import (
    PARAM_DEFAULTS,
    ContractError,
    JobInput,
    JobOutput,
    Progress,
    WorkerError,
    parse_error,
)
from tests.runpod_worker.factories import RUN_ID, SHA, job_input


def _field_of(data: dict[str, Any]) -> str:
    with pytest.raises(ContractError) as caught:
        JobInput.from_dict(data)
    return caught.value.field


def test_a_minimal_input_gets_the_documented_defaults() -> None:
    job = JobInput.from_dict(job_input(params={}))
    assert job.params.steps == PARAM_DEFAULTS["steps"]
    assert job.params.alpha == job.params.rank == PARAM_DEFAULTS["rank"]
    assert job.params.resolutions == [512, 768, 1024]
    assert job.base_model == "flux-dev"
    assert job.callback is None


def test_it_round_trips_through_a_dict() -> None:
    data = job_input(callback={"url": "https://studio.example/cb", "token": "t0k"})
    job = JobInput.from_dict(data)
    assert JobInput.from_dict(job.to_dict()) == job


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"contract_version": 2}, "contract_version"),
        ({"run_id": "not-a-uuid"}, "run_id"),
        ({"trigger_word": "two words"}, "trigger_word"),
        ({"base_model": "sdxl"}, "base_model"),
        ({"gpu_preset": "48gb"}, "gpu_preset"),
        ({"params": {"steps": 99}}, "params.steps"),
        ({"params": {"steps": 6001}}, "params.steps"),
        ({"params": {"rank": 3}}, "params.rank"),
        ({"params": {"rank": 129}}, "params.rank"),
        ({"params": {"alpha": 0}}, "params.alpha"),
        ({"params": {"learning_rate": 0.1}}, "params.learning_rate"),
        ({"params": {"resolutions": []}}, "params.resolutions"),
        ({"params": {"resolutions": [512, 640]}}, "params.resolutions[1]"),
        ({"params": {"batch_size": 9}}, "params.batch_size"),
        ({"params": {"seed": -1}}, "params.seed"),
        ({"params": {"caption_dropout": 0.6}}, "params.caption_dropout"),
        ({"params": {"save_every": 10}}, "params.save_every"),
        ({"params": {"sample_prompts": ["ok"] * 11}}, "params.sample_prompts"),
        ({"params": {"sample_prompts": ["a ${HF_TOKEN} b"]}}, "params.sample_prompts[0]"),
        ({"params": {"sample_every": -1}}, "params.sample_every"),
        ({"params": {"auto_caption": "yes"}}, "params.auto_caption"),
        ({"params": {"stepz": 100}}, "params.stepz"),
        ({"images": []}, "images"),
        ({"output": {"lora_name": "../evil", "lora_upload_url": "https://x/y"}}, "output.lora_name"),
        ({"output": {"lora_name": "ok", "lora_upload_url": "ftp://x/y"}}, "output.lora_upload_url"),
        ({"callback": {"url": "https://x/cb"}}, "callback.token"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_it_names_the_bad_field(change: dict[str, Any], field: str) -> None:
    data = job_input()
    if "params" in change:
        data["params"] = {**data["params"], **change.pop("params")}
    data.update(change)
    assert _field_of(data) == field


def test_it_names_the_bad_image_by_index() -> None:
    good = {"url": "https://s/a.jpg", "sha256": SHA, "filename": "a.jpg", "caption": None}
    images = [good] * 3 + [{**good, "filename": "d.jpg", "sha256": "XYZ"}]
    images = [{**good, "filename": f"{name}.jpg"} for name in "abc"] + images[3:]
    assert _field_of(job_input(images=images)) == "images[3].sha256"


def test_it_refuses_a_path_in_an_image_filename() -> None:
    image = {"url": "https://s/a.jpg", "sha256": SHA, "filename": "../etc/passwd.jpg", "caption": None}
    assert _field_of(job_input(images=[image])) == "images[0].filename"


def test_it_refuses_two_images_whose_captions_would_share_a_file() -> None:
    image = {"url": "https://s/a.jpg", "sha256": SHA, "caption": None}
    images = [{**image, "filename": "face.jpg"}, {**image, "filename": "face.png"}]
    assert _field_of(job_input(images=images)) == "images[1].filename"


def test_it_refuses_more_than_200_images() -> None:
    image = {"url": "https://s/a.jpg", "sha256": SHA, "caption": None}
    images = [{**image, "filename": f"i{n}.jpg"} for n in range(201)]
    assert _field_of(job_input(images=images)) == "images"


def test_the_error_message_is_readable() -> None:
    with pytest.raises(ContractError) as caught:
        JobInput.from_dict(job_input(params={"steps": 50}))
    assert "between 100 and 6000" in caught.value.message


def test_the_callback_token_stays_out_of_the_repr() -> None:
    job = JobInput.from_dict(job_input(callback={"url": "https://x/cb", "token": "s3cr3t-value"}))
    assert "s3cr3t-value" not in repr(job)


def test_an_output_document_round_trips() -> None:
    data = {
        "contract_version": 1,
        "lora": {"name": "alice_v1.safetensors", "bytes": 10, "sha256": SHA},
        "steps": 100,
        "trainer_version": "0.12.26",
        "gpu": {"name": "NVIDIA A100 80GB PCIe", "memory_gb": 80.0},
        "timings": {"download_s": 1.0, "train_s": 2.0, "upload_s": 3.0},
    }
    assert JobOutput.from_dict(data).to_dict() == data


def test_auto_captions_are_on_unless_the_job_says_otherwise() -> None:
    assert JobInput.from_dict(job_input()).params.auto_caption is True
    assert (
        JobInput.from_dict(job_input(params={"steps": 100, "auto_caption": False})).params.auto_caption
        is False
    )


def test_a_job_with_auto_captions_on_is_the_document_it_was_before_them() -> None:
    """So a worker from before auto-captions still takes it; only "off" needs a worker that knows them."""
    on = JobInput.from_dict(job_input()).to_dict()
    off = JobInput.from_dict(job_input(params={"steps": 100, "auto_caption": False})).to_dict()

    assert "auto_caption" not in on["params"]
    assert off["params"]["auto_caption"] is False


def test_an_output_document_with_captions_round_trips() -> None:
    data = {
        "contract_version": 1,
        "lora": {"name": "alice_v1.safetensors", "bytes": 10, "sha256": SHA},
        "steps": 100,
        "trainer_version": "0.12.26",
        "gpu": {"name": "NVIDIA L40S", "memory_gb": 44.4},
        "timings": {"download_s": 1.0, "train_s": 2.0, "upload_s": 3.0, "caption_s": 4.5},
        "captions": [{"filename": "img02.jpg", "sha256": SHA, "caption": "[trigger], a woman in a red coat"}],
        "captioner": "Qwen/Qwen3-VL-2B-Instruct@89644892e4d85e24eaac8bacfd4f463576704203",
        "caption_error": "The captioner wrote no caption for some photos: img03.jpg trained on the trigger",
    }
    output = JobOutput.from_dict(data)

    assert output.captions[0].caption == "[trigger], a woman in a red coat"
    assert output.timings.caption_s == 4.5
    assert output.to_dict() == data


def test_an_output_document_from_before_captions_reads_as_none_made() -> None:
    data = {
        "lora": {"name": "alice_v1.safetensors", "bytes": 10, "sha256": SHA},
        "steps": 100,
        "trainer_version": "0.12.26",
        "gpu": {"name": "NVIDIA L40S", "memory_gb": 44.4},
        "timings": {"download_s": 1.0, "train_s": 2.0, "upload_s": 3.0},
    }
    output = JobOutput.from_dict(data)

    assert (output.captions, output.captioner, output.caption_error) == ([], None, None)
    assert output.timings.caption_s == 0.0


def test_an_output_document_with_a_missing_part_is_refused() -> None:
    with pytest.raises(ContractError):
        JobOutput.from_dict({"lora": {"name": "x"}})


def test_progress_round_trips() -> None:
    progress = {"stage": "training", "step": 10, "total_steps": 100, "loss": 0.25, "eta_s": 12.0}
    assert Progress.from_dict(progress).to_dict() == progress


def test_it_reads_our_own_error_json() -> None:
    error = WorkerError("out_of_memory", "Lower the batch size.", ["line"])
    assert parse_error(error.to_json()) == error


def test_it_reads_the_sdks_exception_json() -> None:
    sdk = {"error_type": "<class 'KeyError'>", "error_message": "'x'", "error_traceback": "Traceback\n  boom"}
    parsed = parse_error(json.dumps(sdk))
    assert parsed.code == "unknown"
    assert "KeyError" in parsed.message
    assert parsed.log_tail[-1] == "  boom"


def test_it_reads_a_plain_string_as_a_trainer_failure() -> None:
    assert parse_error("worker exploded") == WorkerError("trainer_failed", "worker exploded", [])


def test_it_reads_nothing_as_unknown() -> None:
    assert parse_error(None).code == "unknown"


def test_an_unknown_code_becomes_unknown() -> None:
    assert parse_error({"code": "gremlins", "message": "m"}).code == "unknown"


def test_the_run_id_must_be_a_uuid() -> None:
    assert JobInput.from_dict(job_input(run_id=RUN_ID.upper())).run_id == RUN_ID.upper()


def test_alpha_other_than_the_rank_is_refused_because_ai_toolkit_forces_alpha_to_rank_for_flux() -> None:
    with pytest.raises(ContractError) as caught:
        JobInput.from_dict(job_input(params={"steps": 100, "rank": 16, "alpha": 8}))

    assert caught.value.field == "params.alpha"
    assert "alpha = rank" in caught.value.message


def test_alpha_equal_to_the_rank_is_accepted() -> None:
    assert JobInput.from_dict(job_input(params={"steps": 100, "rank": 16, "alpha": 16})).params.alpha == 16


def test_a_model_access_error_is_read_back_with_its_code() -> None:
    error = parse_error(WorkerError("model_access", "set HF_TOKEN").to_json())

    assert (error.code, error.message) == ("model_access", "set HF_TOKEN")
