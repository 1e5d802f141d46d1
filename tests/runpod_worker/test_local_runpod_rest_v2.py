"""The stand-in's REST v2 subset answers as RunPod's v2 OpenAPI file says (runpod/docs
api-reference-v2/openapi.json, cited as oa2): wrapped lists, 201 on create, PATCH of the fields given,
bodies checked against the schema (422) and its prose rules (400), RFC 9457 problems."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.support.grouping import in_one_process
from tests.support.local_runpod import LocalRunPod

pytestmark = [pytest.mark.integration, in_one_process(__name__)]

QUEUE_ENDPOINT = {
    "name": "lora-training",
    "type": "QUEUE",
    "gpu": {"pools": ["AMPERE_80", "ADA_24"], "count": 1},
    "workers": {"min": 0, "max": 3, "idleTimeout": 5},
    "scaling": {"type": "QUEUE_DELAY", "queueDelay": 4},
    "timeout": 10_800_000,
    "flashboot": "FLASHBOOT",
}


@pytest.fixture(scope="module")
def runpod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRunPod]:
    with LocalRunPod(workdir=tmp_path_factory.mktemp("local-runpod-rest"), workers=0) as stand_in:
        yield stand_in


class Rest:
    def __init__(self, runpod: LocalRunPod) -> None:
        self.base = runpod.rest_url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {runpod.api_key}"

    def __call__(self, method: str, path: str, body: Any = None) -> requests.Response:
        return self.session.request(method, f"{self.base}{path}", json=body, timeout=10)


@pytest.fixture
def rest(runpod: LocalRunPod) -> Rest:
    return Rest(runpod)


def problem(response: requests.Response, status: int) -> dict[str, Any]:
    """An RFC 9457 problem (oa2 `ErrorResponse`): title, status, detail, maybe errors."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/problem+json"
    body = dict(response.json())
    assert {"title", "status", "detail"} <= set(body) and body["status"] == status
    return body


def serverless_template(rest: Rest, **fields: Any) -> dict[str, Any]:
    body = {"name": "worker", "image": "ghcr.io/org/lora-worker:1", "serverless": True, "disk": 50, **fields}
    response = rest("POST", "/templates", body)
    assert response.status_code == 201, response.text
    return dict(response.json())


# ------------------------------------------------------------------------------------------ endpoints


def test_the_readme_recipe_before_b1_is_rejected_idle_timeout_with_request_count_on_a_queue_endpoint(
    rest: Rest,
) -> None:
    # oa2:1079-1083: idleTimeout is "not applicable to queue-based endpoints scaling on requestCount —
    # rejected on create/update".
    body = {**QUEUE_ENDPOINT, "scaling": {"type": "REQUEST_COUNT", "requestCount": 1}}

    refused = problem(rest("POST", "/serverless", {**body, "image": "img:1"}), 400)

    assert "idleTimeout" in refused["detail"]
    assert not [e for e in rest("GET", "/serverless").json()["endpoints"] if e["name"] == "lora-training"]


def test_request_count_scaling_without_an_idle_timeout_is_accepted_and_shows_none(rest: Rest) -> None:
    body = {**QUEUE_ENDPOINT, "image": "img:1", "scaling": {"type": "REQUEST_COUNT", "requestCount": 1}}
    body["workers"] = {"min": 0, "max": 2}

    created = rest("POST", "/serverless", body)

    assert created.status_code == 201, created.text
    assert created.json()["workers"] == {"min": 0, "max": 2}


def test_an_endpoint_from_a_serverless_template_takes_its_container_settings_once(rest: Rest) -> None:
    template = serverless_template(rest, env={"HF_TOKEN": "t", "A": "template"})

    response = rest(
        "POST", "/serverless", {**QUEUE_ENDPOINT, "templateId": template["id"], "env": {"A": "body"}}
    )

    assert response.status_code == 201, response.text
    endpoint = response.json()
    assert (endpoint["image"], endpoint["disk"]) == ("ghcr.io/org/lora-worker:1", 50)
    assert endpoint["env"] == {"HF_TOKEN": "t", "A": "body"}  # merged per key, the body winning
    assert endpoint["gpu"]["pools"] == ["AMPERE_80", "ADA_24"]
    assert endpoint["requestUrls"]["health"].endswith(f"/v2/{endpoint['id']}/health")
    assert "templateId" not in endpoint
    rest("PATCH", f"/templates/{template['id']}", {"image": "ghcr.io/org/lora-worker:2"})
    assert rest("GET", f"/serverless/{endpoint['id']}").json()["image"] == "ghcr.io/org/lora-worker:1"


def test_a_pod_template_cannot_make_an_endpoint(rest: Rest) -> None:
    template = serverless_template(rest, serverless=False)

    problem(rest("POST", "/serverless", {**QUEUE_ENDPOINT, "templateId": template["id"]}), 422)
    problem(rest("POST", "/serverless", {**QUEUE_ENDPOINT, "templateId": "no-such-template"}), 404)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"bogus": 1}, "$: additional properties 'bogus' not allowed"),
        ({"workers": {"max": -1}}, "$.workers.max: minimum: got -1, want 0"),
        (
            {"scaling": {"type": "QUEUE_DELAY", "queueDelay": 0.1}},
            "$.scaling.queueDelay: minimum: got 0.1, want 0.5",
        ),
        ({"flashboot": True}, "$.flashboot: expected string, but got boolean"),
        ({"image": None}, "$.image: expected string, but got null"),
        ({"type": "SOMETHING"}, "$.type: value must be one of 'QUEUE', 'LOAD_BALANCER'"),
    ],
)
def test_a_body_the_schema_refuses_is_a_422_naming_the_field(
    rest: Rest, change: dict[str, Any], error: str
) -> None:
    refused = problem(rest("POST", "/serverless", {**QUEUE_ENDPOINT, "image": "img:1", **change}), 422)

    assert error in refused["errors"]


def test_an_endpoint_without_an_image_or_template_is_a_422(rest: Rest) -> None:
    refused = problem(rest("POST", "/serverless", QUEUE_ENDPOINT), 422)

    assert "$: missing properties 'image'" in refused["errors"]


def test_an_unknown_gpu_pool_is_refused(rest: Rest) -> None:
    body = {**QUEUE_ENDPOINT, "image": "img:1", "gpu": {"pools": ["RTX_4090"]}}

    assert "RTX_4090" in problem(rest("POST", "/serverless", body), 400)["detail"]


def test_patch_changes_only_the_fields_it_names(rest: Rest) -> None:
    created = rest("POST", "/serverless", {**QUEUE_ENDPOINT, "image": "img:1"}).json()

    patched = rest("PATCH", f"/serverless/{created['id']}", {"workers": {"max": 5}})

    assert patched.status_code == 200, patched.text
    after = rest("GET", f"/serverless/{created['id']}").json()
    assert after["workers"] == {"min": 0, "max": 5, "idleTimeout": 5}
    assert {k: v for k, v in after.items() if k != "workers"} == {
        k: v for k, v in created.items() if k != "workers"
    }
    problem(rest("PATCH", f"/serverless/{created['id']}", {"type": "LOAD_BALANCER"}), 422)


def test_patching_pools_without_excluded_types_clears_them(rest: Rest) -> None:
    # oa2 `BaseEndpointGpuConfig.excludedTypes`: "a PATCH sending pools without excludedTypes clears them".
    body = {
        **QUEUE_ENDPOINT,
        "image": "img:1",
        "gpu": {"pools": ["ADA_48_PRO"], "excludedTypes": ["NVIDIA L40"]},
    }
    created = rest("POST", "/serverless", body).json()

    patched = rest("PATCH", f"/serverless/{created['id']}", {"gpu": {"pools": ["ADA_48_PRO"]}}).json()

    assert created["gpu"]["excludedTypes"] == ["NVIDIA L40"]
    assert "excludedTypes" not in patched["gpu"]
    problem(rest("PATCH", f"/serverless/{created['id']}", {"gpu": {"excludedTypes": ["NVIDIA L40"]}}), 422)


def test_a_cuda_floor_is_kept_and_an_empty_string_clears_it_to_null(rest: Rest) -> None:
    # oa2 `CreateEndpointGpuConfig.minCudaVersion` (a `major.minor` floor), `UpdateEndpointGpuConfig`: "An
    # explicit "" clears the floor"; `EndpointGpuConfig.minCudaVersion`: "Null means no floor".
    body = {**QUEUE_ENDPOINT, "image": "img:1"}
    body["gpu"] = {**QUEUE_ENDPOINT["gpu"], "minCudaVersion": "13.0", "allowedCudaVersions": []}
    created = rest("POST", "/serverless", body).json()

    cleared = rest("PATCH", f"/serverless/{created['id']}", {"gpu": {"minCudaVersion": ""}}).json()

    assert (created["gpu"]["minCudaVersion"], created["gpu"]["allowedCudaVersions"]) == ("13.0", [])
    assert cleared["gpu"]["minCudaVersion"] is None
    both = {"gpu": {"minCudaVersion": "13.0", "allowedCudaVersions": ["12.8"]}}
    problem(rest("PATCH", f"/serverless/{created['id']}", both), 400)


def test_the_stand_ins_own_endpoint_is_listed_and_deleting_it_makes_its_job_api_answer_404(
    tmp_path: Any,
) -> None:
    with LocalRunPod(workdir=tmp_path, workers=0) as runpod:
        rest = Rest(runpod)
        listed = [e["id"] for e in rest("GET", "/serverless").json()["endpoints"]]
        health = runpod.session.get(f"{runpod.api_url}/health", timeout=10)
        workers = rest("GET", f"/serverless/{runpod.endpoint_id}/workers").json()
        deleted = rest("DELETE", f"/serverless/{runpod.endpoint_id}")
        gone = runpod.session.get(f"{runpod.api_url}/health", timeout=10)

    assert runpod.endpoint_id in listed and health.status_code == 200
    assert workers["workers"] == [] and workers["summary"]["total"] == 0
    assert deleted.status_code == 204
    assert gone.status_code == 404  # as RunPod answers a wrong or deleted endpoint id


def test_an_unknown_key_gets_a_401_problem(runpod: LocalRunPod) -> None:
    response = requests.get(
        f"{runpod.rest_url}/serverless", headers={"Authorization": "Bearer nope"}, timeout=10
    )

    problem(response, 401)


# -------------------------------------------------------------------------------- templates, volumes


def test_a_template_lists_wrapped_and_defaults_as_the_schema_says(rest: Rest) -> None:
    response = rest("POST", "/templates", {"name": "pod-template", "image": "img:1"})

    assert response.status_code == 201
    template = response.json()
    assert (template["serverless"], template["startSsh"], template["category"]) == (False, True, "NVIDIA")
    assert template["id"] in [t["id"] for t in rest("GET", "/templates").json()["templates"]]


def test_a_template_takes_no_network_mount(rest: Rest) -> None:
    body = {
        "name": "t",
        "image": "img:1",
        "mounts": {"network": [{"volumeId": "v", "path": "/runpod-volume"}]},
    }

    assert (
        "$.mounts: additional properties 'network' not allowed"
        in problem(rest("POST", "/templates", body), 422)["errors"]
    )


def test_a_network_volume_grows_but_never_shrinks(rest: Rest) -> None:
    volume = rest(
        "POST", "/network-volumes", {"name": "hf-cache", "size": 100, "dataCenter": "US-KS-2"}
    ).json()

    grown = rest("PATCH", f"/network-volumes/{volume['id']}", {"size": 150})
    shrunk = rest("PATCH", f"/network-volumes/{volume['id']}", {"size": 120})

    assert (volume["type"], grown.json()["size"]) == ("STANDARD", 150)
    assert "cannot shrink" in problem(shrunk, 400)["detail"]
    assert volume["id"] in [v["id"] for v in rest("GET", "/network-volumes").json()["networkVolumes"]]
    problem(rest("POST", "/network-volumes", {"name": "x", "size": 5, "dataCenter": "US-KS-2"}), 422)


# ------------------------------------------------------------------------------------------------ pods


def test_a_pod_moves_through_the_actions_its_status_allows(rest: Rest) -> None:
    # oa2 `podAction`: RUNNING allows stop/restart/terminate, EXITED start/terminate; anything else is 409.
    pod = rest(
        "POST", "/pods", {"name": "ai-toolkit", "image": "img:1", "gpu": {"id": "NVIDIA A100 80GB PCIe"}}
    ).json()

    stopped = rest("POST", f"/pods/{pod['id']}/action", {"action": "stop"}).json()
    again = rest("POST", f"/pods/{pod['id']}/action", {"action": "stop"})
    started = rest("POST", f"/pods/{pod['id']}/action", {"action": "start"}).json()
    terminated = rest("POST", f"/pods/{pod['id']}/action", {"action": "terminate"})

    assert (pod["status"], pod["actions"]) == ("RUNNING", ["stop", "restart", "terminate"])
    assert (stopped["status"], stopped["actions"]) == ("EXITED", ["start", "terminate"])
    problem(again, 409)
    assert started["status"] == "RUNNING"
    assert terminated.status_code == 204
    problem(rest("GET", f"/pods/{pod['id']}"), 404)


def test_a_pod_cannot_use_a_serverless_template(rest: Rest) -> None:
    template = serverless_template(rest)

    problem(
        rest("POST", "/pods", {"name": "p", "templateId": template["id"], "gpu": {"id": "NVIDIA L40S"}}), 422
    )
