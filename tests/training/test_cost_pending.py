"""Until RunPod's final status of a run's job has been read, the run's cost is pending, and the run page and
the API say so; once read it is settled (RunPod's figure, or none when RunPod never gave it)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from tests.developer.api_helpers import alice_api, api_isolation
from tests.training.conftest import make_run
from training.models import TrainingRun

__all__ = ["alice_api", "api_isolation"]

pytestmark = pytest.mark.django_db


def ended(character: Any, *, cost_state: str, cost_usd: Decimal | None = None) -> TrainingRun:
    return make_run(
        character,
        TrainingRun.Status.COMPLETED,
        started_at=timezone.now(),
        finished_at=timezone.now(),
        estimated_cost_usd=Decimal("1.2000"),
        cost_usd=cost_usd,
        cost_state=cost_state,
    )


def page(client: Client, alice: Any, run: TrainingRun) -> str:
    client.force_login(alice)
    return client.get(reverse("training:run-detail", args=[run.pk])).content.decode()


def test_the_page_says_cost_pending_until_runpods_final_figure_is_read(
    client: Client, alice: Any, character: Any
) -> None:
    text = page(client, alice, ended(character, cost_state="pending"))

    assert "Cost pending: RunPod has not reported this run's GPU time yet" in text
    assert "≈ $1.20" in text


def test_the_page_says_runpod_never_gave_a_cost_once_nothing_more_will_come(
    client: Client, alice: Any, character: Any
) -> None:
    text = page(client, alice, ended(character, cost_state="settled"))

    assert "RunPod never reported this run's GPU time" in text and "pending" not in text


def test_the_api_says_the_cost_is_pending_and_then_settled(alice_api: APIClient, character: Any) -> None:
    pending = ended(character, cost_state="pending")
    body = alice_api.get(f"/api/v1/runs/{pending.pk}").json()
    assert (body["cost_state"], body["cost_usd"]) == ("pending", None)

    TrainingRun.objects.filter(pk=pending.pk).update(cost_state="settled", cost_usd=Decimal("0.9100"))
    body = alice_api.get(f"/api/v1/runs/{pending.pk}").json()
    assert (body["cost_state"], body["cost_usd"]) == ("settled", "0.9100")
