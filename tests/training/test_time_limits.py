"""A run's time limit on RunPod fits the run: its `executionTimeout` comes from its steps on the slowest GPU
the endpoint may place it on, plus a start-up allowance, and a run that cannot fit under the most a run may
take is refused at start — form, API and command alike — before anything is billed.

RunPod places a job "on whichever listed pool has capacity" (v2 OpenAPI `BaseEndpointGpuConfig.pools`), and
its `executionTimeout` is 5 s to 7 days (docs serverless/endpoints/send-requests.mdx:116)."""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from studio.errors import ApplicationError
from tests.characters.images import distinct_jpegs
from tests.developer.api_helpers import alice_api, api_isolation, assert_error
from tests.training.conftest import FakeProvider, make_run
from tests.training.test_views import client_for
from training import time_limits
from training.management.commands import train_character
from training.models import TrainingRun
from training.preflight import training_retry_refusal
from training.services import training_run_poll, training_run_retry, training_run_start, training_run_submit

__all__ = ["alice_api", "api_isolation"]


@pytest.fixture(autouse=True)
def endpoint(settings: Any) -> None:
    """A100 80 GB first, RTX 4090 second (the default pools): the 4090, at 2 s a step, is the slowest."""
    settings.RUNPOD_GPU_POOLS = ["AMPERE_80", "ADA_24"]
    settings.TRAINING_SECONDS_PER_STEP = {"RTX 4090": "2.0", "A100 80GB": "1.1", "H100": "0.8"}
    settings.TRAINING_OVERHEAD_SECONDS = 600
    settings.TRAINING_TIME_LIMIT_MARGIN = 1.25
    settings.TRAINING_EXECUTION_TIMEOUT_SECONDS = 3 * 3600


def start(character: Any, steps: int) -> TrainingRun:
    return training_run_start(
        character=character, requested_by=character.owner, params={"steps": steps}, source="user"
    )


def test_the_job_is_given_its_steps_on_the_slowest_gpu_plus_start_up_as_its_execution_timeout(
    character: Any, provider: FakeProvider
) -> None:
    run = start(character, 1500)

    training_run_submit(run=run)

    # (1500 steps x 2.0 s on the RTX 4090 + 600 s of start-up) x 1.25
    assert provider.submitted[0]["policy"]["executionTimeout"] == 4_500_000
    assert TrainingRun.objects.get(pk=run.pk).execution_timeout_s == 4500


def test_b3_a_long_run_that_would_be_killed_on_the_slowest_pool_is_refused_before_anything_is_billed(
    character: Any, provider: FakeProvider
) -> None:
    # 6000 steps x 2.0 s on a 4090 + 600 s = 12,600 s, past the 10,800 s a run may take: RunPod would kill it
    # after about three billed hours if it landed on the 4090.
    with pytest.raises(ApplicationError) as refused:
        start(character, 6000)

    assert refused.value.code == "run_too_long"
    message = refused.value.message
    assert "3 h" in message and "RTX 4090" in message
    assert "Choose at most 4020 steps" in message
    assert refused.value.fields == {"steps": [message]}
    assert not TrainingRun.objects.exists() and provider.submitted == []


def test_the_most_steps_named_is_the_most_that_fit(character: Any) -> None:
    assert time_limits.run_time_limit(steps=4020).fits
    assert not time_limits.run_time_limit(steps=4021).fits
    assert start(character, 4020).execution_timeout_s == 10_800


def test_without_the_slow_pool_the_same_run_fits(character: Any, settings: Any) -> None:
    settings.RUNPOD_GPU_POOLS = ["AMPERE_80"]

    run = start(character, 6000)

    assert run.execution_timeout_s == 9000  # (6000 x 1.1 + 600) x 1.25


def test_a_gpu_never_measured_counts_as_slow_as_the_slowest_measured_one(settings: Any) -> None:
    settings.RUNPOD_GPU_POOLS = ["AMPERE_80", "AMPERE_24"]  # L4, RTX A5000, RTX 3090: none measured

    limit = time_limits.run_time_limit(steps=1000)

    assert (limit.gpu, limit.seconds_per_step) == ("L4", 2)


def test_no_run_goes_past_runpods_own_seven_days(settings: Any) -> None:
    settings.TRAINING_EXECUTION_TIMEOUT_SECONDS = 30 * 24 * 3600

    assert time_limits.longest_run_seconds() == 7 * 24 * 3600


def test_a_retry_is_refused_once_the_run_no_longer_fits(
    character: Any, settings: Any, provider: FakeProvider
) -> None:
    settings.RUNPOD_GPU_POOLS = ["AMPERE_80"]
    failed = make_run(character, "failed", params={"steps": 6000, "rank": 16})
    settings.RUNPOD_GPU_POOLS = ["AMPERE_80", "ADA_24"]

    with pytest.raises(ApplicationError, match="Choose at most 4020 steps"):
        training_run_retry(run=failed, requested_by=character.owner, source="user")


def test_the_sweep_ends_a_run_at_its_own_time_limit_not_the_longest_one(
    character: Any, provider: FakeProvider
) -> None:
    run = start(character, 600)  # (600 x 2.0 + 600) x 1.25 = 2250 s
    started = timezone.now()
    TrainingRun.objects.filter(pk=run.pk).update(status="training", runpod_job_id="job-1", started_at=started)

    with time_machine.travel(started + timedelta(seconds=2250) + timedelta(minutes=6)):
        training_run_poll(run_id=run.pk)

    run.refresh_from_db()
    assert (run.status, run.error_code) == ("failed", "timed_out")


# ----------------------------------------------------------------------------- every way to start


def test_the_confirm_step_shows_the_time_limit_in_place_of_start_training(character: Any, alice: Any) -> None:
    page = client_for(alice).post(
        reverse("training:start", args=[character.pk]), {"preset": "quality", "steps": "6000"}
    )

    text = page.content.decode()
    assert "This run cannot start." in text and "Choose at most 4020 steps" in text
    assert 'name="confirm"' not in text


def test_the_api_refuses_a_run_too_long_for_its_time_limit_naming_the_steps(
    alice_api: APIClient, character: Any
) -> None:
    response = alice_api.post(
        f"/api/v1/characters/{character.pk}/runs", {"params": {"steps": 6000}}, format="json"
    )

    error = assert_error(response, 400, "run_too_long")
    assert "Choose at most 4020 steps" in error["message"] and "steps" in error["fields"]
    assert not TrainingRun.objects.exists()


def test_the_train_character_command_refuses_it_as_bad_input_to_change(
    alice: Any, tmp_path: Path, settings: Any
) -> None:
    settings.TRAINING_MIN_IMAGES = 3
    for index, content in enumerate(distinct_jpegs(3)):
        (tmp_path / f"photo-{index}.jpg").write_bytes(content)

    with pytest.raises(CommandError) as refused:
        call_command(
            "train_character",
            *("--user", "alice", "--name", "Anna", "--trigger", "ohwx_anna"),
            *("--images", str(tmp_path), "--steps", "6000", "--consent", "self", "--not-a-person"),
            stdout=io.StringIO(),
            stderr=io.StringIO(),
        )

    assert refused.value.returncode == train_character.EXIT_BAD_INPUT  # --steps is what to change
    assert "Choose at most 4020 steps" in str(refused.value)
    assert not TrainingRun.objects.exists()


# ------------------------------------------------------------------------------------- base models


def test_a_base_models_step_time_scales_its_time_limit(character: Any) -> None:
    # Qwen-Image's step runs through a 20B transformer: 1.7 times FLUX.1's (training/base_models.py).
    run = training_run_start(
        character=character,
        requested_by=character.owner,
        params={"steps": 1500},
        base_model="qwen-image",
        source="user",
    )

    assert run.execution_timeout_s == 7125  # (1500 x 2.0 x 1.7 + 600) x 1.25


def test_a_qwen_image_run_that_would_not_fit_is_refused_naming_the_model_and_the_steps_that_do(
    character: Any,
) -> None:
    with pytest.raises(ApplicationError) as refused:
        training_run_start(
            character=character,
            requested_by=character.owner,
            params={"steps": 3000},
            base_model="qwen-image",
            source="user",
        )

    assert "3000 Qwen-Image steps" in refused.value.message
    assert "Choose at most 2364 steps" in refused.value.message


def test_a_retry_is_foreseen_with_its_own_base_model(character: Any, settings: Any) -> None:
    failed = make_run(character, "failed", params={"steps": 3000, "rank": 16}, base_model="qwen-image")

    assert "Choose at most 2364 steps" in (training_retry_refusal(failed) or "")


def test_a_pool_too_small_for_the_model_does_not_set_its_time_limit(settings: Any) -> None:
    # RunPod never gives a FLUX.1 run the 16 GB pool's RTX A4000 (gpu_pools.model_pools), so however slow that
    # card is, the limit is reckoned on the slowest card the run may get: the RTX 4090.
    settings.TRAINING_SECONDS_PER_STEP = {"RTX A4000": "5.0", "RTX 4090": "2.0"}
    settings.RUNPOD_GPU_POOLS = ["AMPERE_16", "ADA_24"]

    gpu, per_step = time_limits.slowest_gpu("flux-dev")

    assert (gpu, per_step) == ("RTX 4090", 2)
