"""The staff dashboard's view of RunPod's `/health`, read from the stand-in: every worker state RunPod
reports, and a wrong or deleted endpoint named as such rather than taken for lost jobs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import cache
from django.test import Client
from django.urls import reverse

from tests.support.local_runpod import LocalRunPod

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


@pytest.fixture
def staff_client(client: Client, staff: Any) -> Iterator[Client]:
    client.force_login(staff)
    cache.delete("training:endpoint-health")
    yield client
    cache.delete("training:endpoint-health")


def point_at(runpod: LocalRunPod, settings: Any, endpoint_id: str | None = None) -> None:
    settings.RUNPOD_API_BASE = f"{runpod.base_url}/v2"
    settings.RUNPOD_API_KEY = runpod.api_key
    settings.RUNPOD_ENDPOINT_ID = endpoint_id or runpod.endpoint_id


def test_the_dashboard_shows_every_worker_state_runpod_reports(
    staff_client: Client, settings: Any, tmp_path: Path
) -> None:
    with LocalRunPod(workdir=tmp_path, workers=1, faults={"throttled_workers": "1"}) as runpod:
        point_at(runpod, settings)
        while runpod.health()["workers"]["throttled"] != 1:  # until its one worker process is up
            time.sleep(0.05)
        page = staff_client.get(reverse("admin:index")).content.decode()

    assert "idle 0, initializing 0, ready 0, running 0, throttled 1" in page


def test_the_dashboard_says_to_check_the_endpoint_id_when_runpod_does_not_know_the_endpoint(
    staff_client: Client, settings: Any, tmp_path: Path
) -> None:
    with LocalRunPod(workdir=tmp_path, workers=0) as runpod:
        point_at(runpod, settings, endpoint_id="deleted-or-mistyped")
        page = staff_client.get(reverse("admin:index")).content.decode()

    assert "RunPod does not know the endpoint" in page and "Check RUNPOD_ENDPOINT_ID" in page
