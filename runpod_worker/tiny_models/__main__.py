"""`python -m runpod_worker.tiny_models BASE_MODEL DEST [--seed N]`: build a tiny base model folder;
`all DEST`: every base model, each in `DEST/<base model>`."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from runpod_worker.tiny_models import BUILDERS, build


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build a tiny random-weight base model (no download).")
    parser.add_argument(
        "base_model", choices=[*sorted(BUILDERS), "all"], help="all: every one, in DEST/<model>"
    )
    parser.add_argument("dest", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    # One process for all: importing torch, diffusers and transformers is most of a build's time.
    models = sorted(BUILDERS) if args.base_model == "all" else [args.base_model]
    for model in models:
        started = time.monotonic()
        folder = build(model, args.dest / model if args.base_model == "all" else args.dest, seed=args.seed)
        size = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
        print(f"built tiny {model} in {folder} ({size / 1e6:.1f} MB, {time.monotonic() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
