"""What every tiny model folder carries."""

from __future__ import annotations

import json
from pathlib import Path


def mark(dest: Path, real_model: str, seed: int) -> None:
    # Says what this folder is, so nobody mistakes it for real weights.
    note = {"tiny_model_of": real_model, "random_weights": True, "seed": seed}
    (dest / "TINY_MODEL.json").write_text(json.dumps(note, indent=2) + "\n", encoding="utf-8")
