"""The simulated trainer's sample images: the character's own reference photos emerging from noise.

Nothing is generated. Each prompt takes one photo of the dataset the run trains on (prompt i the i-th, in
file-name order, round the list again when prompts outnumber photos) in a framing of its own, and each
sample is that photo seen through noise that fades as the steps grow: pure noise at step 0, the photo
itself at the last step. The noise is drawn from the sample seed and the prompt, as AI Toolkit seeds each
sample (`walk_seed: false`, BaseSDTrainProcess.py:290-302), so a gallery column is one fixed field of noise
giving way to the face rather than a new flicker at each step. "simulated" is written in the bottom-left
corner and the step in the top-left. 256 px JPEGs made with Pillow and numpy only: a sample costs tens of
milliseconds, since the simulator runs in every live test.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps

SIZE = 256
# Prompt i's framing: the whole photo, a three-quarter crop, a head-and-shoulders crop (upper middle) and
# a mirrored crop — the studio's default prompts are a portrait, a three-quarter view, a full-body shot
# and another setting.
ZOOMS = (1.0, 0.7, 0.5, 0.85)


def sample_image(sources: list[Path], step: int, total: int, index: int, seed: int) -> bytes:
    """The JPEG bytes of prompt `index`'s sample at `step` of `total`."""
    progress = min(1.0, max(0.0, step / total)) if total else 1.0
    photo = framed(sources[index % len(sources)], index % len(ZOOMS))
    # Structure shows early and the last steps only sharpen: the share of the photo rises quickly, then
    # slows, and the blur clears with it.
    share = 1.0 - (1.0 - progress) ** 2
    photo = photo.filter(ImageFilter.GaussianBlur(radius=6.0 * (1.0 - progress)))
    image = Image.blend(noise(seed, index), photo, share)
    label(image, step)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


@functools.lru_cache(maxsize=32)  # a run samples each (photo, framing) again at every sample step
def framed(source: Path, index: int) -> Image.Image:
    with Image.open(source) as opened:
        image = ImageOps.exif_transpose(opened).convert("RGB")
    width, height = image.size
    zoom = ZOOMS[index % len(ZOOMS)]
    crop_w, crop_h = max(1, int(width * zoom)), max(1, int(height * zoom))
    left = (width - crop_w) // 2
    top = (height - crop_h) // 3 if index % len(ZOOMS) == 2 else (height - crop_h) // 2
    image = ImageOps.fit(image.crop((left, top, left + crop_w, top + crop_h)), (SIZE, SIZE))
    return ImageOps.mirror(image) if index % len(ZOOMS) == 3 else image


def noise(seed: int, index: int) -> Image.Image:
    # Drawn at a quarter of the size and scaled up, as a latent's noise looks once decoded: coarse grain,
    # which also keeps the JPEG small.
    rng = np.random.default_rng([seed, index])
    grain = Image.fromarray(rng.integers(0, 256, (SIZE // 4, SIZE // 4, 3), dtype=np.uint8), "RGB")
    return grain.resize((SIZE, SIZE), Image.Resampling.BICUBIC)


def label(image: Image.Image, step: int) -> None:
    draw = ImageDraw.Draw(image)
    for text, xy in (("simulated", (4, SIZE - 16)), (f"step {step}", (4, 4))):
        box = draw.textbbox(xy, text)
        draw.rectangle((box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2), fill=(0, 0, 0))
        draw.text(xy, text, fill=(255, 255, 255))
