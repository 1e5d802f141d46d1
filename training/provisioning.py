"""The RunPod side as code: what the settings say should exist, what RunPod has, and the steps between.

    desired = desired_state(environ=os.environ)
    plan = plan_changes(client, desired)          # reads only
    print("\\n".join(render(plan)))
    ids = apply_plan(client, plan)              # creates and PATCHes, in order

Three resources, found again by name (so a second run changes nothing): the serverless template (image,
container disk, env, `serverless: true`), the network volume (size, data centre; optional) and the QUEUE
endpoint (GPU pools, workers, scaling, execution timeout, FlashBoot, the volume). Bodies follow RunPod's
REST v2 schema (docs `api-reference-v2/openapi.json`, oa2): an endpoint resolves its template once, at
create time (oa2:1750), so a changed template is applied again by PATCHing the endpoint's `templateId`; a
volume grows but never shrinks nor moves (oa2:3145, `NetworkVolume.dataCenter` immutable); an endpoint's
`type` cannot change (not in oa2 `UpdateEndpointRequest`).

Secrets: the worker env names in `RUNPOD_WORKER_SECRET_ENV` take their values from the environment given
(the command's own, never its arguments), and `render` never shows an env value it was not told is plain.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from training import gpu_pools
from training.runpod_rest import RunPodRestClient

HIDDEN = "(value hidden)"
CUDA_VERSION = re.compile(r"\d+\.\d+")  # oa2 `CreateEndpointGpuConfig.minCudaVersion` pattern
# RunPod's limits on an execution timeout (docs serverless/endpoints/send-requests.mdx:116).
TIMEOUT_LIMITS_MS = (5_000, 7 * 24 * 3600 * 1000)
NEW_TEMPLATE_ID = "(the template above)"
NEW_VOLUME_ID = "(the volume above)"


class ProvisionError(Exception):
    """The settings or RunPod's state do not allow a plan; the message says what to change."""


@dataclass(frozen=True)
class Desired:
    template: dict[str, Any]
    volume: dict[str, Any] | None
    endpoint: dict[str, Any]
    plain_env: frozenset[str]


@dataclass(frozen=True)
class FieldChange:
    path: str
    old: Any
    new: Any


@dataclass
class Step:
    kind: str  # "template", "network volume", "endpoint"
    name: str
    action: str  # "create", "update", "unchanged"
    id: str | None
    body: dict[str, Any]  # the create body, or the PATCH
    changes: list[FieldChange] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class Plan:
    steps: list[Step]
    plain_env: frozenset[str]

    @property
    def drift(self) -> bool:
        return any(step.action != "unchanged" for step in self.steps)

    def step(self, kind: str) -> Step | None:
        return next((step for step in self.steps if step.kind == kind), None)


# ------------------------------------------------------------------------------------------ desired


def desired_state(*, environ: Mapping[str, str]) -> Desired:
    """What the settings ask for; raises ProvisionError naming the setting to fix."""
    name = settings.RUNPOD_PROVISION_NAME
    if not settings.RUNPOD_WORKER_IMAGE:
        raise ProvisionError("RUNPOD_WORKER_IMAGE is not set: set it to the worker image to deploy.")
    plain = {str(k): str(v) for k, v in settings.RUNPOD_WORKER_ENV.items()}
    template = {
        "name": f"{name}-worker",
        "image": settings.RUNPOD_WORKER_IMAGE,
        "serverless": True,
        "disk": settings.RUNPOD_WORKER_DISK_GB,
        "env": {**plain, **_secrets(environ)},
        # Pod-only start-up helpers, true by default in oa2 `CreateTemplateRequest`; an endpoint ignores them.
        "startSsh": False,
        "startJupyter": False,
    }
    volume = None
    if settings.RUNPOD_NETWORK_VOLUME_DATA_CENTER:
        volume = {
            "name": f"{name}-cache",
            "size": settings.RUNPOD_NETWORK_VOLUME_GB,
            "dataCenter": settings.RUNPOD_NETWORK_VOLUME_DATA_CENTER,
        }
    scaling = _scaling()
    endpoint = {
        "name": name,
        "type": "QUEUE",
        "gpu": {"pools": _pools(), "count": 1, **_cuda()},
        "workers": _workers(scaling),
        "scaling": scaling,
        "timeout": _timeout_ms(),
        "flashboot": settings.RUNPOD_FLASHBOOT,
    }
    return Desired(template=template, volume=volume, endpoint=endpoint, plain_env=frozenset(plain))


def _secrets(environ: Mapping[str, str]) -> dict[str, str]:
    missing = [key for key in settings.RUNPOD_WORKER_SECRET_ENV if not environ.get(key)]
    if missing:
        raise ProvisionError(
            f"{', '.join(missing)} must be set in this command's environment (not on its command line): "
            f"export it, or set it to {{{{ RUNPOD_SECRET_<name> }}}} to use a RunPod secret."
        )
    return {key: environ[key] for key in settings.RUNPOD_WORKER_SECRET_ENV}


def _pools() -> list[str]:
    try:
        return [pool.id for pool in gpu_pools.endpoint_pools()]
    except ImproperlyConfigured as exc:
        raise ProvisionError(str(exc)) from exc


def _cuda() -> dict[str, Any]:
    """Hosts whose CUDA the worker image can use: a floor, oa2 `CreateEndpointGpuConfig.minCudaVersion`
    ("Lowest acceptable CUDA version for worker placement, as `major.minor`"), with `allowedCudaVersions: []`
    sent beside it, which "states no constraint" and clears an exact set left on the endpoint (a floor and a
    non-empty set are refused together; setting one does not clear the other, `UpdateEndpointGpuConfig`)."""
    floor = str(settings.RUNPOD_MIN_CUDA_VERSION).strip()
    if not floor:
        return {}
    if not CUDA_VERSION.fullmatch(floor):
        raise ProvisionError(f"RUNPOD_MIN_CUDA_VERSION must be major.minor, such as 13.0; it is {floor!r}.")
    return {"minCudaVersion": floor, "allowedCudaVersions": []}


def _scaling() -> dict[str, Any]:
    """oa2 `QueueDelayScaling` (queueDelay >= 0.5) or `RequestCountScaling` (requestCount >= 1)."""
    kind, value = settings.RUNPOD_SCALER_TYPE, settings.RUNPOD_SCALER_VALUE
    if kind == "QUEUE_DELAY" and value >= 0.5:
        return {"type": kind, "queueDelay": value}
    if kind == "REQUEST_COUNT" and value >= 1 and float(value).is_integer():
        return {"type": kind, "requestCount": int(value)}
    raise ProvisionError(
        "RUNPOD_SCALER_TYPE/RUNPOD_SCALER_VALUE must be QUEUE_DELAY with seconds >= 0.5, or REQUEST_COUNT "
        f"with a whole number >= 1; they are {kind} and {value}."
    )


def _workers(scaling: dict[str, Any]) -> dict[str, Any]:
    low, high, idle = (
        settings.RUNPOD_WORKERS_MIN,
        settings.RUNPOD_WORKERS_MAX,
        settings.RUNPOD_IDLE_TIMEOUT_SECONDS,
    )
    if not 0 <= low <= high or high < 1:
        raise ProvisionError(
            f"RUNPOD_WORKERS_MIN ({low}) and RUNPOD_WORKERS_MAX ({high}) must satisfy 0 <= min <= max and "
            "max >= 1: with max workers 0 no run ever starts."
        )
    workers: dict[str, Any] = {"min": low, "max": high}
    # oa2:1079-1083: idleTimeout is refused on a queue endpoint scaling by request count.
    if scaling["type"] == "QUEUE_DELAY":
        if not 1 <= idle <= 3600:
            raise ProvisionError(f"RUNPOD_IDLE_TIMEOUT_SECONDS must be 1-3600 seconds; it is {idle}.")
        workers["idleTimeout"] = idle
    return workers


def _timeout_ms() -> int:
    timeout = int(settings.TRAINING_EXECUTION_TIMEOUT_SECONDS) * 1000
    low, high = TIMEOUT_LIMITS_MS
    if not low <= timeout <= high:
        raise ProvisionError("TRAINING_EXECUTION_TIMEOUT_SECONDS must be between 5 seconds and 7 days.")
    return timeout


# --------------------------------------------------------------------------------------------- plan


def plan_changes(client: RunPodRestClient, desired: Desired) -> Plan:
    """Reads RunPod and compares; changes nothing."""
    steps = []
    volume = _plan_volume(client, desired.volume) if desired.volume else None
    if volume:
        steps.append(volume)
    template = _plan_template(client, desired.template)
    steps.append(template)
    steps.append(_plan_endpoint(client, desired, template, volume))
    return Plan(steps=steps, plain_env=desired.plain_env)


def _named(items: list[dict[str, Any]], name: str, kind: str) -> dict[str, Any] | None:
    found = [item for item in items if item.get("name") == name]
    if len(found) > 1:
        ids = ", ".join(str(item.get("id")) for item in found)
        raise ProvisionError(f"RunPod has {len(found)} {kind}s named {name!r} ({ids}): delete all but one.")
    return found[0] if found else None


def _plan_volume(client: RunPodRestClient, want: dict[str, Any]) -> Step:
    have = _named(client.list_network_volumes(), want["name"], "network volume")
    if have is None:
        return Step("network volume", want["name"], "create", None, dict(want))
    if have.get("dataCenter") != want["dataCenter"]:
        raise ProvisionError(
            f"The network volume {want['name']!r} ({have['id']}) is in {have.get('dataCenter')}, but "
            f"RUNPOD_NETWORK_VOLUME_DATA_CENTER is {want['dataCenter']}: a volume cannot move. Set the data "
            "centre back, or delete the volume in RunPod's console to make a new one."
        )
    step = Step("network volume", want["name"], "unchanged", have["id"], {})
    if want["size"] > have.get("size", 0):
        step.action, step.body = "update", {"size": want["size"]}
        step.changes.append(FieldChange("size", have.get("size"), want["size"]))
    elif want["size"] < have.get("size", 0):
        step.notes.append(
            f"it has {have['size']} GB, more than the {want['size']} GB asked: a volume never shrinks"
        )
    return step


def _plan_template(client: RunPodRestClient, want: dict[str, Any]) -> Step:
    have = _named(client.list_templates(), want["name"], "template")
    if have is None:
        return Step("template", want["name"], "create", None, dict(want))
    changes = _differences(
        have, want, keys=("image", "disk", "serverless", "startSsh", "startJupyter", "env")
    )
    patch = {key: want[key] for key in {change.path.split(".")[0] for change in changes}}
    return Step("template", want["name"], "update" if changes else "unchanged", have["id"], patch, changes)


def _plan_endpoint(client: RunPodRestClient, desired: Desired, template: Step, volume: Step | None) -> Step:
    want = {**desired.endpoint, "networkVolumes": [volume.id or NEW_VOLUME_ID] if volume else []}
    have = _named(client.list_endpoints(), want["name"], "endpoint")
    if have is None:
        return Step(
            "endpoint", want["name"], "create", None, {**want, "templateId": template.id or NEW_TEMPLATE_ID}
        )
    if have.get("type") != want["type"]:
        raise ProvisionError(
            f"The endpoint {want['name']!r} ({have['id']}) is a {have.get('type')} endpoint and its "
            "type cannot change: delete it in RunPod's console, or set another RUNPOD_PROVISION_NAME, "
            "to make a QUEUE one."
        )
    container = {key: desired.template[key] for key in ("image", "disk", "env")}
    changes = _differences(have, {**want, **container}, keys=(*want, *container))
    groups = {change.path.split(".")[0] for change in changes}
    patch = {key: want[key] for key in groups if key in want}
    if groups & set(container):
        # The endpoint took the template's settings once, at create: apply the template again.
        patch["templateId"] = template.id or NEW_TEMPLATE_ID
    return Step("endpoint", want["name"], "update" if changes else "unchanged", have["id"], patch, changes)


def _differences(
    have: Mapping[str, Any], want: Mapping[str, Any], *, keys: tuple[str, ...]
) -> list[FieldChange]:
    changes = []
    for key in keys:
        if key in ("type", "name"):
            continue
        old, new = have.get(key), want.get(key)
        if isinstance(new, dict):
            old = old if isinstance(old, dict) else {}
            wanted_keys = list(new) if key != "env" else sorted({*new, *old})
            changes += [
                FieldChange(f"{key}.{sub}", old.get(sub), new.get(sub))
                for sub in wanted_keys
                if not _same(old.get(sub), new.get(sub))
            ]
        elif not _same(old, new):
            changes.append(FieldChange(key, old, new))
    return changes


def _same(old: Any, new: Any) -> bool:
    if isinstance(old, int | float) and isinstance(new, int | float) and not isinstance(old, bool):
        return float(old) == float(new)
    return bool(old == new)


# -------------------------------------------------------------------------------------------- apply


def apply_plan(client: RunPodRestClient, plan: Plan) -> dict[str, str]:
    """Creates and PATCHes in order (volume, template, endpoint); returns every resource's id by kind."""
    ids: dict[str, str] = {}
    for step in plan.steps:
        body = _filled(step.body, ids)
        if step.action == "create":
            step.id = str(_create(client, step.kind, body)["id"])
        elif step.action == "update":
            assert step.id is not None
            _update(client, step.kind, step.id, body)
        assert step.id is not None
        ids[step.kind] = step.id
    return ids


def _filled(body: dict[str, Any], ids: dict[str, str]) -> dict[str, Any]:
    filled = dict(body)
    if filled.get("templateId") == NEW_TEMPLATE_ID:
        filled["templateId"] = ids["template"]
    if filled.get("networkVolumes") == [NEW_VOLUME_ID]:
        filled["networkVolumes"] = [ids["network volume"]]
    return filled


def _create(client: RunPodRestClient, kind: str, body: dict[str, Any]) -> dict[str, Any]:
    create = {
        "template": client.create_template,
        "network volume": client.create_network_volume,
        "endpoint": client.create_endpoint,
    }[kind]
    return create(body)


def _update(client: RunPodRestClient, kind: str, resource_id: str, body: dict[str, Any]) -> dict[str, Any]:
    update = {
        "template": client.update_template,
        "network volume": client.update_network_volume,
        "endpoint": client.update_endpoint,
    }[kind]
    return update(resource_id, body)


# ------------------------------------------------------------------------------------------- render


def render(plan: Plan) -> list[str]:
    """The plan as a diff: `+` to create, `~` to change, `=` unchanged; env values hidden unless plain."""
    marks = {"create": "+", "update": "~", "unchanged": "="}
    lines = []
    for step in plan.steps:
        mark = marks[step.action]
        named = f"{step.kind} {step.name}" + (f" ({step.id})" if step.id else "")
        lines.append(f"{mark} {named}: {step.action}")
        if step.action == "create":
            lines += [f"{mark}     {path}: {_shown(path, value, plan)}" for path, value in _flat(step.body)]
        lines += [
            f"{mark}     {c.path}: {_shown(c.path, c.old, plan)} -> {_shown(c.path, c.new, plan)}"
            for c in step.changes
        ]
        lines += [f"{mark}     note: {note}" for note in step.notes]
    return lines


def _flat(body: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for key, value in sorted(body.items()):
        if isinstance(value, dict) and value:
            items += _flat(value, f"{prefix}{key}.")
        else:
            items.append((f"{prefix}{key}", value))
    return items


def _shown(path: str, value: Any, plan: Plan) -> str:
    if value is None:
        return "(none)"
    if path.startswith("env.") and path[4:] not in plan.plain_env:
        return HIDDEN
    return repr(value)
