"""The fault matrix's resume case on a live stack of its own: RunPod loses a GPU worker mid-run and runs
the job again; the studio tells the new delivery to resume from the newest verified checkpoint.

Its stand-in takes 0.02 s a step (the shared stacks take 0.01): a checkpoint's upload, its report and its
verification end well within the 200 steps (4 s) between a save and the kill, as they do on a GPU, where
100 steps take minutes (with the kill after step 600, 2 s were not always enough on two busy cores), as
in the worker's own test (tests/runpod_worker/test_learning_on_local_runpod.py). The stand-in kills a GPU
worker, not the stack.

    make test PYTEST_ARGS=tests/integration/test_fault_resume.py
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.core.files.storage import default_storage

from runpod_worker.contract import JobOutput
from runpod_worker.trainer import safetensors_metadata, steps_from_metadata
from tests.integration.test_training_live import explain, final
from tests.integration.test_training_live_artifacts import PROMPTS, started, verified
from training.artifacts import stored_lora_digest
from training.models import Checkpoint, LossSeries

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

SLOWER_STEPS = {"SIMULATED_TRAINER_SECONDS_PER_STEP": "0.02"}


def test_a_worker_lost_after_step_700_resumes_from_its_last_checkpoint(
    alice: Any, stack_factory: Any, tmp_path: Path
) -> None:
    """1000 steps, save_every 250, the GPU worker killed after step 700: RunPod runs the job again, the
    studio answers the new delivery's "started" with its newest verified checkpoint, and the run completes
    having trained at most one save interval twice, with a complete LoRA."""
    stack = stack_factory(runpod_env=SLOWER_STEPS, faults={"kill_worker_after_step": 700})

    run = final(started(alice, steps=1000, save_every=250, sample_prompts=PROMPTS[:1]), timeout=240)

    assert run.status == "completed", explain(stack) + run.error_message
    job = stack.runpod.state()["jobs"][run.runpod_job_id]
    lost, _resumed = job["deliveries"]
    killed_at = lost["killed_at_step"]
    output = JobOutput.from_dict(stack.runpod.wait_for(run.runpod_job_id, timeout=30)["output"])
    assert output.resumed_from_step is not None, explain(stack)
    assert killed_at - 250 <= output.resumed_from_step <= killed_at
    assert killed_at + (1000 - output.resumed_from_step) <= 1250
    # The LoRA is complete: a whole safetensors file whose metadata counts the whole run.
    assert stored_lora_digest(run.lora_name) is not None
    local = tmp_path / "lora.safetensors"
    with default_storage.open(run.lora_name, "rb") as handle:
        local.write_bytes(handle.read())
    assert steps_from_metadata(safetensors_metadata(local)) == 1000
    verified(run, samples=4, checkpoints=4)
    assert sorted(Checkpoint.objects.filter(run=run).values_list("step", flat=True)) == [250, 500, 750, 1000]
    series = LossSeries.objects.get(run=run)
    assert series.resumed_from_step == output.resumed_from_step
    steps = [step for step, _ in series.loss]
    assert steps == sorted(set(steps))
