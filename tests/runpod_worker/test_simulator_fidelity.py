"""The simulated trainer beside a real AI Toolkit run of the same config (fixtures/ai_toolkit/
trains_with_checkpoints_and_samples: 5 steps, checkpoints and samples every 2, captured from run.py at the
pinned commit): the worker's parser reads the same progress from both, and they write the same files."""

from __future__ import annotations

import io
import json
import re
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from runpod_worker.config import build_config
from runpod_worker.contract import JobInput
from runpod_worker.trainer import SIMULATOR_DIR, ProgressParser, split_lines

FIXTURES = Path(__file__).parent / "fixtures" / "ai_toolkit"
REAL = "trains_with_checkpoints_and_samples"
NAME = "fixture_lora"
# Lines that say what the trainer did (progress bars aside), as the worker's log tail keeps them.
EVENT = re.compile(
    r"^(Saving at step|Saved checkpoint to|Saved optimizer to|Removing old save|Generating Images)"
)


def real_output() -> str:
    return (FIXTURES / f"{REAL}.txt").open(encoding="utf-8", newline="").read()


def real_record() -> dict[str, Any]:
    return dict(json.loads((FIXTURES / "fixtures.json").read_text())[REAL])


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """The simulator run on the config the real run had; returns its output and workspace."""
    work = tmp_path_factory.mktemp("simulated")
    (work / "dataset").mkdir()
    for index in range(3):
        buffer = io.BytesIO()
        Image.effect_noise((128, 128), 30 + index).convert("RGB").save(buffer, "JPEG")
        (work / "dataset" / f"img{index}.jpg").write_bytes(buffer.getvalue())
    spec = JobInput.from_dict(
        {
            "contract_version": 1,
            "run_id": "3f2b8a9c-1d4e-4f6a-9b7c-2e5d8f0a1b3c",
            "trigger_word": "ohwx",
            "params": {
                "steps": 100,
                "rank": 4,
                "resolutions": [512],
                "seed": 42,
                "save_every": 50,
                "sample_every": 50,
                "sample_prompts": ["[trigger] smiling"],
            },
            "images": [{"url": "https://storage.example/img.jpg", "sha256": "a" * 64, "filename": "img.jpg"}],
            "output": {"lora_name": NAME, "lora_upload_url": "https://storage.example/lora"},
        }
    )
    config = build_config(
        spec, preset="80gb", dataset_dir=work / "dataset", training_folder=work / "output", model_path="tiny"
    )
    process = config["config"]["process"][0]
    process["train"]["steps"] = 5
    process["save"]["save_every"] = 2
    process["sample"]["sample_every"] = 2
    # The captured run's config predates the UI logger being on (loss_log.db is checked in
    # test_simulated_trainer.py), so it is off here as it was there.
    process["logging"]["use_ui_logger"] = False
    (work / "config.json").write_text(json.dumps(config), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-u", "run.py", str(work / "config.json")],
        cwd=SIMULATOR_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={"PATH": "/usr/bin:/bin", "SIMULATED_TRAINER_SECONDS_PER_STEP": "0"},
        timeout=60,
        check=True,
    )
    return result.stdout.decode().replace(str(work), "<workspace>"), work


def progress_steps(output: str) -> list[int]:
    """The steps the worker's parser reads, each once (tqdm redraws a step more or less often)."""
    lines, rest = split_lines(output)
    parser, steps = ProgressParser(NAME), []
    for line in [*lines, rest]:
        progress = parser.parse(line)
        if progress is not None and (not steps or steps[-1] != progress.step):
            steps.append(progress.step)
    return steps


def events(output: str) -> list[str]:
    lines, rest = split_lines(output)
    found = [line.strip() for line in [*lines, rest] if EVENT.match(line.strip())]
    return [re.sub(r"^(Generating Images:\s+\d+%).*", r"\1", line) for line in found]


def without_timestamps(files: list[str]) -> list[str]:
    return sorted(re.sub(r"\d{13}__", "<ms>__", name) for name in files)


def test_the_parser_reads_the_same_steps_from_the_simulator_as_from_ai_toolkit(
    simulated: tuple[str, Path],
) -> None:
    assert progress_steps(real_output()) == [0, 1, 2, 3, 4, 5]
    assert progress_steps(simulated[0]) == progress_steps(real_output())


def test_checkpoints_and_samples_come_at_the_same_steps_in_the_same_order(
    simulated: tuple[str, Path],
) -> None:
    assert events(simulated[0]) == events(real_output())
    assert "Saving at step 2" in events(real_output())


def test_the_simulator_writes_the_files_ai_toolkit_writes(simulated: tuple[str, Path]) -> None:
    output = simulated[1] / "output"
    files = [str(p.relative_to(output)) for p in output.rglob("*") if p.is_file()]

    assert without_timestamps(files) == without_timestamps(real_record()["output_files"])


def test_the_simulated_lora_carries_the_metadata_keys_of_a_real_one(simulated: tuple[str, Path]) -> None:
    path = simulated[1] / "output" / NAME / f"{NAME}.safetensors"
    with path.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        metadata = json.loads(handle.read(length))["__metadata__"]
    real = real_record()["lora_metadata"]

    assert set(metadata) - {"simulated"} == set(real)
    for key in (
        "training_info",
        "ss_base_model_version",
        "ss_output_name",
        "ss_tag_frequency",
        "name",
        "format",
    ):
        assert metadata[key] == real[key], key
    assert json.loads(metadata["software"])["name"] == json.loads(real["software"])["name"]
