"""One definition of a month's GPU spend: RunPod's cost of each run that finished this month, or its
estimate when it reached a GPU but RunPod's cost was never read; the budget, the budget panel and the admin
read it alike."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import time_machine

from studio.models import User
from tests.characters.factories import CharacterFactory
from tests.training.conftest import make_run
from training.budget import user_budget
from training.selectors import spend_this_month, user_spend_this_month, user_spend_this_month_annotation

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 12, 7, 12, tzinfo=UTC)
THIS_MONTH = datetime(2026, 12, 2, tzinfo=UTC)
LAST_MONTH = datetime(2026, 11, 30, 23, 59, tzinfo=UTC)


def finished(owner: Any, status: str, *, at: datetime = THIS_MONTH, **fields: Any) -> Any:
    return make_run(
        CharacterFactory(owner=owner),
        status,
        runpod_job_id=f"job-{uuid.uuid4().hex}",
        finished_at=at,
        estimated_cost_usd=Decimal("0.80"),
        **fields,
    )


@pytest.fixture
def runs(alice: Any, bob: Any) -> None:
    finished(alice, "completed", cost_usd=Decimal("1.25"), started_at=THIS_MONTH)  # RunPod's cost
    finished(
        alice, "failed", cost_usd=None, started_at=THIS_MONTH
    )  # reached a GPU, cost never read: estimate
    finished(alice, "cancelled", cost_usd=None, started_at=None)  # never started: nothing
    finished(
        alice, "completed", at=LAST_MONTH, cost_usd=Decimal("9.00"), started_at=LAST_MONTH
    )  # not this month
    finished(bob, "completed", cost_usd=Decimal("2.00"), started_at=THIS_MONTH)
    make_run(
        CharacterFactory(owner=alice), "training", started_at=THIS_MONTH, estimated_cost_usd=Decimal("3")
    )


@pytest.mark.usefixtures("runs")
def test_a_users_spend_this_month_counts_costs_and_the_estimates_of_runs_that_reached_a_gpu(
    alice: Any,
) -> None:
    assert user_spend_this_month(alice, now=NOW) == Decimal("2.05")


@pytest.mark.usefixtures("runs")
def test_the_sites_spend_this_month_is_every_users_spend(alice: Any, bob: Any) -> None:
    assert spend_this_month(now=NOW) == Decimal("4.05")
    assert spend_this_month(now=NOW) == user_spend_this_month(alice, now=NOW) + user_spend_this_month(
        bob, now=NOW
    )


@pytest.mark.usefixtures("runs")
def test_the_admins_annotation_is_the_same_sum_for_each_user(alice: Any, bob: Any) -> None:
    annotated = User.objects.annotate(spend=user_spend_this_month_annotation(now=NOW)).in_bulk(
        [alice.pk, bob.pk]
    )

    assert annotated[alice.pk].spend == user_spend_this_month(alice, now=NOW)
    assert annotated[bob.pk].spend == user_spend_this_month(bob, now=NOW)


@pytest.mark.usefixtures("runs")
def test_the_budget_reads_the_same_spend(alice: Any) -> None:
    with time_machine.travel(NOW, tick=False):
        budget = user_budget(alice, steps=1000)

    assert budget.reserved == Decimal("3")
    assert budget.spent == user_spend_this_month(alice, now=NOW) == Decimal("2.05")


def test_a_month_with_no_finished_runs_spent_nothing(alice: Any) -> None:
    assert user_spend_this_month(alice, now=NOW + timedelta(days=40)) == Decimal("0")
