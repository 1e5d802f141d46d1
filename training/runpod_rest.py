"""The one client for RunPod's REST v2 management API (`https://api.runpod.io/v2`; v1 is retired).

    client = RunPodRestClient.from_settings()
    endpoint = client.get_endpoint("4m7x2k9q")            # oa2 `Endpoint`, a dict as RunPod sends it
    client.update_endpoint("4m7x2k9q", {"workers": {"max": 3}})

It covers what provisioning and pod mode use: templates, network volumes, serverless endpoints (and their
workers), pods and their actions (docs `api-reference-v2/openapi.json`). Lists come wrapped
(`{"endpoints": [...]}`), errors as RFC 9457 problems `{title, status, detail, errors?}`
(`api-reference-v2/migrate-from-v1.mdx:87-135`).

Errors: `RunPodRestUnavailable` is transient (timeout, connection error, 429, 5xx), `RunPodRestRejected`
permanent (4xx: the problem's detail and each validation error are in the message), `RunPodRestNotFound`
a 404. A create (`POST`) is repeated only when RunPod certainly did not take it (a 429, or a connection
that never opened); otherwise `RunPodRestUncertain`: the resource may exist, so look it up by name before
creating again. Messages never carry request bodies: a template's env holds secrets.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import requests
from django.conf import settings

from training.runpod import connection_cause, never_connected, retry_after

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
DEFAULT_MAX_ATTEMPTS = 4
MAX_RETRY_AFTER_SECONDS = 10.0


class RunPodRestError(Exception):
    def __init__(
        self, message: str, *, status_code: int | None = None, errors: list[str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.errors = errors or []


class RunPodRestUnavailable(RunPodRestError):
    """Transient: a timeout, a connection error, 429 or 5xx. The same call may succeed later."""


class RunPodRestUncertain(RunPodRestUnavailable):
    """A create failed after the request may have reached RunPod: the resource may or may not exist."""


class RunPodRestRejected(RunPodRestError):
    """Permanent: RunPod refused the request (bad key, a body its schema or rules refuse)."""


class RunPodRestNotFound(RunPodRestRejected):
    """RunPod does not know this id."""


class RunPodRestClient:
    """A session with Bearer auth, a timeout on every call and bounded, jittered retries."""

    def __init__(
        self,
        *,
        api_base: str,
        api_key: str,
        timeout_seconds: float,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        backoff_seconds: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.api_base = api_base.rstrip("/")
        self.timeout_seconds = timeout_seconds
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self._sleep = sleep
        self.session = requests.Session()
        self.session.headers.update({"Authorization": f"Bearer {api_key}", "Accept": "application/json"})

    @classmethod
    def from_settings(cls) -> RunPodRestClient:
        return cls(
            api_base=settings.RUNPOD_REST_API_BASE,
            api_key=settings.RUNPOD_API_KEY,
            timeout_seconds=settings.RUNPOD_TIMEOUT_SECONDS,
        )

    # -------------------------------------------------------------------------------- resources

    def list_templates(self) -> list[dict[str, Any]]:
        return self._list("/templates", "templates")

    def create_template(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._object("POST", "/templates", body)

    def update_template(self, template_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._object("PATCH", f"/templates/{template_id}", body)

    def list_network_volumes(self) -> list[dict[str, Any]]:
        return self._list("/network-volumes", "networkVolumes")

    def create_network_volume(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._object("POST", "/network-volumes", body)

    def update_network_volume(self, volume_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._object("PATCH", f"/network-volumes/{volume_id}", body)

    def list_endpoints(self) -> list[dict[str, Any]]:
        return self._list("/serverless", "endpoints")

    def get_endpoint(self, endpoint_id: str) -> dict[str, Any]:
        return self._object("GET", f"/serverless/{endpoint_id}")

    def create_endpoint(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._object("POST", "/serverless", body)

    def update_endpoint(self, endpoint_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._object("PATCH", f"/serverless/{endpoint_id}", body)

    def list_endpoint_workers(self, endpoint_id: str) -> list[dict[str, Any]]:
        return self._list(f"/serverless/{endpoint_id}/workers", "workers")

    def get_pod(self, pod_id: str) -> dict[str, Any]:
        return self._object("GET", f"/pods/{pod_id}")

    def create_pod(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._object("POST", "/pods", body)

    def pod_action(self, pod_id: str, action: str) -> dict[str, Any] | None:
        """start, stop, restart (the pod after it) or terminate (None: RunPod answers 204)."""
        return self._request("POST", f"/pods/{pod_id}/action", {"action": action})

    def close(self) -> None:
        self.session.close()

    # ------------------------------------------------------------------------------------ internals

    def _list(self, path: str, key: str) -> list[dict[str, Any]]:
        payload = self._object("GET", path)
        items = payload.get(key)
        if not isinstance(items, list):
            raise RunPodRestUnavailable(f"RunPod answered GET {path} without a list under {key!r}.")
        return [item for item in items if isinstance(item, dict)]

    def _object(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        payload = self._request(method, path, body)
        if payload is None:
            raise RunPodRestUnavailable(f"RunPod answered {method} {path} without a body.")
        return payload

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any] | None:
        # A POST creates (or triggers an action): repeat it only when RunPod cannot have seen it.
        repeatable = method != "POST"
        operation = f"{method} /v2{path}"
        for attempt in range(1, self.max_attempts + 1):
            last = attempt == self.max_attempts
            response: requests.Response | None = None
            try:
                response = self.session.request(
                    method, self.api_base + path, json=body, timeout=self.timeout_seconds
                )
            except (requests.Timeout, requests.ConnectionError) as exc:
                if not never_connected(exc) and not repeatable:
                    raise RunPodRestUncertain(
                        f"RunPod did not answer {operation} ({type(exc).__name__}); it may have done it."
                    ) from exc
                if last:
                    cause = connection_cause(exc) if never_connected(exc) else type(exc).__name__
                    raise RunPodRestUnavailable(f"RunPod did not answer {operation} ({cause}).") from exc
            else:
                done, payload = _outcome(response, operation, repeatable=repeatable, last=last)
                if done:
                    return payload
            self._sleep(self._backoff(attempt, response))
        raise AssertionError("unreachable: the last attempt always returns or raises")

    def _backoff(self, attempt: int, response: requests.Response | None) -> float:
        asked = retry_after(response)
        if asked is not None:
            return min(asked, MAX_RETRY_AFTER_SECONDS)
        return random.uniform(0, self.backoff_seconds * 2 ** (attempt - 1))


def _outcome(
    response: requests.Response, operation: str, *, repeatable: bool, last: bool
) -> tuple[bool, dict[str, Any] | None]:
    """(True, body) when done, (False, None) to try again, or the error this status means."""
    code = response.status_code
    if code == 204:
        return True, None
    if 200 <= code < 300:
        try:
            payload = response.json()
        except ValueError as exc:
            error = RunPodRestUnavailable if repeatable else RunPodRestUncertain
            raise error(
                f"RunPod answered {operation} with a body that is not JSON.", status_code=code
            ) from exc
        if not isinstance(payload, dict):
            raise RunPodRestUnavailable(f"RunPod answered {operation} with JSON that is not an object.")
        return True, payload
    if code in RETRY_STATUSES:
        if code != 429 and not repeatable:
            raise RunPodRestUncertain(f"RunPod answered {operation} with HTTP {code}; it may have done it.")
        if last:
            raise RunPodRestUnavailable(
                f"RunPod answered {operation} with HTTP {code} on every attempt; try again later.",
                status_code=code,
            )
        return False, None
    raise _rejection(response, operation)


def _rejection(response: requests.Response, operation: str) -> RunPodRestRejected:
    code = response.status_code
    if code == 401:
        return RunPodRestRejected(
            "RunPod refused the API key (HTTP 401). Check RUNPOD_API_KEY.", status_code=code
        )
    if code == 403:
        return RunPodRestRejected(
            f"The API key has no access to {operation} (HTTP 403): give RUNPOD_API_KEY read/write access.",
            status_code=code,
        )
    detail, errors = _problem(response)
    message = f"RunPod refused {operation} (HTTP {code}){': ' + detail if detail else ''}"
    if errors:
        message += f" ({'; '.join(errors)})"
    error = RunPodRestNotFound if code == 404 else RunPodRestRejected
    return error(message + ".", status_code=code, errors=errors)


def _problem(response: requests.Response) -> tuple[str, list[str]]:
    """The RFC 9457 problem's detail and validation errors (oa2 `ErrorResponse`)."""
    try:
        payload = response.json()
    except ValueError:
        return "", []
    if not isinstance(payload, dict):
        return "", []
    errors = payload.get("errors")
    detail = payload.get("detail") or payload.get("title") or payload.get("message") or ""
    return str(detail), [str(e) for e in errors] if isinstance(errors, list) else []
