"""A LoRA in storage whose worker's report was lost, on the live stack: once RunPod's result can no longer
say how the run ended and the holder has gone silent, the run completes from the stored file, once.

The case of a job handed out twice, which shares a stack, is in test_fault_matrix_shared_stack.py.

    make test PYTEST_ARGS=tests/integration/test_fault_recovery.py
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from django.core.files.storage import default_storage

from tests.integration.test_fault_matrix import assert_one_job_one_lora, started_and_result_expired
from tests.integration.test_training_live import final
from training.models import TrainingRun

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def recovered_from_storage(run: TrainingRun) -> str:
    return str(run.events.get(to_status="completed").detail.get("recovered_from_storage", ""))


def assert_lora_is_the_stored_file(run: TrainingRun) -> None:
    stored = default_storage.open(run.lora_name).read()
    assert (len(stored), hashlib.sha256(stored).hexdigest()) == (run.lora_bytes, run.lora_sha256)


def test_a_lost_finished_callback_and_an_expired_result_complete_from_the_stored_lora(
    alice: Any, stack_factory: Any, finished_callback_lost: list[str]
) -> None:
    stack, run = started_and_result_expired(stack_factory, alice)

    run = final(run, timeout=60)

    # RunPod answers 404 for the job, the worker's report never arrived: the stored LoRA decides.
    assert_one_job_one_lora(stack, run, jobs=run.attempts)
    assert finished_callback_lost == [run.worker_delivery_id]
    assert recovered_from_storage(run) == "RunPod no longer knows the job and the worker's report was lost"
    assert_lora_is_the_stored_file(run)
    assert (run.cost_usd, run.next_poll_at) == (None, None)  # no execution time was read: none made up
