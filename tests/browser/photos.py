"""Distinct face-like JPEGs for the browser tests, drawn on the spot (no network, no files kept)."""

from __future__ import annotations

import io
import random
from pathlib import Path

from PIL import Image, ImageDraw


def photo_bytes(index: int, size: tuple[int, int] = (640, 768)) -> bytes:
    """A face-like figure on a coloured background, different for each index."""
    rng = random.Random(index)
    width, height = size
    image = Image.new("RGB", size, tuple(rng.randrange(60, 220) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    x, y = width // 3 + rng.randrange(-60, 60), height // 4 + rng.randrange(-40, 40)
    draw.ellipse((x, y, x + 240, y + 300), fill=(224, 172, 140))
    draw.rectangle((x - 40, y + 300, x + 280, height), fill=tuple(rng.randrange(0, 255) for _ in range(3)))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def photos(folder: Path, count: int = 10) -> list[str]:
    """`count` distinct 640 x 768 JPEGs written to `folder`; returns their paths in order."""
    folder.mkdir()
    paths = []
    for index in range(count):
        path = folder / f"anna-{index:02d}.jpg"
        path.write_bytes(photo_bytes(index))
        paths.append(str(path))
    return paths
