"""Runs AI Toolkit's run.py as a subprocess, parses its progress and finds the final LoRA exactly."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import re
import signal
import struct
import sys
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from runpod_worker.contract import ErrorCode, Progress, Stage
from runpod_worker.errors import JobFailed

SIMULATOR_DIR = Path(__file__).resolve().parent / "simulated_ai_toolkit"
TAIL_LINES = 200
KILL_GRACE_S = 10.0

# ------------------------------------------------------------------------------- progress parsing


def _bar_pattern(name: str) -> re.Pattern[str]:
    # Anchored on the job name: other tqdm bars (downloads, latent caching, per-image denoise) share
    # the stream. The bar glyphs themselves vary with the encoding, so they are skipped, not matched.
    return re.compile(
        rf"^{re.escape(name)}:\s+(\d+)%\|.*?\|\s*(\d+)/(\d+)\s*\[([^<\]]*)<([^,\]]*),\s*"
        r"([\d.?]+)(it/s|s/it)(?:,\s*lr:\s*([-\d.e+]+))?(?:\s+loss:\s*([-\d.e+naif]+))?"
    )


def _clock_seconds(text: str) -> float | None:
    parts = text.strip().split(":")
    if not text.strip() or "?" in text or not all(p.isdigit() for p in parts):
        return None
    seconds = 0.0
    for part in parts:
        seconds = seconds * 60 + int(part)
    return seconds


class ProgressParser:
    """Turns trainer output lines (already split on `\\r` and `\\n`) into training progress."""

    def __init__(self, name: str) -> None:
        self._pattern = _bar_pattern(name)

    def parse(self, line: str) -> Progress | None:
        match = self._pattern.match(line.strip())
        if match is None:
            return None
        step, total = int(match.group(2)), int(match.group(3))
        return Progress(
            stage=Stage.TRAINING,
            step=step,
            total_steps=total,
            loss=_loss(match.group(9)),
            eta_s=_eta(match.group(5), match.group(6), match.group(7), total - step),
        )


def _loss(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value == value and abs(value) != float("inf") else None  # nan/inf are not JSON


def _eta(remaining: str, rate: str, unit: str, steps_left: int) -> float | None:
    seconds = _clock_seconds(remaining)
    if seconds is not None:
        return seconds
    try:
        value = float(rate)
    except ValueError:
        return None
    if value <= 0:
        return None
    return steps_left * value if unit == "s/it" else steps_left / value


def split_lines(buffer: str) -> tuple[list[str], str]:
    """Complete lines from `buffer` and the unfinished rest; tqdm redraws end in `\\r`, not `\\n`."""
    pieces = re.split(r"\r\n|\r|\n", buffer)
    return [p for p in pieces[:-1] if p.strip()], pieces[-1]


# ------------------------------------------------------------------------------- artifacts


def final_artifact(training_folder: Path, name: str, suffix: str = "") -> Path:
    """`<training_folder>/<name>/<name><suffix>.safetensors`, and only that: checkpoints carry a step
    suffix. A model with two experts writes `_high_noise` and `_low_noise` files instead of one
    (extensions_built_in/diffusion_models/wan22/wan22_14b_model.py:452-493)."""
    path = training_folder / name / f"{name}{suffix}.safetensors"
    if not path.is_file() or path.stat().st_size == 0:
        raise JobFailed(
            ErrorCode.TRAINER_FAILED,
            f"Training ended without writing {path.name}. Retry the run; if it fails again, "
            "the trainer log below says why.",
        )
    return path


def final_artifacts(training_folder: Path, name: str, split: bool) -> list[Path]:
    """The LoRA files a finished run wrote: one, or the high- and the low-noise expert's (in that order)."""
    if not split:
        return [final_artifact(training_folder, name)]
    return [final_artifact(training_folder, name, f"_{part}") for part in ("high_noise", "low_noise")]


def safetensors_metadata(path: Path) -> dict[str, str]:
    """The `__metadata__` of a safetensors file; raises JobFailed if the header is not valid."""
    with open(path, "rb") as handle:
        raw = handle.read(8)
        if len(raw) != 8:
            raise JobFailed(ErrorCode.TRAINER_FAILED, f"{path.name} is truncated; retry the run.")
        (length,) = struct.unpack("<Q", raw)
        if length > 100 * 1024 * 1024:
            raise JobFailed(ErrorCode.TRAINER_FAILED, f"{path.name} has an invalid header; retry the run.")
        try:
            header = json.loads(handle.read(length))
        except ValueError as exc:
            raise JobFailed(
                ErrorCode.TRAINER_FAILED, f"{path.name} has an invalid header; retry the run."
            ) from exc
    metadata = header.get("__metadata__") or {}
    return {str(k): str(v) for k, v in metadata.items()}


def steps_from_metadata(metadata: dict[str, str]) -> int | None:
    try:
        return int(json.loads(metadata["training_info"])["step"])
    except (KeyError, ValueError, TypeError):
        return None


def trainer_version(toolkit_dir: Path) -> str:
    try:
        text = (toolkit_dir / "version.py").read_text(encoding="utf-8")
    except OSError:
        return "unknown"
    match = re.search(r"VERSION\s*=\s*['\"]([^'\"]+)['\"]", text)
    return match.group(1) if match else "unknown"


# ------------------------------------------------------------------------------- the subprocess


@dataclass
class TrainerRun:
    returncode: int | None = None
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))
    last_progress: Progress | None = None
    stopped: bool = False


def toolkit_dir() -> Path:
    return Path(os.environ.get("AI_TOOLKIT_DIR") or "/app/ai-toolkit").resolve()


def is_simulator(path: Path) -> bool:
    return path.resolve() == SIMULATOR_DIR or (path / "SIMULATED_AI_TOOLKIT").exists()


def _die_with_parent() -> None:
    # If the handler process dies (OOM killer, platform kill), the trainer must not train on alone.
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


async def run_trainer(
    config_path: Path,
    *,
    name: str,
    on_progress: Callable[[Progress], Awaitable[bool]],
    env: dict[str, str] | None = None,
    on_line: Callable[[str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainerRun:
    """Runs run.py to the end; `on_progress` returning False stops the trainer (the run was cancelled);
    `on_line` sees every other line of output as it comes (the trainer's "Saved checkpoint to ..."), and
    `should_stop` is asked after each line, for a job whose output has no training progress (captioning)."""
    directory = toolkit_dir()
    python = os.environ.get("AI_TOOLKIT_PYTHON") or sys.executable
    process = await asyncio.create_subprocess_exec(
        python,
        "-u",
        "run.py",
        str(config_path),
        cwd=directory,  # run.py resolves relative paths and its own imports from the repo root
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        start_new_session=True,  # its own process group, so stopping it also stops its dataloader workers
        preexec_fn=_die_with_parent,
    )
    run = TrainerRun()
    try:
        await _pump(process, run, ProgressParser(name), on_progress, on_line, should_stop)
        run.returncode = await process.wait()
    except asyncio.CancelledError:
        await _terminate(process)
        raise
    return run


async def _pump(
    process: asyncio.subprocess.Process,
    run: TrainerRun,
    parser: ProgressParser,
    on_progress: Callable[[Progress], Awaitable[bool]],
    on_line: Callable[[str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> None:
    assert process.stdout is not None
    buffer = ""
    while True:
        chunk = await process.stdout.read(8192)
        if not chunk:
            break
        lines, buffer = split_lines(buffer + chunk.decode("utf-8", errors="replace"))
        for line in lines:
            stop = await _handle_line(line, run, parser, on_progress, on_line)
            if stop or (should_stop is not None and should_stop()):
                run.stopped = True
                await _terminate(process)
                return
    if buffer.strip():
        run.tail.append(buffer)


async def _handle_line(
    line: str,
    run: TrainerRun,
    parser: ProgressParser,
    on_progress: Callable[[Progress], Awaitable[bool]],
    on_line: Callable[[str], None] | None = None,
) -> bool:
    progress = parser.parse(line)
    if progress is None:
        run.tail.append(line)
        if on_line is not None:
            on_line(line)
        return False
    # Keep only the newest redraw of the bar in the tail: hundreds of redraws would hide the error.
    if run.tail and parser.parse(run.tail[-1]) is not None:
        run.tail.pop()
    run.tail.append(line)
    run.last_progress = progress
    return not await on_progress(progress)


async def _terminate(process: asyncio.subprocess.Process) -> None:
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(asyncio.shield(process.wait()), timeout=KILL_GRACE_S)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
