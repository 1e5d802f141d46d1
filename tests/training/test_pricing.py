"""What a run costs: RunPod's serverless price of the GPU it ran on, from RunPod's own table (runpod/docs
snippets/serverless-gpu-pricing-table.mdx, 2026-06-08), and estimates at the endpoint's pools."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from training import pricing


@pytest.mark.parametrize(
    ("reported", "price"),
    [
        ("NVIDIA L40", "0.00053"),
        ("NVIDIA L40S", "0.00053"),
        ("NVIDIA RTX 6000 Ada Generation", "0.00053"),
        ("NVIDIA H200", "0.00155"),
        ("NVIDIA B200", "0.00240"),
        ("NVIDIA RTX PRO 6000 Blackwell Server Edition", "0.00111"),
        ("NVIDIA H100 80GB HBM3", "0.00116"),
        ("NVIDIA A100-SXM4-80GB", "0.00076"),
        ("NVIDIA A100 80GB PCIe", "0.00076"),
        ("NVIDIA GeForce RTX 4090", "0.00031"),
        ("NVIDIA RTX A6000", "0.00034"),
        ("NVIDIA A40", "0.00034"),
        ("NVIDIA L4", "0.00019"),
        ("NVIDIA RTX A5000", "0.00019"),
        ("NVIDIA GeForce RTX 3090", "0.00019"),
        ("NVIDIA RTX A4000", "0.00016"),
        ("NVIDIA RTX A4500", "0.00016"),
        ("NVIDIA RTX 4000 Ada Generation", "0.00016"),
        ("NVIDIA RTX 2000 Ada Generation", "0.00016"),
    ],
)
def test_every_gpu_runpod_serverless_prices_is_billed_at_its_own_price(reported: str, price: str) -> None:
    assert pricing.price_per_second(pricing.gpu_type_for(reported)) == Decimal(price)


def test_an_l40_is_not_taken_for_an_l40s_nor_an_rtx_6000_ada_for_a_blackwell() -> None:
    assert pricing.gpu_type_for("NVIDIA L40") == "L40"
    assert pricing.gpu_type_for("NVIDIA L40S") == "L40S"
    assert pricing.gpu_type_for("NVIDIA RTX 6000 Ada Generation") == "RTX 6000 Ada"
    assert pricing.gpu_type_for("NVIDIA RTX PRO 6000 Blackwell Workstation Edition") == "RTX PRO 6000"


def test_a_gpu_without_a_published_price_bills_at_the_dearest_gpu_of_the_endpoints_pools(
    settings: Any,
) -> None:
    settings.RUNPOD_GPU_POOLS = ["ADA_24", "ADA_48_PRO"]

    # RunPod's table has no price for the RTX 5090 (ADA_32_PRO); the simulator reports no GPU at all.
    assert pricing.price_per_second(pricing.gpu_type_for("NVIDIA GeForce RTX 5090")) == Decimal("0.00053")
    assert pricing.gpu_type_for("cpu") == "L40"


def test_the_estimate_assumes_the_dearest_gpu_of_the_endpoints_pools(settings: Any) -> None:
    settings.RUNPOD_GPU_POOLS = ["ADA_24"]
    settings.TRAINING_SECONDS_PER_STEP = {"RTX 4090": "2.0", "A100 80GB": "1.1"}
    settings.TRAINING_OVERHEAD_SECONDS = 600
    settings.TRAINING_COLD_START_SECONDS, settings.RUNPOD_IDLE_TIMEOUT_SECONDS = 30, 5

    assert pricing.endpoint_gpu() == "RTX 4090"
    assert pricing.estimate_cost(steps=1000) == Decimal("0.8168")  # (1000 x 2.0 + 600 + 35) s x $0.00031


def test_an_override_replaces_one_price_and_keeps_the_others(settings: Any) -> None:
    settings.TRAINING_GPU_PRICES_USD_PER_SECOND = {"RTX 4090": "0.00034"}

    assert pricing.price_per_second(pricing.gpu_type_for("NVIDIA GeForce RTX 4090")) == Decimal("0.00034")
    assert pricing.price_per_second(pricing.gpu_type_for("NVIDIA H200")) == Decimal("0.00155")


def test_a_gpu_never_measured_is_estimated_as_slow_as_the_slowest_measured(settings: Any) -> None:
    settings.TRAINING_SECONDS_PER_STEP = {"RTX 4090": "2.0", "H100": "0.8"}
    settings.TRAINING_GPU_TYPE = "B200"

    assert pricing.seconds_per_step("B200") == Decimal("2.0")


def test_a_pool_runpod_does_not_list_is_a_configuration_error(settings: Any) -> None:
    settings.RUNPOD_GPU_POOLS = ["AMPERE_80", "RTX_4090"]

    with pytest.raises(ImproperlyConfigured, match=r"RTX_4090 is not one\. Known pools: AMPERE_16"):
        pricing.endpoint_gpu()
