"""The stand-in's fault switches: each one a way RunPod (or the network in front of it) misbehaves.

Set at start-up (`--fault KEY=VALUE`) or at run time (`POST /_control/faults`). Every switch is off by
default, so a stand-in without switches behaves as RunPod documents it.
"""

from __future__ import annotations

from typing import Any

DEFAULT_FAULTS: dict[str, Any] = {
    # A share (0..1) of public API calls answered 429 / 500 before any work.
    "rate_429": 0.0,
    "rate_5xx": 0.0,
    "drop_webhooks": False,
    # The next N jobs: their worker is SIGKILLed at its first progress post.
    "kill_worker_mid_job": 0,
    # The next job: its worker is SIGKILLed at the first progress post saying training reached this step
    # (a lost worker part way through a run; RunPod then runs the job again on another worker). 0: off.
    # The kill lands within one progress interval (WORKER_PROGRESS_INTERVAL_S) after the step.
    "kill_worker_after_step": 0,
    # The next N jobs are handed to a second worker while the first runs them.
    "duplicate_jobs": 0,
    # Seconds a new job waits before any worker may take it.
    "queue_delay_s": 0.0,
    # Which final result of a job handed out twice counts: the assigned (first) worker's, the first to
    # arrive, or the last to arrive (RunPod does not document its rule).
    "duplicate_result": "assigned",
    # RunPod's API unreachable from the backend: every public request's connection is closed unanswered
    # (the workers, on RunPod's own network, carry on).
    "public_down": False,
    # A share of public requests answered only after `slow_s` seconds (a /run creates its job first), so a
    # client with a shorter timeout gives up on a call that did happen.
    "slow_rate": 0.0,
    "slow_s": 0.0,
    # Count of /run calls that create their job and then answer 500: the job exists, the answer is lost.
    "lose_run_answer": 0,
    # Count of /run calls that create their job and then answer 200 with a body that is not JSON (a proxy
    # or gateway page): the job exists, its id cannot be read.
    "garble_run_answer": 0,
    # Seconds each progress post is held before it is applied: the SDK posts progress from a thread of its
    # own with retries (rp_progress.py:47-53, rp_http.py:33), so one can land after the result
    # (runpod-python#250).
    "progress_delay_s": 0.0,
    # The next N jobs are handed out again after their result was posted (runpod-python#402), and what
    # /status then says: the first result stays ("ignored") or the re-run reopens the job ("replaces").
    "rerun_after_result": 0,
    "rerun_result": "ignored",
    # What a job past its execution timeout reads: TIMED_OUT (docs serverless/endpoints/job-states.mdx:20)
    # or FAILED ("marked as failed", v1 OpenAPI `executionTimeoutMs`).
    "timeout_status": "TIMED_OUT",
    # What a job whose TTL passes in the queue reads: 404, deleted (send-requests.mdx:126-130), or
    # TIMED_OUT, "expired before it was picked up" (job-states.mdx:20).
    "queued_expiry": "404",
    # A webhook for a cancelled job too. No source says RunPod sends one ("on job complete, fail, or
    # timeout", docs history 2023), so off by default.
    "webhook_on_cancel": False,
    # A `retries` count in /status. No RunPod source documents the key; the client must cope either way.
    "status_retries": False,
    # Days the endpoint went without requests: 3 lowers max workers to 2, 7 to 0, for good
    # (endpoint-configurations.mdx:80-88). Applied once when set.
    "idle_days": 0,
    # The first N worker processes are "throttled" (waiting on compute capacity, v2 `WorkerStatus`): they
    # take no jobs and /health counts them as throttled.
    "throttled_workers": 0,
}


def parse_pairs(pairs: list[str] | None) -> dict[str, str]:
    result = {}
    for pair in pairs or []:
        key, _, value = pair.partition("=")
        result[key] = value
    return result


def parse_faults(pairs: list[str] | None) -> dict[str, Any]:
    faults: dict[str, Any] = {}
    for key, value in parse_pairs(pairs).items():
        if key not in DEFAULT_FAULTS:
            raise SystemExit(f"unknown fault {key!r}; known: {', '.join(DEFAULT_FAULTS)}")
        faults[key] = coerce_fault(key, value)
    return faults


def coerce_fault(key: str, value: Any) -> Any:
    default = DEFAULT_FAULTS[key]
    if isinstance(default, bool):
        return value if isinstance(value, bool) else str(value).lower() in {"1", "true", "yes"}
    return type(default)(value)
