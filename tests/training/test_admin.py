from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.contrib import admin as django_admin
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from characters.models import Character
from tests.training.conftest import FakeProvider, make_run
from training.models import RunPodEndpointStatus, TrainingEvent, TrainingRun
from training.runpod import RunPodJob

pytestmark = pytest.mark.django_db

RUNS = reverse("admin:training_trainingrun_changelist")
CHARACTERS = reverse("admin:characters_character_changelist")


@pytest.fixture
def staff_client(client: Client, staff: Any) -> Client:
    client.force_login(staff)
    return client


def act(client: Client, url: str, action: str, *objects: Any) -> Any:
    return client.post(
        url,
        {"action": action, django_admin.helpers.ACTION_CHECKBOX_NAME: [str(o.pk) for o in objects]},
        follow=True,
    )


def messages_of(response: Any) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def test_start_training_starts_a_run_for_each_selected_character(
    staff_client: Client, character: Character, provider: FakeProvider
) -> None:
    response = act(staff_client, CHARACTERS, "start_training", character)

    run = TrainingRun.objects.get(character=character)
    assert run.status == TrainingRun.Status.PENDING
    assert run.events.get().source == TrainingEvent.Source.ADMIN
    assert f"training started (run {run.id})" in " ".join(messages_of(response))


def test_start_training_reports_a_refusal_per_character(staff_client: Client, character: Character) -> None:
    make_run(character, TrainingRun.Status.TRAINING)

    response = act(staff_client, CHARACTERS, "start_training", character)

    assert "already has a training run in progress" in " ".join(messages_of(response))
    assert TrainingRun.objects.filter(character=character).count() == 1


def test_cancel_ends_the_selected_runs_and_stops_their_jobs(
    staff_client: Client, character: Character, provider: FakeProvider
) -> None:
    run = make_run(character, TrainingRun.Status.TRAINING, runpod_job_id="job-7")

    response = act(staff_client, RUNS, "cancel_runs", run)

    run.refresh_from_db()
    assert run.status == TrainingRun.Status.CANCELLED
    assert provider.cancelled == ["job-7"]
    assert "cancelled." in " ".join(messages_of(response))


def test_cancel_says_why_a_finished_run_cannot_be_cancelled(
    staff_client: Client, character: Character
) -> None:
    run = make_run(character, TrainingRun.Status.COMPLETED)

    response = act(staff_client, RUNS, "cancel_runs", run)

    assert "already completed" in " ".join(messages_of(response))


def test_retry_makes_a_new_run_from_the_old_one(
    staff_client: Client, character: Character, provider: FakeProvider
) -> None:
    old = make_run(character, TrainingRun.Status.FAILED, params={"steps": 700, "rank": 8})

    response = act(staff_client, RUNS, "retry_runs", old)

    new = TrainingRun.objects.exclude(pk=old.pk).get()
    assert new.params["steps"] == 700
    assert f"retried as run {new.id}" in " ".join(messages_of(response))


def test_resync_applies_what_runpod_says(
    staff_client: Client, character: Character, provider: FakeProvider
) -> None:
    run = make_run(character, TrainingRun.Status.QUEUED, runpod_job_id="job-9")
    provider.statuses["job-9"] = RunPodJob(id="job-9", status="IN_PROGRESS", output={"stage": "training"})

    response = act(staff_client, RUNS, "resync_runs", run)

    run.refresh_from_db()
    assert run.status == TrainingRun.Status.TRAINING
    assert "RunPod says training." in " ".join(messages_of(response))


def test_the_run_page_shows_state_read_only(staff_client: Client, character: Character) -> None:
    run = make_run(character, TrainingRun.Status.TRAINING, progress_step=30, progress_total=100)
    url = reverse("admin:training_trainingrun_change", args=[run.pk])

    page = staff_client.get(url)
    staff_client.post(url, {"status": "completed", "runpod_job_id": "other", "cost_usd": "0"})

    run.refresh_from_db()
    assert page.status_code == 200
    assert b'<progress max="100" value="30"' in page.content
    assert run.status == TrainingRun.Status.TRAINING
    assert run.runpod_job_id != "other"


def test_a_user_who_is_not_staff_is_sent_to_the_admin_login(
    client: Client, alice: Any, character: Any
) -> None:
    client.force_login(alice)
    run = make_run(character, TrainingRun.Status.TRAINING)

    response = act(client, RUNS, "cancel_runs", run)

    run.refresh_from_db()
    assert response.redirect_chain[0][0].startswith(reverse("admin:login"))
    assert run.status == TrainingRun.Status.TRAINING


def test_the_index_summarises_runs_spend_and_the_endpoint(
    staff_client: Client, character: Character, provider: FakeProvider
) -> None:
    make_run(character, TrainingRun.Status.TRAINING, progress_step=5, progress_total=10)
    make_run(
        character,
        TrainingRun.Status.FAILED,
        runpod_job_id="job-failed",
        finished_at=timezone.now(),
        cost_usd=Decimal("1.25"),
    )

    page = staff_client.get(reverse("admin:index")).content.decode()

    assert "Active runs" in page
    assert "Failures in the last 24 hours" in page
    assert "$1.25" in page
    assert "step 5/10 (50%)" in page


def test_the_characters_list_links_each_current_lora_to_its_run(
    staff_client: Client, character: Character
) -> None:
    run = make_run(character, TrainingRun.Status.COMPLETED, finished_at=timezone.now())

    page = staff_client.get(CHARACTERS).content.decode()

    assert "Current LoRA" in page
    assert reverse("admin:training_trainingrun_change", args=[run.pk]) in page
    assert f"run {str(run.pk)[:8]}" in page


def test_a_characters_page_shows_its_runs_and_offers_start_training_on_the_list(
    staff_client: Client, character: Character
) -> None:
    make_run(character, TrainingRun.Status.FAILED, finished_at=timezone.now(), error_message="Out of memory")

    page = staff_client.get(
        reverse("admin:characters_character_change", args=[character.pk])
    ).content.decode()
    listing = staff_client.get(CHARACTERS).content.decode()

    assert "Training runs" in page and "Out of memory" in page
    assert 'value="start_training"' in listing and 'value="delete_selected"' in listing


def test_the_users_list_shows_spend_this_month(staff_client: Client, character: Character) -> None:
    make_run(character, TrainingRun.Status.COMPLETED, finished_at=timezone.now(), cost_usd=Decimal("2.50"))

    page = staff_client.get(reverse("admin:studio_user_changelist")).content.decode()

    assert "2.50" in page


def test_the_run_page_offers_no_save_but_this_runs_cancel_and_resync(
    staff_client: Client, character: Character
) -> None:
    run = make_run(character, TrainingRun.Status.TRAINING, runpod_job_id="job-3")

    page = staff_client.get(reverse("admin:training_trainingrun_change", args=[run.pk])).content.decode()

    assert 'name="_save"' not in page and 'name="_continue"' not in page
    assert reverse("admin:training_trainingrun_cancel", args=[run.pk]) in page
    assert reverse("admin:training_trainingrun_resync", args=[run.pk]) in page
    assert reverse("admin:training_trainingrun_retry", args=[run.pk]) not in page


def test_the_run_pages_cancel_button_cancels_that_run(
    staff_client: Client, character: Character, provider: FakeProvider
) -> None:
    run = make_run(character, TrainingRun.Status.TRAINING, runpod_job_id="job-4")

    response = staff_client.post(reverse("admin:training_trainingrun_cancel", args=[run.pk]), follow=True)

    run.refresh_from_db()
    assert run.status == TrainingRun.Status.CANCELLED
    assert provider.cancelled == ["job-4"]
    assert "cancelled." in " ".join(messages_of(response))


def test_a_failed_runs_page_retries_it_with_one_button(
    staff_client: Client, character: Character, provider: FakeProvider
) -> None:
    old = make_run(character, TrainingRun.Status.FAILED, params={"steps": 700, "rank": 8})

    staff_client.post(reverse("admin:training_trainingrun_retry", args=[old.pk]))

    assert TrainingRun.objects.exclude(pk=old.pk).get().params["steps"] == 700


def test_staff_see_what_the_endpoint_check_found_and_cannot_change_it(staff_client: Any) -> None:
    RunPodEndpointStatus.objects.create(
        endpoint_id="ep-quiet", problem=RunPodEndpointStatus.Problem.SCALED_TO_ZERO, max_workers=0
    )

    page = staff_client.get(reverse("admin:training_runpodendpointstatus_changelist")).content.decode()

    assert "ep-quiet" in page and "No worker allowed (max workers 0)" in page
    assert staff_client.get(reverse("admin:training_runpodendpointstatus_add")).status_code == 403
