"""The face engine's answers remembered for the test run: the same pixels give the same faces, so each
distinct photo is detected and embedded once per run instead of once per test.

The suite builds its photos deterministically (`tests/characters/images.py`, the demo's portraits), and
many tests upload the same dozen: the layout tests alone analysed twelve photos each, and dlib's detector
and embedding took about 100 s of the suite's CPU (the five face modules: 105 s of CPU before, 62 s
after a memo per process). The first call for given pixels runs dlib as ever; a later call with equal
pixels (and face) gets that result back, as dlib would compute it again. Only the engine's four pure
functions are remembered (`characters/faces/engine.py`); everything around them (the measures, the flags,
the dataset report, the likeness) runs for every test. Tests of the engine's own behaviour
(`tests/characters/test_faces.py`) get the same answers either way.

The answers are kept in memory and in a folder the run's processes share (`STUDIO_TEST_FACE_MEMO_DIR`):
the test processes, and the Celery workers of the live stacks, which analyse the same photos for every
run they train and load this module with `--include=tests.support.face_memo_in_worker`.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import os
import pickle
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from characters.faces import engine

REMEMBERED = ("detect_faces", "detect_small_faces", "embed_face", "face_chip")
FOLDER_VARIABLE = "STUDIO_TEST_FACE_MEMO_DIR"


def _pixels_key(pixels: np.ndarray) -> tuple[Any, ...]:
    return (pixels.shape, str(pixels.dtype), hashlib.blake2b(np.ascontiguousarray(pixels).data).digest())


def _argument_key(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return _pixels_key(value)
    if isinstance(value, engine.Detection):
        return (value.box, value.score, value.landmarks)
    return value


class _SharedAnswers:
    """Answers on disk, one file per call, written whole then renamed: a process that reads one while
    another writes it sees the old file or none, never half of one."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, name: str, key: Any) -> Path:
        return self.folder / f"{name}-{hashlib.blake2b(repr(key).encode()).hexdigest()}.pickle"

    def get(self, name: str, key: Any) -> tuple[bool, Any]:
        try:
            # Files this run wrote itself, in its own temporary folder.
            return True, pickle.loads(self._path(name, key).read_bytes())  # noqa: S301
        except FileNotFoundError:
            return False, None

    def put(self, name: str, key: Any, answer: Any) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=self.folder, suffix=".new", delete=False) as handle:
            handle.write(pickle.dumps(answer))
        os.replace(handle.name, self._path(name, key))


def _remembered(function: Callable[..., Any], shared: _SharedAnswers | None) -> Callable[..., Any]:
    answers: dict[Any, Any] = {}

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        key = (
            tuple(_argument_key(a) for a in args),
            tuple(sorted((k, _argument_key(v)) for k, v in kwargs.items())),
        )
        if key not in answers:
            found, answer = shared.get(function.__name__, key) if shared else (False, None)
            if not found:
                answer = function(*args, **kwargs)
                if shared:
                    shared.put(function.__name__, key, answer)
            answers[key] = answer
        # Callers get their own copy (of an array; of a list of frozen detections).
        return copy.copy(answers[key])

    return wrapper


def remembered_engine(folder: str | None) -> dict[str, Callable[..., Any]]:
    """The engine's four functions remembered, in memory and in `folder` when one is given."""
    shared = _SharedAnswers(Path(folder)) if folder else None
    return {name: _remembered(getattr(engine, name), shared) for name in REMEMBERED}


@pytest.fixture(scope="session", autouse=True)
def remembered_face_engine(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Iterator[None]:
    # Under xdist each process has its own base folder inside the run's one.
    root = tmp_path_factory.getbasetemp()
    folder = str((root.parent if worker_id != "master" else root) / "face-memo")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(FOLDER_VARIABLE, folder)  # for the processes the tests start
        for name, function in remembered_engine(folder).items():
            patch.setattr(engine, name, function)
        yield
