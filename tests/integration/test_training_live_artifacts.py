"""Watching a run learn, on the live stack the module's tests share: every sample and checkpoint the
trainer writes reaches storage and the database verified, and a cancelled run keeps what it made. A worker
lost mid-run resuming from its last checkpoint is in test_fault_resume.py (it needs slower steps). LoRA
rank 4 throughout: the steps are what is tested, not the file size.

    make test PYTEST_ARGS=tests/integration/test_training_live_artifacts.py
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from django.core.files.storage import default_storage

from tests.integration.conftest import wait_for
from tests.integration.test_training_live import character_ready_to_train, explain, final
from tests.support.grouping import in_one_process
from training.artifacts import stored_lora_digest
from training.models import Checkpoint, LossSeries, Sample, TrainingRun
from training.services import training_run_cancel, training_run_start

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True), in_one_process(__name__)]

PROMPTS = ["a portrait of [trigger]", "[trigger] on a beach", "a full-body photo of [trigger]"]


def started(owner: Any, **params: Any) -> TrainingRun:
    character = character_ready_to_train(owner)
    return training_run_start(
        character=character, requested_by=owner, params={"rank": 4, **params}, source="user"
    )


def verified(run: TrainingRun, samples: int, checkpoints: int, timeout: float = 30.0) -> None:
    """Waits until the run's verification task has read every reported file back from storage."""

    def done() -> bool:
        have = (
            Sample.objects.filter(run=run, verified_at__isnull=False).count(),
            Checkpoint.objects.filter(run=run, verified_at__isnull=False).count(),
        )
        return have == (samples, checkpoints)

    wait_for(done, timeout=timeout, what=f"{samples} samples and {checkpoints} checkpoints verified")


def stored_digest(name: str) -> tuple[int, str]:
    with default_storage.open(name, "rb") as handle:
        data = handle.read()
    return len(data), hashlib.sha256(data).hexdigest()


def test_three_prompts_every_100_of_300_steps_give_9_samples_and_3_checkpoints_each_verified(
    alice: Any, shared_stack: Any
) -> None:
    stack = shared_stack()
    run = final(started(alice, steps=300, save_every=100, sample_prompts=PROMPTS), timeout=90)
    assert run.status == "completed", explain(stack) + run.error_message

    verified(run, samples=9, checkpoints=3)
    samples = Sample.objects.filter(run=run)
    assert {(s.step, s.prompt_index) for s in samples} == {
        (st, i) for st in (100, 200, 300) for i in range(3)
    }
    for sample in samples:
        assert stored_digest(sample.image.name) == (sample.bytes, sample.sha256)
        assert default_storage.exists(sample.thumbnail.name)
    checkpoints = Checkpoint.objects.filter(run=run).order_by("step")
    assert [(c.step, c.final) for c in checkpoints] == [(100, False), (200, False), (300, True)]
    for checkpoint in checkpoints:
        assert stored_digest(checkpoint.file) == (checkpoint.bytes, checkpoint.sha256)
        assert checkpoint.pruned_at is None
    # Once the run has ended, the optimizer states (only a resume needs them) are removed.
    wait_for(lambda: not Checkpoint.objects.filter(run=run).exclude(optimizer_file="").exists(), timeout=15)
    series = LossSeries.objects.get(run=run)
    steps = [step for step, _ in series.loss]
    assert steps == sorted(set(steps)) and steps[-1] >= 290


def test_a_run_cancelled_after_step_251_keeps_its_checkpoint_at_250(alice: Any, shared_stack: Any) -> None:
    stack = shared_stack()
    run = started(alice, steps=1000, save_every=250, sample_prompts=PROMPTS[:1])
    wait_for(
        lambda: TrainingRun.objects.filter(pk=run.pk, progress_step__gt=251).exists(),
        timeout=60,
        what="step 251",
    )

    run = training_run_cancel(run=run, source="user")

    assert run.status == "cancelled"
    try:
        checkpoint = wait_for(
            lambda: Checkpoint.objects.filter(run=run, step=250, verified_at__isnull=False).first(),
            timeout=30,
            what="the checkpoint at 250, verified",
        )
    except TimeoutError as exc:
        rows = list(Checkpoint.objects.filter(run=run).values("step", "verified_at", "problem"))
        raise AssertionError(f"{exc}; rows: {rows}\n{explain(stack)}") from exc
    assert stored_digest(checkpoint.file) == (checkpoint.bytes, checkpoint.sha256), explain(stack)
    assert stored_lora_digest(checkpoint.file) is not None  # a complete safetensors file
    assert not Checkpoint.objects.filter(run=run, final=True).exists()
