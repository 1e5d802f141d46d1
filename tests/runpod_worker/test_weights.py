"""The base model comes from RunPod's model cache when it holds it, then a local folder, then the Hub."""

from __future__ import annotations

from pathlib import Path

import pytest

from runpod_worker.weights import (
    DIFFUSERS_COMPONENTS,
    base_model_source,
    cached_snapshot,
    schnell_adapter_source,
    trainer_env,
)


def diffusers_folder(path: Path, skip: str | None = None) -> Path:
    path.mkdir(parents=True)
    for component in DIFFUSERS_COMPONENTS:
        if component == skip:
            continue
        if "." in component:
            (path / component).write_text("{}")
        else:
            (path / component).mkdir()
    return path


def runpod_cache(root: Path, repo: str, revision: str = "abc123", refs: bool = True) -> Path:
    org, name = repo.split("/")
    model = root / f"models--{org}--{name}"
    if refs:
        (model / "refs").mkdir(parents=True)
        (model / "refs" / "main").write_text(revision)
    return diffusers_folder(model / "snapshots" / revision)


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("FLUX_DEV_PATH", "FLUX_SCHNELL_PATH", "FLUX_SCHNELL_ADAPTER_PATH"):
        monkeypatch.delenv(name, raising=False)
    cache = tmp_path / "runpod-volume" / "huggingface-cache" / "hub"
    monkeypatch.setenv("RUNPOD_MODEL_CACHE_DIR", str(cache))
    return cache


def test_runpods_model_cache_wins_when_it_holds_the_model(
    clean_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snapshot = runpod_cache(clean_env, "black-forest-labs/FLUX.1-dev")
    monkeypatch.setenv("FLUX_DEV_PATH", str(diffusers_folder(tmp_path / "baked")))

    source = base_model_source("flux-dev")

    assert (source.name_or_path, source.kind) == (str(snapshot), "runpod-cache")


def test_the_cache_snapshot_is_the_one_refs_main_names(clean_env: Path) -> None:
    runpod_cache(clean_env, "black-forest-labs/FLUX.1-dev", revision="aaa", refs=False)
    named = runpod_cache(clean_env, "black-forest-labs/FLUX.1-dev", revision="zzz")

    assert cached_snapshot("black-forest-labs/FLUX.1-dev") == named


def test_a_local_diffusers_folder_is_used_when_the_cache_does_not_hold_the_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLUX_DEV_PATH", str(diffusers_folder(tmp_path / "baked")))

    assert base_model_source("flux-dev").kind == "local-folder"


def test_a_half_copied_folder_falls_through_to_the_hub(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLUX_DEV_PATH", str(diffusers_folder(tmp_path / "baked", skip="text_encoder_2")))

    source = base_model_source("flux-dev")

    assert (source.name_or_path, source.kind) == ("black-forest-labs/FLUX.1-dev", "hub")


def test_the_trainer_runs_offline_only_when_every_weight_is_local(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runpod_cache(clean_env, "black-forest-labs/FLUX.1-schnell")

    local_model = base_model_source("flux-schnell")
    hub_adapter = schnell_adapter_source()

    assert trainer_env([local_model]) == {"HF_HUB_OFFLINE": "1"}
    assert hub_adapter.kind == "hub"
    # Online: the adapter comes from the Hub (and diffusers refuses to load it in offline mode at all).
    assert trainer_env([local_model, hub_adapter]) == {"HF_HUB_OFFLINE": "0"}
