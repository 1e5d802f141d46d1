"""A base model trains only on the GPU pools whose cards fit it: a start is refused, saying what to change,
when none of `RUNPOD_GPU_POOLS` does; the estimate is the most the run may cost on a GPU it may train on; its
time limit is reckoned on the slowest of them. Every model needs a 24 GB card (`BaseModel.MIN_VRAM_GB`), so a
16 GB pool (AMPERE_16: RTX A4000, A4500, 4000 Ada, 2000 Ada) fits none."""

from __future__ import annotations

import io
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from runpod_worker.contract import BaseModel
from studio.errors import ApplicationError
from tests.characters.images import distinct_jpegs
from tests.developer.api_helpers import alice_api, api_isolation, assert_error
from tests.training.conftest import make_run
from tests.training.test_views import client_for
from training import gpu_pools, pricing
from training.base_models import BASE_MODELS
from training.models import TrainingRun
from training.services import training_run_retry, training_run_start

__all__ = ["alice_api", "api_isolation"]

pytestmark = pytest.mark.django_db

MODELS = list(BaseModel.SUPPORTED)


@pytest.fixture
def speeds(settings: Any) -> None:
    settings.TRAINING_GPU_TYPE = ""
    settings.TRAINING_OVERHEAD_SECONDS = 600
    settings.TRAINING_SECONDS_PER_STEP = {"RTX A4000": "5.0", "RTX 4090": "2.0", "A100 80GB": "1.1"}
    # What RunPod bills beyond the job (start-up, idle) is the same on every GPU and has tests of its own
    # (test_billed_beyond_execution.py): left out here, so the figures below are steps and overhead alone.
    settings.TRAINING_COLD_START_SECONDS = 0
    settings.RUNPOD_IDLE_TIMEOUT_SECONDS = 0


@pytest.fixture
def only_16_gb(settings: Any) -> None:
    settings.RUNPOD_GPU_POOLS = ["AMPERE_16"]


def start(character: Any, base_model: str | None = None) -> TrainingRun:
    return training_run_start(
        character=character, requested_by=character.owner, base_model=base_model, source="user"
    )


# --- Which pools a model trains on -------------------------------------------------------------------


@pytest.mark.parametrize("base_model", MODELS)
def test_a_model_trains_on_the_pools_of_24_gb_and_up_in_their_order(settings: Any, base_model: str) -> None:
    settings.RUNPOD_GPU_POOLS = ["AMPERE_16", "AMPERE_80", "ADA_24"]

    assert [pool.id for pool in gpu_pools.model_pools(base_model)] == ["AMPERE_80", "ADA_24"]
    assert gpu_pools.model_gpus(base_model) == ["A100 80GB", "RTX 4090"]
    assert gpu_pools.pool_refusal(base_model) is None


@pytest.mark.parametrize("base_model", MODELS)
def test_with_only_a_16_gb_pool_no_model_can_train_and_staff_are_told_what_to_add(
    only_16_gb: None, base_model: str
) -> None:
    refusal = gpu_pools.pool_refusal(base_model)

    assert refusal is not None
    assert refusal.startswith(f"{BASE_MODELS[base_model].label} needs a GPU with at least 24 GB")
    assert "(RUNPOD_GPU_POOLS: AMPERE_16)" in refusal
    assert "Ask staff to add a pool of 24 GB or more to RUNPOD_GPU_POOLS, such as AMPERE_24" in refusal


# --- A start refused --------------------------------------------------------------------------------


def test_a_start_on_a_model_no_pool_fits_is_refused_before_a_run_exists(
    only_16_gb: None, character: Any
) -> None:
    with pytest.raises(ApplicationError) as refused:
        start(character, BaseModel.QWEN_IMAGE)

    assert refused.value.code == "no_gpu_pool_fits"
    assert refused.value.fields == {"base_model": [refused.value.message]}
    assert "Qwen-Image needs a GPU with at least 24 GB" in refused.value.message
    assert not TrainingRun.objects.exists()


def test_the_characters_own_base_model_is_checked_too(only_16_gb: None, character: Any) -> None:
    character.base_model = BaseModel.WAN22_5B
    character.save()

    with pytest.raises(ApplicationError, match=r"Wan 2\.2 TI2V \(5B\) needs a GPU with at least 24 GB"):
        start(character)


def test_a_retry_is_refused_when_no_pool_fits_its_model_any_more(character: Any, settings: Any) -> None:
    failed = make_run(
        character, TrainingRun.Status.FAILED, base_model=BaseModel.Z_IMAGE, finished_at=timezone.now()
    )
    settings.RUNPOD_GPU_POOLS = ["AMPERE_16"]

    with pytest.raises(ApplicationError, match="Z-Image needs a GPU with at least 24 GB"):
        training_run_retry(run=failed, requested_by=character.owner, source="user")

    page = client_for(character.owner).get(reverse("training:run-detail", args=[failed.pk])).content.decode()
    assert 'id="retry-refusal">Z-Image needs a GPU with at least 24 GB' in page


def test_the_api_answers_400_with_the_refusal(only_16_gb: None, alice_api: APIClient, character: Any) -> None:
    response = alice_api.post(
        f"/api/v1/characters/{character.pk}/runs", {"base_model": "wan22"}, format="json"
    )

    error = assert_error(response, 400, "no_gpu_pool_fits")
    assert "Wan 2.2 (14B) needs a GPU with at least 24 GB" in error["message"]
    assert not TrainingRun.objects.exists()


def test_the_confirm_step_shows_the_refusal_and_offers_no_start(
    only_16_gb: None, character: Any, alice: Any
) -> None:
    page = (
        client_for(alice)
        .post(reverse("training:start", args=[character.pk]), {"preset": "fast", "base_model": "z-image"})
        .content.decode()
    )

    assert "This run cannot start.</strong> Z-Image needs a GPU with at least 24 GB" in page
    assert "Start training</button>" not in page


def test_the_form_says_which_models_cannot_train_here(only_16_gb: None, character: Any, alice: Any) -> None:
    page = client_for(alice).get(reverse("training:start", args=[character.pk])).content.decode()

    assert page.count("Not available here: it needs a 24 GB GPU") == len(MODELS)


def test_the_form_says_how_long_1000_steps_take_on_the_slowest_gpu_a_model_may_get(
    speeds: None, settings: Any, character: Any, alice: Any
) -> None:
    settings.RUNPOD_GPU_POOLS = ["AMPERE_80", "ADA_24"]

    page = client_for(alice).get(reverse("training:start", args=[character.pk])).content.decode()

    # FLUX.1-dev: 2.0 s a step on the RTX 4090; Qwen-Image 1.7 times that.
    assert "1000 steps take about 33 min on the slowest it may get (RTX 4090)" in page
    assert "1000 steps take about 57 min on the slowest it may get (RTX 4090)" in page


def test_train_character_refuses_with_the_reason(
    only_16_gb: None, alice: Any, tmp_path: Path, settings: Any
) -> None:
    settings.TRAINING_MIN_IMAGES = 3
    for index, content in enumerate(distinct_jpegs(3)):
        (tmp_path / f"photo-{index}.jpg").write_bytes(content)

    with pytest.raises(CommandError, match="Z-Image needs a GPU with at least 24 GB") as refused:
        call_command(
            "train_character", "--user", "alice", "--name", "Anna", "--trigger", "ohwx_anna",
            "--images", str(tmp_path), "--base-model", "z-image", "--consent", "self", "--not-a-person",
            stdout=io.StringIO(), stderr=io.StringIO(),
        )  # fmt: skip
    assert refused.value.returncode == 2  # bad input: choose another base model
    assert not TrainingRun.objects.exists()


# --- Estimates and time ---------------------------------------------------------------------------


def test_the_estimate_leaves_out_a_pool_the_model_does_not_fit(speeds: None, settings: Any) -> None:
    # On the RTX A4000 (5 s a step, $0.00016/s) 1000 steps would cost $0.896; the model never trains there.
    settings.RUNPOD_GPU_POOLS = ["AMPERE_16", "ADA_24"]

    assert pricing.estimate_cost(steps=1000, base_model=BaseModel.FLUX_DEV) == Decimal(
        "0.8060"
    )  # 2600 s x 0.00031


def test_the_estimate_is_the_most_the_run_may_cost_on_any_gpu_it_may_get(speeds: None, settings: Any) -> None:
    settings.RUNPOD_GPU_POOLS = ["ADA_24", "AMPERE_80"]

    # Qwen-Image: 1.7 x the FLUX.1 step. RTX 4090: (1000 x 3.4 + 600) x 0.00031 = 1.24;
    # A100: (1000 x 1.87 + 600) x 0.00076 = 1.8772.
    assert pricing.estimate_cost(steps=1000, base_model=BaseModel.QWEN_IMAGE) == Decimal("1.8772")
    assert pricing.price_per_1000_steps(BaseModel.QWEN_IMAGE) == Decimal("1.4212")  # 1870 s x 0.00076


def test_the_time_limit_is_reckoned_on_the_slowest_gpu_the_model_may_get(speeds: None, settings: Any) -> None:
    settings.RUNPOD_GPU_POOLS = ["AMPERE_16", "AMPERE_80", "ADA_24"]

    # The A4000 is slower still, but no model trains on it.
    assert pricing.slowest_gpu(BaseModel.FLUX_DEV) == ("RTX 4090", Decimal("2.0"))
    assert pricing.slowest_gpu(BaseModel.WAN22) == ("RTX 4090", Decimal("2.40"))


def test_a_gpu_never_measured_counts_as_slow_as_the_slowest_measured(speeds: None, settings: Any) -> None:
    # AMPERE_24's L4, A5000 and 3090 have no measured step time: 5.0, the A4000's, is assumed.
    settings.RUNPOD_GPU_POOLS = ["AMPERE_80", "AMPERE_24"]

    assert pricing.slowest_gpu(BaseModel.Z_IMAGE) == ("L4", Decimal("2.50"))
