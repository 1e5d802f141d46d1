"""The local RunPod's workers get the processor's name the runpod SDK asks for from /proc/cpuinfo, the same
name py-cpuinfo gives, without py-cpuinfo's two extra processes (runpod_worker/local_runpod/worker_path)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cpuinfo  # py-cpuinfo itself, as the SDK imports it on RunPod

from runpod_worker.local_runpod.workers import REPO_ROOT, WORKER_PATH, worker_env

SDK_PROCESSOR = "from runpod.serverless.utils import rp_debugger; print(rp_debugger.PROCESSOR)"


def _in_a_worker(code: str) -> str:
    """What `python -c code` prints, run in the environment the stand-in gives a worker."""
    environment = worker_env(
        worker_id="w1", base_url="http://127.0.0.1:9", endpoint_id="e", worker_key="k", extra={}
    )
    finished = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return finished.stdout.strip()


def test_the_workers_name_the_processor_as_py_cpuinfo_does() -> None:
    assert _in_a_worker(SDK_PROCESSOR) == cpuinfo.get_cpu_info()["brand_raw"]


def test_only_the_stand_ins_workers_find_it_first() -> None:
    found = _in_a_worker("import cpuinfo; print(cpuinfo.__file__)")

    assert Path(found) == WORKER_PATH / "cpuinfo.py"
    assert Path(cpuinfo.__file__).parent != WORKER_PATH  # this process, like the image, has py-cpuinfo itself


def test_the_trainer_a_worker_starts_gets_py_cpuinfo_itself() -> None:
    # The worker imports the SDK (and so cpuinfo) before it starts the trainer with its own environment.
    worker_then_trainer = (
        "import os, subprocess, sys; import runpod.serverless; "
        "print(subprocess.run([sys.executable, '-c', 'import cpuinfo; print(cpuinfo.__file__)'], "
        "env=dict(os.environ), capture_output=True, text=True, check=True).stdout)"
    )

    assert Path(_in_a_worker(worker_then_trainer)) == Path(cpuinfo.__file__)
