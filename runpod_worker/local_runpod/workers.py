"""The worker processes: the unmodified `python -m runpod_worker.handler`, in the SDK's production mode.

The environment is what RunPod gives a serverless worker, as the pinned SDK (runpod 1.12.0) reads it:
`RUNPOD_WEBHOOK_GET_JOB` (rp_job.py:23, `$ID` = worker id), `RUNPOD_WEBHOOK_POST_OUTPUT` and
`RUNPOD_WEBHOOK_POST_STREAM` (rp_http.py:16-24, `$RUNPOD_POD_ID` = worker id, `$ID` = job id),
`RUNPOD_WEBHOOK_PING` and `RUNPOD_PING_INTERVAL` (rp_ping.py:29-31), `RUNPOD_AI_API_KEY` sent bare as the
`Authorization` header (rp_ping.py:38-40), `RUNPOD_POD_ID` (worker_state.py:18).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SIMULATOR_DIR = REPO_ROOT / "runpod_worker" / "simulated_ai_toolkit"
SIMULATOR_CAPTIONER = SIMULATOR_DIR / "captioner_model"
# First on the workers' path: py-cpuinfo's one answer the SDK wants, without its two extra processes
# (worker_path/cpuinfo.py says why).
WORKER_PATH = Path(__file__).resolve().parent / "worker_path"


@dataclass(eq=False)
class WorkerProc:
    worker_id: str
    number: int
    process: subprocess.Popen[bytes]
    jobs: set[str] = field(default_factory=set)
    last_ping: float = 0.0
    # False until its first job take: the SDK takes jobs only after its fitness checks pass
    # (worker.py:39-53), so until then the worker is "initializing".
    ready: bool = False
    # When it last waited in a job take (monotonic): a worker in a take has no job in hand, as the SDK
    # asks for jobs only below its concurrency (1), so a recent take says it is idle.
    polled_at: float = 0.0


# The worker states of `/health` in RunPod's SDK docs example (runpod/docs sdks/python/endpoints.mdx and
# sdks/go/endpoints.mdx, removed in f5cdf4b4 on 2026-02-23): idle, initializing, ready, running,
# throttled. Today's page (serverless/endpoints/operation-reference.mdx:904-920) shows only idle and
# running. Both examples there have `ready` equal to `idle`; RunPod does not define it further.
HEALTH_WORKER_STATES = ("idle", "initializing", "ready", "running", "throttled")


def worker_state(worker: WorkerProc, throttled: list[WorkerProc]) -> str:
    if worker in throttled:
        return "throttled"
    if worker.jobs:
        return "running"
    return "idle" if worker.ready else "initializing"


def worker_states(allocated: list[WorkerProc], throttled: list[WorkerProc]) -> dict[str, int]:
    counts = dict.fromkeys(HEALTH_WORKER_STATES, 0)
    for worker in allocated:
        counts[worker_state(worker, throttled)] += 1
    counts["ready"] = counts["idle"]
    return counts


def worker_env(
    *, worker_id: str, base_url: str, endpoint_id: str, worker_key: str, extra: dict[str, str]
) -> dict[str, str]:
    eid = endpoint_id
    env = {
        **os.environ,
        "RUNPOD_WEBHOOK_GET_JOB": f"{base_url}/_worker/{eid}/job-take/$ID?gpu=local",
        "RUNPOD_WEBHOOK_POST_OUTPUT": f"{base_url}/_worker/{eid}/job-done/$RUNPOD_POD_ID/$ID?gpu=local",
        "RUNPOD_WEBHOOK_POST_STREAM": f"{base_url}/_worker/{eid}/job-stream/$RUNPOD_POD_ID/$ID?gpu=local",
        "RUNPOD_WEBHOOK_PING": f"{base_url}/_worker/{eid}/ping/$RUNPOD_POD_ID",
        "RUNPOD_AI_API_KEY": worker_key,
        "RUNPOD_POD_ID": worker_id,
        "RUNPOD_ENDPOINT_ID": eid,
        "RUNPOD_PING_INTERVAL": "2000",
        "RUNPOD_SKIP_GPU_CHECK": "true",
        "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true",
        "RUNPOD_DEBUG_LEVEL": os.environ.get("RUNPOD_DEBUG_LEVEL", "INFO"),
        "PYTHONUNBUFFERED": "1",
        "AI_TOOLKIT_DIR": os.environ.get("AI_TOOLKIT_DIR", str(SIMULATOR_DIR)),
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(WORKER_PATH), str(REPO_ROOT), os.environ.get("PYTHONPATH")])
        ),
    }
    env.update(extra)
    if Path(env["AI_TOOLKIT_DIR"]).resolve() == SIMULATOR_DIR:
        # The simulated AI Toolkit captions without a model; this folder stands where the captioner's
        # weights stand, so the worker never looks for them on the Hub (runpod_worker/weights.py).
        env.setdefault("CAPTION_MODEL_PATH", str(SIMULATOR_CAPTIONER))
    return env


def spawn_worker(worker_id: str, number: int, env: dict[str, str], log_dir: Path) -> WorkerProc:
    logfile = open(log_dir / f"{worker_id}.log", "wb")  # noqa: SIM115 - owned by the process
    process = subprocess.Popen(
        [sys.executable, "-u", "-m", "runpod_worker.handler"],
        cwd=REPO_ROOT,
        env=env,
        stdout=logfile,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # killing the group also kills its ping process and trainer
    )
    logfile.close()
    return WorkerProc(worker_id, number, process)


def kill_group(process: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)
