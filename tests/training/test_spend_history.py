"""Spend is history: no delete — a run, its character, the owner's account — gives GPU money back, so
training, deleting and training again cannot pass the monthly budget."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import pytest
from django.contrib import admin as django_admin
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from characters import services as character_services
from studio.errors import ApplicationError
from tests.characters.factories import CharacterFactory, ReferenceImageFactory
from tests.training.conftest import make_run
from training.models import DeletedRunSpend, TrainingRun
from training.selectors import user_spend_this_month
from training.services import training_run_start

pytestmark = pytest.mark.django_db


def costed_run(owner: Any, cost: str = "0.9000", **fields: Any) -> TrainingRun:
    now = timezone.now()
    values: dict[str, Any] = {
        "cost_usd": Decimal(cost),
        "started_at": now,
        "finished_at": now,
        "runpod_job_id": f"job-{uuid.uuid4().hex}",
        **fields,
    }
    return make_run(CharacterFactory(owner=owner), TrainingRun.Status.COMPLETED, **values)


def test_deleting_a_character_keeps_what_its_runs_cost(alice: Any) -> None:
    run = costed_run(alice)
    before = user_spend_this_month(alice)

    character_services.character_delete(character=run.character)

    assert not TrainingRun.objects.filter(pk=run.pk).exists()
    assert user_spend_this_month(alice) == before == Decimal("0.9000")


def test_train_delete_and_train_again_cannot_pass_the_budget(alice: Any, settings: Any) -> None:
    settings.TRAINING_MIN_IMAGES = 3
    alice.monthly_gpu_budget_usd = Decimal("1.00")
    alice.save()
    character_services.character_delete(character=costed_run(alice).character)
    again = CharacterFactory(owner=alice)
    ReferenceImageFactory.create_batch(3, character=again)

    with pytest.raises(ApplicationError) as refused:
        training_run_start(character=again, requested_by=alice, preset="fast", source="user")

    assert refused.value.code == "budget_exceeded"


def test_the_admins_delete_selected_runs_keeps_what_they_cost(alice: Any, staff: Any) -> None:
    runs = [costed_run(alice, "0.4000"), costed_run(alice, "0.2500")]
    client = Client()
    client.force_login(staff)

    response = client.post(
        reverse("admin:training_trainingrun_changelist"),
        {
            "action": "delete_selected",
            "post": "yes",
            django_admin.helpers.ACTION_CHECKBOX_NAME: [str(run.pk) for run in runs],
        },
        follow=True,
    )

    assert response.status_code == 200
    assert not TrainingRun.objects.exists()
    assert user_spend_this_month(alice) == Decimal("0.6500")


def test_a_deleted_account_leaves_its_spend_on_record(alice: Any) -> None:
    run = costed_run(alice, "1.2000")
    alice_id = alice.pk

    alice.delete()

    kept = DeletedRunSpend.objects.get(run_id=run.pk)
    assert (kept.owner_id, kept.owner_username, kept.amount_usd, kept.exact) == (
        alice_id,
        "alice",
        Decimal("1.2000"),
        True,
    )


def test_a_run_whose_cost_is_not_known_yet_keeps_its_estimate(alice: Any) -> None:
    run = costed_run(alice, cost="0", cost_usd=None, estimated_cost_usd=Decimal("0.7000"))
    run_id = run.pk

    run.delete()

    kept = DeletedRunSpend.objects.get(run_id=run_id)
    assert (kept.amount_usd, kept.exact) == (Decimal("0.7000"), False)
    assert user_spend_this_month(alice) == Decimal("0.7000")


def test_a_run_that_never_reached_a_gpu_leaves_nothing_to_keep(alice: Any) -> None:
    run = make_run(CharacterFactory(owner=alice), TrainingRun.Status.CANCELLED, finished_at=timezone.now())

    character_services.character_delete(character=run.character)

    assert not DeletedRunSpend.objects.exists()
    assert user_spend_this_month(alice) == Decimal("0")


def test_last_months_deleted_spend_does_not_count_this_month(alice: Any) -> None:
    last_month = timezone.now().replace(day=1) - timezone.timedelta(days=2)
    run = costed_run(alice, started_at=last_month, finished_at=last_month)
    run_id = run.pk

    run.delete()

    assert DeletedRunSpend.objects.get(run_id=run_id).finished_at == last_month
    assert user_spend_this_month(alice) == Decimal("0")
