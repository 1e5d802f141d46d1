"""Where the base model's weights come from: the cheapest cold start that holds them, then the Hub.

1. RunPod's model cache: an endpoint with a cached model finds it at
   `/runpod-volume/huggingface-cache/hub/models--<org>--<name>/snapshots/<hash>/` (RunPod docs,
   serverless/endpoints/model-caching.mdx "Where cached models are stored"; the snapshot named by
   `refs/main`, else the first one, as their `resolve_snapshot_path` helper in
   serverless/development/huggingface-models.mdx does). RunPod downloads it before the worker starts and
   does not bill that time.
2. A diffusers folder baked into the image or kept on a network volume (`FLUX_DEV_PATH`,
   `FLUX_SCHNELL_PATH`), read only.
3. The Hub id. Then AI Toolkit downloads it into `HF_HOME`, which is the worker's own container disk: two
   workers never download into one shared cache at once, because no cache is shared. (A shared network
   volume is only ever read: through 1 or 2.)

A folder counts only when it holds every component AI Toolkit loads for FLUX.1
(toolkit/stable_diffusion_model.py, the `is_flux` branch), so a half-copied folder falls through to the next
source instead of failing the run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from runpod_worker.contract import BaseModel

HUB_IDS: dict[str, str] = {
    BaseModel.FLUX_DEV: "black-forest-labs/FLUX.1-dev",
    BaseModel.FLUX_SCHNELL: "black-forest-labs/FLUX.1-schnell",
}
LOCAL_PATH_ENV: dict[str, str] = {
    BaseModel.FLUX_DEV: "FLUX_DEV_PATH",
    BaseModel.FLUX_SCHNELL: "FLUX_SCHNELL_PATH",
}
# FLUX.1-schnell trains through AI Toolkit's de-distillation adapter (config/examples/
# train_lora_flux_schnell_24gb.yaml); it is fetched with hf_hub_download unless it is a local path.
SCHNELL_ADAPTER = "ostris/FLUX.1-schnell-training-adapter"
SCHNELL_ADAPTER_ENV = "FLUX_SCHNELL_ADAPTER_PATH"
DIFFUSERS_COMPONENTS = (
    "model_index.json",
    "scheduler",
    "text_encoder",
    "text_encoder_2",
    "tokenizer",
    "tokenizer_2",
    "transformer",
    "vae",
)


def runpod_cache_root() -> Path:
    return Path(os.environ.get("RUNPOD_MODEL_CACHE_DIR") or "/runpod-volume/huggingface-cache/hub")


@dataclass(frozen=True)
class WeightSource:
    name_or_path: str
    kind: str  # "runpod-cache", "local-folder" or "hub"

    @property
    def local(self) -> bool:
        return self.kind != "hub"


def cached_snapshot(repo_id: str, root: Path | None = None) -> Path | None:
    """The snapshot folder of `repo_id` in a Hugging Face cache laid out as RunPod's model cache is."""
    org, name = repo_id.split("/", 1)
    model_root = (root or runpod_cache_root()) / f"models--{org}--{name}"
    snapshots = model_root / "snapshots"
    try:
        revision = (model_root / "refs" / "main").read_text(encoding="utf-8").strip()
        if (snapshots / revision).is_dir():
            return snapshots / revision
    except OSError:
        pass
    if snapshots.is_dir():
        versions = sorted(path for path in snapshots.iterdir() if path.is_dir())
        return versions[0] if versions else None
    return None


def is_diffusers_folder(path: Path) -> bool:
    return all((path / component).exists() for component in DIFFUSERS_COMPONENTS)


def base_model_source(base_model: str) -> WeightSource:
    """Where AI Toolkit should load `base_model` from, cheapest cold start first."""
    snapshot = cached_snapshot(HUB_IDS[base_model])
    if snapshot is not None and is_diffusers_folder(snapshot):
        return WeightSource(str(snapshot), "runpod-cache")
    local = os.environ.get(LOCAL_PATH_ENV[base_model])
    if local and is_diffusers_folder(Path(local)):
        return WeightSource(local, "local-folder")
    return WeightSource(HUB_IDS[base_model], "hub")


def schnell_adapter_source() -> WeightSource:
    local = os.environ.get(SCHNELL_ADAPTER_ENV)
    if local and Path(local).exists():
        return WeightSource(local, "local-folder")
    snapshot = cached_snapshot(SCHNELL_ADAPTER)
    if snapshot is not None and (snapshot / "pytorch_lora_weights.safetensors").is_file():
        return WeightSource(str(snapshot), "runpod-cache")
    return WeightSource(SCHNELL_ADAPTER, "hub")


def trainer_env(sources: list[WeightSource]) -> dict[str, str]:
    """Environment for run.py: offline when every weight is local, so a cold start never waits on the Hub."""
    if all(source.local for source in sources):
        return {"HF_HUB_OFFLINE": "1"}
    return {}
