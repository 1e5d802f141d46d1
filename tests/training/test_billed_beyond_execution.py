"""RunPod bills a serverless worker "from when a worker starts until it fully stops": its start time, the
execution and the idle timeout after the job (docs serverless/pricing.mdx:14, 34-42). A job's
`executionTime` is only the middle part, so the budget counts an estimate of the other two for every run
that reached a worker — TRAINING_COLD_START_SECONDS of start-up plus RUNPOD_IDLE_TIMEOUT_SECONDS of idle, at
the run's GPU price — and a run's estimate includes them."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from tests.characters.factories import CharacterFactory
from tests.training.conftest import make_run
from training import pricing
from training.models import DeletedRunSpend, TrainingRun
from training.runpod import RunPodJob
from training.selectors import training_run_charge, user_spend_this_month
from training.services import training_run_apply_status

pytestmark = pytest.mark.django_db

A100 = "NVIDIA A100-SXM4-80GB"  # $0.00076 a second


@pytest.fixture(autouse=True)
def billing(settings: Any) -> None:
    settings.TRAINING_COLD_START_SECONDS = 30
    settings.RUNPOD_IDLE_TIMEOUT_SECONDS = 5
    settings.TRAINING_OVERHEAD_SECONDS = 600
    settings.TRAINING_SECONDS_PER_STEP = {"RTX 4090": "2.0", "A100 80GB": "1.1"}
    settings.RUNPOD_GPU_POOLS = ["ADA_24"]
    settings.TRAINING_GPU_TYPE = ""


def ended_on_an_a100(owner: Any, status: str = "failed", execution_ms: int = 600_000) -> TrainingRun:
    run = make_run(
        CharacterFactory(owner=owner),
        "training",
        runpod_job_id=f"job-{uuid.uuid4().hex}",
        started_at=timezone.now(),
        gpu_type=A100,
    )
    job = RunPodJob.from_payload(
        {"id": run.runpod_job_id, "status": "FAILED", "executionTime": execution_ms, "error": "boom"}
    )
    training_run_apply_status(run_id=run.pk, job=job, source="poll")
    return TrainingRun.objects.get(pk=run.pk)


def test_a_runs_estimate_counts_start_up_and_idle_time_on_top_of_its_steps() -> None:
    # (1000 x 2.0 s + 600 s start-up inside the job + 30 s worker start + 5 s idle) x $0.00031
    assert pricing.estimate_cost(steps=1000) == Decimal("0.8168")


def test_a_run_that_ran_records_its_start_up_and_idle_estimate_beside_runpods_cost(alice: Any) -> None:
    run = ended_on_an_a100(alice)

    assert run.cost_usd == Decimal("0.4560")  # 600 s x $0.00076, RunPod's execution time only
    assert run.startup_idle_cost_usd == Decimal("0.0266")  # (30 + 5) s x $0.00076


def test_the_budget_counts_both(alice: Any) -> None:
    ended_on_an_a100(alice)

    assert user_spend_this_month(alice) == Decimal("0.4826")
    assert training_run_charge(TrainingRun.objects.get()).amount == Decimal("0.4826")


def test_a_run_whose_time_runpod_never_gave_counts_its_estimate_once(alice: Any) -> None:
    make_run(
        CharacterFactory(owner=alice),
        "failed",
        started_at=timezone.now(),
        finished_at=timezone.now(),
        estimated_cost_usd=Decimal("0.8168"),  # start-up and idle included already
        cost_usd=None,
    )

    assert user_spend_this_month(alice) == Decimal("0.8168")


def test_a_deleted_run_keeps_counting_both(alice: Any) -> None:
    run = ended_on_an_a100(alice)

    run.delete()

    assert DeletedRunSpend.objects.get().amount_usd == Decimal("0.4826")
    assert user_spend_this_month(alice) == Decimal("0.4826")


def test_the_run_page_names_the_estimate_beside_runpods_cost(client: Client, alice: Any) -> None:
    run = ended_on_an_a100(alice)
    client.force_login(alice)

    page = client.get(reverse("training:run-detail", args=[run.pk])).content.decode()

    assert "GPU cost <strong>$0.46</strong>" in page
    assert "plus ≈ $0.03 for the worker's start-up and idle time, which RunPod bills too" in page
