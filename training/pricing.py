"""GPU prices and step times: what a run is likely to cost, what it did cost, and what RunPod bills beyond
the job's execution time (the worker's start-up and idle timeout), which the budget counts as an estimate.

Prices come from RunPod's table (`training/gpu_pools.py`, with its source and date), overridden per GPU by
`TRAINING_GPU_PRICES_USD_PER_SECOND`. The endpoint's GPU — what a GPU without a price bills at — is
`TRAINING_GPU_TYPE` when set, else the dearest GPU of the endpoint's pools (`RUNPOD_GPU_POOLS`). An estimate
is made on `TRAINING_GPU_TYPE` when set, else on every GPU of the pools the base model may train on
(`gpu_pools.model_pools`), and is the most it comes to on any of them: RunPod may place the run on any, so
the estimate is an upper bound. Its time limit is reckoned on the slowest of them (`slowest_gpu`).
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings

from runpod_worker.contract import BaseModel
from training import gpu_pools
from training.base_models import BASE_MODELS

CENTS = Decimal("0.0001")


def price_table() -> dict[str, Decimal]:
    overrides = {str(k): Decimal(str(v)) for k, v in settings.TRAINING_GPU_PRICES_USD_PER_SECOND.items()}
    return {**gpu_pools.GPU_PRICES_USD_PER_SECOND, **overrides}


def endpoint_gpu() -> str:
    """The GPU estimates are made for, and that a GPU without a price bills at."""
    if settings.TRAINING_GPU_TYPE:
        return str(settings.TRAINING_GPU_TYPE)
    gpu = gpu_pools.dearest(gpu_pools.endpoint_gpus(), price_table())
    return gpu or max(price_table(), key=lambda name: price_table()[name])


def gpu_type_for(gpu_name: str) -> str:
    """The price-table GPU for a name as nvidia-smi reports it, or the endpoint's GPU."""
    # A machine without a GPU (the simulator) or a card without a price must not make a run free.
    return gpu_pools.match_gpu(gpu_name, price_table()) or endpoint_gpu()


def price_per_second(gpu_type: str) -> Decimal:
    table = price_table()
    return table.get(gpu_type) or table[endpoint_gpu()]


def seconds_per_step(gpu_type: str) -> Decimal:
    table = {str(k): Decimal(str(v)) for k, v in settings.TRAINING_SECONDS_PER_STEP.items()}
    # A GPU never measured is assumed as slow as the slowest measured one ("": the endpoint's GPU).
    return table.get(gpu_type or endpoint_gpu()) or max(table.values())


def model_seconds_per_step(gpu_type: str, base_model: str) -> Decimal:
    """FLUX.1's measured step time on `gpu_type`, scaled to `base_model` (training/base_models.py)."""
    return seconds_per_step(gpu_type) * BASE_MODELS[base_model].step_factor


def estimate_gpus(base_model: str) -> list[str]:
    """The GPUs an estimate for `base_model` covers: `TRAINING_GPU_TYPE` when set, else every GPU of the pools
    it may train on (every pool's when none fits it: such a start is refused, `gpu_pools.pool_refusal`)."""
    if settings.TRAINING_GPU_TYPE:
        return [str(settings.TRAINING_GPU_TYPE)]
    return gpu_pools.model_gpus(base_model) or gpu_pools.endpoint_gpus()


def slowest_gpu(base_model: str) -> tuple[str, Decimal]:
    """The slowest GPU `base_model` may train on (the first listed among equals) and its seconds per step of
    that model there: what a run's time limit on RunPod must allow for."""
    gpus = gpu_pools.model_gpus(base_model) or gpu_pools.endpoint_gpus()
    gpu = max(gpus, key=lambda name: model_seconds_per_step(name, base_model))
    return gpu, model_seconds_per_step(gpu, base_model)


def price_per_1000_steps(base_model: str, gpu_type: str | None = None) -> Decimal:
    """What 1000 steps cost, start-up overhead not included, on `gpu_type` or the dearest of the GPUs an
    estimate covers: the figure to compare models by."""
    gpus = [gpu_type] if gpu_type else estimate_gpus(base_model)
    return max(
        (1000 * model_seconds_per_step(gpu, base_model) * price_per_second(gpu)).quantize(CENTS)
        for gpu in gpus
    )


def estimate_cost(*, steps: int, gpu_type: str | None = None, base_model: str = BaseModel.DEFAULT) -> Decimal:
    """Steps x seconds per step of the base model, plus start-up overhead inside the job, plus what RunPod
    bills outside it (`billed_outside_seconds`), at the GPU's per-second price: on `gpu_type`, else the most
    that comes to on the GPUs an estimate covers (`estimate_gpus`)."""
    gpus = [gpu_type] if gpu_type else estimate_gpus(base_model)
    return max(_estimate_on(gpu, steps, base_model) for gpu in gpus)


def _estimate_on(gpu: str, steps: int, base_model: str) -> Decimal:
    inside = steps * model_seconds_per_step(gpu, base_model) + settings.TRAINING_OVERHEAD_SECONDS
    seconds = inside + billed_outside_seconds()
    return (seconds * price_per_second(gpu)).quantize(CENTS)


def billed_outside_seconds() -> int:
    """Seconds RunPod bills a worker beyond a job's execution time, estimated: it bills "from when a worker
    starts until it fully stops" (docs serverless/pricing.mdx:14), its start time and the idle timeout after
    the job included (:36-42), neither of which `executionTime` reports."""
    return int(settings.TRAINING_COLD_START_SECONDS) + int(settings.RUNPOD_IDLE_TIMEOUT_SECONDS)


def startup_idle_cost(*, gpu_name: str) -> Decimal:
    """The estimated charge for a worker's start-up and idle timeout on the GPU a run ran on."""
    return (billed_outside_seconds() * price_per_second(gpu_type_for(gpu_name))).quantize(CENTS)


def actual_cost(*, execution_ms: int, gpu_name: str) -> Decimal:
    """What RunPod bills for the job's execution time on the GPU it ran on."""
    return (Decimal(execution_ms) / 1000 * price_per_second(gpu_type_for(gpu_name))).quantize(CENTS)
