"""The smoke's checks of samples, checkpoints and resume, on made-up results: they pass a run that did
what the contract says and fail one that did not (the smoke itself needs the real AI Toolkit)."""

from __future__ import annotations

import hashlib
import json
import struct
from typing import Any

import pytest

from runpod_worker import smoke
from runpod_worker.contract import JobInput, checkpoint_steps, sample_steps

JPEG = b"\xff\xd8\xff" + b"sample"


def _checkpoint(step: int) -> bytes:
    header = json.dumps({"__metadata__": {"training_info": json.dumps({"step": step, "epoch": 0})}}).encode()
    return struct.pack("<Q", len(header)) + header


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _run(
    *, resume_at: int | None = None, restart_at_0: bool = False
) -> tuple[dict[str, Any], Any, dict[str, Any]]:
    """A side, status and document as a 100-step run with save and sample every 50 leaves them."""
    args = smoke.parse_args(["--steps", "100", "--save-every", "50", "--sample-every", "50"])
    side = smoke.LocalSide(images={"img00.jpg": JPEG}, base_url="http://127.0.0.1:1")
    document = smoke.job_input(side, args)
    spec = JobInput.from_dict(document)
    deliveries = ["a", "b"] if resume_at is not None else ["a"]
    for delivery in deliveries:
        side.events.append({"event": "started", "delivery_id": delivery})
    for step in checkpoint_steps(spec.params):
        data, optimizer = _checkpoint(step), f"optimizer {step}".encode()
        side.uploads[f"checkpoints/{step}.safetensors"] = data
        side.uploads[f"checkpoints/{step}.optimizer.pt"] = optimizer
        reported = {"step": step, "sha256": _sha(data), "optimizer_sha256": _sha(optimizer)}
        loss = {"loss": [[step + 5, 0.3]], "val_loss": []}
        side.events.append({"event": "progress", "delivery_id": "a", "stage": "training", "step": step + 10,
                            "checkpoints": [reported], "loss_series": loss})  # fmt: skip
    last = deliveries[-1]
    first_step = 0 if restart_at_0 else (resume_at or 0)
    side.events.append(
        {"event": "progress", "delivery_id": last, "stage": "training", "step": first_step + 1}
    )
    samples = []
    for step in sample_steps(spec.params):
        for index in range(2):
            side.uploads[f"samples/{step}_{index}.jpg"] = JPEG
            samples.append({"step": step, "prompt_index": index, "sha256": _sha(JPEG)})
    side.events.append({"event": "progress", "delivery_id": last, "stage": "training", "step": 100,
                        "samples": samples})  # fmt: skip
    output = {
        "lora": {"name": "smoke_lora.safetensors", "bytes": 1, "sha256": "0" * 64},
        "steps": 100,
        "trainer_version": "x",
        "gpu": {"name": "g", "memory_gb": 0.0},
        "timings": {"download_s": 0.0, "train_s": 0.0, "upload_s": 0.0},
        "resumed_from_step": resume_at,
    }
    return {"status": "COMPLETED", "output": output}, side, document


def test_a_run_with_every_sample_and_checkpoint_passes() -> None:
    status, side, document = _run()
    assert smoke.verify_artifacts(status, side, document) == {
        "checkpoints": 1,
        "samples": 4,
        "loss_points": 1,
    }


def test_a_missing_sample_fails_the_smoke() -> None:
    status, side, document = _run()
    del side.uploads["samples/100_1.jpg"]
    with pytest.raises(smoke.SmokeFailed, match="sample 100/1"):
        smoke.verify_artifacts(status, side, document)


def test_a_checkpoint_that_is_not_what_was_reported_fails_the_smoke() -> None:
    status, side, document = _run()
    side.uploads["checkpoints/50.safetensors"] = _checkpoint(49)
    with pytest.raises(smoke.SmokeFailed, match="checkpoint 50"):
        smoke.verify_artifacts(status, side, document)


def test_a_resume_from_the_last_checkpoint_passes() -> None:
    status, side, document = _run(resume_at=50)
    assert smoke.verify_resume(status, side, document) == {
        "resumed_from_step": 50,
        "steps_trained_in_all": 110,
    }


def test_a_resume_that_restarted_at_0_fails_the_smoke() -> None:
    status, side, document = _run(resume_at=50, restart_at_0=True)
    with pytest.raises(smoke.SmokeFailed, match="restarted instead of resuming"):
        smoke.verify_resume(status, side, document)


def test_a_run_never_run_again_fails_the_resume_proof() -> None:
    status, side, document = _run()
    with pytest.raises(smoke.SmokeFailed, match="not run again"):
        smoke.verify_resume(status, side, document)


def test_after_a_resume_the_lost_deliverys_checkpoints_and_loss_still_count() -> None:
    status, side, document = _run(resume_at=50)

    figures = smoke.verify_artifacts(status, side, document)

    assert figures["checkpoints"] == 1 and figures["loss_points"] == 1


def _with_lora(status: dict[str, Any], side: Any) -> None:
    """The final LoRA uploaded as the real trainer makes it: lora_A/B tensors, training_info step 100."""
    tensors = {
        f"transformer.single_transformer_blocks.0.proj_out.lora_{ab}.weight": {
            "dtype": "F32",
            "shape": [1],
            "data_offsets": [4 * i, 4 * i + 4],
        }
        for i, ab in enumerate("AB")
    }
    tensors["__metadata__"] = {"training_info": json.dumps({"step": 100, "epoch": 0})}  # type: ignore[assignment]
    header = json.dumps(tensors).encode()
    data = struct.pack("<Q", len(header)) + header + bytes(8)
    side.uploads["smoke_lora.safetensors"] = data
    status["output"]["lora"].update(bytes=len(data), sha256=_sha(data))


def test_a_resumed_runs_progress_may_go_back_to_the_checkpoint() -> None:
    # As with the real trainer: the lost delivery got past step 60, the next one went back to 50.
    status, side, _ = _run(resume_at=50)
    _with_lora(status, side)

    figures = smoke.verify(status, side, 100)

    assert figures["steps"] == 100 and figures["tensors"] == 2


def test_progress_going_back_within_one_delivery_fails_the_smoke() -> None:
    status, side, _ = _run()
    _with_lora(status, side)
    side.events.append({"event": "progress", "delivery_id": "a", "stage": "training", "step": 3})

    with pytest.raises(smoke.SmokeFailed, match="progress was not parsed"):
        smoke.verify(status, side, 100)
