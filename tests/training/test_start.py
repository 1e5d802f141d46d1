from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from studio.errors import ApplicationError, Conflict, NotFound
from tests.characters.factories import CharacterFactory, ReferenceImageFactory
from tests.training.conftest import FakeProvider, make_run
from training.models import TrainingEvent, TrainingRun
from training.selectors import user_spend_this_month
from training.services import training_run_retry, training_run_start
from training.tokens import run_token


def start(character: Any, **kwargs: Any) -> TrainingRun:
    return training_run_start(
        character=character, requested_by=kwargs.pop("requested_by", character.owner), source="user", **kwargs
    )


def test_a_run_starts_pending_with_its_dataset_frozen(character: Any) -> None:
    run = start(character)

    assert run.status == TrainingRun.Status.PENDING
    assert len(run.manifest) == 3
    image = character.images.first()
    assert {"name", "original_name", "sha256", "storage_name", "caption", "bytes"} <= set(run.manifest[0])
    frozen = {(item["sha256"], item["original_name"]) for item in run.manifest}
    assert (image.sha256, image.original_filename) in frozen
    assert run.params["steps"] == 1500 and run.params["alpha"] == 16.0


def test_a_run_stores_nothing_of_its_token(character: Any) -> None:
    run = start(character)

    stored = TrainingRun.objects.filter(pk=run.pk).values().get()
    assert run_token(run.id) not in str(stored)
    assert not any("token" in column for column in stored)  # derived from the run id whenever needed


def test_a_run_records_who_started_it_in_its_first_event(character: Any) -> None:
    run = start(character)

    event = run.events.get()
    assert (event.from_status, event.to_status, event.source) == ("", "pending", "user")


def test_submission_is_queued_only_after_commit(
    character: Any, provider: FakeProvider, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        run = start(character)
    assert provider.submitted == []

    for callback in callbacks:
        callback()

    run.refresh_from_db()
    assert run.status == TrainingRun.Status.QUEUED
    assert run.runpod_job_id == "job-1"


def test_a_preset_sets_the_defaults_and_explicit_params_win(character: Any) -> None:
    run = start(character, preset="quality", params={"steps": 2500})

    assert (run.params["steps"], run.params["rank"]) == (2500, 32)


def test_the_estimate_comes_from_steps_seconds_per_step_and_price(character: Any, settings: Any) -> None:
    settings.TRAINING_SECONDS_PER_STEP = {"A100 80GB": "1.0"}
    settings.TRAINING_GPU_PRICES_USD_PER_SECOND = {"A100 80GB": "0.001"}
    settings.TRAINING_GPU_TYPE = "A100 80GB"
    settings.TRAINING_OVERHEAD_SECONDS = 100
    settings.TRAINING_COLD_START_SECONDS, settings.RUNPOD_IDLE_TIMEOUT_SECONDS = 30, 5

    run = start(character, params={"steps": 1000})

    # (1000 x 1.0 s + 100 s start-up in the job + 35 s RunPod bills outside it: worker start, idle) x $0.001
    assert run.estimated_cost_usd == Decimal("1.1350")


def test_it_refuses_a_character_with_too_few_images(alice: Any, settings: Any) -> None:
    settings.TRAINING_MIN_IMAGES = 10
    character = CharacterFactory(owner=alice)
    ReferenceImageFactory.create_batch(7, character=character)

    with pytest.raises(
        ApplicationError, match=r"at least 10 reference images and this character has 7\. Add 3"
    ):
        start(character)
    assert not TrainingRun.objects.exists()


def test_it_refuses_another_users_character_as_if_it_did_not_exist(character: Any, bob: Any) -> None:
    with pytest.raises(NotFound):
        start(character, requested_by=bob)


def test_staff_may_start_a_run_for_anyone(character: Any, staff: Any) -> None:
    run = start(character, requested_by=staff)

    assert run.requested_by == staff


def test_it_refuses_a_second_active_run_for_a_character(character: Any) -> None:
    start(character)

    with pytest.raises(Conflict, match="already has a training run in progress"):
        start(character)
    assert TrainingRun.objects.count() == 1


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"steps": 50}, "steps must be between 100 and 6000"),
        ({"rank": "big"}, "rank must be a whole number"),
        ({"resolutions": [640]}, r"resolutions\[0\] must be one of"),
        ({"epochs": 3}, "epochs is not a known field"),
    ],
)
def test_it_refuses_bad_params_naming_the_field(character: Any, params: dict[str, Any], message: str) -> None:
    with pytest.raises(ApplicationError, match=message) as caught:
        start(character, params=params)

    assert caught.value.code == "invalid_params"
    assert not TrainingRun.objects.exists()


def test_it_refuses_an_unknown_preset(character: Any) -> None:
    with pytest.raises(
        ApplicationError, match=r"no preset called 'turbo'\. Choose one of: fast, balanced, quality"
    ):
        start(character, preset="turbo")


def test_it_refuses_a_run_that_would_exceed_the_monthly_budget(character: Any, alice: Any) -> None:
    alice.monthly_gpu_budget_usd = Decimal("5.00")
    alice.save()
    other = CharacterFactory(owner=alice)
    make_run(other, status="completed", cost_usd=Decimal("3.00"), finished_at=timezone.now())
    make_run(CharacterFactory(owner=alice), status="training", estimated_cost_usd=Decimal("1.50"))

    with pytest.raises(ApplicationError, match=r"\$4.50 of the \$5.00 monthly GPU budget") as caught:
        start(character, preset="balanced")

    assert caught.value.code == "budget_exceeded"


def test_a_run_whose_cost_runpod_never_gave_counts_its_estimate_if_it_ran_on_a_gpu(
    character: Any, alice: Any
) -> None:
    alice.monthly_gpu_budget_usd = Decimal("5.00")
    alice.save()
    now = timezone.now()
    # Completed from the worker's report (or recovered from storage): RunPod's cost was never read.
    make_run(
        CharacterFactory(owner=alice),
        status="completed",
        estimated_cost_usd=Decimal("2.00"),
        started_at=now,
        finished_at=now,
        runpod_job_id="job-cost-unread",
    )
    # Cancelled while still queued: it never ran on a GPU, so it cost nothing.
    make_run(
        CharacterFactory(owner=alice),
        status="cancelled",
        estimated_cost_usd=Decimal("4.00"),
        finished_at=now,
        runpod_job_id="job-never-started",
    )
    make_run(CharacterFactory(owner=alice), status="completed", cost_usd=Decimal("2.50"), finished_at=now)

    assert user_spend_this_month(alice) == Decimal("4.50")
    with pytest.raises(ApplicationError, match=r"\$4.50 of the \$5.00 monthly GPU budget"):
        start(character, preset="balanced")


def test_last_months_spend_does_not_count_against_this_month(character: Any, alice: Any) -> None:
    alice.monthly_gpu_budget_usd = Decimal("5.00")
    alice.save()
    long_ago = timezone.now().replace(day=1) - timezone.timedelta(days=40)
    make_run(CharacterFactory(owner=alice), status="completed", cost_usd=Decimal("50"), finished_at=long_ago)

    assert start(character, preset="fast").status == "pending"


def test_no_budget_means_unlimited(character: Any, alice: Any) -> None:
    make_run(
        CharacterFactory(owner=alice),
        status="completed",
        cost_usd=Decimal("5000"),
        finished_at=timezone.now(),
    )

    assert start(character, preset="quality").status == "pending"


def test_retry_makes_a_new_run_from_the_old_manifest_and_params(character: Any) -> None:
    first = start(character, params={"steps": 800})
    TrainingRun.objects.filter(pk=first.pk).update(status="failed")
    first.refresh_from_db()
    ReferenceImageFactory(character=character)  # added later: not part of the retried run

    again = training_run_retry(run=first, requested_by=character.owner, source="user")

    assert again.pk != first.pk
    assert again.manifest == first.manifest and again.params == first.params
    assert again.events.get().detail == {"retry_of": str(first.pk)}


def test_retry_refuses_a_run_still_in_progress(character: Any) -> None:
    run = start(character)

    with pytest.raises(Conflict, match="still in progress"):
        training_run_retry(run=run, requested_by=character.owner, source="user")


def test_retry_refuses_when_images_of_the_run_were_deleted(character: Any) -> None:
    run = start(character)
    TrainingRun.objects.filter(pk=run.pk).update(status="failed")
    run.refresh_from_db()
    character.images.first().delete()

    with pytest.raises(ApplicationError, match="1 of that run's images have since been deleted"):
        training_run_retry(run=run, requested_by=character.owner, source="user")


def test_retry_refuses_bob(character: Any, bob: Any) -> None:
    run = make_run(character, status="failed")

    with pytest.raises(NotFound):
        training_run_retry(run=run, requested_by=bob, source="user")


def test_every_start_writes_exactly_one_event(character: Any) -> None:
    start(character)

    assert TrainingEvent.objects.count() == 1


def test_a_budget_refusal_of_the_fast_preset_does_not_advise_the_fast_preset(
    character: Any, alice: Any
) -> None:
    alice.monthly_gpu_budget_usd = Decimal("0.05")
    alice.save()

    with pytest.raises(ApplicationError) as caught:
        start(character, preset="fast")

    assert caught.value.code == "budget_exceeded"
    assert "fast preset" not in caught.value.message
    assert (
        "Set at most" in caught.value.message
        or "does not cover even the shortest run" in caught.value.message
    )


def test_a_budget_refusal_of_a_balanced_run_advises_the_fast_preset_when_it_fits(
    character: Any, alice: Any
) -> None:
    alice.monthly_gpu_budget_usd = Decimal("1.00")
    alice.save()

    with pytest.raises(ApplicationError) as caught:
        start(character, preset="quality")

    assert "Choose the fast preset (about $" in caught.value.message
