"""Canned payloads from `fixtures/`, by name: RunPod's, and the AI Toolkit UI's (`fixtures/aitoolkit/`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures"


def runpod_payload(name: str, **overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    payload.update(overrides)
    return payload


def aitoolkit_payload(name: str) -> Any:
    """An answer recorded from AI Toolkit's real web UI (see `fixtures/aitoolkit/PROVENANCE.md`)."""
    return json.loads((FIXTURES / "aitoolkit" / f"{name}.json").read_text())
