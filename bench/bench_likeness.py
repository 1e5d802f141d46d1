"""Likeness time per checkpoint of 4 samples on one core (goal: at most 2 s), and per sample.

    .venv/bin/python bench/bench_likeness.py [--repeat 5]

Pins itself to one core and one thread and loads the face models once (timed apart). The references are
the real test portraits of person A (tests/characters/photos.py), analysed as the dataset report
analyses them, and repeated to 20 to show that comparing with more photos costs next to nothing (the
copy check is a hash and a distance per photo). A checkpoint's samples are four 1024 x 1024 JPEGs, the
size AI Toolkit renders by default: person A's held-back portrait (alike), person B (someone else), a
rescaled training photo (a copy) and a picture with no face (the worst case: the detector searches
twice). Prints CPU time (`time.process_time`, so other load on the machine does not count) and wall time
per sample and for the checkpoint's four, the median of `--repeat` runs. Exits 1 over the goal.
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

from PIL import Image, ImageOps  # noqa: E402

from characters.faces import engine  # noqa: E402
from characters.faces.dataset import PhotoInput  # noqa: E402
from characters.faces.likeness import SampleLikeness, checkpoint_likeness, sample_likeness  # noqa: E402
from characters.faces.photo import analyse_photo  # noqa: E402
from tests.characters import photos  # noqa: E402

GOAL_SECONDS = 2.0
SAMPLE_SIDE = 1024  # AI Toolkit's default sample width and height (SampleConfig, config_modules.py)
TRAINED_ON = photos.PERSON_A[1:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    core = sorted(os.sched_getaffinity(0))[-1]
    os.sched_setaffinity(0, {core})
    print(f"one core (cpu {core}), load average {os.getloadavg()[0]:.1f}")
    started = time.process_time()
    engine.face_models()
    print(f"models loaded once per process: {time.process_time() - started:.2f} s CPU")

    analysed = [reference(name) for name in TRAINED_ON]
    samples = {
        "alike (held-back portrait of A)": square(photos.photo(photos.PERSON_A[0])),
        "someone else (portrait of B)": square(photos.photo(photos.PERSON_B)),
        "copy of a training photo": square(photos.photo(TRAINED_ON[0])),
        "no face (worst case)": square(photos.without_face()),
    }
    worst = 0.0
    for count in (len(analysed), 20):
        references = (analysed * count)[:count]
        print(
            f"\n{count} reference photos\n\n| sample (1024 x 1024) | likeness | CPU median | wall median |"
            "\n| --- | ---: | ---: | ---: |"
        )
        per_checkpoint_cpu, per_checkpoint_wall, scores = 0.0, 0.0, []
        for name, data in samples.items():
            cpu, wall, scored = time_sample(data, references, args.repeat)
            scores.append(scored)
            per_checkpoint_cpu += statistics.median(cpu)
            per_checkpoint_wall += statistics.median(wall)
            copy = f", copy of {scored.copy_of}" if scored.copy_of else ""
            face = "" if scored.face_found else ", no face"
            print(
                f"| {name} | {scored.likeness:.0%}{face}{copy} | {statistics.median(cpu):.3f} s "
                f"| {statistics.median(wall):.3f} s |"
            )
        summary = checkpoint_likeness(scores)
        print(
            f"| **checkpoint of 4** | {summary.likeness:.0%} median | **{per_checkpoint_cpu:.3f} s** "
            f"| {per_checkpoint_wall:.3f} s |"
        )
        worst = max(worst, per_checkpoint_cpu)
    print(f"\nslowest checkpoint of 4 samples: {worst:.3f} s CPU (goal <= {GOAL_SECONDS} s)")
    return 0 if worst <= GOAL_SECONDS else 1


def reference(name: str) -> PhotoInput:
    facts = analyse_photo(io.BytesIO(photos.photo_bytes(name)), training_resolution=1024, min_face_pixels=100)
    return PhotoInput(
        key=name, name=name, flags=(), embedding=facts.embedding, phash=facts.phash,
        face_phash=facts.face_phash, yaw=facts.yaw, background=(),
    )  # fmt: skip


def square(image: Image.Image) -> bytes:
    # Centred a little above the middle: a portrait's face is in its upper part.
    return photos.jpeg(ImageOps.fit(image, (SAMPLE_SIDE, SAMPLE_SIDE), centering=(0.5, 0.25)), quality=90)


def time_sample(
    data: bytes, references: list[PhotoInput], repeat: int
) -> tuple[list[float], list[float], SampleLikeness]:
    cpu: list[float] = []
    wall: list[float] = []
    for _ in range(repeat):
        started_cpu, started_wall = time.process_time(), time.perf_counter()
        scored = sample_likeness(io.BytesIO(data), references)
        cpu.append(time.process_time() - started_cpu)
        wall.append(time.perf_counter() - started_wall)
    return cpu, wall, scored


if __name__ == "__main__":
    sys.exit(main())
