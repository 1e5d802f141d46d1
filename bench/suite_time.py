"""How long `make test` takes on a fresh clone, as CI runs it: wall time and the CPU time of the whole run.

    python bench/suite_time.py                      # HEAD
    python bench/suite_time.py --baseline <commit>  # HEAD and an older commit, one after the other

Each commit is cloned into a temporary folder and `make test` runs there from nothing (virtualenv, test
database, S3 server), against the Postgres and Redis that `make test` finds. With `--baseline` both rows
are printed side by side with their ratio. The CPU figure (user + system of every process the run
started, orphaned ones included) moves little with other work on the machine; the wall time does, so quote
the load beside it.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# prctl(2): orphaned descendants are re-parented to this process instead of init, so their CPU reaches
# RUSAGE_CHILDREN once reaped. Without it, a process whose parent was killed (a Celery pool child, a GPU
# worker of a stopped stand-in) ends its life as init's child and its CPU is never counted.
PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> None:
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def reap_orphans(*, timeout: float = 30.0) -> None:
    """Waits for the descendants left behind by the run (reaping them counts their CPU)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            time.sleep(0.2)


@dataclass(frozen=True)
class Timing:
    commit: str
    wall_s: float
    cpu_s: float
    passed: bool
    load: float


def run_suite(commit: str) -> Timing:
    folder = Path(tempfile.mkdtemp(prefix="suite-time-"))
    try:
        subprocess.run(["git", "clone", "--quiet", str(REPO), str(folder)], check=True)
        subprocess.run(["git", "-C", str(folder), "checkout", "--quiet", commit], check=True)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        result = subprocess.run(["make", "test"], cwd=folder, env={**os.environ, "CI": "true"}, check=False)
        wall = time.monotonic() - started
        reap_orphans()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return Timing(commit, wall, cpu, result.returncode == 0, os.getloadavg()[0])
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def clock(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--baseline", help="an older commit to time in the same run")
    args = parser.parse_args()
    become_subreaper()
    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()
    timings = [run_suite(head)] + ([run_suite(args.baseline)] if args.baseline else [])
    print(f"{'commit':<12} {'wall':>7} {'CPU':>7} {'load (1 min)':>13}  result")
    for timing in timings:
        result = "passed" if timing.passed else "FAILED"
        print(
            f"{timing.commit:<12} {clock(timing.wall_s):>7} {clock(timing.cpu_s):>7} "
            f"{timing.load:>13.1f}  {result}"
        )
    if len(timings) == 2:
        new, old = timings
        print(f"ratio new/old: wall {new.wall_s / old.wall_s:.2f}, CPU {new.cpu_s / old.cpu_s:.2f}")
    return 0 if all(timing.passed for timing in timings) else 1


if __name__ == "__main__":
    sys.exit(main())
