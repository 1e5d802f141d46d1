"""How long a run may take on RunPod: the `executionTimeout` its job is sent with, and whether it fits at all.

RunPod places a job "on whichever listed pool has capacity" (v2 OpenAPI `BaseEndpointGpuConfig.pools`), so a
run must fit on the slowest GPU of the endpoint's pools (`RUNPOD_GPU_POOLS`, the setting provisioning and
pricing read too):

    time limit = (steps x seconds per step on the slowest GPU x the base model's step factor
                  + TRAINING_OVERHEAD_SECONDS) x TRAINING_TIME_LIMIT_MARGIN

A GPU never measured (`TRAINING_SECONDS_PER_STEP`, FLUX.1's step times) counts as slow as the slowest
measured one; another base model's step takes `step_factor` times as long (training/base_models.py). The
start-up allowance is the model load, quantisation and latent caching before the first step; the margin
covers steps slower than measured (a busy host, samples rendering). No run may take longer than
`longest_run_seconds()`: TRAINING_EXECUTION_TIMEOUT_SECONDS, the most the studio lets one job bill, within
RunPod's own bounds for `executionTimeout`, 5 s to 7 days (docs serverless/endpoints/send-requests.mdx:116).
A run that needs more is refused at start, before anything is billed, saying the limit and the most steps
that fit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings

from runpod_worker.contract import BaseModel
from training import pricing
from training.base_models import BASE_MODELS

# RunPod's bounds on a job's executionTimeout (send-requests.mdx:116).
RUNPOD_MIN_EXECUTION_TIMEOUT_S = 5
RUNPOD_MAX_EXECUTION_TIMEOUT_S = 7 * 24 * 3600
MIN_STEPS = 100  # runpod_worker.contract.TrainingParams: steps 100-6000


@dataclass(frozen=True)
class TimeLimit:
    """A run's time limit on RunPod, and the slowest GPU it was reckoned on."""

    steps: int
    seconds: int  # the job's executionTimeout
    gpu: str
    seconds_per_step: Decimal
    longest: int  # the most any run may take

    @property
    def fits(self) -> bool:
        return self.seconds <= self.longest


def run_time_limit(*, steps: int, base_model: str = BaseModel.DEFAULT) -> TimeLimit:
    gpu, per_step = slowest_gpu(base_model)
    return TimeLimit(
        steps=steps,
        seconds=max(RUNPOD_MIN_EXECUTION_TIMEOUT_S, math.ceil(_needed(steps, per_step))),
        gpu=gpu,
        seconds_per_step=per_step,
        longest=longest_run_seconds(),
    )


def longest_run_seconds() -> int:
    return min(int(settings.TRAINING_EXECUTION_TIMEOUT_SECONDS), RUNPOD_MAX_EXECUTION_TIMEOUT_S)


def slowest_gpu(base_model: str = BaseModel.DEFAULT) -> tuple[str, Decimal]:
    """The slowest GPU `base_model` may train on (only the endpoint's pools whose cards fit it: a 16 GB pool
    listed beside them never gets the run) and its seconds per step of `base_model`: `pricing.slowest_gpu`,
    so the time limit and the form's time reckon on the same GPU."""
    return pricing.slowest_gpu(base_model)


def most_steps_that_fit(base_model: str = BaseModel.DEFAULT) -> int:
    """The most steps whose time limit is within `longest_run_seconds()` (0 when not even start-up fits)."""
    _, per_step = slowest_gpu(base_model)
    room = Decimal(longest_run_seconds()) / _margin() - settings.TRAINING_OVERHEAD_SECONDS
    steps = max(0, int(room / per_step))
    while steps > 0 and math.ceil(_needed(steps, per_step)) > longest_run_seconds():
        steps -= 1  # the margin's rounding: step down until it fits
    return steps


def time_limit_refusal(*, steps: int, base_model: str = BaseModel.DEFAULT) -> str | None:
    """Why a run of `steps` steps cannot fit its time limit, with what to change; None when it fits."""
    limit = run_time_limit(steps=steps, base_model=base_model)
    if limit.fits:
        return None
    reason = (
        f"A run of {steps} {BASE_MODELS[base_model].label} steps could take up to {hours(limit.seconds)} on "
        f"the slowest GPU RunPod may give it ({limit.gpu}, about {limit.seconds_per_step.normalize()} s a "
        f"step, plus start-up), more than the {hours(limit.longest)} a run may take."
    )
    most = most_steps_that_fit(base_model)
    if most >= MIN_STEPS:
        return f"{reason} Choose at most {most} steps, or ask staff to raise the limit."
    return f"{reason} No run fits: staff need to raise the limit (TRAINING_EXECUTION_TIMEOUT_SECONDS)."


def never_taken_message() -> str:
    """What a run is told when RunPod dropped its job at its TTL before any worker took it."""
    return (
        f"No GPU worker took the run within {hours(settings.TRAINING_JOB_TTL_SECONDS)}, so RunPod dropped "
        "it; nothing was billed. Retry it later; if it happens again, tell staff: the RunPod endpoint may "
        "have no workers."
    )


def pod_never_started_message(pod_name: str) -> str:
    """What a pod run is told when its pod did not start its job within the pod's waiting limit."""
    waited = hours(int(settings.TRAINING_POD_QUEUE_TIMEOUT_SECONDS))
    pod = f"Pod {pod_name}" if pod_name else "Its pod"
    return (
        f"{pod} did not start the run within {waited}: runs ahead "
        "of it kept its GPU busy, or the pod is not running. The run is being taken off the pod; "
        "nothing was charged. Retry it later; if it happens again, tell staff to look at the pod."
    )


def hours(seconds: int) -> str:
    """10800 -> "3 h", 12600 -> "3 h 30 min", 2250 -> "38 min"."""
    minutes = math.ceil(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    whole, rest = divmod(minutes, 60)
    return f"{whole} h" + (f" {rest} min" if rest else "")


def _needed(steps: int, per_step: Decimal) -> Decimal:
    return (steps * per_step + settings.TRAINING_OVERHEAD_SECONDS) * _margin()


def _margin() -> Decimal:
    return Decimal(str(settings.TRAINING_TIME_LIMIT_MARGIN))
