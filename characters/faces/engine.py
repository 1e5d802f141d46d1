"""The face detector, landmark model and face embedding, loaded once per process.

All three come inside registry packages and are never downloaded at run time:

- detection: dlib's HOG + linear SVM frontal face detector, compiled into `dlib-bin` itself
  (`dlib.get_frontal_face_detector()`, no weights file);
- landmarks: dlib's 5-point shape predictor (`shape_predictor_5_face_landmarks.dat`, 9 MB, CC0),
  used to align the face before embedding and to estimate its turn (yaw);
- embedding: dlib's ResNet-29 face recognition model (`dlib_face_recognition_resnet_model_v1.dat`,
  22 MB, CC0): 128 numbers per face, 99.38 % on LFW, two faces closer than 0.6 are the same person
  (dlib's `dnn_face_recognition_ex.cpp` and http://dlib.net/face_recognition.py.html).

The two `.dat` files come from `face-recognition-models` (PyPI, pinned in requirements.txt). That
package's `__init__` imports `pkg_resources`, which newer setuptools no longer ship, so the files are
found without importing it; their SHA-256 is checked on load, so a different package version fails
loudly instead of silently changing every score. The package also holds the 68-point landmark model,
which this code never loads (its iBUG 300-W training data is licensed for research only).
"""

from __future__ import annotations

import hashlib
import importlib.util
import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

MODELS_PACKAGE = "face_recognition_models"
LANDMARKS_FILE = "shape_predictor_5_face_landmarks.dat"
EMBEDDING_FILE = "dlib_face_recognition_resnet_model_v1.dat"
MODEL_SHA256 = {
    LANDMARKS_FILE: "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
    EMBEDDING_FILE: "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
}
# The aligned face chip the ResNet was trained on (dlib's get_face_chip defaults: 150 px, 25 % padding).
CHIP_SIZE = 150
CHIP_PADDING = 0.25
# dlib's detector scores: 0 is its own threshold. Below it, matches are mostly not faces.
DETECTION_THRESHOLD = 0.0

# dlib's models are not documented as thread-safe; Celery's prefork workers use one thread each,
# and the lock costs nothing there while keeping a threaded caller correct.
_lock = threading.Lock()


class FaceModelsMissing(RuntimeError):
    """The model package is not installed or holds other files than the ones pinned."""


@dataclass(frozen=True)
class Detection:
    """One face in image pixels: box (left, top, right, bottom), the detector's score, 5 landmarks."""

    box: tuple[int, int, int, int]
    score: float
    landmarks: tuple[tuple[int, int], ...]
    shape: Any  # dlib.full_object_detection, needed to align the face for the embedding

    @property
    def width(self) -> int:
        return self.box[2] - self.box[0]


@dataclass(frozen=True)
class FaceModels:
    detector: Any
    landmarks: Any
    embedder: Any


@cache
def face_models() -> FaceModels:
    """Load the three models once per process (a Celery worker child loads them on its first photo)."""
    import dlib  # imported here: web processes never analyse faces and never pay for the import

    folder = models_folder()
    for name, expected in MODEL_SHA256.items():
        _verify(folder / name, expected)
    return FaceModels(
        detector=dlib.get_frontal_face_detector(),
        landmarks=dlib.shape_predictor(str(folder / LANDMARKS_FILE)),
        embedder=dlib.face_recognition_model_v1(str(folder / EMBEDDING_FILE)),
    )


def models_folder() -> Path:
    spec = importlib.util.find_spec(MODELS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FaceModelsMissing(f"{MODELS_PACKAGE} is not installed: run `make install`.")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def detect_faces(pixels: np.ndarray, *, upsample: int = 0) -> list[Detection]:
    """Faces in an 8-bit RGB array, largest first. `upsample` doubles the image that many times first
    (finds faces down to about 40 px instead of 80, at four times the cost)."""
    models = face_models()
    with _lock:
        rectangles, scores, _ = models.detector.run(pixels, upsample, DETECTION_THRESHOLD)
        found = [
            _detection(models, pixels, rect, score) for rect, score in zip(rectangles, scores, strict=True)
        ]
    return sorted(found, key=lambda face: face.width, reverse=True)


def detect_small_faces(pixels: np.ndarray, *, search_side: int) -> list[Detection]:
    """The second, finer search for a photo where `detect_faces` found nothing: the image is shrunk to
    `search_side` and doubled by the detector, which finds faces down to 40 px at that size for about
    half the cost of doubling the whole copy. Boxes and landmarks are given in `pixels`' own scale."""
    import dlib
    from PIL import Image

    height, width = pixels.shape[:2]
    scale = min(1.0, search_side / max(width, height))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    smaller = np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR))
    models = face_models()
    with _lock:
        rectangles, scores, _ = models.detector.run(smaller, 1, DETECTION_THRESHOLD)
        found = [
            _detection(models, pixels, _scaled(dlib, rect, 1 / scale), score)
            for rect, score in zip(rectangles, scores, strict=True)
        ]
    return sorted(found, key=lambda face: face.width, reverse=True)


def embed_face(pixels: np.ndarray, face: Detection) -> np.ndarray:
    """The face's 128-number descriptor (float32), computed on the aligned 150 px chip."""
    import dlib

    models = face_models()
    with _lock:
        chip = dlib.get_face_chip(pixels, face.shape, size=CHIP_SIZE, padding=CHIP_PADDING)
        descriptor = models.embedder.compute_face_descriptor(chip)
    return np.asarray(descriptor, dtype=np.float32)


def face_chip(pixels: np.ndarray, face: Detection) -> np.ndarray:
    """The aligned face alone (150 px), for measures that must not depend on framing."""
    import dlib

    with _lock:
        return np.asarray(dlib.get_face_chip(pixels, face.shape, size=CHIP_SIZE, padding=CHIP_PADDING))


def _detection(models: FaceModels, pixels: np.ndarray, rect: Any, score: float) -> Detection:
    shape = models.landmarks(pixels, rect)
    points = tuple((shape.part(i).x, shape.part(i).y) for i in range(shape.num_parts))
    height, width = pixels.shape[:2]
    box = (max(0, rect.left()), max(0, rect.top()), min(width, rect.right()), min(height, rect.bottom()))
    return Detection(box=box, score=float(score), landmarks=points, shape=shape)


def _scaled(dlib: Any, rect: Any, factor: float) -> Any:
    return dlib.rectangle(
        round(rect.left() * factor),
        round(rect.top() * factor),
        round(rect.right() * factor),
        round(rect.bottom() * factor),
    )


def _verify(path: Path, expected: str) -> None:
    if not path.is_file():
        raise FaceModelsMissing(f"{path.name} is missing from {MODELS_PACKAGE}: run `make install`.")
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1024 * 1024):
            digest.update(chunk)
    if digest.hexdigest() != expected:
        raise FaceModelsMissing(
            f"{path.name} is not the pinned model (sha256 {digest.hexdigest()}); "
            f"install the version of {MODELS_PACKAGE} in requirements.txt."
        )
