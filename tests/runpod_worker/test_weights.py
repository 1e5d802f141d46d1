"""The base model comes from RunPod's model cache when it holds it, then a local folder, then the Hub; the
captioner from a local folder, then RunPod's cache at its pinned revision, then the Hub at that revision."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from runpod_worker.weights import (
    CAPTIONER_REPO,
    CAPTIONER_REVISION,
    DIFFUSERS_COMPONENTS,
    WeightSource,
    base_model_source,
    cached_snapshot,
    caption_model_folder,
    caption_model_source,
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
    for name in ("FLUX_DEV_PATH", "FLUX_SCHNELL_PATH", "FLUX_SCHNELL_ADAPTER_PATH", "CAPTION_MODEL_PATH"):
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


# --------------------------------------------------------------------------- the captioner


def captioner_folder(path: Path, processor: str = "preprocessor_config.json") -> Path:
    path.mkdir(parents=True)
    for name in ("config.json", "tokenizer_config.json", processor):
        (path / name).write_text("{}")
    return path


def test_a_captioner_folder_given_in_the_environment_comes_first(
    clean_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    org, name = CAPTIONER_REPO.split("/")
    captioner_folder(clean_env / f"models--{org}--{name}" / "snapshots" / CAPTIONER_REVISION)
    baked = captioner_folder(tmp_path / "baked", processor="processor_config.json")
    monkeypatch.setenv("CAPTION_MODEL_PATH", str(baked))

    assert caption_model_source() == WeightSource(str(baked), "local-folder")


def test_runpods_cache_serves_the_captioner_only_at_its_pinned_revision(clean_env: Path) -> None:
    org, name = CAPTIONER_REPO.split("/")
    snapshots = clean_env / f"models--{org}--{name}" / "snapshots"
    captioner_folder(snapshots / "0123456789abcdef0123456789abcdef01234567")

    assert caption_model_source() == WeightSource(CAPTIONER_REPO, "hub")

    pinned = captioner_folder(snapshots / CAPTIONER_REVISION)
    assert caption_model_source() == WeightSource(str(pinned), "runpod-cache")


def test_a_folder_without_the_processor_falls_through_to_the_hub(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    half = tmp_path / "half"
    half.mkdir()
    (half / "config.json").write_text("{}")
    (half / "tokenizer_config.json").write_text("{}")
    monkeypatch.setenv("CAPTION_MODEL_PATH", str(half))

    assert caption_model_source().kind == "hub"


def test_from_the_hub_the_captioner_is_downloaded_at_its_pinned_revision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[dict[str, Any]] = []

    def snapshot_download(repo_id: str, **kwargs: Any) -> str:
        asked.append({"repo_id": repo_id, **kwargs})
        return str(tmp_path / "snapshot")

    monkeypatch.setitem(sys.modules, "huggingface_hub", SimpleNamespace(snapshot_download=snapshot_download))

    folder = caption_model_folder(WeightSource(CAPTIONER_REPO, "hub"))

    assert folder == tmp_path / "snapshot"
    assert [(a["repo_id"], a["revision"]) for a in asked] == [(CAPTIONER_REPO, CAPTIONER_REVISION)]
    assert "*.safetensors" in asked[0]["allow_patterns"]
