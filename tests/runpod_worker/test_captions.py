"""Auto-captions: the images sent without a caption are captioned by AI Toolkit's Qwen3-VL captioner job
before training (here the simulated AI Toolkit's, run as the worker runs it), `[trigger]` first; the others
keep theirs, and a captioner that fails leaves its images on the bare trigger word."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from runpod_worker import captions
from runpod_worker.captions import (
    CAPTION_PROMPT,
    CaptionRun,
    caption_missing,
    captioner_config,
    clean_caption,
)
from runpod_worker.contract import GpuInfo, JobInput
from runpod_worker.dataset import write_captions, write_given_captions
from runpod_worker.trainer import SIMULATOR_DIR
from runpod_worker.weights import CAPTIONER_REPO, CAPTIONER_REVISION, WeightSource
from tests.runpod_worker.factories import SHA, job_input

UPSTREAM_KEYS = json.loads((Path(__file__).parent / "upstream" / "ai_toolkit_config_keys.json").read_text())
CPU = GpuInfo(name="no GPU (CPU only)", memory_gb=0.0)
GPU = GpuInfo(name="NVIDIA L40S", memory_gb=44.4)


def _image(name: str, caption: str | None) -> dict[str, Any]:
    return {"url": f"https://storage.example/{name}", "sha256": SHA, "filename": name, "caption": caption}


def _spec(*captions: str | None, **params: Any) -> JobInput:
    images = [_image(f"img{index:02d}.jpg", caption) for index, caption in enumerate(captions, start=1)]
    return JobInput.from_dict(job_input(images=images, params={"steps": 100, "rank": 4, **params}))


def _dataset(folder: Path, spec: JobInput) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    colours = [(200, 40, 40), (40, 60, 200), (240, 240, 240)]
    for index, image in enumerate(spec.images):
        buffer = io.BytesIO()
        Image.new("RGB", (96, 128), colours[index % 3]).save(buffer, "JPEG")
        (folder / image.filename).write_bytes(buffer.getvalue())
    write_given_captions(spec.images, folder, spec.trigger_word)
    return folder


@pytest.fixture
def simulator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AI_TOOLKIT_DIR", str(SIMULATOR_DIR))
    monkeypatch.setenv("CAPTION_MODEL_PATH", str(SIMULATOR_DIR / "captioner_model"))
    monkeypatch.delenv("SIMULATED_CAPTIONER_FAIL", raising=False)


def _caption(tmp_path: Path, spec: JobInput) -> CaptionRun:
    dataset = _dataset(tmp_path / "dataset", spec)
    return asyncio.run(caption_missing(spec, dataset, tmp_path, CPU))


def _trained_on(tmp_path: Path, name: str) -> str:
    return (tmp_path / "dataset" / f"{name}.txt").read_text(encoding="utf-8")


# --------------------------------------------------------------------------- the captioner's job


def test_the_captioner_job_sets_only_keys_ai_toolkit_reads(tmp_path: Path) -> None:
    config = captioner_config(tmp_path / "dataset", tmp_path / "model", gpu=GPU, workspace=tmp_path)

    [process] = config["config"]["process"]
    assert process["type"] == "Qwen3VLCaptioner"
    assert set(process) <= set(UPSTREAM_KEYS["sections"]["captioner.process[]"])
    assert set(process["caption"]) <= set(UPSTREAM_KEYS["sections"]["captioner.caption"])
    assert process["caption"]["model_name_or_path"] == str(tmp_path / "model")
    assert process["caption"]["caption_prompt"] == CAPTION_PROMPT
    # Never AI Toolkit's UI job: that would look for its stop flag in a database of the UI.
    assert not Path(process["sqlite_db_path"]).exists()


def test_the_captioner_runs_in_bf16_on_the_gpu_and_in_float32_without_one(tmp_path: Path) -> None:
    on_gpu = captioner_config(tmp_path, tmp_path, gpu=GPU, workspace=tmp_path)["config"]["process"][0]
    on_cpu = captioner_config(tmp_path, tmp_path, gpu=CPU, workspace=tmp_path)["config"]["process"][0]

    assert (on_gpu["caption"]["device"], on_gpu["caption"]["dtype"]) == ("cuda", "bf16")
    assert (on_cpu["caption"]["device"], on_cpu["caption"]["dtype"]) == ("cpu", "float32")


# --------------------------------------------------------------------------- which images, which captions


@pytest.mark.usefixtures("simulator")
def test_only_the_images_sent_without_a_caption_are_captioned(tmp_path: Path) -> None:
    spec = _spec("[trigger] in a red coat", None, "   ")

    made = _caption(tmp_path, spec)

    assert [caption.filename for caption in made.captions] == ["img02.jpg", "img03.jpg"]
    assert all(caption.sha256 == SHA for caption in made.captions)
    assert (
        made.captions[0].caption
        == "[trigger], simulated caption: a portrait-format photo in blue tones and soft light"
    )
    assert made.captions[1].caption.startswith(
        "[trigger], simulated caption: a portrait-format photo in neutral"
    )
    assert (
        made.captioner == "simulated captioner (no model: captions from each photo's shape, colour and light)"
    )
    assert made.error is None and made.seconds > 0
    assert _trained_on(tmp_path, "img01") == "ohwx in a red coat"  # the owner's caption, untouched


@pytest.mark.usefixtures("simulator")
def test_the_trainer_gets_each_made_caption_with_the_trigger_word_filled_in(tmp_path: Path) -> None:
    spec = _spec("[trigger] in a red coat", None)
    made = _caption(tmp_path, spec)

    write_captions(spec.images, tmp_path / "dataset", spec.trigger_word, made.made())

    assert _trained_on(tmp_path, "img01") == "ohwx in a red coat"
    assert (
        _trained_on(tmp_path, "img02")
        == "ohwx, simulated caption: a portrait-format photo in blue tones and soft light"
    )


@pytest.mark.usefixtures("simulator")
def test_with_auto_captions_off_nothing_is_captioned_and_no_captioner_runs(tmp_path: Path) -> None:
    spec = _spec(None, None, auto_caption=False)

    made = _caption(tmp_path, spec)
    write_captions(spec.images, tmp_path / "dataset", spec.trigger_word, made.made())

    assert made == CaptionRun()
    assert not (tmp_path / "captioner.json").exists()
    assert _trained_on(tmp_path, "img01") == "a photo of ohwx"


@pytest.mark.usefixtures("simulator")
def test_when_every_image_has_a_caption_no_captioner_runs(tmp_path: Path) -> None:
    made = _caption(tmp_path, _spec("[trigger] smiling", "[trigger] outside"))

    assert made == CaptionRun()
    assert not (tmp_path / "captioner.json").exists()


# --------------------------------------------------------------------------- failures leave the trigger word


@pytest.mark.usefixtures("simulator")
def test_a_captioner_that_fails_leaves_its_images_on_the_trigger_word(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIMULATED_CAPTIONER_FAIL", "crash")
    spec = _spec(None, "[trigger] smiling", None)

    made = _caption(tmp_path, spec)
    write_captions(spec.images, tmp_path / "dataset", spec.trigger_word, made.made())

    assert made.captions == []
    assert made.error is not None
    assert made.error.startswith("The captioner failed (simulated: the captioner could not be loaded")
    assert made.error.endswith(": img01.jpg, img03.jpg trained on the trigger word alone.")
    assert _trained_on(tmp_path, "img01") == "a photo of ohwx"
    assert _trained_on(tmp_path, "img02") == "ohwx smiling"


@pytest.mark.usefixtures("simulator")
def test_an_image_the_captioner_could_not_caption_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIMULATED_CAPTIONER_FAIL", "first")

    made = _caption(tmp_path, _spec(None, None))

    assert [caption.filename for caption in made.captions] == ["img02.jpg"]
    assert made.error == (
        "The captioner wrote no caption for some photos: img01.jpg trained on the trigger word alone."
    )


@pytest.mark.usefixtures("simulator")
def test_weights_that_cannot_be_had_leave_the_images_on_the_trigger_word(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreachable(source: WeightSource) -> Path:
        raise ConnectionError("the Hub did not answer")

    monkeypatch.setattr(captions, "caption_model_source", lambda: WeightSource(CAPTIONER_REPO, "hub"))
    monkeypatch.setattr(captions, "caption_model_folder", unreachable)

    made = _caption(tmp_path, _spec(None))

    assert made.captions == [] and made.captioner == f"{CAPTIONER_REPO}@{CAPTIONER_REVISION}"
    assert made.error == (
        "The captioner could not be loaded (ConnectionError): img01.jpg trained on the trigger word alone."
    )


@pytest.mark.usefixtures("simulator")
def test_a_stop_while_captioning_ends_the_captioner(tmp_path: Path) -> None:
    spec = _spec(None, None, None)
    dataset = _dataset(tmp_path / "dataset", spec)

    made = asyncio.run(caption_missing(spec, dataset, tmp_path, CPU, should_stop=lambda: True))

    assert made.error is not None and made.error.startswith("Captioning was stopped")


# --------------------------------------------------------------------------- what the model said, cleaned


@pytest.mark.parametrize(
    ("said", "kept"),
    [
        ("A woman in a red coat, smiling.", "a woman in a red coat, smiling."),
        ('  "A man\n\nstanding outside"  ', "a man standing outside"),
        ("DSLR close-up of a person", "DSLR close-up of a person"),
        ("a woman named [trigger] , outside", "a woman named, outside"),
        ("", ""),
    ],
)
def test_a_caption_is_one_clean_line(said: str, kept: str) -> None:
    assert clean_caption(said) == kept


def test_a_long_caption_is_cut_at_a_word_to_fit_the_studio() -> None:
    kept = clean_caption("a " + "very " * 400 + "long caption")

    assert len("[trigger], " + kept) <= 1000
    assert kept.endswith("very")
