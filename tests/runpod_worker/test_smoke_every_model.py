"""The image's build-time smoke covers every base model the worker accepts: `runpod_worker/image/smoke.sh`
runs `python -m runpod_worker.smoke --base-model all`, which smokes each of `BaseModel.SUPPORTED` in turn on
its own tiny model and fails the build at the first that does not train (the smoke itself needs the real AI
Toolkit; its figures per model are in runpod_worker/README.md)."""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path
from typing import Any

from runpod_worker import smoke
from runpod_worker.contract import BaseModel
from runpod_worker.tiny_models import BUILDERS, CAPTIONER

SMOKE_SH = Path(smoke.__file__).parent / "image" / "smoke.sh"


def test_every_base_model_the_worker_accepts_has_a_tiny_model_and_a_smoke() -> None:
    assert set(BUILDERS) - {CAPTIONER} == set(smoke.MODEL_ENV) == set(BaseModel.SUPPORTED)


def _recorder(fail: str | None = None) -> tuple[list[tuple[str, Path, Path, Path | None]], Any]:
    calls: list[tuple[str, Path, Path, Path | None]] = []

    def one(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
        calls.append((args.base_model, args.model, workdir, args.save_lora))
        if args.base_model == fail:
            raise smoke.SmokeFailed("the job ended FAILED")
        return {"steps": args.steps, "train_s": 1.0, "job_s": 2.0, "tensors": 4}

    return calls, one


def test_all_smokes_each_model_on_its_own_tiny_model_in_its_own_folder(tmp_path: Path) -> None:
    args = smoke.parse_args(["--base-model", "all", "--save-lora", str(tmp_path / "loras")])
    calls, one = _recorder()

    passed, failed = smoke.smoke_every_model(args, tmp_path, one)

    assert failed is None and list(passed) == list(BaseModel.SUPPORTED)
    assert calls == [
        (model, tmp_path / "models" / model, tmp_path / model, tmp_path / "loras" / model)
        for model in BaseModel.SUPPORTED
    ]


def test_all_stops_at_the_first_model_that_fails_and_names_it(tmp_path: Path) -> None:
    calls, one = _recorder(fail=BaseModel.QWEN_IMAGE)

    passed, failed = smoke.smoke_every_model(smoke.parse_args(["--base-model", "all"]), tmp_path, one)

    order = list(BaseModel.SUPPORTED)
    assert list(passed) == order[: order.index(BaseModel.QWEN_IMAGE)]
    assert failed == "qwen-image: the job ended FAILED"
    assert [call[0] for call in calls] == order[: order.index(BaseModel.QWEN_IMAGE) + 1]
    assert smoke._report_every_model(passed, failed) == 1


def _smoke_sh(tmp_path: Path, *options: str) -> str:
    """The command line smoke.sh runs, through a `python` that prints its arguments."""
    python = tmp_path / "python"
    python.write_text('#!/bin/sh\necho "$@"\n')
    python.chmod(0o755)
    toolkit = tmp_path / "ai-toolkit"
    toolkit.mkdir(exist_ok=True)
    done = subprocess.run(
        [str(SMOKE_SH), str(python), str(toolkit), *options], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_images_smoke_runs_every_base_model_unless_told_one(tmp_path: Path) -> None:
    assert "--base-model all --steps 100" in _smoke_sh(tmp_path, "--steps", "100")
    one = _smoke_sh(tmp_path, "--base-model", "z-image")
    assert "--base-model z-image" in one and "all" not in one
