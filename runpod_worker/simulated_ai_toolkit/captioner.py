"""A stand-in for AI Toolkit's `Qwen3VLCaptioner` job (extensions_built_in/captioner/ at 27a03a91): same
config, same choice of files, same caption files and output; no model.

As upstream: the config's `caption` section needs `model_name_or_path`, `extensions` and `path_to_caption`
(BaseCaptioner.py:22-35, a ValueError otherwise); the files are found as `find_files` finds them (:167-200):
walking `path_to_caption`, skipping hidden folders and `_controls`, hidden files and other extensions
(matched case-insensitively), sorted, and without `recaption` leaving out every file whose caption file is
not empty; each caption is written to `<stem>.<caption_extension>` (:151-159); an image that cannot be read
is reported ("Error processing …") and gets no caption file, and the loop goes on (Qwen3VLCaptioner.py:
177-180, BaseCaptioner.py:120-137).

Its captions are made from each photo's own pixels — its shape, its main colour and its light — so two
photos get different captions and the same photo always the same one, and each says it is simulated:
"simulated caption: a portrait-format photo in warm red tones and bright light".

Switches: SIMULATED_CAPTIONER_FAIL=crash (the model cannot be loaded: the job fails as run.py fails it) or
=first (the first image's caption fails, as a generate error would).
"""

from __future__ import annotations

import colorsys
import os
import sys
import time
from pathlib import Path
from typing import Any

from job_banner import print_job_banner
from PIL import Image, ImageStat

PROCESS_TYPE = "Qwen3VLCaptioner"
BANNER = "*" * 52


def run(config: dict[str, Any]) -> None:
    process = config["config"]["process"][0]
    print_job_banner(config)
    caption = _settings(process.get("caption") or {})
    print("Loading Qwen3VL model")
    if os.environ.get("SIMULATED_CAPTIONER_FAIL") == "crash":
        raise OSError(f"simulated: the captioner could not be loaded from {caption['model_name_or_path']}")
    files = find_files(caption)
    _caption_all(files, caption)
    print(f"\n{BANNER}\nCaptioning complete\n{BANNER}")


def _settings(caption: dict[str, Any]) -> dict[str, Any]:
    for key in ("model_name_or_path", "path_to_caption"):
        if caption.get(key) is None:
            raise ValueError(f"{key} is required in config")
    if not caption.get("extensions"):
        raise ValueError("At least one extension is required in config")
    return {"caption_extension": "txt", "recaption": False, **caption}


def find_files(caption: dict[str, Any]) -> list[Path]:
    extensions = [f".{ext.lower()}" for ext in caption["extensions"]]
    found = []
    for root, dirs, files in os.walk(caption["path_to_caption"]):
        dirs[:] = [d for d in dirs if d != "_controls" and not d.startswith(".")]
        found += [Path(root) / f for f in files if f.lower().endswith(tuple(extensions)) and f[0] != "."]
    found.sort()
    if caption["recaption"]:
        print(f"Found {len(found)} files to caption")
        return found
    todo = [path for path in found if not _caption_of(path, caption).strip()]
    print(f"Found {len(found)} files. {len(todo)} need captioning.")
    return todo


def _caption_of(path: Path, caption: dict[str, Any]) -> str:
    try:
        return path.with_suffix(f".{caption['caption_extension']}").read_text(encoding="utf-8")
    except OSError:
        return ""


def _caption_all(files: list[Path], caption: dict[str, Any]) -> None:
    started = time.monotonic()
    for done, path in enumerate(files, start=1):
        text = None
        try:
            if done == 1 and os.environ.get("SIMULATED_CAPTIONER_FAIL") == "first":
                raise RuntimeError("simulated generate failure")
            text = describe(path)
        except Exception as exc:  # what Qwen3VLCaptioner.get_caption_for_file catches, too
            print(f"Error processing {path}: {exc}")
        if text is not None:
            path.with_suffix(f".{caption['caption_extension']}").write_text(text, encoding="utf-8")
        elapsed = time.monotonic() - started
        sys.stderr.write(f"\rCaptioning files: {100 * done // len(files):3d}%| {done}/{len(files)} "
                         f"[{elapsed:.0f}s, {elapsed / done:.2f}s/file]")  # fmt: skip
    sys.stderr.write("\n")
    sys.stderr.flush()


def describe(path: Path) -> str:
    with Image.open(path) as opened:
        image = opened.convert("RGB")
    width, height = image.size
    shape = "portrait-format" if height > 1.1 * width else "landscape" if width > 1.1 * height else "square"
    red, green, blue = ImageStat.Stat(image.resize((32, 32))).mean
    hue, lightness, saturation = colorsys.rgb_to_hls(red / 255, green / 255, blue / 255)
    light = "dim" if lightness < 0.3 else "soft" if lightness < 0.6 else "bright"
    return f"simulated caption: a {shape} photo in {_tone(hue, saturation)} tones and {light} light"


def _tone(hue: float, saturation: float) -> str:
    if saturation < 0.12:
        return "neutral grey"
    names = ((0.05, "warm red"), (0.11, "orange"), (0.18, "yellow"), (0.45, "green"), (0.55, "cyan"),
             (0.72, "blue"), (0.85, "purple"), (0.95, "pink"), (1.01, "warm red"))  # fmt: skip
    return next(name for bound, name in names if hue < bound)
