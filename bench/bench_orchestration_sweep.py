"""(c) One sweep pass with many active runs in Postgres: wall time and query count per pass.

    .venv/bin/python bench/bench_orchestration_sweep.py [--runs 10000] [--batch 100 500]

Creates a scratch database `bench_orchestration` on the Postgres at DATABASE_URL (default
postgres://postgres@127.0.0.1:5432/test), migrates it, inserts the runs (all due), and times
`training_runs_claim_due` — the database side of `sweep_training_runs` — for each batch size, first with
1,000 runs, then with all of them. The claim must cost the same few queries whatever the number of runs;
its time should follow the batch size. Queuing the polls is one broker send per run claimed, not timed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
BASE_URL = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
BENCH_DB = "bench_orchestration"


def recreate_database() -> str:
    admin = BASE_URL.replace("postgres://", "postgresql://", 1)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {BENCH_DB}")
    return BASE_URL.rsplit("/", 1)[0] + f"/{BENCH_DB}"


def setup_django(database_url: str) -> None:
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studio.settings")
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def insert_runs(count: int) -> None:
    from django.utils import timezone

    from characters.models import Character
    from studio.models import User
    from training.models import TrainingRun

    owner = User.objects.create(username=f"bench-{uuid.uuid4().hex[:6]}")
    due = timezone.now() - timedelta(minutes=1)
    for start in range(0, count, 1000):
        size = min(1000, count - start)
        characters = Character.objects.bulk_create(
            Character(owner=owner, name=f"c{start + i}", trigger_word=f"ohwx_c{start + i}")
            for i in range(size)
        )
        TrainingRun.objects.bulk_create(
            TrainingRun(
                character=character,
                requested_by=owner,
                status="training" if i % 2 else "queued",
                runpod_job_id=f"job-{uuid.uuid4().hex}",
                next_poll_at=due - timedelta(seconds=i),
            )
            for i, character in enumerate(characters)
        )


_passes = 0


def measure(batch: int) -> tuple[float, int]:
    from django.db import connection, reset_queries
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from training.services import training_runs_claim_due

    global _passes
    _passes += 1
    reset_queries()
    # Each pass a day later than the last, so every run is due again and a pass takes a full batch.
    now = timezone.now() + timedelta(days=_passes)
    with CaptureQueriesContext(connection) as queries:
        started = time.perf_counter()
        claimed = training_runs_claim_due(now=now, batch_size=batch)
        elapsed = time.perf_counter() - started
    assert len(claimed) == batch
    return elapsed, len(queries)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--batch", type=int, nargs="+", default=[100, 500])
    args = parser.parse_args()
    setup_django(recreate_database())
    print(f"{'active runs':>12} {'batch':>6} {'wall ms (median of 5)':>22} {'queries':>8}")
    inserted = 0
    for total in sorted({min(1000, args.runs), args.runs}):
        insert_runs(total - inserted)
        inserted = total
        for batch in args.batch:
            samples = sorted(measure(batch) for _ in range(5))
            wall, queries = samples[2]
            print(f"{total:>12} {batch:>6} {wall * 1000:>22.1f} {queries:>8}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
