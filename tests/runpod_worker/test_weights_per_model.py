"""Every base model's weights come the same three ways — RunPod's model cache, a local folder, the Hub — each
checked against the components AI Toolkit loads for that model, and so do the adapters of the quantised
24 GB presets and Wan 2.2 14B's VAE (runpod_worker/weights.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from runpod_worker.contract import BaseModel, GpuPreset
from runpod_worker.weights import (
    ARA_FILES,
    ARA_PATH_ENV,
    ARA_REPO,
    COMPONENTS,
    HUB_IDS,
    LOCAL_PATH_ENV,
    SCHNELL_ADAPTER,
    SCHNELL_ADAPTER_FILE,
    WAN_VAE_REPO,
    WeightSource,
    adapter_source,
    ara_source,
    base_model_source,
    cached_snapshot,
    run_sources,
    schnell_adapter_source,
    trainer_env,
    wan_vae_source,
)

# What AI Toolkit 27a03a91 loads from a model folder, per model: FLUX.1 both text encoders
# (toolkit/stable_diffusion_model.py), Wan 2.2 14B both experts (wan22_14b_model.py:252-371), every other
# one transformer and one text encoder.
EXPECTED_COMPONENTS = {
    BaseModel.FLUX_DEV: {"text_encoder_2", "tokenizer_2"},
    BaseModel.FLUX_SCHNELL: {"text_encoder_2", "tokenizer_2"},
    BaseModel.QWEN_IMAGE: set(),
    BaseModel.WAN22: {"transformer_2"},
    BaseModel.WAN22_5B: set(),
    BaseModel.Z_IMAGE: set(),
}
SINGLE = {"model_index.json", "scheduler", "text_encoder", "tokenizer", "transformer", "vae"}
HUB = {
    BaseModel.FLUX_DEV: "black-forest-labs/FLUX.1-dev",
    BaseModel.FLUX_SCHNELL: "black-forest-labs/FLUX.1-schnell",
    BaseModel.QWEN_IMAGE: "Qwen/Qwen-Image",
    BaseModel.WAN22: "ai-toolkit/Wan2.2-T2V-A14B-Diffusers-bf16",
    BaseModel.WAN22_5B: "Wan-AI/Wan2.2-TI2V-5B-Diffusers",
    BaseModel.Z_IMAGE: "Tongyi-MAI/Z-Image",
}
MODELS = sorted(BaseModel.SUPPORTED)


def model_folder(path: Path, base_model: str, skip: str | None = None) -> Path:
    path.mkdir(parents=True)
    for component in COMPONENTS[base_model]:
        if component == skip:
            continue
        if component.endswith(".json"):
            (path / component).write_text("{}")
        else:
            (path / component).mkdir()
    return path


def cache_entry(root: Path, repo: str, revision: str = "abc123") -> Path:
    org, name = repo.split("/")
    entry = root / f"models--{org}--{name}"
    (entry / "refs").mkdir(parents=True)
    (entry / "refs" / "main").write_text(revision)
    snapshot = entry / "snapshots" / revision
    snapshot.mkdir(parents=True)
    return snapshot


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in [*LOCAL_PATH_ENV.values(), *ARA_PATH_ENV.values(), "FLUX_SCHNELL_ADAPTER_PATH"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    root = tmp_path / "runpod-volume" / "huggingface-cache" / "hub"
    monkeypatch.setenv("RUNPOD_MODEL_CACHE_DIR", str(root))
    return root


def test_every_supported_model_has_a_hub_id_a_folder_variable_and_its_components() -> None:
    assert HUB_IDS == HUB
    assert set(LOCAL_PATH_ENV) == set(COMPONENTS) == set(BaseModel.SUPPORTED)
    for model in MODELS:
        assert set(COMPONENTS[model]) == SINGLE | EXPECTED_COMPONENTS[model]


@pytest.mark.parametrize("base_model", MODELS)
def test_without_cache_or_folder_each_model_comes_from_its_hub_id(base_model: str) -> None:
    assert base_model_source(base_model) == WeightSource(HUB[base_model], "hub")


@pytest.mark.parametrize("base_model", MODELS)
def test_runpods_cache_of_each_model_wins_over_its_local_folder(
    base_model: str, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snapshot = cache_entry(cache, HUB[base_model])
    for component in COMPONENTS[base_model]:
        (snapshot / component).mkdir()
    monkeypatch.setenv(LOCAL_PATH_ENV[base_model], str(model_folder(tmp_path / "baked", base_model)))

    assert base_model_source(base_model) == WeightSource(str(snapshot), "runpod-cache")


@pytest.mark.parametrize("base_model", MODELS)
def test_each_models_local_folder_is_used_when_it_holds_every_component(
    base_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = model_folder(tmp_path / "baked", base_model)
    monkeypatch.setenv(LOCAL_PATH_ENV[base_model], str(folder))

    assert base_model_source(base_model) == WeightSource(str(folder), "local-folder")


@pytest.mark.parametrize(
    ("base_model", "missing"),
    [
        (BaseModel.QWEN_IMAGE, "text_encoder"),
        (BaseModel.WAN22, "transformer_2"),
        (BaseModel.WAN22_5B, "vae"),
        (BaseModel.Z_IMAGE, "tokenizer"),
    ],
)
def test_a_folder_without_a_component_the_model_loads_falls_through_to_the_hub(
    base_model: str, missing: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(LOCAL_PATH_ENV[base_model], str(model_folder(tmp_path / "baked", base_model, missing)))

    assert base_model_source(base_model).kind == "hub"


def test_a_wan22_14b_folder_is_not_taken_for_a_5b_one_nor_the_reverse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    five = model_folder(tmp_path / "5b", BaseModel.WAN22_5B)
    monkeypatch.setenv(LOCAL_PATH_ENV[BaseModel.WAN22], str(five))
    monkeypatch.setenv(LOCAL_PATH_ENV[BaseModel.WAN22_5B], str(five))

    assert base_model_source(BaseModel.WAN22).kind == "hub"  # no transformer_2: not the two-expert model
    assert base_model_source(BaseModel.WAN22_5B).kind == "local-folder"


@pytest.mark.parametrize("base_model", sorted(ARA_FILES))
def test_the_accuracy_recovery_adapter_comes_from_its_variable_then_the_cache_then_the_hub(
    base_model: str, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert ara_source(base_model) == WeightSource(f"{ARA_REPO}/{ARA_FILES[base_model]}", "hub")

    cached = cache_entry(cache, ARA_REPO) / ARA_FILES[base_model]
    cached.write_bytes(b"adapter")
    assert ara_source(base_model) == WeightSource(str(cached), "runpod-cache")

    local = tmp_path / "adapter.safetensors"
    local.write_bytes(b"adapter")
    monkeypatch.setenv(ARA_PATH_ENV[base_model], str(local))
    assert ara_source(base_model) == WeightSource(str(local), "local-folder")


@pytest.mark.parametrize(
    ("base_model", "preset", "adapter"),
    [
        (BaseModel.FLUX_DEV, GpuPreset.LOW_VRAM_24GB, None),
        (BaseModel.FLUX_SCHNELL, GpuPreset.HIGH_VRAM_80GB, SCHNELL_ADAPTER),
        (BaseModel.QWEN_IMAGE, GpuPreset.LOW_VRAM_24GB, f"{ARA_REPO}/qwen_image_torchao_uint3.safetensors"),
        (BaseModel.QWEN_IMAGE, GpuPreset.HIGH_VRAM_80GB, None),
        (BaseModel.WAN22, GpuPreset.LOW_VRAM_24GB, f"{ARA_REPO}/wan22_14b_t2i_torchao_uint4.safetensors"),
        (BaseModel.WAN22, GpuPreset.HIGH_VRAM_80GB, None),
        (BaseModel.WAN22_5B, GpuPreset.LOW_VRAM_24GB, None),
        (BaseModel.Z_IMAGE, GpuPreset.LOW_VRAM_24GB, None),
    ],
)
def test_each_model_loads_the_adapter_its_preset_needs_and_no_other(
    base_model: str, preset: str, adapter: str | None
) -> None:
    source = adapter_source(base_model, preset)

    assert (source.name_or_path if source else None) == adapter


def test_a_local_wan22_folder_gives_its_vae_to_the_trainer_under_the_hub_id_it_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = model_folder(tmp_path / "wan22", BaseModel.WAN22)
    (folder / "vae" / "config.json").write_text("{}")
    monkeypatch.setenv(LOCAL_PATH_ENV[BaseModel.WAN22], str(folder))

    sources = run_sources(BaseModel.WAN22, GpuPreset.HIGH_VRAM_80GB)

    assert sources == [WeightSource(str(folder), "local-folder"), WeightSource(WAN_VAE_REPO, "local-folder")]
    seeded = cached_snapshot(WAN_VAE_REPO, tmp_path / "hf-home" / "hub")
    assert seeded is not None and seeded.resolve() == (folder / "vae").resolve()
    assert trainer_env(sources) == {"HF_HUB_OFFLINE": "1"}


def test_a_hub_wan22_model_loads_its_vae_from_the_hub_and_runs_online() -> None:
    sources = run_sources(BaseModel.WAN22, GpuPreset.HIGH_VRAM_80GB)

    assert sources[1:] == [WeightSource(WAN_VAE_REPO, "hub")]
    assert trainer_env(sources) == {}


def test_the_wan_vae_in_runpods_cache_wins_over_a_local_folders(cache: Path, tmp_path: Path) -> None:
    snapshot = cache_entry(cache, WAN_VAE_REPO)
    (snapshot / "config.json").write_text("{}")
    folder = model_folder(tmp_path / "wan22", BaseModel.WAN22)
    (folder / "vae" / "config.json").write_text("{}")

    source = wan_vae_source(WeightSource(str(folder), "local-folder"))

    assert source == WeightSource(WAN_VAE_REPO, "runpod-cache")
    seeded = cached_snapshot(WAN_VAE_REPO, tmp_path / "hf-home" / "hub")
    assert seeded is not None and seeded.resolve() == snapshot.resolve()


@pytest.mark.parametrize("base_model", [BaseModel.QWEN_IMAGE, BaseModel.WAN22_5B, BaseModel.Z_IMAGE])
def test_a_local_one_transformer_model_on_80gb_is_all_a_run_loads_so_it_runs_offline(
    base_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = model_folder(tmp_path / "model", base_model)
    monkeypatch.setenv(LOCAL_PATH_ENV[base_model], str(folder))

    sources = run_sources(base_model, GpuPreset.HIGH_VRAM_80GB)

    assert sources == [WeightSource(str(folder), "local-folder")]
    assert trainer_env(sources) == {"HF_HUB_OFFLINE": "1"}


def test_a_local_qwen_image_on_24gb_goes_online_for_a_hub_adapter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        LOCAL_PATH_ENV[BaseModel.QWEN_IMAGE], str(model_folder(tmp_path / "q", BaseModel.QWEN_IMAGE))
    )

    sources = run_sources(BaseModel.QWEN_IMAGE, GpuPreset.LOW_VRAM_24GB)

    assert [source.kind for source in sources] == ["local-folder", "hub"]
    assert trainer_env(sources) == {}


@pytest.mark.parametrize("given", ["folder", "file"])
def test_a_local_schnell_adapter_is_given_to_the_trainer_as_its_file(
    given: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / SCHNELL_ADAPTER_FILE).write_bytes(b"lora")
    monkeypatch.setenv(
        "FLUX_SCHNELL_ADAPTER_PATH", str(folder if given == "folder" else folder / SCHNELL_ADAPTER_FILE)
    )

    assert schnell_adapter_source() == WeightSource(
        str(folder / SCHNELL_ADAPTER_FILE), "local-folder", needs_online_mode=True
    )


def test_the_schnell_adapter_in_runpods_cache_is_given_as_its_file(cache: Path) -> None:
    snapshot = cache_entry(cache, SCHNELL_ADAPTER)
    (snapshot / SCHNELL_ADAPTER_FILE).write_bytes(b"lora")

    assert schnell_adapter_source().name_or_path == str(snapshot / SCHNELL_ADAPTER_FILE)


def test_a_schnell_run_never_goes_offline_even_with_every_weight_local(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        LOCAL_PATH_ENV[BaseModel.FLUX_SCHNELL], str(model_folder(tmp_path / "s", BaseModel.FLUX_SCHNELL))
    )
    adapter = tmp_path / SCHNELL_ADAPTER_FILE
    adapter.write_bytes(b"lora")
    monkeypatch.setenv("FLUX_SCHNELL_ADAPTER_PATH", str(adapter))

    sources = run_sources(BaseModel.FLUX_SCHNELL, GpuPreset.HIGH_VRAM_80GB)

    assert all(source.local for source in sources)
    # diffusers refuses the adapter in offline mode (loaders/lora_base.py:280-281); "0" also overrides a
    # worker started offline.
    assert trainer_env(sources) == {"HF_HUB_OFFLINE": "0"}
