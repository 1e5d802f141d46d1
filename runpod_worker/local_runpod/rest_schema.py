"""Request-body checks of RunPod's REST v2 API, for the bodies the stand-in serves.

Written from the v2 OpenAPI file (runpod/docs `api-reference-v2/openapi.json`, read at docs commit
`a900806e`, cited as `oa2:<line>`): every object it declares closed (`additionalProperties: false` or
`unevaluatedProperties: false`) rejects keys it does not list, every bound and enum is checked. A body that
fails these is a 422 with the failures in `errors` (oa2 `UnprocessableEntityError`, `ErrorResponse`
`errors`: `"$: additional properties 'bogus' not allowed"`). The rules the schema states only in prose
are in `rest_v2.py`, answered 400.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

CUDA = r"^\d+\.\d+$"

Check = Callable[[Any, str], list[str]]


@dataclass(frozen=True)
class Str:
    min_length: int = 0
    pattern: str | None = None
    enum: tuple[str, ...] = ()
    nullable: bool = False

    def __call__(self, value: Any, path: str) -> list[str]:
        if value is None and self.nullable:
            return []
        if not isinstance(value, str):
            return [f"{path}: expected string, but got {_kind(value)}"]
        if self.enum and value not in self.enum:
            return [f"{path}: value must be one of {', '.join(repr(e) for e in self.enum)}"]
        if len(value) < self.min_length:
            return [f"{path}: minLength: got {len(value)}, want {self.min_length}"]
        if self.pattern and not re.search(self.pattern, value):
            return [f"{path}: {value!r} does not match pattern {self.pattern!r}"]
        return []


@dataclass(frozen=True)
class Num:
    minimum: float | None = None
    maximum: float | None = None
    integer: bool = False

    def __call__(self, value: Any, path: str) -> list[str]:
        wanted = (int,) if self.integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, wanted):
            return [f"{path}: expected {'integer' if self.integer else 'number'}, but got {_kind(value)}"]
        if self.minimum is not None and value < self.minimum:
            return [f"{path}: minimum: got {value}, want {self.minimum}"]
        if self.maximum is not None and value > self.maximum:
            return [f"{path}: maximum: got {value}, want {self.maximum}"]
        return []


@dataclass(frozen=True)
class Int(Num):
    integer: bool = True


@dataclass(frozen=True)
class Bool:
    def __call__(self, value: Any, path: str) -> list[str]:
        return [] if isinstance(value, bool) else [f"{path}: expected boolean, but got {_kind(value)}"]


@dataclass(frozen=True)
class List:
    items: Check
    min_items: int = 0
    max_items: int | None = None
    unique: bool = False

    def __call__(self, value: Any, path: str) -> list[str]:
        if not isinstance(value, list):
            return [f"{path}: expected array, but got {_kind(value)}"]
        if len(value) < self.min_items:
            return [f"{path}: minItems: got {len(value)}, want {self.min_items}"]
        if self.max_items is not None and len(value) > self.max_items:
            return [f"{path}: maxItems: got {len(value)}, want {self.max_items}"]
        if self.unique and len({repr(item) for item in value}) != len(value):
            return [f"{path}: items are not unique"]
        return [error for index, item in enumerate(value) for error in self.items(item, f"{path}[{index}]")]


@dataclass(frozen=True)
class StrMap:
    def __call__(self, value: Any, path: str) -> list[str]:
        if not isinstance(value, dict):
            return [f"{path}: expected object, but got {_kind(value)}"]
        return [
            f"{path}.{key}: expected string, but got {_kind(v)}"
            for key, v in value.items()
            if not isinstance(v, str)
        ]


@dataclass(frozen=True)
class Obj:
    fields: dict[str, Check]
    required: tuple[str, ...] = ()
    closed: bool = True
    min_properties: int = 0
    # `dependentRequired`: a key that may only come with others (oa2 `UpdateEndpointGpuConfig`).
    depends: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def __call__(self, value: Any, path: str) -> list[str]:
        if not isinstance(value, dict):
            return [f"{path}: expected object, but got {_kind(value)}"]
        errors: list[str] = []
        missing = [key for key in self.required if key not in value]
        if missing:
            errors.append(f"{path}: missing properties {', '.join(repr(key) for key in missing)}")
        extra = [key for key in value if key not in self.fields]
        if self.closed and extra:
            errors.append(
                f"{path}: additional properties {', '.join(repr(key) for key in extra)} not allowed"
            )
        if len(value) < self.min_properties:
            errors.append(f"{path}: minProperties: got {len(value)}, want {self.min_properties}")
        for key, needs in self.depends.items():
            if key in value and any(need not in value for need in needs):
                errors.append(f"{path}: property {key!r} requires {', '.join(repr(n) for n in needs)}")
        for key, check in self.fields.items():
            if key in value:
                errors.extend(check(value[key], f"{path}.{key}"))
        return errors

    def extended(self, fields: dict[str, Check], required: tuple[str, ...] = ()) -> Obj:
        return Obj({**self.fields, **fields}, required=required, closed=self.closed)


@dataclass(frozen=True)
class OneOf:
    """A union told apart by its `type` key (oa2 `EndpointScaling`'s discriminator)."""

    variants: dict[str, Obj]

    def __call__(self, value: Any, path: str) -> list[str]:
        if not isinstance(value, dict):
            return [f"{path}: expected object, but got {_kind(value)}"]
        variant = self.variants.get(str(value.get("type")))
        if variant is None:
            return [f"{path}.type: value must be one of {', '.join(repr(k) for k in self.variants)}"]
        return variant(value, path)


@dataclass(frozen=True)
class AnyValue:
    def __call__(self, value: Any, path: str) -> list[str]:
        return []


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "array",
        dict: "object",
    }.get(type(value), type(value).__name__)


# ------------------------------------------------------------------------------------------ schemas

# oa2 `BaseContainerConfig` and `ContainerConfig` (templates, pods and endpoints share them).
CONTAINER = Obj(
    {
        "args": Str(),
        "disk": Int(minimum=1),
        "env": StrMap(),
        "image": Str(),
        "ports": List(Str()),
        "registry": Str(nullable=True),
    }
)
PERSISTENT_MOUNT = Obj({"size": Int(minimum=10), "path": Str()}, required=("size", "path"))
# oa2 `TemplateMounts`: a `network` mount on a template is a 422.
TEMPLATE_MOUNTS = Obj({"persistent": PERSISTENT_MOUNT})
POD_MOUNTS = Obj(
    {
        "persistent": PERSISTENT_MOUNT,
        "network": List(Obj({"volumeId": Str(), "path": Str()}, required=("volumeId", "path")), max_items=1),
    }
)
_TEMPLATE_FIELDS: dict[str, Check] = {
    "name": Str(min_length=1),
    "allowedCudaVersions": List(Str(pattern=CUDA)),
    "category": Str(enum=("CPU", "NVIDIA", "AMD")),
    "mounts": TEMPLATE_MOUNTS,
    "public": Bool(),
    "serverless": Bool(),
    "startJupyter": Bool(),
    "startSsh": Bool(),
}
# oa2 `CreateTemplateRequest` (oa2:2918) and `UpdateTemplateRequest`.
TEMPLATE_CREATE = CONTAINER.extended(_TEMPLATE_FIELDS, required=("name", "image"))
TEMPLATE_UPDATE = CONTAINER.extended(_TEMPLATE_FIELDS)

# oa2 `CreateNetworkVolumeRequest` (oa2:3101) and `UpdateNetworkVolumeRequest` (oa2:3145).
VOLUME_CREATE = Obj(
    {
        "dataCenter": Str(min_length=1),
        "name": Str(min_length=1),
        "size": Int(minimum=10, maximum=4096),
        "type": Str(enum=("STANDARD", "HIGH_PERFORMANCE")),
    },
    required=("name", "size", "dataCenter"),
)
VOLUME_UPDATE = Obj({"name": Str(min_length=1), "size": Int(minimum=10, maximum=4096)}, min_properties=1)

# oa2 `EndpointWorkers` (oa2:1059), `QueueDelayScaling` (oa2:1090), `RequestCountScaling` (oa2:1117).
WORKERS = Obj({"min": Int(minimum=0), "max": Int(minimum=0), "idleTimeout": Int(minimum=1, maximum=3600)})
QUEUE_DELAY = Obj(
    {"type": Str(enum=("QUEUE_DELAY",)), "queueDelay": Num(minimum=0.5)}, required=("type", "queueDelay")
)
REQUEST_COUNT = Obj(
    {"type": Str(enum=("REQUEST_COUNT",)), "requestCount": Int(minimum=1)}, required=("type", "requestCount")
)
SCALING = OneOf({"QUEUE_DELAY": QUEUE_DELAY, "REQUEST_COUNT": REQUEST_COUNT})
_GPU_FIELDS: dict[str, Check] = {
    "pools": List(Str(), min_items=1),
    "excludedTypes": List(Str(pattern=r"^\s*[^-\s]"), unique=True),
    "count": Int(minimum=1),
    "allowedCudaVersions": List(Str(pattern=CUDA)),
}
# oa2 `CreateEndpointGpuConfig` and `UpdateEndpointGpuConfig` (`excludedTypes` requires `pools`).
GPU_CREATE = Obj({**_GPU_FIELDS, "minCudaVersion": Str(pattern=CUDA)}, required=("pools",))
GPU_UPDATE = Obj(
    {**_GPU_FIELDS, "minCudaVersion": Str(pattern=r"^$|^\d+\.\d+$")}, depends={"excludedTypes": ("pools",)}
)
FLASHBOOT = Str(enum=("OFF", "FLASHBOOT", "PRIORITY_FLASHBOOT"))
ENDPOINT_TYPE = Str(enum=("QUEUE", "LOAD_BALANCER"))
_ENDPOINT_FIELDS: dict[str, Check] = {
    "cpu": List(AnyValue(), min_items=1, unique=True),
    "dataCenterIds": List(Str()),
    "flashboot": FLASHBOOT,
    "name": Str(min_length=1),
    "networkVolumes": List(Str()),
    "scaling": SCALING,
    "timeout": Int(),
    "workers": WORKERS,
}
# oa2 `CreateEndpointRequest` (oa2:1669) and `UpdateEndpointRequest` (oa2:1802); `type` is create-only.
ENDPOINT_CREATE = CONTAINER.extended(
    {**_ENDPOINT_FIELDS, "gpu": GPU_CREATE, "type": ENDPOINT_TYPE, "templateId": Str(min_length=1)},
    required=("name", "type", "scaling"),
)
ENDPOINT_UPDATE = CONTAINER.extended({**_ENDPOINT_FIELDS, "gpu": GPU_UPDATE, "templateId": Str()})

# oa2 `CreatePodRequest` (oa2:2327) and `PodActionRequest` (oa2:2460).
POD_GPU = Obj(
    {
        "id": Str(),
        "count": Int(minimum=1),
        "allowedCudaVersions": List(Str(pattern=CUDA)),
        "minCudaVersion": Str(pattern=CUDA),
    },
    required=("id",),
)
POD_CREATE = CONTAINER.extended(
    {
        "name": Str(min_length=1),
        "cloud": Str(enum=("SECURE", "COMMUNITY")),
        "cpu": AnyValue(),
        "dataCenterIds": List(Str()),
        "globalNetworking": Bool(),
        "gpu": POD_GPU,
        "mounts": POD_MOUNTS,
        "startJupyter": Bool(),
        "startSsh": Bool(),
        "templateId": Str(min_length=1),
    },
    required=("name",),
)
POD_ACTION = Obj({"action": Str(enum=("start", "stop", "restart", "terminate"))}, required=("action",))


def validate(body: Any, schema: Check) -> list[str]:
    return schema(body, "$")
