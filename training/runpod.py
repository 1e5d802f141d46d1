"""The one client for a RunPod serverless endpoint's job API (`/run`, `/status`, `/cancel`, `/health`).

    client = RunPodClient.from_settings()
    job = client.submit(job_input={...}, webhook="https://…/hooks/runpod/<run>/<token>", policy={...})
    job = client.status(job.id)        # RunPodJob(status="IN_PROGRESS", output={...}, ...)

Errors: `RunPodUnavailable` is transient (timeout, connection error, 429, 5xx: try again later),
`RunPodRejected` is permanent (4xx: fix the request). A 404 names no cause: RunPod answers it for a job it
no longer knows (unknown id, result expired 30 minutes after the end, TTL passed) and for a wrong or deleted
endpoint alike (docs serverless/endpoints/send-requests.mdx:130, 215). So a 404 on a job is
`RunPodJobNotFound`, and a 404 on `/health`, which names no job, is `RunPodEndpointNotFound`: ask
`health()` before concluding that a job is lost.

`/run` is not idempotent on RunPod's side (no idempotency key), so it is repeated only when RunPod
certainly did not accept it: a 429, or a connection that never opened. Any other failure of `/run` raises
`RunPodSubmitUncertain`: a job may exist, and the caller must not blindly submit again. That includes a
2xx whose body cannot be read (a gateway page, a cut body): RunPod took the request, only its id is lost.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests
from django.conf import settings
from urllib3.exceptions import NameResolutionError, NewConnectionError

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# Tries per call (the first included) unless the caller chooses otherwise.
DEFAULT_MAX_ATTEMPTS = 4
# Longest wait we honour from a Retry-After header: tasks have their own, longer retry schedule.
MAX_RETRY_AFTER_SECONDS = 10.0


class RunPodError(Exception):
    """Something went wrong talking to RunPod; `status_code` is the HTTP status when there was one."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code


class RunPodUnavailable(RunPodError):
    """Transient: a timeout, a connection error, 429 or 5xx. The same call may succeed later."""


class RunPodSubmitUncertain(RunPodUnavailable):
    """`/run` failed after the request may have reached RunPod: a job may or may not exist."""


class RunPodRejected(RunPodError):
    """Permanent: RunPod refused the request (bad key, bad body). Repeating it will not help."""


class RunPodJobNotFound(RunPodRejected):
    """RunPod answered 404 for this job: a wrong id, a result past its 30-minute retention, a TTL that
    passed, or a wrong or deleted endpoint (only `health()` tells the last apart)."""


class RunPodEndpointNotFound(RunPodRejected):
    """RunPod answered 404 for the endpoint itself (`/health`): RUNPOD_ENDPOINT_ID is wrong, or the
    endpoint was deleted. No job of it can be reached, though the jobs may well be running."""


@dataclass(frozen=True)
class RunPodJob:
    id: str
    status: str
    output: Any = None
    error: Any = None
    delay_ms: int | None = None
    execution_ms: int | None = None
    worker_id: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> RunPodJob:
        return cls(
            id=str(payload.get("id") or ""),
            status=str(payload.get("status") or "").upper(),
            output=payload.get("output"),
            error=payload.get("error"),
            delay_ms=_optional_int(payload.get("delayTime")),
            execution_ms=_optional_int(payload.get("executionTime")),
            worker_id=payload.get("workerId"),
            raw=payload,
        )


@dataclass(frozen=True)
class RunPodHealth:
    jobs: dict[str, int]
    workers: dict[str, int]


def _optional_int(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


class RunPodClient:
    """A session with Bearer auth, a timeout on every call and bounded, jittered retries."""

    def __init__(
        self,
        *,
        api_base: str,
        endpoint_id: str,
        api_key: str,
        timeout_seconds: float,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        backoff_seconds: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.endpoint_url = f"{api_base.rstrip('/')}/{endpoint_id}"
        self.timeout_seconds = timeout_seconds
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self._sleep = sleep
        self.session = requests.Session()
        self.session.headers.update({"Authorization": f"Bearer {api_key}", "Accept": "application/json"})
        self.calls = 0  # HTTP requests sent, retries included: benchmarks count them

    @classmethod
    def from_settings(cls) -> RunPodClient:
        return cls(
            api_base=settings.RUNPOD_API_BASE,
            endpoint_id=settings.RUNPOD_ENDPOINT_ID,
            api_key=settings.RUNPOD_API_KEY,
            timeout_seconds=settings.RUNPOD_TIMEOUT_SECONDS,
        )

    def submit(self, *, job_input: dict[str, Any], webhook: str | None, policy: dict[str, Any]) -> RunPodJob:
        """POST /run. Raises RunPodSubmitUncertain when a job may have been created anyway."""
        body: dict[str, Any] = {"input": job_input, "policy": policy}
        if webhook:
            body["webhook"] = webhook
        job = RunPodJob.from_payload(self._request("POST", "/run", json=body, repeatable=False))
        if not job.id:
            raise RunPodSubmitUncertain(
                "RunPod accepted POST run but its answer has no job id; a job may exist."
            )
        return job

    def status(self, job_id: str) -> RunPodJob:
        return RunPodJob.from_payload(self._request("GET", f"/status/{job_id}"))

    def cancel(self, job_id: str) -> RunPodJob:
        # Cancelling twice is harmless, so this call is retried like a read.
        return RunPodJob.from_payload(self._request("POST", f"/cancel/{job_id}"))

    def health(self) -> RunPodHealth:
        """Workers and jobs of the endpoint; raises RunPodEndpointNotFound when RunPod does not know it."""
        payload = self._request("GET", "/health")
        return RunPodHealth(jobs=dict(payload.get("jobs") or {}), workers=dict(payload.get("workers") or {}))

    def close(self) -> None:
        self.session.close()

    # ------------------------------------------------------------------------------------ internals

    def _request(
        self, method: str, path: str, *, json: Any = None, repeatable: bool = True
    ) -> dict[str, Any]:
        operation = f"{method} {path.split('/')[1]}"
        for attempt in range(1, self.max_attempts + 1):
            last = attempt == self.max_attempts
            response: requests.Response | None = None
            try:
                response = self._send(method, path, json=json)
            except (requests.Timeout, requests.ConnectionError) as exc:
                if never_connected(exc):
                    # RunPod cannot have seen the request (refused, unresolvable, timed out connecting):
                    # safe to repeat, even a /run.
                    if last:
                        raise RunPodUnavailable(
                            f"RunPod did not accept a connection for {operation} ({connection_cause(exc)})."
                        ) from exc
                elif not repeatable:
                    raise RunPodSubmitUncertain(
                        f"RunPod did not answer {operation} ({type(exc).__name__}); a job may exist."
                    ) from exc
                if last:
                    raise RunPodUnavailable(
                        f"RunPod did not answer {operation} after {attempt} attempts ({type(exc).__name__})."
                    ) from exc
            else:
                outcome = self._outcome(response, operation, repeatable=repeatable, last=last)
                if outcome is not None:
                    return outcome
            self._sleep(self._backoff(attempt, response=response))
        raise AssertionError("unreachable: the last attempt always returns or raises")

    def _send(self, method: str, path: str, *, json: Any) -> requests.Response:
        self.calls += 1
        return self.session.request(method, self.endpoint_url + path, json=json, timeout=self.timeout_seconds)

    def _outcome(
        self, response: requests.Response, operation: str, *, repeatable: bool, last: bool
    ) -> dict[str, Any] | None:
        """The JSON body, None to try again, or the error this status means."""
        code = response.status_code
        if 200 <= code < 300:
            return _json_object(response, operation, repeatable=repeatable)
        if code == 404 and operation == "GET health":
            raise RunPodEndpointNotFound(
                "RunPod does not know the endpoint (GET health: HTTP 404). Check RUNPOD_ENDPOINT_ID: the "
                "endpoint may have been deleted or re-created under a new id.",
                status_code=code,
            )
        if code == 404:
            raise RunPodJobNotFound(
                f"RunPod does not know this job ({operation}: HTTP 404); it may have expired, or the "
                "endpoint id may be wrong.",
                status_code=code,
            )
        if code in RETRY_STATUSES:
            # A 429 is refused before any work; a 5xx on /run may come after the job was queued.
            if code != 429 and not repeatable:
                raise RunPodSubmitUncertain(
                    f"RunPod answered {operation} with HTTP {code}; a job may exist.", status_code=code
                )
            if last:
                raise RunPodUnavailable(
                    f"RunPod answered {operation} with HTTP {code} on every attempt; try again later.",
                    status_code=code,
                )
            # Defence, not a known RunPod fault: a server or proxy that answers 429/5xx before reading
            # the request body and then keeps the connection open leaves the unread bytes to be parsed
            # as our next request (the local stand-in did this until it learned to drain the body).
            # A retry is rare, so it pays one new handshake and may also reach a healthier front end.
            self.session.close()
            return None
        raise RunPodRejected(_rejection_message(response, operation), status_code=code)

    def _backoff(self, attempt: int, *, response: requests.Response | None) -> float:
        asked = retry_after(response)
        if asked is not None:
            return min(asked, MAX_RETRY_AFTER_SECONDS)
        # Full jitter: many workers hitting a 429 together must not retry in lockstep.
        return random.uniform(0, self.backoff_seconds * 2 ** (attempt - 1))


def never_connected(exc: requests.RequestException) -> bool:
    """The connection was never opened (refused, name not resolved, or timed out while connecting)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    # urllib3's NewConnectionError covers a refused connection and NameResolutionError.
    return isinstance(reason, NewConnectionError)


def connection_cause(exc: requests.RequestException) -> str:
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    if isinstance(reason, NameResolutionError):
        return "its address could not be resolved"
    if isinstance(reason, NewConnectionError) and not isinstance(exc, requests.ConnectTimeout):
        return "connection refused"
    return "timed out connecting"


def _json_object(response: requests.Response, operation: str, *, repeatable: bool) -> dict[str, Any]:
    # A 2xx means RunPod took the request: an unreadable answer to a call that is not repeatable (/run)
    # hides what it made, it does not undo it.
    unreadable = RunPodUnavailable if repeatable else RunPodSubmitUncertain
    suffix = "" if repeatable else "; a job may exist"
    try:
        payload = response.json()
    except ValueError as exc:
        raise unreadable(
            f"RunPod answered {operation} (HTTP {response.status_code}) with a body not JSON{suffix}.",
            status_code=response.status_code,
        ) from exc
    if not isinstance(payload, dict):
        raise unreadable(
            f"RunPod answered {operation} with JSON that is not an object{suffix}.",
            status_code=response.status_code,
        )
    return payload


def retry_after(response: requests.Response | None) -> float | None:
    if response is None:
        return None
    try:
        return max(0.0, float(response.headers.get("Retry-After", "")))
    except ValueError:
        return None


def _rejection_message(response: requests.Response, operation: str) -> str:
    if response.status_code == 401:
        return "RunPod refused the API key (HTTP 401). Check RUNPOD_API_KEY and its access to the endpoint."
    detail = ""
    try:
        payload = response.json()
        if isinstance(payload, dict):
            detail = str(payload.get("error") or payload.get("detail") or payload.get("message") or "")
    except ValueError:
        detail = response.text[:200]
    suffix = f": {detail}" if detail else ""
    return f"RunPod refused {operation} (HTTP {response.status_code}){suffix}."
