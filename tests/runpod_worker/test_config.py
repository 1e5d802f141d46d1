from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from runpod_worker.config import NO_GPU, build_config, choose_preset
from runpod_worker.contract import GpuInfo, JobInput
from runpod_worker.weights import ARA_PATH_ENV, DIFFUSERS_COMPONENTS, LOCAL_PATH_ENV
from tests.runpod_worker.factories import job_input

DATASET = Path("/workspace/job/dataset")
OUTPUT = Path("/workspace/job/output")
# Every key upstream's config/examples/train_lora_flux_24gb.yaml sets, as paths into the config, except
# config.process.0.device, which the example sets but nothing reads (upstream/ai_toolkit_config_keys.json).
EXAMPLE_KEYS = [
    "job",
    "config.name",
    "config.process.0.type",
    "config.process.0.training_folder",
    "config.process.0.network.type",
    "config.process.0.network.linear",
    "config.process.0.network.linear_alpha",
    "config.process.0.save.dtype",
    "config.process.0.save.save_every",
    "config.process.0.save.max_step_saves_to_keep",
    "config.process.0.save.push_to_hub",
    "config.process.0.datasets.0.folder_path",
    "config.process.0.datasets.0.caption_ext",
    "config.process.0.datasets.0.caption_dropout_rate",
    "config.process.0.datasets.0.shuffle_tokens",
    "config.process.0.datasets.0.cache_latents_to_disk",
    "config.process.0.datasets.0.resolution",
    "config.process.0.train.batch_size",
    "config.process.0.train.steps",
    "config.process.0.train.gradient_accumulation_steps",
    "config.process.0.train.train_unet",
    "config.process.0.train.train_text_encoder",
    "config.process.0.train.gradient_checkpointing",
    "config.process.0.train.noise_scheduler",
    "config.process.0.train.optimizer",
    "config.process.0.train.lr",
    "config.process.0.train.ema_config.use_ema",
    "config.process.0.train.ema_config.ema_decay",
    "config.process.0.train.dtype",
    "config.process.0.model.name_or_path",
    "config.process.0.model.is_flux",
    "config.process.0.model.quantize",
    "config.process.0.sample.sampler",
    "config.process.0.sample.sample_every",
    "config.process.0.sample.width",
    "config.process.0.sample.height",
    "config.process.0.sample.prompts",
    "config.process.0.sample.neg",
    "config.process.0.sample.seed",
    "config.process.0.sample.walk_seed",
    "config.process.0.sample.guidance_scale",
    "config.process.0.sample.sample_steps",
    "meta.name",
    "meta.version",
]
_SHARED_KEYS = [
    key
    for key in EXAMPLE_KEYS
    if key not in ("config.process.0.model.is_flux", "config.process.0.train.ema_config.use_ema")
    and key != "config.process.0.train.ema_config.ema_decay"
    and key != "config.process.0.save.push_to_hub"
    and key != "config.process.0.train.gradient_accumulation_steps"
]
_QUANTISED = [
    "config.process.0.model.arch",
    "config.process.0.model.qtype",
    "config.process.0.model.quantize_te",
    "config.process.0.model.qtype_te",
    "config.process.0.model.low_vram",
]
# Every key of config/examples/train_lora_qwen_image_24gb.yaml and train_lora_wan22_14b_24gb.yaml beside
# those FLUX.1's example shares, and the keys Z-Image's UI defaults set (ui/src/app/jobs/new/options.tsx:
# 683-701); the process `device` again excepted.
MODEL_EXAMPLE_KEYS = {
    "qwen-image": [
        *_SHARED_KEYS,
        *_QUANTISED,
        "config.process.0.train.cache_text_embeddings",
        "config.process.0.train.gradient_accumulation",
        "config.process.0.sample.sample_start_step",
    ],
    "wan22": [
        *[k for k in _SHARED_KEYS if not k.endswith(("shuffle_tokens", "cache_latents_to_disk"))],
        *_QUANTISED,
        "config.process.0.datasets.0.num_frames",
        "config.process.0.train.gradient_accumulation",
        "config.process.0.train.timestep_type",
        "config.process.0.train.optimizer_params",
        "config.process.0.train.switch_boundary_every",
        "config.process.0.train.cache_text_embeddings",
        "config.process.0.model.model_kwargs.train_high_noise",
        "config.process.0.model.model_kwargs.train_low_noise",
        "config.process.0.sample.sample_start_step",
        "config.process.0.sample.num_frames",
        "config.process.0.sample.fps",
    ],
    "z-image": [
        *_SHARED_KEYS,
        *_QUANTISED,
        "config.process.0.train.unload_text_encoder",
        "config.process.0.train.timestep_type",
    ],
    # No example at the pinned commit: the keys the UI's Wan 2.2 TI2V 5B defaults set (options.tsx:366-392).
    "wan22-5b": [
        *_SHARED_KEYS,
        *_QUANTISED,
        "config.process.0.train.timestep_type",
        "config.process.0.sample.num_frames",
        "config.process.0.sample.fps",
        "config.process.0.datasets.0.do_i2v",
        "config.process.0.datasets.0.fps",
    ],
}
CASES = {
    "flux-dev-24gb": ({"base_model": "flux-dev"}, "24gb"),
    "flux-dev-80gb": ({"base_model": "flux-dev"}, "80gb"),
    "flux-schnell-24gb": ({"base_model": "flux-schnell"}, "24gb"),
    "qwen-image-24gb": ({"base_model": "qwen-image"}, "24gb"),
    "qwen-image-80gb": ({"base_model": "qwen-image"}, "80gb"),
    "wan22-24gb": ({"base_model": "wan22"}, "24gb"),
    "wan22-80gb": ({"base_model": "wan22"}, "80gb"),
    "wan22-5b-24gb": ({"base_model": "wan22-5b"}, "24gb"),
    "wan22-5b-80gb": ({"base_model": "wan22-5b"}, "80gb"),
    "z-image-24gb": ({"base_model": "z-image"}, "24gb"),
    "z-image-80gb": ({"base_model": "z-image"}, "80gb"),
}


def _job(**overrides: Any) -> JobInput:
    params = {
        "steps": 2000,
        "rank": 16,
        "seed": 7,
        "sample_prompts": ["[trigger] smiling"],
        "sample_every": 250,
    }
    return JobInput.from_dict(job_input(params=params, **overrides))


def _config(name: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    for variable in [*LOCAL_PATH_ENV.values(), *ARA_PATH_ENV.values()]:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("RUNPOD_MODEL_CACHE_DIR", "/nonexistent/runpod-cache")
    overrides, preset = CASES[name]
    return build_config(_job(**overrides), preset=preset, dataset_dir=DATASET, training_folder=OUTPUT)


def _lookup(config: Any, path: str) -> Any:
    for part in path.split("."):
        config = config[int(part)] if isinstance(config, list) else config[part]
    return config


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_config_matches_its_golden_file(
    name: str, golden_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    golden = json.loads((golden_dir / f"{name}.json").read_text())
    assert _config(name, monkeypatch) == golden


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_key_of_the_upstream_example_is_explicit(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _config(name, monkeypatch)
    expected = MODEL_EXAMPLE_KEYS.get(CASES[name][0]["base_model"], EXAMPLE_KEYS)
    missing = [path for path in expected if _missing(config, path)]
    assert missing == []


def _missing(config: dict[str, Any], path: str) -> bool:
    try:
        _lookup(config, path)
    except (KeyError, IndexError):
        return True
    return False


def test_the_24gb_preset_quantises_and_the_80gb_preset_does_not(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _lookup(_config("flux-dev-24gb", monkeypatch), "config.process.0.model.quantize") is True
    assert _lookup(_config("flux-dev-80gb", monkeypatch), "config.process.0.model.quantize") is False


def test_schnell_trains_with_the_training_adapter(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _lookup(_config("flux-schnell-24gb", monkeypatch), "config.process.0.model")
    assert model["assistant_lora_path"] == "ostris/FLUX.1-schnell-training-adapter"


def test_a_local_model_folder_replaces_the_hub_id(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    folder = tmp_path / "flux-dev"
    for component in DIFFUSERS_COMPONENTS:
        (folder / component).mkdir(parents=True)
    monkeypatch.setenv("RUNPOD_MODEL_CACHE_DIR", str(tmp_path / "no-cache"))
    monkeypatch.setenv("FLUX_DEV_PATH", str(folder))
    config = build_config(_job(), preset="24gb", dataset_dir=DATASET, training_folder=OUTPUT)
    assert _lookup(config, "config.process.0.model.name_or_path") == str(folder)


def test_sampling_is_disabled_without_prompts(monkeypatch: pytest.MonkeyPatch) -> None:
    job = JobInput.from_dict(job_input())
    config = build_config(job, preset="24gb", dataset_dir=DATASET, training_folder=OUTPUT)
    assert _lookup(config, "config.process.0.train.disable_sampling") is True


@pytest.mark.parametrize(
    ("requested", "gpu", "preset"),
    [
        (None, GpuInfo("NVIDIA GeForce RTX 4090", 24.0), "24gb"),
        (None, GpuInfo("NVIDIA A100 80GB PCIe", 80.0), "80gb"),
        (None, GpuInfo(NO_GPU, 0.0), "24gb"),
        ("24gb", GpuInfo("NVIDIA H100 80GB HBM3", 79.6), "24gb"),
    ],
)
def test_the_preset_follows_the_gpu_unless_the_input_says(
    requested: str | None, gpu: GpuInfo, preset: str
) -> None:
    assert choose_preset(requested, gpu) == preset


UPSTREAM_KEYS = json.loads((Path(__file__).parent / "upstream" / "ai_toolkit_config_keys.json").read_text())
# Where each part of our config is read upstream: a section of the committed key list, per path pattern.
SECTION_OF = {
    "": "(top)",
    "config": "config",
    "config.process.0": "process[]",
    "config.process.0.network": "network",
    "config.process.0.save": "save",
    "config.process.0.datasets.0": "datasets[]",
    "config.process.0.train": "train",
    "config.process.0.train.ema_config": "train.ema_config",
    "config.process.0.model": "model",
    "config.process.0.sample": "sample",
    "config.process.0.logging": "logging",
}
# Free-form mappings passed on whole: optimizer keyword arguments, and metadata written into the LoRA.
# `model_kwargs` goes whole to the model class (Wan 2.2 reads train_high_noise / train_low_noise,
# extensions_built_in/diffusion_models/wan22/wan22_14b_model.py:196-197).
FREE_FORM = {"config.process.0.train.optimizer_params", "config.process.0.model.model_kwargs", "meta"}


def _written_keys(config: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """(path of the mapping, key) for every key the config writes, lists of mappings entered."""
    pairs = []
    for key, value in config.items():
        path = f"{prefix}.{key}" if prefix else key
        pairs.append((prefix, key))
        if path in FREE_FORM:
            continue
        if isinstance(value, dict):
            pairs += _written_keys(value, path)
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            for index, item in enumerate(value):
                pairs += _written_keys(item, f"{path}.{index}")
    return pairs


def test_the_committed_key_list_is_from_the_pinned_ai_toolkit_commit() -> None:
    assert UPSTREAM_KEYS["ai_toolkit_commit"] == "27a03a91f23eb1b757d5ec2e80ee3e129cfcc350"
    assert "linear_alpha" in UPSTREAM_KEYS["sections"]["network"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_key_the_config_writes_is_one_ai_toolkit_reads(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(name, monkeypatch)

    pairs = _written_keys(config)
    unread = [
        f"{section}.{key}" if section else key
        for section, key in pairs
        if key not in UPSTREAM_KEYS["sections"][SECTION_OF[section]]
    ]

    assert {section for section, _ in pairs} <= set(SECTION_OF)
    assert unread == []


def test_a_misspelled_key_would_fail_the_comparison(monkeypatch: pytest.MonkeyPatch) -> None:
    config = _config("flux-dev-24gb", monkeypatch)
    config["config"]["process"][0]["train"]["learning_rate"] = 1e-4

    pairs = _written_keys(config)

    assert ("config.process.0.train", "learning_rate") in pairs
    assert "learning_rate" not in UPSTREAM_KEYS["sections"]["train"]


@pytest.mark.parametrize(
    ("base_model", "qtype"),
    [
        ("qwen-image", "uint3|ostris/accuracy_recovery_adapters/qwen_image_torchao_uint3.safetensors"),
        ("wan22", "uint4|ostris/accuracy_recovery_adapters/wan22_14b_t2i_torchao_uint4.safetensors"),
        ("z-image", "qfloat8"),
        ("wan22-5b", "qfloat8"),
    ],
)
def test_the_24gb_preset_quantises_as_upstream_says_for_24gb(
    base_model: str, qtype: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _lookup(_config(f"{base_model}-24gb", monkeypatch), "config.process.0.model")
    assert (model["quantize"], model["qtype"], model["low_vram"]) == (True, qtype, True)


@pytest.mark.parametrize("base_model", ["qwen-image", "wan22", "wan22-5b", "z-image"])
def test_the_80gb_preset_quantises_nothing(base_model: str, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _lookup(_config(f"{base_model}-80gb", monkeypatch), "config.process.0.model")
    assert (model["quantize"], model["quantize_te"]) == (False, False)


def test_a_local_accuracy_recovery_adapter_replaces_the_hub_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    adapter = tmp_path / "qwen_image_torchao_uint3.safetensors"
    adapter.write_bytes(b"x")
    monkeypatch.setenv("QWEN_IMAGE_ARA_PATH", str(adapter))
    monkeypatch.setenv("RUNPOD_MODEL_CACHE_DIR", str(tmp_path / "no-cache"))
    config = build_config(
        _job(base_model="qwen-image"), preset="24gb", dataset_dir=DATASET, training_folder=OUTPUT
    )
    assert _lookup(config, "config.process.0.model.qtype") == f"uint3|{adapter}"


def test_wan22_trains_both_experts_into_two_lora_files_on_still_images(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    process = _lookup(_config("wan22-80gb", monkeypatch), "config.process.0")
    assert process["model"]["model_kwargs"] == {"train_high_noise": True, "train_low_noise": True}
    assert process["network"]["split_multistage_loras"] is True
    assert process["datasets"][0]["num_frames"] == process["sample"]["num_frames"] == 1


def test_wan22_5b_trains_its_one_transformer_into_one_lora_file_on_still_images(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    process = _lookup(_config("wan22-5b-80gb", monkeypatch), "config.process.0")
    dataset, sample = process["datasets"][0], process["sample"]
    assert (process["model"]["arch"], process["model"]["name_or_path"]) == (
        "wan22_5b",
        "Wan-AI/Wan2.2-TI2V-5B-Diffusers",
    )
    assert "split_multistage_loras" not in process["network"] and "model_kwargs" not in process["model"]
    # Stills: one frame each, no first-frame conditioning (a video's), samples as the UI sizes them.
    assert (dataset["num_frames"], dataset["do_i2v"], sample["num_frames"]) == (1, False, 1)
    assert (sample["width"], sample["height"], sample["guidance_scale"], sample["sample_steps"]) == (
        768,
        768,
        4,
        30,
    )
    assert process["train"]["timestep_type"] == "weighted"
