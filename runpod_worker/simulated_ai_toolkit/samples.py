"""The simulated trainer's sample images: the character's own reference photos emerging from noise.

Nothing is generated. Each prompt takes one photo of the dataset the run trains on (prompt i the i-th, in
file-name order, round the list again when prompts outnumber photos) in a framing of its own, and each
sample is that photo seen through noise that fades as the steps grow: pure noise at step 0, the framed
photo itself at the last step. For a person that draws the likeness curve a real run draws: no face in
the noise, then a face that looks more and more like the character, and in the last steps a near copy of
a training photo, which the studio's likeness check flags (the memorising WithAnyone, arXiv 2510.14975,
measures in late checkpoints). The noise is drawn from the sample seed and the prompt, as AI Toolkit seeds
each sample (`walk_seed: false`, BaseSDTrainProcess.py:290-302), so a gallery column is one fixed field of
noise giving way to the face rather than a new flicker at each step. "simulated" is written in the bottom-left
corner and the step in the top-left. 384 px JPEGs made with Pillow and numpy only: a sample costs tens of
milliseconds, since the simulator runs in every live test.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps

# Large enough for the studio's face detector to find a head-and-shoulders face (dlib's HOG needs about
# 80 px), so a person's samples can be scored for likeness as real ones are (docs/IDENTITY.md).
SIZE = 384
# Prompt i's framing: a square of the photo's shorter side times the zoom, centred across and a little
# above the middle (a portrait's face is in its upper part): a close portrait, a head-and-shoulders, a
# wider view and a mirrored one. Never the whole photo: a sample is a new picture of the person, so only
# the last steps, where it turns into the photo itself, read as a near copy of a training photo.
ZOOMS = (0.55, 0.75, 0.9, 0.75)
ABOVE_MIDDLE = 0.15  # the crop's top, as a share of the height left over


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
    side = max(1, int(min(width, height) * ZOOMS[index % len(ZOOMS)]))
    left, top = (width - side) // 2, int((height - side) * ABOVE_MIDDLE)
    image = image.crop((left, top, left + side, top + side)).resize((SIZE, SIZE), Image.Resampling.LANCZOS)
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
