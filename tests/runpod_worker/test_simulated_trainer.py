"""The simulated trainer's samples, checkpoints, loss log and resume, as AI Toolkit 27a03a91 makes them
(jobs/process/BaseSDTrainProcess.py; toolkit/logging_aitk.py). Run as the worker runs it: run.py on the
config the worker builds."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageChops, ImageStat

from runpod_worker.config import build_config
from runpod_worker.contract import JobInput, checkpoint_steps, sample_steps
from runpod_worker.simulated_ai_toolkit.samples import SIZE, ZOOMS
from runpod_worker.trainer import (
    SIMULATOR_DIR,
    ProgressParser,
    safetensors_metadata,
    split_lines,
    steps_from_metadata,
)
from tests.runpod_worker.factories import job_input
from tests.support.local_runpod import LIGHT_LORA

NAME = "alice_v1"
SAMPLE = re.compile(r"^\d{13}__(\d{9})_(\d+)\.jpg$")


def _dataset(folder: Path) -> None:
    """A colourful, sharp-edged photo: blur and grey are easy to tell from it."""
    folder.mkdir(parents=True)
    image = Image.new("RGB", (128, 128))
    for x in range(128):
        for y in range(128):
            image.putpixel((x, y), (255, 40, 40) if (x // 16 + y // 16) % 2 else (30, 90, 255))
    image.save(folder / "img01.jpg", quality=95)


def _spec(**params: Any) -> JobInput:
    base = {"steps": 200, "rank": 4, "save_every": 50, "sample_every": 50, "sample_prompts": ["a", "b"]}
    return JobInput.from_dict(job_input(params={**base, **params}))


def _run(work: Path, spec: JobInput, *, every_block: bool = False, **env: str) -> str:
    """run.py's output; its LoRA files hold the first two blocks of each kind unless `every_block` (the
    tests of samples, checkpoints, loss and resume do not weigh them)."""
    if not (work / "dataset").exists():
        _dataset(work / "dataset")
    config = build_config(
        spec, preset="80gb", dataset_dir=work / "dataset", training_folder=work / "output", model_path="tiny"
    )
    (work / "config.json").write_text(json.dumps(config), encoding="utf-8")
    light = {} if every_block else LIGHT_LORA
    result = subprocess.run(
        [sys.executable, "-u", "run.py", str(work / "config.json")],
        cwd=SIMULATOR_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={"PATH": "/usr/bin:/bin", "SIMULATED_TRAINER_SECONDS_PER_STEP": "0", **light, **env},
        timeout=120,
        check=False,
    )
    return result.stdout.decode()


def _samples(work: Path) -> list[tuple[int, int]]:
    folder = work / "output" / NAME / "samples"
    found = [SAMPLE.match(p.name) for p in folder.iterdir() if p.is_file()]
    return sorted((int(m.group(1)), int(m.group(2))) for m in found if m)


def _sample(work: Path, step: int, index: int) -> Image.Image:
    folder = work / "output" / NAME / "samples"
    [path] = [p for p in folder.iterdir() if p.name.endswith(f"__{step:09d}_{index}.jpg")]
    return Image.open(path).convert("RGB")


def _loss_steps(work: Path) -> list[int]:
    with sqlite3.connect(work / "output" / NAME / "loss_log.db") as con:
        rows = con.execute("SELECT step FROM metrics WHERE key = 'loss/loss' ORDER BY step").fetchall()
    return [row[0] for row in rows]


def _progress_steps(output: str) -> list[int]:
    lines, rest = split_lines(output)
    parser = ProgressParser(NAME)
    return [p.step for p in (parser.parse(line) for line in [*lines, rest]) if p is not None]


def test_samples_and_checkpoints_come_where_the_contract_says(tmp_path: Path) -> None:
    spec = _spec(sample_first=True)

    output = _run(tmp_path, spec)

    assert "Generating baseline samples before training" in output
    expected = [(step, index) for step in sample_steps(spec.params) for index in (0, 1)]
    assert _samples(tmp_path) == expected
    assert expected[0] == (0, 0) and expected[-1] == (200, 1)
    saved = sorted(p.name for p in (tmp_path / "output" / NAME).glob(f"{NAME}_*.safetensors"))
    assert saved == [f"{NAME}_{step:09d}.safetensors" for step in checkpoint_steps(spec.params)]
    assert (tmp_path / "output" / NAME / f"{NAME}.safetensors").is_file()


def test_no_step_0_sample_unless_asked(tmp_path: Path) -> None:
    output = _run(tmp_path, _spec())

    assert "Skipping first sample due to config setting" in output
    assert [step for step, _ in _samples(tmp_path)][:2] == [50, 50]


def test_the_loss_goes_to_loss_log_db_for_every_step_but_the_first(tmp_path: Path) -> None:
    _run(tmp_path, _spec())

    # Logged when step_num != start_step, committed with the 0-based step (BaseSDTrainProcess.py:2706,2794).
    assert _loss_steps(tmp_path) == list(range(1, 200))


def _distance(image: Image.Image, photo: Image.Image) -> float:
    """Mean difference per channel, the labels left out."""
    box = (8, 32, SIZE - 8, SIZE - 32)
    return sum(ImageStat.Stat(ImageChops.difference(image.crop(box), photo.crop(box))).mean) / 3


def _photo(tmp_path: Path, name: str = "img01.jpg", prompt: int = 0) -> Image.Image:
    """The photo as prompt `prompt` frames it: a square from its upper middle."""
    with Image.open(tmp_path / "dataset" / name) as photo:
        image = photo.convert("RGB")
    side = int(min(image.size) * ZOOMS[prompt])
    left, top = (image.width - side) // 2, int((image.height - side) * 0.15)
    return image.crop((left, top, left + side, top + side)).resize((SIZE, SIZE), Image.Resampling.LANCZOS)


def test_the_samples_turn_from_noise_into_the_reference_photo_as_training_goes_on(tmp_path: Path) -> None:
    _run(tmp_path, _spec(sample_first=True))

    steps = [0, 50, 100, 150, 200]
    distances = [_distance(_sample(tmp_path, step, 0), _photo(tmp_path)) for step in steps]
    assert distances == sorted(distances, reverse=True)
    assert distances[0] > 60 and distances[-1] < 12  # noise at step 0, the photo at the last step
    # The noise is the sample seed's: each step of a gallery column is the same noise, fainter.
    assert _distance(_sample(tmp_path, 50, 0), _sample(tmp_path, 0, 0)) < distances[0]
    # Each prompt its own framing, so rows of the gallery differ.
    assert _sample(tmp_path, 200, 0).tobytes() != _sample(tmp_path, 200, 1).tobytes()


def test_each_prompt_draws_on_another_reference_photo(tmp_path: Path) -> None:
    _dataset(tmp_path / "dataset")
    Image.new("RGB", (128, 128), (250, 220, 0)).save(tmp_path / "dataset" / "img02.jpg", quality=95)

    _run(tmp_path, _spec(sample_prompts=["a", "b", "c", "d"]))

    yellow = _photo(tmp_path, "img02.jpg", prompt=1)
    assert _distance(_sample(tmp_path, 200, 1), yellow) < 12  # prompt 1: the second photo
    assert _distance(_sample(tmp_path, 200, 0), yellow) > 60  # prompt 0: the first


def test_samples_are_small_jpegs(tmp_path: Path) -> None:
    _run(tmp_path, _spec())

    paths = list((tmp_path / "output" / NAME / "samples").glob("*.jpg"))
    assert len(paths) == 8
    for path in paths:
        with Image.open(path) as image:
            assert (image.format, image.size) == ("JPEG", (SIZE, SIZE))
        assert path.stat().st_size < 80_000  # 384 px of fading noise


def test_each_sample_says_simulated_in_a_corner(tmp_path: Path) -> None:
    _run(tmp_path, _spec())

    corner = _sample(tmp_path, 200, 0).crop((0, SIZE - 20, 70, SIZE))
    pixels = [tuple(corner.getpixel((x, y))) for x in range(70) for y in range(20)]  # type: ignore[arg-type]
    dark = sum(1 for pixel in pixels if max(pixel) < 40)
    light = sum(1 for pixel in pixels if min(pixel) > 200)
    assert dark > 300 and light > 30  # white text on a black box


def test_a_run_started_again_resumes_from_its_newest_checkpoint(tmp_path: Path) -> None:
    spec = _spec()
    crashed = _run(tmp_path, spec, SIMULATED_TRAINER_FAIL="crash", SIMULATED_TRAINER_FAIL_AT_STEP="120")
    assert "simulated crash at step 120" in crashed
    assert _samples(tmp_path)[-1][0] == 100

    resumed = _run(tmp_path, spec)

    latest = tmp_path / "output" / NAME / f"{NAME}_000000100.safetensors"
    assert f"#### IMPORTANT RESUMING FROM {latest} ####" in resumed
    assert "Found step 100 in metadata, starting from there" in resumed
    assert "Loading optimizer state from" in resumed
    steps = _progress_steps(resumed)
    assert steps[0] == 100 and steps[-1] == 200  # the bar starts at the resumed step
    # No new sample at the start step, nor a baseline; the rest as in an uninterrupted run.
    assert [step for step, _ in _samples(tmp_path)] == [50, 50, 100, 100, 150, 150, 200, 200]
    final = tmp_path / "output" / NAME / f"{NAME}.safetensors"
    assert steps_from_metadata(safetensors_metadata(final)) == 200
    # The UI logger drops the rows after the start step and writes them again (logging_aitk.py:158-162).
    assert _loss_steps(tmp_path) == list(range(1, 200))


@pytest.mark.parametrize("other", [f"{NAME}_LoRA_000000150.safetensors", f"{NAME}_refiner.safetensors"])
def test_resume_ignores_names_ai_toolkit_filters_out(tmp_path: Path, other: str) -> None:
    spec = _spec()
    _run(tmp_path, spec, SIMULATED_TRAINER_FAIL="crash", SIMULATED_TRAINER_FAIL_AT_STEP="60")
    (tmp_path / "output" / NAME / other).write_bytes(b"not ours")

    resumed = _run(tmp_path, spec)

    assert "Found step 50 in metadata, starting from there" in resumed


# What the real trainer's LoRA of each tiny model is made of (runpod_worker/README.md, "The smoke"): the
# simulator writes the same modules at the real models' widths.
MODEL_LORAS = {
    "qwen-image": (
        ["alice_v1.safetensors"],
        "diffusion_model.transformer_blocks.",
        60 * 14 * 2,
        "qwen_image",
    ),
    "z-image": (["alice_v1.safetensors"], "diffusion_model.layers.", 30 * 8 * 2, "zimage"),
    "wan22": (
        ["alice_v1_high_noise.safetensors", "alice_v1_low_noise.safetensors"],
        "diffusion_model.blocks.",
        40 * 10 * 2,
        "wan_2.2_14b",
    ),
    "wan22-5b": (["alice_v1.safetensors"], "diffusion_model.blocks.", 30 * 10 * 2, "wan_2.2_5b"),
}


@pytest.mark.parametrize("base_model", sorted(MODEL_LORAS))
def test_each_base_model_gets_its_own_lora_files_tensors_and_version(base_model: str, tmp_path: Path) -> None:
    files, prefix, count, version = MODEL_LORAS[base_model]
    spec = JobInput.from_dict(
        job_input(base_model=base_model, params={"steps": 100, "rank": 4, "save_every": 100})
    )

    _run(tmp_path, spec, every_block=True)

    out = tmp_path / "output" / NAME
    assert sorted(path.name for path in out.glob(f"{NAME}*.safetensors") if "_0000" not in path.name) == files
    for name in files:
        header = _header(out / name)
        metadata = header.pop("__metadata__")
        assert len(header) == count
        assert all(
            key.startswith(prefix) and key.endswith(("lora_A.weight", "lora_B.weight")) for key in header
        )
        assert (metadata["ss_base_model_version"], steps_from_metadata(metadata)) == (version, 100)


def _header(path: Path) -> dict[str, Any]:
    data = path.read_bytes()
    length = int.from_bytes(data[:8], "little")
    return dict(json.loads(data[8 : 8 + length]))


def test_a_wan22_lora_has_the_real_models_shapes(tmp_path: Path) -> None:
    spec = JobInput.from_dict(
        job_input(base_model="wan22", params={"steps": 100, "rank": 4, "save_every": 100})
    )

    _run(tmp_path, spec, every_block=True)

    header = _header(tmp_path / "output" / NAME / f"{NAME}_low_noise.safetensors")
    assert header["diffusion_model.blocks.39.ffn.0.lora_B.weight"]["shape"] == [13824, 4]
    assert header["diffusion_model.blocks.0.self_attn.q.lora_A.weight"]["shape"] == [4, 5120]


def test_a_wan22_5b_lora_is_one_file_at_the_real_models_shapes(tmp_path: Path) -> None:
    spec = JobInput.from_dict(
        job_input(base_model="wan22-5b", params={"steps": 100, "rank": 4, "save_every": 100})
    )

    _run(tmp_path, spec, every_block=True)

    header = _header(tmp_path / "output" / NAME / f"{NAME}.safetensors")
    assert header["diffusion_model.blocks.29.ffn.0.lora_B.weight"]["shape"] == [14336, 4]
    assert header["diffusion_model.blocks.0.cross_attn.k.lora_A.weight"]["shape"] == [4, 3072]


def test_lora_blocks_keeps_the_first_blocks_of_each_kind_at_their_real_shapes(tmp_path: Path) -> None:
    spec = _spec(steps=100, save_every=100, sample_every=100, sample_prompts=[])
    _run(tmp_path / "every", spec, every_block=True)
    _run(tmp_path / "light", spec, SIMULATED_TRAINER_LORA_BLOCKS="2")

    every = _header(tmp_path / "every" / "output" / NAME / f"{NAME}.safetensors")
    light = _header(tmp_path / "light" / "output" / NAME / f"{NAME}.safetensors")
    metadata = light.pop("__metadata__")
    every.pop("__metadata__")
    # transformer.transformer_blocks.<n>.… and transformer.single_transformer_blocks.<n>.…
    first_two = {key: entry["shape"] for key, entry in every.items() if int(key.split(".")[2]) < 2}
    assert {key: entry["shape"] for key, entry in light.items()} == first_two
    assert {key.split(".")[1] for key in first_two} == {"transformer_blocks", "single_transformer_blocks"}
    assert len(first_two) == (14 + 6) * 2 * 2
    assert steps_from_metadata(metadata) == 100
