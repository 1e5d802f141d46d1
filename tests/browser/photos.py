"""Distinct face-like JPEGs for the browser tests, drawn on the spot (no network, no files kept)."""

from __future__ import annotations

import io
from functools import cache
from pathlib import Path

from PIL import ImageOps

from tests.browser.drawn_character import draw_sample


@cache  # drawn once per test process: the same index and size always give the same bytes
def photo_bytes(index: int, size: tuple[int, int] = (640, 768)) -> bytes:
    """The drawn character (tests/browser/drawn_character.py), a different picture for each index, fitted to
    `size`: a face the face check finds in most of them, so the studio trains it as a person."""
    image = ImageOps.fit(draw_sample(index + 1), size)
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
