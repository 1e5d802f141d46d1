"""Where the base model's weights come from: the cheapest cold start that holds them, then the Hub.

1. RunPod's model cache: an endpoint with a cached model finds it at
   `/runpod-volume/huggingface-cache/hub/models--<org>--<name>/snapshots/<hash>/` (RunPod docs,
   serverless/endpoints/model-caching.mdx "Where cached models are stored"; the snapshot named by
   `refs/main`, else the first one, as their `resolve_snapshot_path` helper in
   serverless/development/huggingface-models.mdx does). RunPod downloads it before the worker starts and
   does not bill that time.
2. A diffusers folder baked into the image or kept on a network volume (`FLUX_DEV_PATH`,
   `FLUX_SCHNELL_PATH`, `QWEN_IMAGE_PATH`, `WAN22_PATH`, `WAN22_5B_PATH`, `Z_IMAGE_PATH`), read only.
3. The Hub id. Then AI Toolkit downloads it into `HF_HOME`, which is the worker's own container disk: two
   workers never download into one shared cache at once, because no cache is shared. (A shared network
   volume is only ever read: through 1 or 2.)

A folder counts only when it holds every component AI Toolkit loads for that model (`COMPONENTS`: for FLUX.1
toolkit/stable_diffusion_model.py, the `is_flux` branch; for the others the model classes cited in
runpod_worker/tiny_models/), so a half-copied folder falls through to the next source instead of failing
the run.

Two adapters come the same three ways: FLUX.1-schnell's training adapter, and on 24 GB cards the accuracy
recovery adapter that lets Qwen-Image train at 3 bits and Wan 2.2 at 4 bits (`ARA_FILES`). Wan 2.2 14B's VAE
is read by AI Toolkit from the Hub id `ai-toolkit/wan2.1-vae` whatever folder the model comes from
(extensions_built_in/diffusion_models/wan22/wan22_14b_model.py:172, toolkit/models/wan21/wan21.py:454-457):
a local model folder's `vae/` (the same Wan 2.1 VAE) is put into the trainer's Hugging Face cache under that
id, so a local model needs no Hub (`seed_hub_cache`). Wan 2.2 TI2V 5B reads its own (Wan 2.2) VAE from the
model's `vae/`, as every other model does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from runpod_worker.contract import BaseModel, GpuPreset

HUB_IDS: dict[str, str] = {
    BaseModel.FLUX_DEV: "black-forest-labs/FLUX.1-dev",
    BaseModel.FLUX_SCHNELL: "black-forest-labs/FLUX.1-schnell",
    # config/examples/train_lora_qwen_image_24gb.yaml:59
    BaseModel.QWEN_IMAGE: "Qwen/Qwen-Image",
    # config/examples/train_lora_wan22_14b_24gb.yaml:68: bf16 weights, half the official float32 download
    BaseModel.WAN22: "ai-toolkit/Wan2.2-T2V-A14B-Diffusers-bf16",
    # ui/src/app/jobs/new/options.tsx:372
    BaseModel.WAN22_5B: "Wan-AI/Wan2.2-TI2V-5B-Diffusers",
    # ui/src/app/jobs/new/options.tsx:689
    BaseModel.Z_IMAGE: "Tongyi-MAI/Z-Image",
}
LOCAL_PATH_ENV: dict[str, str] = {
    BaseModel.FLUX_DEV: "FLUX_DEV_PATH",
    BaseModel.FLUX_SCHNELL: "FLUX_SCHNELL_PATH",
    BaseModel.QWEN_IMAGE: "QWEN_IMAGE_PATH",
    BaseModel.WAN22: "WAN22_PATH",
    BaseModel.WAN22_5B: "WAN22_5B_PATH",
    BaseModel.Z_IMAGE: "Z_IMAGE_PATH",
}
# The accuracy recovery adapters of the 24 GB presets, as `<org>/<repo>/<file>` (AI Toolkit downloads that
# form itself, toolkit/util/quantize.py:287-303): config/examples/train_lora_qwen_image_24gb.yaml:65 and
# train_lora_wan22_14b_24gb.yaml:72.
ARA_REPO = "ostris/accuracy_recovery_adapters"
ARA_FILES: dict[str, str] = {
    BaseModel.QWEN_IMAGE: "qwen_image_torchao_uint3.safetensors",
    BaseModel.WAN22: "wan22_14b_t2i_torchao_uint4.safetensors",
}
ARA_PATH_ENV: dict[str, str] = {
    BaseModel.QWEN_IMAGE: "QWEN_IMAGE_ARA_PATH",
    BaseModel.WAN22: "WAN22_ARA_PATH",
}
WAN_VAE_REPO = "ai-toolkit/wan2.1-vae"
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
_SINGLE_ENCODER = ("model_index.json", "scheduler", "text_encoder", "tokenizer", "transformer", "vae")
COMPONENTS: dict[str, tuple[str, ...]] = {
    BaseModel.FLUX_DEV: DIFFUSERS_COMPONENTS,
    BaseModel.FLUX_SCHNELL: DIFFUSERS_COMPONENTS,
    BaseModel.QWEN_IMAGE: _SINGLE_ENCODER,
    BaseModel.WAN22: (*_SINGLE_ENCODER, "transformer_2"),
    BaseModel.WAN22_5B: _SINGLE_ENCODER,
    BaseModel.Z_IMAGE: _SINGLE_ENCODER,
}


def runpod_cache_root() -> Path:
    return Path(os.environ.get("RUNPOD_MODEL_CACHE_DIR") or "/runpod-volume/huggingface-cache/hub")


@dataclass(frozen=True)
class WeightSource:
    name_or_path: str
    kind: str  # "runpod-cache", "local-folder" or "hub"
    # AI Toolkit loads it through diffusers' `load_lora_weights` without a `weight_name`, which diffusers
    # refuses in offline mode even for a local file (loaders/lora_base.py:280-281 at c9438378, "When using
    # the offline mode, you must specify a `weight_name`"): FLUX.1-schnell's training adapter, fused into the
    # transformer at toolkit/stable_diffusion_model.py:786-790.
    needs_online_mode: bool = False

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


def is_diffusers_folder(path: Path, base_model: str = BaseModel.FLUX_DEV) -> bool:
    return all((path / component).exists() for component in COMPONENTS[base_model])


def base_model_source(base_model: str) -> WeightSource:
    """Where AI Toolkit should load `base_model` from, cheapest cold start first."""
    snapshot = cached_snapshot(HUB_IDS[base_model])
    if snapshot is not None and is_diffusers_folder(snapshot, base_model):
        return WeightSource(str(snapshot), "runpod-cache")
    local = os.environ.get(LOCAL_PATH_ENV[base_model])
    if local and is_diffusers_folder(Path(local), base_model):
        return WeightSource(local, "local-folder")
    return WeightSource(HUB_IDS[base_model], "hub")


def ara_source(base_model: str) -> WeightSource:
    """The accuracy recovery adapter file of `base_model`'s quantised 24 GB preset."""
    local = os.environ.get(ARA_PATH_ENV[base_model])
    if local and Path(local).is_file():
        return WeightSource(local, "local-folder")
    snapshot = cached_snapshot(ARA_REPO)
    if snapshot is not None and (snapshot / ARA_FILES[base_model]).is_file():
        return WeightSource(str(snapshot / ARA_FILES[base_model]), "runpod-cache")
    return WeightSource(f"{ARA_REPO}/{ARA_FILES[base_model]}", "hub")


def trainer_hub_cache() -> Path:
    """The Hugging Face hub cache the trainer reads, as huggingface_hub.constants resolves it."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return Path(home) / "hub"


def wan_vae_source(model: WeightSource) -> WeightSource:
    """Where `ai-toolkit/wan2.1-vae` comes from: RunPod's cache, a local model folder's `vae/`, the Hub."""
    snapshot = cached_snapshot(WAN_VAE_REPO)
    if snapshot is not None and (snapshot / "config.json").is_file():
        return seed_hub_cache(WAN_VAE_REPO, snapshot, "runpod-cache")
    if model.local and (Path(model.name_or_path) / "vae" / "config.json").is_file():
        return seed_hub_cache(WAN_VAE_REPO, Path(model.name_or_path) / "vae", "local-folder")
    return WeightSource(WAN_VAE_REPO, "hub")


def seed_hub_cache(repo_id: str, folder: Path, kind: str, cache: Path | None = None) -> WeightSource:
    """Makes `folder` the `main` snapshot of `repo_id` in the trainer's hub cache (a symbolic link, nothing
    copied), so `from_pretrained(repo_id)` loads it offline; an existing download is left alone."""
    org, name = repo_id.split("/", 1)
    root = (cache or trainer_hub_cache()) / f"models--{org}--{name}"
    if cached_snapshot(repo_id, root.parent) is None:
        (root / "snapshots").mkdir(parents=True, exist_ok=True)
        (root / "refs").mkdir(parents=True, exist_ok=True)
        (root / "snapshots" / "local").symlink_to(folder.resolve(), target_is_directory=True)
        (root / "refs" / "main").write_text("local", encoding="utf-8")
    return WeightSource(repo_id, kind)


SCHNELL_ADAPTER_FILE = "pytorch_lora_weights.safetensors"


def schnell_adapter_source() -> WeightSource:
    """The adapter's file when it is local (`FLUX_SCHNELL_ADAPTER_PATH`, a file or a folder holding it;
    RunPod's cache), else its Hub id. A local folder will not do: AI Toolkit fuses the folder's
    `pytorch_lora_weights.safetensors` but then loads the assistant adapter from the path as given with
    safetensors' `load_file` (toolkit/stable_diffusion_model.py:699-702 and :1060-1063,
    toolkit/assistant_lora.py:16)."""
    local = os.environ.get(SCHNELL_ADAPTER_ENV)
    if local and Path(local).is_dir():
        local = str(Path(local) / SCHNELL_ADAPTER_FILE)
    if local and Path(local).is_file():
        return WeightSource(local, "local-folder", needs_online_mode=True)
    snapshot = cached_snapshot(SCHNELL_ADAPTER)
    if snapshot is not None and (snapshot / SCHNELL_ADAPTER_FILE).is_file():
        return WeightSource(str(snapshot / SCHNELL_ADAPTER_FILE), "runpod-cache", needs_online_mode=True)
    return WeightSource(SCHNELL_ADAPTER, "hub", needs_online_mode=True)


def adapter_source(base_model: str, preset: str) -> WeightSource | None:
    """The adapter a run of `base_model` on `preset` loads beside the model, if any."""
    if base_model == BaseModel.FLUX_SCHNELL:
        return schnell_adapter_source()
    if base_model in ARA_FILES and preset == GpuPreset.LOW_VRAM_24GB:
        return ara_source(base_model)
    return None


def run_sources(base_model: str, preset: str) -> list[WeightSource]:
    """Every weight a run loads: the model first, then its adapter, then (Wan 2.2) its VAE."""
    model = base_model_source(base_model)
    adapter = adapter_source(base_model, preset)
    sources = [model] + ([adapter] if adapter else [])
    if base_model == BaseModel.WAN22:
        sources.append(wan_vae_source(model))
    return sources


def trainer_env(sources: list[WeightSource]) -> dict[str, str]:
    """Environment for run.py: offline when every weight is local, so a cold start never waits on the Hub;
    never offline for a weight offline mode refuses (`needs_online_mode`), which is then read from its local
    path all the same."""
    if any(source.needs_online_mode for source in sources):
        return {"HF_HUB_OFFLINE": "0"}
    if all(source.local for source in sources):
        return {"HF_HUB_OFFLINE": "1"}
    return {}


# --------------------------------------------------------------------------- the captioner's weights

# The vision model that captions images sent without a caption (runpod_worker/captions.py), at a pinned
# revision: a caption must not change because the Hub's `main` moved.
CAPTIONER_REPO = "Qwen/Qwen3-VL-2B-Instruct"
CAPTIONER_REVISION = "89644892e4d85e24eaac8bacfd4f463576704203"
CAPTIONER_ENV = "CAPTION_MODEL_PATH"
# What AI Toolkit's captioner reads from the folder first (AutoModelForImageTextToText, AutoProcessor: the
# processor's settings are `preprocessor_config.json` in the Hub repository, `processor_config.json` as
# transformers 5 saves them); a folder without them falls through to the next source.
CAPTIONER_FILES = ("config.json", "tokenizer_config.json")
CAPTIONER_PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
# The files of the Hub repository the captioner needs (no README, no images).
CAPTIONER_PATTERNS = ["*.json", "*.jinja", "*.safetensors", "*.txt"]


def is_captioner_folder(path: Path) -> bool:
    return (
        path.is_dir()
        and all((path / name).is_file() for name in CAPTIONER_FILES)
        and any((path / name).is_file() for name in CAPTIONER_PROCESSOR_FILES)
    )


def caption_model_source() -> WeightSource:
    """Where the captioner's weights come from: a folder baked into the image or kept on a volume
    (`CAPTION_MODEL_PATH`, which must hold the pinned revision), the pinned snapshot in RunPod's model cache
    (an endpoint caches one model, normally the base model, so this is the rarer case), else the Hub."""
    local = os.environ.get(CAPTIONER_ENV)
    if local and is_captioner_folder(Path(local)):
        return WeightSource(local, "local-folder")
    org, name = CAPTIONER_REPO.split("/", 1)
    snapshot = runpod_cache_root() / f"models--{org}--{name}" / "snapshots" / CAPTIONER_REVISION
    if is_captioner_folder(snapshot):
        return WeightSource(str(snapshot), "runpod-cache")
    return WeightSource(CAPTIONER_REPO, "hub")


def caption_model_folder(source: WeightSource) -> Path:
    """A local folder of the captioner at the pinned revision: the source's own, or the Hub's snapshot of
    that revision, downloaded into this worker's Hugging Face cache (its container disk) first.

    AI Toolkit's captioner loads `model_name_or_path` without a revision (Qwen3VLCaptioner.py:75-79), so
    handing it the Hub id would load whatever `main` is that day; a snapshot folder pins it. The download's
    timeouts and retries are huggingface_hub's (HF_HUB_DOWNLOAD_TIMEOUT per read, retried with backoff); a
    failure raises, and the caller trains on without captions."""
    if source.local:
        return Path(source.name_or_path)
    from huggingface_hub import snapshot_download  # in the image's lock; never needed with a local folder

    folder = snapshot_download(
        CAPTIONER_REPO,
        revision=CAPTIONER_REVISION,
        allow_patterns=CAPTIONER_PATTERNS,
        etag_timeout=30,
    )
    return Path(folder)
