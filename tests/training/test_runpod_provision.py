"""`manage.py runpod_provision` against the stand-in's REST v2 subset, which checks bodies as RunPod's v2
schema does: a dry run, a real create, a second run that changes nothing, drift found by --check and
repaired, and secrets that never reach the output."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from django.core.management import CommandError, call_command

from tests.support.local_runpod import LocalRunPod

pytestmark = pytest.mark.integration

SECRET = "hf_provisioning_secret_0123456789"


@pytest.fixture
def runpod(tmp_path: Path) -> Iterator[LocalRunPod]:
    with LocalRunPod(workdir=tmp_path, workers=0) as stand_in:
        yield stand_in


@pytest.fixture
def configured(runpod: LocalRunPod, settings: Any, monkeypatch: pytest.MonkeyPatch) -> LocalRunPod:
    settings.RUNPOD_REST_API_BASE = runpod.rest_url
    settings.RUNPOD_API_KEY = runpod.api_key
    settings.RUNPOD_PROVISION_NAME = "lora-training"
    settings.RUNPOD_WORKER_IMAGE = "ghcr.io/org/lora-worker:abc123"
    settings.RUNPOD_WORKER_ENV = {"WORKER_PROGRESS_INTERVAL_S": "1.5"}
    settings.RUNPOD_WORKER_SECRET_ENV = ["HF_TOKEN"]
    settings.RUNPOD_NETWORK_VOLUME_DATA_CENTER = "US-KS-2"
    settings.RUNPOD_NETWORK_VOLUME_GB = 100
    settings.RUNPOD_GPU_POOLS = ["AMPERE_80", "ADA_24"]
    settings.RUNPOD_WORKERS_MIN, settings.RUNPOD_WORKERS_MAX = 0, 3
    settings.RUNPOD_IDLE_TIMEOUT_SECONDS = 5
    settings.RUNPOD_SCALER_TYPE, settings.RUNPOD_SCALER_VALUE = "QUEUE_DELAY", 4.0
    settings.RUNPOD_FLASHBOOT = "FLASHBOOT"
    settings.TRAINING_EXECUTION_TIMEOUT_SECONDS = 3 * 3600
    monkeypatch.setenv("HF_TOKEN", SECRET)
    return runpod


def provision(*args: str) -> str:
    out = io.StringIO()
    call_command("runpod_provision", *args, stdout=out, stderr=out)
    return out.getvalue()


def rest(runpod: LocalRunPod, path: str) -> Any:
    response = requests.get(
        f"{runpod.rest_url}{path}", headers={"Authorization": f"Bearer {runpod.api_key}"}, timeout=10
    )
    response.raise_for_status()
    return response.json()


def ours(runpod: LocalRunPod) -> dict[str, Any]:
    """The endpoint, template and volume named after RUNPOD_PROVISION_NAME, as RunPod lists them."""
    return {
        "endpoint": [e for e in rest(runpod, "/serverless")["endpoints"] if e["name"] == "lora-training"],
        "template": [
            t for t in rest(runpod, "/templates")["templates"] if t["name"] == "lora-training-worker"
        ],
        "volume": [
            v
            for v in rest(runpod, "/network-volumes")["networkVolumes"]
            if v["name"] == "lora-training-cache"
        ],
    }


def test_a_dry_run_prints_the_plan_as_a_diff_and_creates_nothing(configured: LocalRunPod) -> None:
    output = provision("--dry-run")

    assert "+ network volume lora-training-cache: create" in output
    assert "+ template lora-training-worker: create" in output
    assert "+ endpoint lora-training: create" in output
    assert "+     gpu.pools: ['AMPERE_80', 'ADA_24']" in output
    assert "+     scaling.type: 'QUEUE_DELAY'" in output
    assert "Dry run: nothing changed." in output
    assert ours(configured) == {"endpoint": [], "template": [], "volume": []}


def test_a_real_run_creates_the_three_resources_as_the_v2_schema_wants_and_prints_the_endpoint_id(
    configured: LocalRunPod,
) -> None:
    output = provision()

    made = ours(configured)
    [endpoint], [template], [volume] = made["endpoint"], made["template"], made["volume"]
    assert f"RUNPOD_ENDPOINT_ID={endpoint['id']}" in output
    assert (template["serverless"], template["image"], template["disk"]) == (
        True,
        "ghcr.io/org/lora-worker:abc123",
        50,
    )
    assert template["env"] == {"WORKER_PROGRESS_INTERVAL_S": "1.5", "HF_TOKEN": SECRET}
    assert (volume["size"], volume["dataCenter"]) == (100, "US-KS-2")
    assert endpoint["type"] == "QUEUE"
    assert endpoint["gpu"]["pools"] == ["AMPERE_80", "ADA_24"]  # the one setting pricing uses too
    # The worker image's torch wheels are CUDA 13.0 builds (runpod_worker/Dockerfile): hosts with CUDA 13.0
    # or newer only (oa2 `CreateEndpointGpuConfig.minCudaVersion`).
    assert (endpoint["gpu"]["minCudaVersion"], endpoint["gpu"]["allowedCudaVersions"]) == ("13.0", [])
    assert endpoint["workers"] == {"min": 0, "max": 3, "idleTimeout": 5}
    assert endpoint["scaling"] == {"type": "QUEUE_DELAY", "queueDelay": 4.0}
    assert (endpoint["timeout"], endpoint["flashboot"]) == (10_800_000, "FLASHBOOT")
    assert endpoint["networkVolumes"] == [volume["id"]]
    assert endpoint["image"] == "ghcr.io/org/lora-worker:abc123"  # from the template


def test_a_second_run_changes_nothing(configured: LocalRunPod) -> None:
    provision()
    before = ours(configured)

    output = provision()

    assert ours(configured) == before
    assert "~" not in output and "+" not in output
    assert "= endpoint lora-training" in output
    assert provision("--check").endswith("No drift: RunPod matches the settings.\n")


def test_check_exits_2_on_drift_such_as_runpods_idle_scale_down_and_a_run_repairs_it(
    configured: LocalRunPod,
) -> None:
    provision()
    [endpoint] = ours(configured)["endpoint"]
    # After 7 idle days RunPod sets max workers to 0 (docs endpoint-configurations.mdx:80-88).
    requests.patch(
        f"{configured.rest_url}/serverless/{endpoint['id']}",
        json={"workers": {"max": 0}},
        headers={"Authorization": f"Bearer {configured.api_key}"},
        timeout=10,
    ).raise_for_status()

    with pytest.raises(CommandError) as drift:
        provision("--check")
    repaired = provision()

    assert drift.value.returncode == 2
    assert "~     workers.max: 0 -> 3" in repaired
    assert ours(configured)["endpoint"][0]["workers"]["max"] == 3
    assert provision("--check").endswith("No drift: RunPod matches the settings.\n")


def test_a_cuda_floor_cleared_in_runpods_console_is_drift_and_a_run_sets_it_again(
    configured: LocalRunPod,
) -> None:
    provision()
    [endpoint] = ours(configured)["endpoint"]
    requests.patch(
        f"{configured.rest_url}/serverless/{endpoint['id']}",
        json={"gpu": {"minCudaVersion": "", "allowedCudaVersions": ["12.8"]}},
        headers={"Authorization": f"Bearer {configured.api_key}"},
        timeout=10,
    ).raise_for_status()

    with pytest.raises(CommandError) as drift:
        provision("--check")
    repaired = provision()

    assert drift.value.returncode == 2
    assert "~     gpu.minCudaVersion: (none) -> '13.0'" in repaired
    assert "~     gpu.allowedCudaVersions: ['12.8'] -> []" in repaired
    [endpoint] = ours(configured)["endpoint"]
    assert (endpoint["gpu"]["minCudaVersion"], endpoint["gpu"]["allowedCudaVersions"]) == ("13.0", [])


def test_a_new_image_updates_the_template_and_applies_it_to_the_endpoint_again(
    configured: LocalRunPod, settings: Any
) -> None:
    provision()
    settings.RUNPOD_WORKER_IMAGE = "ghcr.io/org/lora-worker:def456"

    output = provision()

    made = ours(configured)
    assert "~     image: 'ghcr.io/org/lora-worker:abc123' -> 'ghcr.io/org/lora-worker:def456'" in output
    assert made["template"][0]["image"] == made["endpoint"][0]["image"] == "ghcr.io/org/lora-worker:def456"


def test_request_count_scaling_sends_no_idle_timeout_so_runpod_accepts_it(
    configured: LocalRunPod, settings: Any
) -> None:
    # B1: RunPod refuses workers.idleTimeout on a QUEUE endpoint scaling by REQUEST_COUNT (oa2:1079-1083).
    settings.RUNPOD_SCALER_TYPE, settings.RUNPOD_SCALER_VALUE = "REQUEST_COUNT", 1.0

    provision()

    [endpoint] = ours(configured)["endpoint"]
    assert endpoint["scaling"] == {"type": "REQUEST_COUNT", "requestCount": 1}
    assert "idleTimeout" not in endpoint["workers"]
    assert "No drift" in provision("--check")


def test_secrets_never_reach_the_output_of_a_create_a_change_or_a_check(
    configured: LocalRunPod, monkeypatch: pytest.MonkeyPatch
) -> None:
    outputs = [provision("--dry-run"), provision()]
    monkeypatch.setenv("HF_TOKEN", "hf_rotated_secret_9876543210")
    outputs.append(provision("--dry-run"))
    with pytest.raises(CommandError) as drift:
        provision("--check")

    text = "\n".join(outputs) + str(drift.value)
    assert SECRET not in text and "hf_rotated_secret" not in text
    assert "~     env.HF_TOKEN: (value hidden) -> (value hidden)" in outputs[-1]
    assert "+     env.WORKER_PROGRESS_INTERVAL_S: '1.5'" in outputs[0]  # plain values are shown


def test_a_missing_secret_stops_before_anything_is_made(
    configured: LocalRunPod, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_TOKEN")

    with pytest.raises(CommandError, match="HF_TOKEN must be set in this command's environment"):
        provision()

    assert ours(configured) == {"endpoint": [], "template": [], "volume": []}


def test_a_pool_runpod_does_not_know_stops_before_anything_is_made(
    configured: LocalRunPod, settings: Any
) -> None:
    settings.RUNPOD_GPU_POOLS = ["AMPERE_80", "RTX_4090"]

    with pytest.raises(CommandError, match="RTX_4090 is not one"):
        provision()

    assert ours(configured)["endpoint"] == []


def test_a_volume_in_another_data_centre_is_an_error_naming_what_to_do(
    configured: LocalRunPod, settings: Any
) -> None:
    provision()
    settings.RUNPOD_NETWORK_VOLUME_DATA_CENTER = "EU-RO-1"

    with pytest.raises(CommandError, match="a volume cannot move"):
        provision("--check")
