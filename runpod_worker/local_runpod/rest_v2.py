"""The subset of RunPod's REST v2 management API that provisioning and pod mode use.

Served under the stand-in's `/v2/…` beside the job API, Bearer `--api-key`:
`/v2/templates[/<id>]`, `/v2/network-volumes[/<id>]`, `/v2/serverless[/<id>[/workers]]`,
`/v2/pods[/<id>[/action]]` — list (wrapped: `{"templates": [...]}`), create (201), read, PATCH (only the
fields given), DELETE (204). Sources: the v2 OpenAPI file (runpod/docs `api-reference-v2/openapi.json`
at `a900806e`, `oa2:<line>`) and `api-reference-v2/migrate-from-v1.mdx` (wrapped lists, RFC 9457 errors).

Errors are RFC 9457 problems `{title, status, detail, errors?}` (oa2 `ErrorResponse`, oa2:4674): 422 for a
body the schema rejects (`rest_schema.py`), 400 for the rules the schema states in prose, 404 for an
unknown id, 409 for a pod action its status does not allow.

The stand-in's own queue endpoint (`--endpoint-id`) is listed here from the start: its `workers.max` is
the one that caps the workers taking its jobs, so a PATCH here raises an endpoint RunPod scaled to zero,
and deleting it makes its job API answer 404.
"""

from __future__ import annotations

import copy
import secrets
import string
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from runpod_worker.local_runpod import rest_schema as schema

# The serverless GPU pool ids (docs `references/gpu-types.mdx` "GPU pools" and
# `flash/configuration/gpu-types.mdx`, both at 2026-08-18): a pool id outside them is refused.
SERVERLESS_POOLS = frozenset(
    {
        "AMPERE_16",
        "AMPERE_24",
        "ADA_24",
        "ADA_32_PRO",
        "AMPERE_48",
        "ADA_48_PRO",
        "AMPERE_80",
        "ADA_80_PRO",
        "BLACKWELL_96",
        "HOPPER_141",
        "BLACKWELL_180",
    }
)
CONTAINER_KEYS = ("image", "args", "disk", "ports", "env", "registry")
# oa2 `PodActionRequest` description: which actions each status allows; anything else is a 409.
POD_ACTIONS = {
    "RUNNING": ("stop", "restart", "terminate"),
    "EXITED": ("start", "terminate"),
    "ERROR": ("start", "terminate"),
    "PROVISIONING": ("stop", "terminate"),
    "STARTING": ("stop", "terminate"),
}
TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    409: "Conflict",
    422: "Unprocessable Entity",
}


class Problem(Exception):
    """An RFC 9457 answer (oa2 `ErrorResponse`)."""

    def __init__(self, status: int, detail: str, errors: list[str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.body: dict[str, Any] = {"title": TITLES.get(status, "Error"), "status": status, "detail": detail}
        if errors:
            self.body["errors"] = errors


@dataclass
class Answer:
    status: int
    body: Any = None


def _new_id(length: int = 8) -> str:
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(length))


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check(body: Any, spec: schema.Check) -> dict[str, Any]:
    errors = schema.validate(body, spec)
    if errors:
        raise Problem(422, "Request validation failed.", errors)
    assert isinstance(body, dict)
    return body


class RestStore:
    """Templates, network volumes, serverless endpoints and pods, behind the platform's lock."""

    def __init__(
        self,
        *,
        lock: threading.Condition,
        own_endpoint: dict[str, Any],
        workers_of: Callable[[str], list[dict[str, Any]]],
    ) -> None:
        self.lock = lock
        self.base_url = ""  # set once the server has its address
        self.workers_of = workers_of
        self.templates: dict[str, dict[str, Any]] = {}
        self.volumes: dict[str, dict[str, Any]] = {}
        self.endpoints: dict[str, dict[str, Any]] = {own_endpoint["id"]: own_endpoint}
        self.pods: dict[str, dict[str, Any]] = {}

    def handle(self, method: str, parts: list[str], body: Any) -> Answer:
        """`parts` is the path after `/v2/`, e.g. `["serverless", "<id>", "workers"]`."""
        collection, rest = parts[0], parts[1:]
        with self.lock:
            route = getattr(self, f"_{collection.replace('-', '_')}_{method.lower()}_{len(rest)}", None)
            if route is None or (len(rest) == 2 and rest[1] not in {"workers", "action"}):
                raise Problem(404, f"no route {method} /v2/{'/'.join(parts)}")
            result: Answer = route(*rest, body) if method in {"POST", "PATCH"} else route(*rest)
            return result

    # ------------------------------------------------------------------------------------ templates

    def _templates_get_0(self) -> Answer:
        return Answer(200, {"templates": [copy.deepcopy(t) for t in self.templates.values()]})

    def _templates_get_1(self, template_id: str) -> Answer:
        return Answer(200, copy.deepcopy(self._template(template_id)))

    def _templates_post_0(self, body: Any) -> Answer:
        body = _check(body, schema.TEMPLATE_CREATE)
        template = {
            "id": _new_id(10),
            "args": "",
            "disk": 50,
            "mounts": {},
            "ports": [],
            "env": {},
            "registry": None,
            "category": "NVIDIA",
            "allowedCudaVersions": [],
            # oa2 `CreateTemplateRequest` defaults: serverless, public false; startSsh, startJupyter true.
            "serverless": False,
            "public": False,
            "startSsh": True,
            "startJupyter": True,
            **copy.deepcopy(body),
        }
        self.templates[template["id"]] = template
        return Answer(201, copy.deepcopy(template))

    def _templates_patch_1(self, template_id: str, body: Any) -> Answer:
        template = self._template(template_id)
        template.update(copy.deepcopy(_check(body, schema.TEMPLATE_UPDATE)))
        return Answer(200, copy.deepcopy(template))

    def _templates_delete_1(self, template_id: str) -> Answer:
        self._template(template_id)
        del self.templates[template_id]
        return Answer(204)

    def _template(self, template_id: str) -> dict[str, Any]:
        if template_id not in self.templates:
            raise Problem(404, "template not found")
        return self.templates[template_id]

    # ------------------------------------------------------------------------------ network volumes

    def _network_volumes_get_0(self) -> Answer:
        return Answer(200, {"networkVolumes": [copy.deepcopy(v) for v in self.volumes.values()]})

    def _network_volumes_get_1(self, volume_id: str) -> Answer:
        return Answer(200, copy.deepcopy(self._volume(volume_id)))

    def _network_volumes_post_0(self, body: Any) -> Answer:
        body = _check(body, schema.VOLUME_CREATE)
        volume = {"id": _new_id(10), "type": "STANDARD", **copy.deepcopy(body)}
        self.volumes[volume["id"]] = volume
        return Answer(201, copy.deepcopy(volume))

    def _network_volumes_patch_1(self, volume_id: str, body: Any) -> Answer:
        volume = self._volume(volume_id)
        body = _check(body, schema.VOLUME_UPDATE)
        if body.get("size", volume["size"]) < volume["size"]:
            # oa2 `UpdateNetworkVolumeRequest.size`: "network volume storage cannot be reduced".
            raise Problem(
                400, f"size {body['size']} GB is below the volume's {volume['size']} GB; it cannot shrink"
            )
        volume.update(body)
        return Answer(200, copy.deepcopy(volume))

    def _network_volumes_delete_1(self, volume_id: str) -> Answer:
        self._volume(volume_id)
        del self.volumes[volume_id]
        return Answer(204)

    def _volume(self, volume_id: str) -> dict[str, Any]:
        if volume_id not in self.volumes:
            raise Problem(404, "network volume not found")
        return self.volumes[volume_id]

    # ---------------------------------------------------------------------------------- endpoints

    def _serverless_get_0(self) -> Answer:
        return Answer(200, {"endpoints": [self._endpoint_document(e) for e in self.endpoints.values()]})

    def _serverless_get_1(self, endpoint_id: str) -> Answer:
        return Answer(200, self._endpoint_document(self._endpoint(endpoint_id)))

    def _serverless_get_2(self, endpoint_id: str, _workers: str) -> Answer:
        self._endpoint(endpoint_id)
        workers = self.workers_of(endpoint_id)
        summary = {key: 0 for key in ("running", "idle", "initializing", "throttled", "unhealthy")}
        for worker in workers:
            summary[worker["status"].lower()] += 1
        return Answer(
            200, {"workers": workers, "summary": {**summary, "total": len(workers)}, "endpointVersion": 1}
        )

    def _serverless_post_0(self, body: Any) -> Answer:
        body = _check(body, schema.ENDPOINT_CREATE)
        if "templateId" not in body and "image" not in body:
            raise Problem(422, "Request validation failed.", ["$: missing properties 'image'"])
        if body["type"] == "LOAD_BALANCER" and body["scaling"]["type"] != "REQUEST_COUNT":
            raise Problem(
                422, "Request validation failed.", ["$.scaling.type: value must be 'REQUEST_COUNT'"]
            )
        if ("gpu" in body) == ("cpu" in body):
            raise Problem(400, "exactly one of gpu or cpu must be set")  # oa2 createEndpoint description
        endpoint = {
            "id": _new_id(),
            "type": body["type"],
            "workers": {"min": 0, "max": 3, "idleTimeout": 10},  # oa2 `CreateEndpointRequest` defaults
            "dataCenterIds": [],
            "networkVolumes": [],
            "timeout": 300000,
            "flashboot": "OFF",
            "args": "",
            "disk": 50,
            "ports": [],
            "env": {},
            "registry": None,
            "createdAt": _now(),
        }
        self._apply_endpoint(endpoint, body)
        self.endpoints[endpoint["id"]] = endpoint
        return Answer(201, self._endpoint_document(endpoint))

    def _serverless_patch_1(self, endpoint_id: str, body: Any) -> Answer:
        endpoint = self._endpoint(endpoint_id)
        body = _check(body, schema.ENDPOINT_UPDATE)
        if "gpu" in body and "cpu" in body:
            raise Problem(400, "gpu and cpu cannot both be set")  # oa2 updateEndpoint description
        if ("cpu" in body and "gpu" in endpoint) or ("gpu" in body and "cpu" in endpoint):
            raise Problem(400, "an endpoint's compute family cannot change")
        updated = copy.deepcopy({k: v for k, v in endpoint.items() if not k.startswith("_")})
        self._apply_endpoint(updated, body)
        endpoint.update(updated)
        self.lock.notify_all()  # a raised max workers lets queued jobs go
        return Answer(200, self._endpoint_document(endpoint))

    def _serverless_delete_1(self, endpoint_id: str) -> Answer:
        self._endpoint(endpoint_id)
        del self.endpoints[endpoint_id]
        return Answer(204)

    def _endpoint(self, endpoint_id: str) -> dict[str, Any]:
        if endpoint_id not in self.endpoints:
            raise Problem(404, "endpoint not found")
        return self.endpoints[endpoint_id]

    def _apply_endpoint(self, endpoint: dict[str, Any], body: dict[str, Any]) -> None:
        """A create or a PATCH: only the fields given change (oa2 `UpdateEndpointRequest`)."""
        body = copy.deepcopy(body)
        template_id = body.pop("templateId", None)
        if template_id:
            self._resolve_template(endpoint, body, template_id)
        for key in ("name", "dataCenterIds", "timeout", "flashboot", "scaling", "cpu", *CONTAINER_KEYS):
            if key in body:
                endpoint[key] = body[key]
        if "networkVolumes" in body:
            unknown = [v for v in body["networkVolumes"] if v not in self.volumes]
            if unknown:
                raise Problem(404, f"network volume {unknown[0]} not found")
            endpoint["networkVolumes"] = body["networkVolumes"]
        if "gpu" in body:
            endpoint["gpu"] = self._gpu(
                endpoint.get("gpu"), body["gpu"], endpoint.pop("_template_cuda", None)
            )
        if "workers" in body:
            endpoint["workers"] = {**endpoint["workers"], **body["workers"]}
        self._check_idle_timeout(endpoint, body)

    def _resolve_template(self, endpoint: dict[str, Any], body: dict[str, Any], template_id: str) -> None:
        """oa2 `CreateEndpointRequest.templateId` (oa2:1750): a serverless template's container settings
        are applied once, body fields winning and `env` merged per key; no link is kept."""
        if template_id not in self.templates:
            raise Problem(404, "template not found")
        template = self.templates[template_id]
        if not template["serverless"]:
            raise Problem(422, "template is not a serverless template")
        for key in CONTAINER_KEYS:
            if key == "env":
                body["env"] = {**template["env"], **body.get("env", {})}
            elif key not in body:
                body[key] = copy.deepcopy(template[key])
        gpu = body.get("gpu") or {}
        if (
            template["allowedCudaVersions"]
            and "allowedCudaVersions" not in gpu
            and "minCudaVersion" not in gpu
        ):
            endpoint["_template_cuda"] = list(template["allowedCudaVersions"])

    def _gpu(
        self, current: dict[str, Any] | None, given: dict[str, Any], seeded: list[str] | None
    ) -> dict[str, Any]:
        gpu = (
            copy.deepcopy(current)
            if current
            else {"count": 1, "allowedCudaVersions": [], "minCudaVersion": None}
        )
        if "pools" in given:
            unknown = [pool for pool in given["pools"] if pool not in SERVERLESS_POOLS]
            if unknown:
                raise Problem(
                    400, f"unknown GPU pool {unknown[0]!r}; see GET /v2/catalog/gpus (field `pool`)"
                )
            # oa2 `BaseEndpointGpuConfig.excludedTypes`: pools sent without excludedTypes clear them.
            gpu.pop("excludedTypes", None)
        gpu.update(given)
        if gpu.get("minCudaVersion") == "":
            # oa2 `UpdateEndpointGpuConfig.minCudaVersion`: an explicit "" clears the floor; read back as
            # null (`EndpointGpuConfig.minCudaVersion`: "Null means no floor").
            gpu["minCudaVersion"] = None
        if seeded is not None:
            gpu["allowedCudaVersions"] = seeded
        if gpu.get("allowedCudaVersions") and gpu.get("minCudaVersion"):
            raise Problem(400, "allowedCudaVersions and minCudaVersion are mutually exclusive")
        return gpu

    @staticmethod
    def _check_idle_timeout(endpoint: dict[str, Any], body: dict[str, Any]) -> None:
        """oa2:1079-1083 (`EndpointWorkers.idleTimeout`): "Not applicable to queue-based endpoints scaling
        on `requestCount` — rejected on create/update and omitted from responses for that combination".
        Which status RunPod answers is not stated; the stand-in answers 400, a rule the schema cannot
        express (oa2 `BadRequestError`: "conflicts with request rules")."""
        by_request_count = (
            endpoint["type"] == "QUEUE" and endpoint.get("scaling", {}).get("type") == "REQUEST_COUNT"
        )
        if by_request_count and "idleTimeout" in body.get("workers", {}):
            raise Problem(
                400,
                "workers.idleTimeout is not applicable to a QUEUE endpoint scaling on REQUEST_COUNT; "
                "omit it, or scale on QUEUE_DELAY",
            )

    def _endpoint_document(self, endpoint: dict[str, Any]) -> dict[str, Any]:
        document = copy.deepcopy({k: v for k, v in endpoint.items() if not k.startswith("_")})
        if document["type"] == "QUEUE" and document.get("scaling", {}).get("type") == "REQUEST_COUNT":
            document["workers"].pop("idleTimeout", None)
        base = f"{self.base_url}/v2/{endpoint['id']}"
        document["requestUrls"] = {
            "run": f"{base}/run",
            "runSync": f"{base}/runsync",
            "status": f"{base}/status/{{job_id}}",
            "stream": f"{base}/stream/{{job_id}}",
            "cancel": f"{base}/cancel/{{job_id}}",
            "retry": f"{base}/retry/{{job_id}}",
            "purgeQueue": f"{base}/purge-queue",
            "health": f"{base}/health",
        }
        return document

    # --------------------------------------------------------------------------------------- pods

    def _pods_get_0(self) -> Answer:
        return Answer(200, {"pods": [copy.deepcopy(p) for p in self.pods.values()]})

    def _pods_get_1(self, pod_id: str) -> Answer:
        return Answer(200, copy.deepcopy(self._pod(pod_id)))

    def _pods_post_0(self, body: Any) -> Answer:
        body = copy.deepcopy(_check(body, schema.POD_CREATE))
        if "templateId" not in body and "image" not in body:
            raise Problem(422, "Request validation failed.", ["$: missing properties 'image'"])
        if ("gpu" in body) == ("cpu" in body):
            raise Problem(400, "exactly one of gpu or cpu must be set")  # oa2 `CreatePodRequest`
        template_id = body.pop("templateId", None)
        if template_id:
            template = self._template(template_id)
            if template["serverless"]:
                raise Problem(422, "a pod cannot use a serverless template")
            body = {**{k: copy.deepcopy(template[k]) for k in CONTAINER_KEYS}, **body}
            body["env"] = {**template["env"], **body.get("env", {})}
        pod = {
            "id": _new_id(14),
            "status": "RUNNING",  # the stand-in starts no container: a pod is running at once
            "cloud": "SECURE",
            "args": "",
            "disk": 50,
            "ports": [],
            "env": {},
            "registry": None,
            "mounts": {},
            "locked": False,
            "template": None,
            "cost": 0.0,
            "createdAt": _now(),
            "startedAt": _now(),
            **{k: v for k, v in body.items() if k not in {"startSsh", "startJupyter"}},
        }
        pod["actions"] = list(POD_ACTIONS[pod["status"]])
        self.pods[pod["id"]] = pod
        return Answer(201, copy.deepcopy(pod))

    def _pods_post_2(self, pod_id: str, _action: str, body: Any) -> Answer:
        pod = self._pod(pod_id)
        action = _check(body, schema.POD_ACTION)["action"]
        if action not in POD_ACTIONS.get(pod["status"], ()):
            raise Problem(409, f"action {action!r} is not valid for a pod that is {pod['status']}")
        if action == "terminate":
            del self.pods[pod_id]
            return Answer(204)
        pod["status"] = "EXITED" if action == "stop" else "RUNNING"
        pod["actions"] = list(POD_ACTIONS[pod["status"]])
        return Answer(200, copy.deepcopy(pod))

    def _pods_delete_1(self, pod_id: str) -> Answer:
        self._pod(pod_id)
        del self.pods[pod_id]
        return Answer(204)

    def _pod(self, pod_id: str) -> dict[str, Any]:
        if pod_id not in self.pods:
            raise Problem(404, "pod not found")
        return self.pods[pod_id]
