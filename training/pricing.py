"""GPU prices and step times from settings: what a run is likely to cost, and what it did cost."""

from __future__ import annotations

import re
from decimal import Decimal

from django.conf import settings

CENTS = Decimal("0.0001")


def gpu_type_for(gpu_name: str) -> str:
    """The price-table key for a GPU name as nvidia-smi reports it, or the endpoint's configured GPU."""
    flat = re.sub(r"[^a-z0-9]", "", gpu_name.lower())
    for key in settings.TRAINING_GPU_PRICES_USD_PER_SECOND:
        if _model_token(key) in flat:
            return str(key)
    # A machine without a GPU (the simulator) or an unknown card must not make a run free.
    return str(settings.TRAINING_GPU_TYPE)


def _model_token(key: str) -> str:
    """ "RTX 4090" -> "4090", "A100 80GB" -> "a100": the first word with a digit identifies the card."""
    words = [re.sub(r"[^a-z0-9]", "", word.lower()) for word in key.split()]
    return next((word for word in words if any(ch.isdigit() for ch in word)), "".join(words))


def price_per_second(gpu_type: str) -> Decimal:
    prices = settings.TRAINING_GPU_PRICES_USD_PER_SECOND
    return Decimal(str(prices.get(gpu_type, prices[settings.TRAINING_GPU_TYPE])))


def seconds_per_step(gpu_type: str) -> Decimal:
    table = settings.TRAINING_SECONDS_PER_STEP
    return Decimal(str(table.get(gpu_type, table[settings.TRAINING_GPU_TYPE])))


def estimate_cost(*, steps: int, gpu_type: str | None = None) -> Decimal:
    """Steps x measured seconds per step, plus start-up overhead, at the GPU's per-second price."""
    gpu = gpu_type or settings.TRAINING_GPU_TYPE
    seconds = steps * seconds_per_step(gpu) + settings.TRAINING_OVERHEAD_SECONDS
    return (seconds * price_per_second(gpu)).quantize(CENTS)


def actual_cost(*, execution_ms: int, gpu_name: str) -> Decimal:
    """What RunPod bills for the job's execution time on the GPU it ran on."""
    return (Decimal(execution_ms) / 1000 * price_per_second(gpu_type_for(gpu_name))).quantize(CENTS)
