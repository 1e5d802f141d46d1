"""Settings a test's Celery worker takes at run time (`--include`), so tests that differ only in them share
one worker: before each task, the JSON object in the file `STUDIO_TEST_SETTINGS_FILE` names settings and
values (as the environment would give them) that replace the worker's own; a name gone from the file gets
its value back. Only settings the code reads when it runs (not at start-up, as the beat's schedule) belong
here: tests/integration/conftest.py lists them (`RUNTIME_SETTINGS`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from celery.signals import task_prerun
from django.conf import settings

FILE = Path(os.environ.get("STUDIO_TEST_SETTINGS_FILE", "/nonexistent/settings.json"))
_original: dict[str, Any] = {}
_applied: tuple[int, int] | None = None


def _coerce(original: Any, value: Any) -> Any:
    if isinstance(original, bool):
        return str(value).lower() in {"1", "true", "yes"}
    return type(original)(value)


@task_prerun.connect
def apply_settings(**_: Any) -> None:
    global _applied
    try:
        stat = FILE.stat()
        version: tuple[int, int] | None = (stat.st_ino, stat.st_mtime_ns)
    except FileNotFoundError:
        version = None
    if version == _applied:
        return
    overrides: dict[str, Any] = json.loads(FILE.read_text()) if version else {}
    for name, value in _original.items():
        if name not in overrides:
            setattr(settings, name, value)
    for name, value in overrides.items():
        _original.setdefault(name, getattr(settings, name))
        setattr(settings, name, _coerce(_original[name], value))
    _applied = version
