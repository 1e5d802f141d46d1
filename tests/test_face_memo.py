"""The run's face memo (tests/support/face_memo.py): one process's answer serves every other, and the tests'
Celery workers load it whatever else a test includes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from characters.faces import engine
from tests.support.celery_worker import _with_includes
from tests.support.face_memo import remembered_engine


def test_an_answer_one_process_computed_serves_another_through_the_shared_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    def detect_faces(pixels: np.ndarray, *, upsample: int = 0) -> list[tuple[int, int]]:
        calls.append(upsample)
        return [(int(pixels.sum()), upsample)]

    monkeypatch.setattr(engine, "detect_faces", detect_faces)
    first, second = remembered_engine(str(tmp_path)), remembered_engine(str(tmp_path))
    pixels = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)

    assert first["detect_faces"](pixels, upsample=1) == [(66, 1)]
    assert second["detect_faces"](pixels.copy(), upsample=1) == [(66, 1)]
    assert second["detect_faces"](pixels, upsample=2) == [(66, 2)]
    assert calls == [1, 2]


def test_the_workers_face_memo_comes_with_every_include_a_test_asks_for() -> None:
    assert _with_includes(["--include=tests.integration.celery_faults", "--autoscale=2"]) == [
        "--include=tests.support.face_memo_in_worker,tests.integration.celery_faults",
        "--autoscale=2",
    ]
    assert _with_includes([]) == ["--include=tests.support.face_memo_in_worker"]
