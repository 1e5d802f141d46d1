"""RunPod's serverless GPU pools and prices: the one table that provisioning, pricing and the per-run
timeout check read. `RUNPOD_GPU_POOLS` names the pools the endpoint uses, in order of preference; RunPod
places a job "on whichever listed pool has capacity" (v2 OpenAPI `BaseEndpointGpuConfig.pools`), so every
pool listed is one a run may land on. A base model trains only on the pools whose cards fit it
(`model_pools`): a start is refused when none does, and estimates and time limits reckon with those alone.

Sources, read 2026-08-20 in runpod/docs at `a900806e`:
- pool ids and the GPUs in each: `references/gpu-types.mdx` "GPU pools" (2026-08-18), and
  `flash/configuration/gpu-types.mdx` (2026-08-18) for the pools the first omits (ADA_32_PRO,
  BLACKWELL_96, BLACKWELL_180). The two disagree on L4 (AMPERE_24 there, ADA_24 here) and RTX A4500
  (AMPERE_16 there, AMPERE_24 here); the first is followed, as the price table groups them that way too.
- price per second of a flex worker: `snippets/serverless-gpu-pricing-table.mdx` (docs commit `e5571ba1`,
  2026-06-08), the table on `serverless/endpoints/endpoint-configurations.mdx`. It has no price for the
  RTX 5090 (ADA_32_PRO): a run on one is billed at the dearest GPU of the endpoint's pools.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from runpod_worker.contract import BaseModel
from training.base_models import BASE_MODELS

# USD per second by GPU, as the price table lists them; names as nvidia-smi words them, less "NVIDIA".
GPU_PRICES_USD_PER_SECOND: dict[str, Decimal] = {
    "RTX A4000": Decimal("0.00016"),
    "RTX A4500": Decimal("0.00016"),
    "RTX 4000 Ada": Decimal("0.00016"),
    "RTX 2000 Ada": Decimal("0.00016"),
    "L4": Decimal("0.00019"),
    "RTX A5000": Decimal("0.00019"),
    "RTX 3090": Decimal("0.00019"),
    "RTX 4090": Decimal("0.00031"),
    "RTX A6000": Decimal("0.00034"),
    "A40": Decimal("0.00034"),
    "L40": Decimal("0.00053"),
    "L40S": Decimal("0.00053"),
    "RTX 6000 Ada": Decimal("0.00053"),
    "A100 80GB": Decimal("0.00076"),
    "H100": Decimal("0.00116"),
    "RTX PRO 6000": Decimal("0.00111"),
    "H200": Decimal("0.00155"),
    "B200": Decimal("0.00240"),
}


@dataclass(frozen=True)
class GpuPool:
    id: str
    gpus: tuple[str, ...]
    memory_gb: int


POOLS: dict[str, GpuPool] = {
    pool.id: pool
    for pool in (
        GpuPool("AMPERE_16", ("RTX A4000", "RTX A4500", "RTX 4000 Ada", "RTX 2000 Ada"), 16),
        GpuPool("AMPERE_24", ("L4", "RTX A5000", "RTX 3090"), 24),
        GpuPool("ADA_24", ("RTX 4090",), 24),
        GpuPool("ADA_32_PRO", ("RTX 5090",), 32),
        GpuPool("AMPERE_48", ("RTX A6000", "A40"), 48),
        GpuPool("ADA_48_PRO", ("L40", "L40S", "RTX 6000 Ada"), 48),
        GpuPool("AMPERE_80", ("A100 80GB",), 80),
        GpuPool("ADA_80_PRO", ("H100",), 80),
        GpuPool("BLACKWELL_96", ("RTX PRO 6000",), 96),
        GpuPool("HOPPER_141", ("H200",), 141),
        GpuPool("BLACKWELL_180", ("B200",), 180),
    )
}


def endpoint_pools() -> list[GpuPool]:
    """The pools of `RUNPOD_GPU_POOLS`, in order; an id RunPod does not list is a configuration error."""
    ids = [str(pool_id).strip() for pool_id in settings.RUNPOD_GPU_POOLS if str(pool_id).strip()]
    unknown = [pool_id for pool_id in ids if pool_id not in POOLS]
    if unknown or not ids:
        raise ImproperlyConfigured(
            f"RUNPOD_GPU_POOLS must list RunPod serverless GPU pools; {', '.join(unknown) or 'none given'} "
            f"is not one. Known pools: {', '.join(POOLS)}."
        )
    return [POOLS[pool_id] for pool_id in ids]


def endpoint_gpus() -> list[str]:
    """Every GPU a run on the endpoint may land on."""
    return [gpu for pool in endpoint_pools() for gpu in pool.gpus]


def model_pools(base_model: str) -> list[GpuPool]:
    """The endpoint's pools whose cards fit `base_model` (`BaseModel.MIN_VRAM_GB`), in order: the only pools
    a run of it trains on. RunPod may still hand its job to a worker on a smaller card of another listed pool
    (it places jobs by capacity, not by job); the worker refuses such a card before it downloads anything."""
    need = BaseModel.MIN_VRAM_GB[base_model]
    return [pool for pool in endpoint_pools() if pool.memory_gb >= need]


def model_gpus(base_model: str) -> list[str]:
    """Every GPU a run of `base_model` may train on."""
    return [gpu for pool in model_pools(base_model) for gpu in pool.gpus]


def pool_refusal(base_model: str) -> str | None:
    """Why `base_model` cannot train on this endpoint, with what to change; None when a pool fits it."""
    if model_pools(base_model):
        return None
    need = BaseModel.MIN_VRAM_GB[base_model]
    label = BASE_MODELS[base_model].label
    configured = ", ".join(pool.id for pool in endpoint_pools())
    others = [info.label for key, info in BASE_MODELS.items() if key != base_model and model_pools(key)]
    bigger = [f"{pool.id} ({', '.join(pool.gpus)})" for pool in POOLS.values() if pool.memory_gb >= need][:3]
    choose = f"Choose a base model that fits them ({', '.join(others)}), or ask" if others else "Ask"
    return (
        f"{label} needs a GPU with at least {need} GB, and none of the studio's GPU pools has one "
        f"(RUNPOD_GPU_POOLS: {configured}). {choose} staff to add a pool of {need} GB or more to "
        f"RUNPOD_GPU_POOLS, such as {' or '.join(bigger)}."
    )


def match_gpu(reported: str, names: Iterable[str]) -> str | None:
    """The name among `names` whose every word is a word of `reported` (nvidia-smi's name, such as
    "NVIDIA A100-SXM4-80GB"), the most specific first: "L40" never takes an "L40S", and "RTX 6000 Ada"
    never an "RTX PRO 6000 Blackwell"."""
    words = set(_words(reported))
    fitting = [name for name in names if set(_words(name)) <= words]
    return max(fitting, key=lambda name: len(_words(name)), default=None)


def dearest(gpus: Iterable[str], prices: Mapping[str, Decimal]) -> str | None:
    priced = [gpu for gpu in gpus if gpu in prices]
    return max(priced, key=lambda gpu: prices[gpu], default=None)


def _words(name: str) -> list[str]:
    return [word for word in re.split(r"[^a-z0-9]+", name.lower()) if word]
