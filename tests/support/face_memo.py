"""The face engine's answers remembered for the test process: the same pixels give the same faces, so each
distinct photo is detected and embedded once per test process instead of once per test.

The suite builds its photos deterministically (`tests/characters/images.py`, the demo's portraits), and
many tests upload the same dozen: the layout tests alone analysed twelve photos each, and dlib's detector
and embedding took about 100 s of the suite's CPU (the five face modules: 105 s of CPU before, 62 s
after). The first call for given pixels runs dlib as ever; a later call with equal pixels (and face) gets
that result back, as dlib would compute it again. Only the engine's four pure functions are remembered
(`characters/faces/engine.py`); everything around them (the measures, the flags, the dataset report, the
likeness) runs for every test. Tests of the engine's own behaviour (`tests/characters/test_faces.py`) get
the same answers either way.
"""

from __future__ import annotations

import copy
import functools
import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from characters.faces import engine

REMEMBERED = ("detect_faces", "detect_small_faces", "embed_face", "face_chip")


def _pixels_key(pixels: np.ndarray) -> tuple[Any, ...]:
    return (pixels.shape, str(pixels.dtype), hashlib.blake2b(np.ascontiguousarray(pixels).data).digest())


def _argument_key(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return _pixels_key(value)
    if isinstance(value, engine.Detection):
        return (value.box, value.score, value.landmarks)
    return value


def _remembered(function: Callable[..., Any]) -> Callable[..., Any]:
    answers: dict[Any, Any] = {}

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        key = (
            tuple(_argument_key(a) for a in args),
            tuple(sorted((k, _argument_key(v)) for k, v in kwargs.items())),
        )
        if key not in answers:
            answers[key] = function(*args, **kwargs)
        # Callers get their own copy (of an array; of a list of frozen detections).
        return copy.copy(answers[key])

    return wrapper


@pytest.fixture(scope="session", autouse=True)
def remembered_face_engine() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        for name in REMEMBERED:
            patch.setattr(engine, name, _remembered(getattr(engine, name)))
        yield
