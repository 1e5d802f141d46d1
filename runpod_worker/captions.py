"""Captions for the images sent without one, made on the worker before training (`params.auto_caption`).

**The model**: Qwen/Qwen3-VL-2B-Instruct at a pinned revision (`weights.CAPTIONER_REVISION`), run by the
captioner AI Toolkit itself ships at the pinned commit: `extensions_built_in/captioner/Qwen3VLCaptioner.py`,
the "Qwen3-VL" captioner of its UI's caption jobs (ui/src/helpers/captionOptions.ts:96-121, which offers the
2B, 4B and 8B Instruct models). Why this one:

- AI Toolkit supports it natively: its own extension loads it with `transformers` (5.5.3 in the lock,
  `Qwen3VLForConditionalGeneration`), so no code or package is added to the image, and the worker runs it the
  way it runs training — `run.py` on a job config — with the same subprocess, output and cancellation.
- It takes an instruction, so it can be asked for what a character LoRA needs: the things that change from
  photo to photo (framing, pose, clothes, setting, light), not the face the trigger word should stand for.
  Florence-2 and BLIP, which `transformers` also runs natively, caption without instructions.
- The 2B model is about 4.3 GB in bf16 and writes a 128-token caption in a few seconds on the GPUs the
  worker runs on, well inside a 24 GB card, and its process ends (freeing the card) before training loads
  FLUX.1. The 8B model, the UI's default, is four times the download on every cold worker for captions a
  trigger-word LoRA hardly needs to be richer.

**How**: the images that have a caption get their `<stem>.txt` first. AI Toolkit's captioner skips every
image whose caption file is not empty (`recaption: false`, BaseCaptioner.py:181-197), so it captions exactly
the others, writing `<stem>.txt` beside each (:151-159). Each caption is read back, cleaned, and given
`[trigger], ` in front — how the studio writes a caption that names the character — and the dataset's caption
files are then written from those (dataset.write_captions fills in the trigger word). A caption the
captioner could not make (it prints the error and writes nothing, Qwen3VLCaptioner.py:177-180), or a failed
captioner run, leaves that image on the bare trigger word, as without auto-captions: training goes on, and
the output says why in `caption_error`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runpod_worker.contract import CaptionArtifact, GpuInfo, ImageSpec, JobInput, Progress
from runpod_worker.trainer import TrainerRun, run_trainer
from runpod_worker.weights import (
    CAPTIONER_REPO,
    CAPTIONER_REVISION,
    caption_model_folder,
    caption_model_source,
)

log = logging.getLogger(__name__)

TRIGGER = "[trigger]"
# Upstream's image caption prompt (captionOptions.ts:29) asks to "describe everything in the image". A
# character LoRA learns what its captions leave out into the trigger word, so this one describes what varies
# from photo to photo and leaves the person's own features to the trigger word.
CAPTION_PROMPT = (
    "Caption this photo for training an image generator on the person in it. In one or two sentences, "
    "describe the framing (close-up, half-body or full-body), the pose and expression, the clothing, the "
    'setting and the light. Call the person "a woman", "a man" or "a person"; do not describe their '
    'facial features and do not name them. Be decisive by stating things as they are: no "it appears '
    'that" or "possibly". No preamble.'
)
MAX_NEW_TOKENS = 128  # the UI's default for Qwen3-VL (captionOptions.ts:105)
MAX_RES = 512  # the captioner's default: images are scaled to at most 512x512 pixels (BaseCaptioner.py:41)
# The studio keeps captions of at most 1,000 characters, `[trigger], ` included.
MAX_CAPTION_CHARS = 900
IMAGE_EXTENSIONS = ["jpg", "jpeg", "png", "webp"]


@dataclass(frozen=True)
class CaptionRun:
    """What the captioning step made: the captions, the captioner's name, why some are missing, its time."""

    captions: list[CaptionArtifact] = field(default_factory=list)
    captioner: str | None = None
    error: str | None = None
    seconds: float = 0.0

    def made(self) -> dict[str, str]:
        return {caption.filename: caption.caption for caption in self.captions}


def has_caption(image: ImageSpec) -> bool:
    return bool((image.caption or "").strip())


def uncaptioned(images: list[ImageSpec]) -> list[ImageSpec]:
    return [image for image in images if not has_caption(image)]


def captioner_config(dataset_dir: Path, model: Path, *, gpu: GpuInfo, workspace: Path) -> dict[str, Any]:
    """The AI Toolkit job that captions `dataset_dir`, every key explicit (CaptionConfig,
    BaseCaptioner.py:22-56, reads each)."""
    on_gpu = gpu.memory_gb > 0
    return {
        "job": "extension",
        "config": {
            "name": "captions",
            "process": [
                {
                    "type": "Qwen3VLCaptioner",  # extensions_built_in/captioner/__init__.py:16-25
                    # A database that does not exist: not a caption job of the UI, which would read its stop
                    # flag and write its status there (BaseCaptioner.py:64-73).
                    "sqlite_db_path": str(workspace / "no-ui.db"),
                    "caption": {
                        "model_name_or_path": str(model),
                        "extensions": IMAGE_EXTENSIONS,
                        "path_to_caption": str(dataset_dir),
                        "recaption": False,
                        "caption_extension": "txt",
                        "caption_prompt": CAPTION_PROMPT,
                        "max_res": MAX_RES,
                        "max_new_tokens": MAX_NEW_TOKENS,
                        "thinking": False,
                        "device": "cuda" if on_gpu else "cpu",
                        "dtype": "bf16" if on_gpu else "float32",
                        # 4.3 GB in bf16: neither quantising nor offloading is needed on any card we use.
                        "quantize": False,
                        "low_vram": False,
                        "compile": False,
                        "batch_size": 1,
                    },
                }
            ],
        },
    }


def captioner_name(folder: Path) -> str:
    """`<Hub id>@<revision>`, unless the folder says it is a stand-in (a tiny random-weight model built by
    runpod_worker.tiny_models, or the simulator's)."""
    for marker in ("TINY_MODEL.json", "SIMULATED_CAPTIONER.json"):
        try:
            note = json.loads((folder / marker).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        return str(note.get("name") or f"tiny random-weight {note.get('tiny_model_of', 'model')}")
    return f"{CAPTIONER_REPO}@{CAPTIONER_REVISION}"


async def caption_missing(
    spec: JobInput,
    dataset_dir: Path,
    workspace: Path,
    gpu: GpuInfo,
    *,
    env: dict[str, str] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> CaptionRun:
    """Captions the images of `spec` sent without a caption, in `dataset_dir` (their files are there, the
    others' captions already written). Never raises for a captioner that fails: training goes on."""
    missing = uncaptioned(spec.images) if spec.params.auto_caption else []
    if not missing:
        return CaptionRun()
    started = time.monotonic()
    try:
        folder = await asyncio.to_thread(caption_model_folder, caption_model_source())
    except Exception as exc:  # the Hub unreachable, a disk full: the run trains on, without these captions
        log.warning("the captioner's weights could not be had: %r", exc)
        error = f"The captioner could not be loaded ({type(exc).__name__})"
        return _without(missing, f"{CAPTIONER_REPO}@{CAPTIONER_REVISION}", error, started)
    config_path = workspace / "captioner.json"
    config = captioner_config(dataset_dir, folder, gpu=gpu, workspace=workspace)
    config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    run = await run_trainer(
        config_path,
        name="captions",
        on_progress=_no_progress,
        env={**(env or {}), "HF_HUB_OFFLINE": "1"},  # the folder is local: never ask the Hub
        should_stop=should_stop,
    )
    return _read_back(missing, dataset_dir, captioner_name(folder), run, started)


async def _no_progress(_progress: Progress) -> bool:
    return True


def _read_back(
    missing: list[ImageSpec], dataset_dir: Path, name: str, run: TrainerRun, started: float
) -> CaptionRun:
    captions = []
    for image in missing:
        text = clean_caption(_read(dataset_dir / f"{image.filename.rsplit('.', 1)[0]}.txt"))
        if text:
            captions.append(CaptionArtifact(image.filename, image.sha256, f"{TRIGGER}, {text}"))
    error = None
    if run.stopped:
        error = "Captioning was stopped"
    elif run.returncode != 0:
        log.warning("the captioner failed (exit %s):\n%s", run.returncode, "\n".join(list(run.tail)[-20:]))
        error = f"The captioner failed ({_last_error(run) or f'exit code {run.returncode}'})"
    made = {caption.filename for caption in captions}
    left = [image.filename for image in missing if image.filename not in made]
    if left and error is None:
        error = "The captioner wrote no caption for some photos"
    if left:
        error = f"{error}: {', '.join(left)} trained on the trigger word alone."
    return CaptionRun(captions, name, error, round(time.monotonic() - started, 3))


def _without(missing: list[ImageSpec], name: str, error: str, started: float) -> CaptionRun:
    left = ", ".join(image.filename for image in missing)
    return CaptionRun([], name, f"{error}: {left} trained on the trigger word alone.",
                      round(time.monotonic() - started, 3))  # fmt: skip


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _last_error(run: TrainerRun) -> str:
    """run.py's `Error running job: …` line, or the traceback's last line (run.py:123-124 at 27a03a91)."""
    for line in reversed(run.tail):
        if line.startswith("Error running job:"):
            return line.removeprefix("Error running job:").strip()[:300]
    return ""


def clean_caption(text: str) -> str:
    """One line, no wrapping quotes, a lower-case start unless it is an acronym, at most
    MAX_CAPTION_CHARS (cut at a word), and no `[trigger]`: the worker places that itself."""
    text = " ".join(text.replace(TRIGGER, " ").split()).strip().strip("\"'“”").strip()
    if len(text) > MAX_CAPTION_CHARS:
        text = text[:MAX_CAPTION_CHARS].rsplit(" ", 1)[0].rstrip(",;:")
    if len(text) > 1 and text[0].isupper() and not text[1].isupper():
        text = text[0].lower() + text[1:]
    return re.sub(r"\s+([,.;:])", r"\1", text)
