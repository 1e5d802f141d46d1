"""Face analysis time per 2 MP photo on one core (goal: at most 0.5 s), and what the alternatives cost.

    .venv/bin/python bench/bench_face_analysis.py [--repeat 5] [--cnn]

Pins itself to one core and one thread, loads the models once (timed apart), then analyses each real
test photo (tests/characters/photos.py) resized to 2 megapixels, a photo with no face (the worst case:
the detector searches again at twice the size) and a blank page, `--repeat` times each, and prints the
CPU time (`time.process_time`, so other load on the machine does not count) and the wall time. It also
times the face crop, and with `--cnn` dlib's CNN face detector (mmod_human_face_detector.dat) on the
same downscaled copy, for docs/IDENTITY.md's comparison. Exits 1 when the median 2 MP photo with a
face is over the goal.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")

from PIL import Image  # noqa: E402

from characters.faces import engine  # noqa: E402
from characters.faces.photo import ANALYSIS_SIDE, analyse_photo, face_crop  # noqa: E402
from tests.characters import photos  # noqa: E402

GOAL_SECONDS = 0.5
TWO_MEGAPIXELS = 2_000_000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--cnn", action="store_true", help="also time dlib's CNN detector")
    args = parser.parse_args()
    core = sorted(os.sched_getaffinity(0))[-1]
    os.sched_setaffinity(0, {core})
    print(f"one core (cpu {core}), load average {os.getloadavg()[0]:.1f}, analysis copy {ANALYSIS_SIDE} px")
    started = time.process_time()
    engine.face_models()
    print(f"models loaded once per process: {time.process_time() - started:.2f} s CPU")

    cases = {name: at_two_megapixels(photos.photo(name)) for name in (*photos.PERSON_A, photos.PERSON_B)}
    cases["no face (worst case)"] = at_two_megapixels(photos.without_face())
    cases["blank"] = at_two_megapixels(photos.blank())
    print(
        "\n| photo (2 MP) | size | CPU median | CPU max | wall median | faces |"
        "\n| --- | --- | ---: | ---: | ---: | ---: |"
    )
    with_face: list[float] = []
    for name, data in cases.items():
        cpu, wall, faces = time_analysis(data, args.repeat)
        if faces:
            with_face.extend(cpu)
        size = Image.open(io.BytesIO(data)).size
        print(
            f"| {name} | {size[0]} x {size[1]} | {statistics.median(cpu):.3f} s | {max(cpu):.3f} s "
            f"| {statistics.median(wall):.3f} s | {faces} |"
        )
    median = statistics.median(with_face)
    print(f"\nmedian over photos with a face: {median:.3f} s CPU (goal <= {GOAL_SECONDS} s)")
    print(
        "face crop (full-resolution decode, crop, resize, JPEG): "
        f"{time_crop(cases[photos.PERSON_A[2]]):.3f} s CPU"
    )
    if args.cnn:
        print(
            f"dlib CNN detector on the same {ANALYSIS_SIDE} px copy: "
            f"{time_cnn(cases[photos.PERSON_A[0]]):.2f} s CPU"
        )
    return 0 if median <= GOAL_SECONDS else 1


def at_two_megapixels(image: Image.Image) -> bytes:
    scale = (TWO_MEGAPIXELS / (image.width * image.height)) ** 0.5
    resized = image.resize(
        (round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS
    )
    return photos.jpeg(resized, quality=92)


def time_analysis(data: bytes, repeat: int) -> tuple[list[float], list[float], int]:
    cpu, wall, faces = [], [], 0
    for _ in range(repeat):
        started_cpu, started_wall = time.process_time(), time.perf_counter()
        facts = analyse_photo(io.BytesIO(data), training_resolution=1024, min_face_pixels=100)
        cpu.append(time.process_time() - started_cpu)
        wall.append(time.perf_counter() - started_wall)
        faces = len(facts.faces)
    return cpu, wall, faces


def time_crop(data: bytes) -> float:
    facts = analyse_photo(io.BytesIO(data), training_resolution=1024, min_face_pixels=100)
    started = time.process_time()
    crop = face_crop(io.BytesIO(data), facts, resolution=1024)
    if crop is not None:
        crop.save(io.BytesIO(), "JPEG", quality=95)
    return time.process_time() - started


def time_cnn(data: bytes) -> float:
    import dlib
    import numpy as np
    from PIL import ImageOps

    detector = dlib.cnn_face_detection_model_v1(str(engine.models_folder() / "mmod_human_face_detector.dat"))
    pixels = np.asarray(
        ImageOps.contain(Image.open(io.BytesIO(data)).convert("RGB"), (ANALYSIS_SIDE, ANALYSIS_SIDE))
    )
    started = time.process_time()
    detector(pixels, 0)
    return time.process_time() - started


if __name__ == "__main__":
    sys.exit(main())
