"""The training pages: start with a confirm step, the run page, its progress JSON, cancel, retry, the
LoRA download and the runs list; who may see what, and what each refusal tells the user."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.messages import get_messages
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from tests.characters.factories import CharacterFactory
from tests.training.conftest import FakeProvider, make_run
from training.budget import affordable_steps
from training.models import Pod, TrainingEvent, TrainingRun
from training.pod_secrets import pod_token_set
from training.presets import PRESETS
from training.selectors import training_cost_estimate
from training.services.start import _manifest

pytestmark = pytest.mark.django_db

LORA = b"\x08\x00\x00\x00\x00\x00\x00\x00{}      " + b"\x00" * 2048


def client_for(user: Any, *, csrf: bool = False) -> Client:
    client = Client(enforce_csrf_checks=csrf)
    client.force_login(user)
    return client


def completed_run(character: Any, content: bytes = LORA) -> TrainingRun:
    run = make_run(character, TrainingRun.Status.COMPLETED, finished_at=timezone.now())
    run.lora_name = default_storage.save(
        f"characters/{character.pk}/loras/{run.pk}.safetensors", ContentFile(content)
    )
    run.lora_bytes = len(content)
    run.lora_sha256 = hashlib.sha256(content).hexdigest()
    run.progress_step = run.progress_total = 1000
    run.cost_usd = Decimal("0.4200")
    run.save()
    return run


def run_urls(character: Any, run: TrainingRun) -> dict[str, tuple[str, str]]:
    """Every training URL of one of alice's characters and runs, with the method that uses it."""
    return {
        "start form": ("get", reverse("training:start", args=[character.pk])),
        "start": ("post", reverse("training:start", args=[character.pk])),
        "run": ("get", reverse("training:run-detail", args=[run.pk])),
        "progress": ("get", reverse("training:run-progress", args=[run.pk])),
        "cancel": ("post", reverse("training:run-cancel", args=[run.pk])),
        "retry": ("post", reverse("training:run-retry", args=[run.pk])),
        "lora": ("get", reverse("training:run-lora", args=[run.pk])),
    }


PAGES = ["start form", "start", "run", "progress", "cancel", "retry", "lora"]
WRITES = ["start", "cancel", "retry"]
START = {"preset": "fast", "confirm": "1"}


def messages_of(response: Any) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


# ============================================================================================ access


@pytest.mark.parametrize("page", [*PAGES, "runs"])
def test_anonymous_visitors_are_sent_to_log_in(page: str, character: Any) -> None:
    run = make_run(character)
    urls = {**run_urls(character, run), "runs": ("get", reverse("training:run-list"))}
    method, url = urls[page]

    response = getattr(Client(), method)(url, START)

    assert response.status_code == 302
    assert response.url.startswith(reverse("login") + "?next=")
    assert TrainingRun.objects.count() == 1


@pytest.mark.parametrize("page", PAGES)
def test_bob_gets_404_on_each_of_alices_training_urls(
    page: str, character: Any, bob: Any, provider: FakeProvider
) -> None:
    # Cancel is tried on a run in progress; every other URL on a finished run with a LoRA.
    run = make_run(character, TrainingRun.Status.TRAINING) if page == "cancel" else completed_run(character)
    method, url = run_urls(character, run)[page]

    response = getattr(client_for(bob), method)(url, START)

    assert response.status_code == 404
    run.refresh_from_db()
    assert run.status in (TrainingRun.Status.COMPLETED, TrainingRun.Status.TRAINING)
    assert TrainingRun.objects.count() == 1
    assert provider.cancelled == []


@pytest.mark.parametrize("page", WRITES)
def test_every_training_form_refuses_a_post_without_a_csrf_token(
    page: str, character: Any, alice: Any, provider: FakeProvider
) -> None:
    # Each POST would succeed with its token: start and retry after a failed run, cancel on an active one.
    run = make_run(character, TrainingRun.Status.TRAINING if page == "cancel" else TrainingRun.Status.FAILED)
    _, url = run_urls(character, run)[page]

    response = client_for(alice, csrf=True).post(url, START)

    assert response.status_code == 403
    assert TrainingRun.objects.count() == 1
    assert TrainingRun.objects.get().status == run.status
    assert provider.cancelled == []


def test_the_start_form_posts_its_csrf_token_and_the_confirm_step_carries_it(
    character: Any, alice: Any, provider: FakeProvider
) -> None:
    client = client_for(alice, csrf=True)
    url = reverse("training:start", args=[character.pk])
    form = client.get(url).content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form)
    assert token is not None

    confirm = client.post(url, {"preset": "fast", "csrfmiddlewaretoken": token.group(1)})
    carried = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', confirm.content.decode())
    assert carried is not None
    response = client.post(url, {**START, "csrfmiddlewaretoken": carried.group(1)})

    assert response.status_code == 302
    assert TrainingRun.objects.filter(character=character).count() == 1


# ============================================================================================ start


def test_the_form_shows_each_presets_estimate_and_the_remaining_budget(character: Any, alice: Any) -> None:
    alice.monthly_gpu_budget_usd = Decimal("25.00")
    alice.save()
    completed_run(CharacterFactory(owner=alice))  # $0.42 spent this month

    response = client_for(alice).get(reverse("training:start", args=[character.pk]))

    page = response.content.decode()
    assert response.status_code == 200
    for name, values in PRESETS.items():
        assert f"about ${training_cost_estimate(steps=values['steps']):.2f}" in page, name
    assert 'Remaining this month</dt><dd class="remaining">$24.58</dd>' in page
    assert "Monthly GPU budget</dt><dd>$25.00</dd>" in page


def test_posting_the_form_shows_a_confirm_step_with_the_estimate_and_starts_nothing(
    character: Any, alice: Any
) -> None:
    alice.monthly_gpu_budget_usd = Decimal("50.00")
    alice.save()
    make_run(CharacterFactory(owner=alice), estimated_cost_usd=Decimal("3.00"))  # held by a run in progress

    response = client_for(alice).post(
        reverse("training:start", args=[character.pk]), {"preset": "balanced", "steps": "2000"}
    )

    page = response.content.decode()
    estimate = training_cost_estimate(steps=2000)
    assert response.status_code == 200
    assert "Confirm training of Anna" in page
    assert f'<dd class="estimate">${estimate:.2f}</dd>' in page
    assert "Held by runs in progress</dt><dd>$3.00</dd>" in page
    assert 'Remaining this month</dt><dd class="remaining">$47.00</dd>' in page
    assert f"${Decimal('47.00') - estimate:.2f}" in page
    assert '<input type="hidden" name="steps" value="2000"' in page
    assert not TrainingRun.objects.filter(character=character).exists()


@pytest.mark.parametrize(("posted", "auto_caption"), [({"auto_caption": "off"}, False), ({}, True)])
def test_the_form_turns_auto_captions_off_only_when_asked(
    character: Any, alice: Any, provider: FakeProvider, posted: dict[str, str], auto_caption: bool
) -> None:
    client_for(alice).post(reverse("training:start", args=[character.pk]), {**START, **posted})

    assert TrainingRun.objects.get(character=character).params["auto_caption"] is auto_caption


def test_the_confirm_step_says_what_happens_to_photos_without_a_caption(character: Any, alice: Any) -> None:
    url = reverse("training:start", args=[character.pk])
    off = client_for(alice).post(url, {"preset": "fast", "auto_caption": "off"}).content.decode()
    on = client_for(alice).post(url, {"preset": "fast", "auto_caption": "on"}).content.decode()

    assert "trained on the trigger word alone" in off and 'name="auto_caption" value="off"' in off
    assert "captioned automatically" in on


def test_confirming_starts_the_run_as_the_user_and_opens_its_page(
    character: Any, alice: Any, provider: FakeProvider, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(alice).post(
            reverse("training:start", args=[character.pk]),
            {"preset": "fast", "steps": "800", "rank": "8", "resolutions": ["512"], "confirm": "1"},
        )

    run = TrainingRun.objects.get(character=character)
    assert response.url == reverse("training:run-detail", args=[run.pk])
    assert (run.params["steps"], run.params["rank"], run.params["resolutions"]) == (800, 8, [512])
    assert run.params["learning_rate"] == PRESETS["fast"]["learning_rate"]
    assert run.requested_by == alice
    first = run.events.get(from_status="")
    assert (first.source, first.detail) == (TrainingEvent.Source.USER, {"preset": "fast"})
    assert run.status == TrainingRun.Status.QUEUED  # submitted to the (fake) RunPod after commit


def test_advanced_fields_are_checked_by_the_same_rules_as_the_api(character: Any, alice: Any) -> None:
    response = client_for(alice).post(
        reverse("training:start", args=[character.pk]), {"preset": "fast", "steps": "50", "confirm": "1"}
    )

    assert response.status_code == 400
    assert "must be between 100 and 6000." in response.content.decode()
    assert not TrainingRun.objects.exists()


def test_an_unknown_preset_is_refused_beside_the_presets(character: Any, alice: Any) -> None:
    response = client_for(alice).post(
        reverse("training:start", args=[character.pk]), {"preset": "turbo", "confirm": "1"}
    )

    assert response.status_code == 400
    assert "Select a valid choice" in response.content.decode()
    assert not TrainingRun.objects.exists()


def test_a_run_over_the_budget_is_refused_with_a_message_saying_what_to_do(
    character: Any, alice: Any, provider: FakeProvider
) -> None:
    alice.monthly_gpu_budget_usd = Decimal("0.10")
    alice.save()

    response = client_for(alice).post(reverse("training:start", args=[character.pk]), START)

    assert response.status_code == 400
    (message,) = messages_of(response)
    assert "monthly GPU budget" in message
    assert message in response.content.decode()
    assert not TrainingRun.objects.exists()


def test_too_few_photos_is_refused_with_a_message_saying_how_many_to_add(
    alice: Any, settings: Any, provider: FakeProvider
) -> None:
    settings.TRAINING_MIN_IMAGES = 10
    empty = CharacterFactory(owner=alice, name="Empty")

    response = client_for(alice).post(reverse("training:start", args=[empty.pk]), START)

    assert response.status_code == 400
    assert "Add 10 more, then start training again." in messages_of(response)[0]
    assert not TrainingRun.objects.exists()


def test_a_second_run_while_one_is_active_is_refused_with_a_message(
    character: Any, alice: Any, provider: FakeProvider
) -> None:
    active = make_run(character, TrainingRun.Status.TRAINING)

    response = client_for(alice).post(reverse("training:start", args=[character.pk]), START)

    assert response.status_code == 409
    assert "Wait for it to finish or cancel it." in messages_of(response)[0]
    assert reverse("training:run-detail", args=[active.pk]) in response.content.decode()
    assert TrainingRun.objects.count() == 1


def test_the_confirm_step_shows_the_refusal_in_place_of_start_training_when_photos_are_missing(
    alice: Any, settings: Any
) -> None:
    settings.TRAINING_MIN_IMAGES = 10
    few = CharacterFactory(owner=alice, name="Few")

    page = (
        client_for(alice).post(reverse("training:start", args=[few.pk]), {"preset": "fast"}).content.decode()
    )

    assert "This run cannot start." in page
    assert "Training needs at least 10 reference photos and Few has 0. Add 10 more" in page
    assert 'name="confirm"' not in page


def test_over_the_budget_the_confirm_step_advises_the_fast_preset_when_it_fits(
    character: Any, alice: Any
) -> None:
    fast = training_cost_estimate(steps=PRESETS["fast"]["steps"])
    alice.monthly_gpu_budget_usd = fast + Decimal("0.01")
    alice.save()

    page = client_for(alice).post(reverse("training:start", args=[character.pk]), {"preset": "balanced"})

    text = page.content.decode()
    assert "This run cannot start." in text
    assert f"Choose the fast preset (about ${fast:.2f})" in text
    assert 'name="confirm"' not in text


def test_over_the_budget_with_the_fast_preset_chosen_the_advice_is_fewer_steps(
    character: Any, alice: Any
) -> None:
    alice.monthly_gpu_budget_usd = Decimal("0.71")  # about 300 steps
    alice.save()

    text = client_for(alice).post(reverse("training:start", args=[character.pk]), {"preset": "fast"}).content
    page = text.decode()

    assert "This run cannot start." in page
    assert f"Set at most {affordable_steps(Decimal('0.71'))} steps under Advanced settings" in page
    assert "fast preset" not in page


def test_cancel_asks_first_saying_what_is_billed_and_changes_nothing(character: Any, alice: Any) -> None:
    run = make_run(
        character,
        TrainingRun.Status.TRAINING,
        started_at=timezone.now() - timedelta(minutes=10),
        gpu_type="NVIDIA A100 80GB PCIe",
    )

    page = client_for(alice).get(reverse("training:run-cancel", args=[run.pk])).content.decode()

    assert "Cancel the run of Anna?" in page
    assert re.search(r"about <strong>\$0\.4[56]</strong> so far on NVIDIA A100 80GB PCIe", page), page
    assert "It cannot be undone" in page
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.TRAINING


def test_a_cancelled_run_shows_what_it_cost(character: Any, alice: Any) -> None:
    run = make_run(
        character,
        TrainingRun.Status.CANCELLED,
        started_at=timezone.now(),
        finished_at=timezone.now(),
        cost_usd=Decimal("0.3100"),
    )

    page = client_for(alice).get(reverse("training:run-detail", args=[run.pk])).content.decode()

    assert "GPU cost <strong>$0.31</strong>" in page
    assert "billed although the run did not complete" in page


def test_a_completed_run_is_titled_by_its_lora_not_as_training(character: Any, alice: Any) -> None:
    run = completed_run(character)

    page = client_for(alice).get(reverse("training:run-detail", args=[run.pk])).content.decode()

    assert "<h1>LoRA of Anna</h1>" in page
    assert "Training Anna" not in page


# ============================================================================================ run page


def test_the_run_page_shows_progress_with_step_percent_eta_and_loss(character: Any, alice: Any) -> None:
    run = make_run(
        character,
        TrainingRun.Status.TRAINING,
        progress_step=250,
        progress_total=1000,
        progress_loss=0.1234,
        progress_eta_seconds=754,
    )

    page = client_for(alice).get(reverse("training:run-detail", args=[run.pk])).content.decode()

    assert '<progress id="run-progress" max="100" value="25"' in page
    assert '<strong id="run-step">250</strong> of <strong id="run-total">1000</strong>' in page
    assert '<strong id="run-percent">25</strong>%' in page
    assert "12 min 34 s" in page
    assert "0.1234" in page
    assert "js/run.js" in page
    assert "Cancel run" in page


def test_the_run_page_lists_the_runs_events_as_a_timeline(
    character: Any, alice: Any, provider: FakeProvider, django_capture_on_commit_callbacks: Any
) -> None:
    client = client_for(alice)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("training:start", args=[character.pk]), START)
    run = TrainingRun.objects.get()

    page = client.get(reverse("training:run-detail", args=[run.pk])).content.decode()

    timeline = page.split('id="run-timeline"')[1].split("</ol>")[0]
    assert re.findall(r'class="status status-(\w+)"', timeline) == ["pending", "queued"]
    assert "by User" in timeline


def test_a_failed_run_shows_its_error_and_a_retry_button(character: Any, alice: Any) -> None:
    run = make_run(
        character,
        TrainingRun.Status.FAILED,
        error_code="out_of_memory",
        error_message="The GPU ran out of memory. Lower the rank or the resolutions and retry.",
    )

    page = client_for(alice).get(reverse("training:run-detail", args=[run.pk])).content.decode()

    assert "The GPU ran out of memory. Lower the rank or the resolutions and retry." in page
    assert f'action="{reverse("training:run-retry", args=[run.pk])}"' in page
    assert "Cancel run" not in page
    assert "js/run.js" not in page


def test_a_completed_run_shows_the_lora_link_with_its_size_and_sha256(character: Any, alice: Any) -> None:
    run = completed_run(character)

    page = client_for(alice).get(reverse("training:run-detail", args=[run.pk])).content.decode()

    assert f'href="{reverse("training:run-lora", args=[run.pk])}"' in page
    assert f"Download ohwx_anna-{str(run.pk)[:8]}.safetensors" in page
    assert "2.0\xa0KB" in page
    assert f'<code class="hash" id="lora-sha256">{run.lora_sha256}</code>' in page


def test_the_lora_download_streams_the_stored_file_to_its_owner(character: Any, alice: Any) -> None:
    run = completed_run(character)

    response = client_for(alice).get(reverse("training:run-lora", args=[run.pk]))

    body = b"".join(response.streaming_content)
    assert response.status_code == 200
    assert hashlib.sha256(body).hexdigest() == run.lora_sha256
    assert (
        response["Content-Disposition"] == f'attachment; filename="ohwx_anna-{str(run.pk)[:8]}.safetensors"'
    )


def test_a_run_without_a_lora_has_nothing_to_download(character: Any, alice: Any) -> None:
    run = make_run(character, TrainingRun.Status.TRAINING)

    assert client_for(alice).get(reverse("training:run-lora", args=[run.pk])).status_code == 404


# ============================================================================================ progress JSON


def test_the_progress_json_has_what_the_page_redraws(
    character: Any, alice: Any, provider: FakeProvider, django_capture_on_commit_callbacks: Any
) -> None:
    client = client_for(alice)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("training:start", args=[character.pk]), START)
    run = TrainingRun.objects.get()
    TrainingRun.objects.filter(pk=run.pk).update(
        status=TrainingRun.Status.TRAINING, progress_step=300, progress_total=600, progress_loss=0.25
    )

    response = client.get(reverse("training:run-progress", args=[run.pk]))

    data = response.json()
    assert response["Cache-Control"] == "no-store"
    assert {key: data[key] for key in ("status", "is_final", "step", "total_steps", "percent", "loss")} == {
        "status": "training",
        "is_final": False,
        "step": 300,
        "total_steps": 600,
        "percent": 50,
        "loss": 0.25,
    }
    assert [event["to"] for event in data["events"]] == ["pending", "queued"]
    assert data["error"] is None
    assert data["lora"] is None


def test_the_progress_json_of_a_completed_run_points_at_the_lora(character: Any, alice: Any) -> None:
    run = completed_run(character)

    data = client_for(alice).get(reverse("training:run-progress", args=[run.pk])).json()

    assert (data["is_final"], data["percent"]) == (True, 100)
    assert data["lora"] == {
        "filename": f"ohwx_anna-{str(run.pk)[:8]}.safetensors",
        "bytes": len(LORA),
        "sha256": run.lora_sha256,
        "low_noise": None,
        "step": None,
        "chosen_by": "final",
        "url": reverse("training:run-lora", args=[run.pk]),
    }


def test_the_progress_json_of_a_failed_run_carries_its_error(character: Any, alice: Any) -> None:
    run = make_run(character, TrainingRun.Status.FAILED, error_code="bad_input", error_message="Fix it.")

    data = client_for(alice).get(reverse("training:run-progress", args=[run.pk])).json()

    assert data["error"] == {"code": "bad_input", "message": "Fix it."}


# ============================================================================================ cancel, retry


def test_cancelling_from_the_run_page_stops_the_job_and_records_the_user(
    character: Any, alice: Any, provider: FakeProvider
) -> None:
    run = make_run(character, TrainingRun.Status.TRAINING)

    response = client_for(alice).post(reverse("training:run-cancel", args=[run.pk]))

    run.refresh_from_db()
    assert response.url == reverse("training:run-detail", args=[run.pk])
    assert run.status == TrainingRun.Status.CANCELLED
    assert provider.cancelled == [run.runpod_job_id]
    assert run.events.get(to_status="cancelled").source == TrainingEvent.Source.USER
    assert "The run was cancelled." in messages_of(response)[0]


def test_cancelling_a_finished_run_says_there_is_nothing_to_cancel(
    character: Any, alice: Any, provider: FakeProvider
) -> None:
    run = completed_run(character)

    response = client_for(alice).post(reverse("training:run-cancel", args=[run.pk]), follow=True)

    assert "This run has already completed; there is nothing to cancel." in response.content.decode()
    assert provider.cancelled == []


def test_retrying_a_failed_run_starts_a_new_one_with_the_same_settings(
    character: Any, alice: Any, provider: FakeProvider
) -> None:
    failed = make_run(
        character, TrainingRun.Status.FAILED, manifest=_manifest(character), params={"steps": 700, "rank": 8}
    )

    response = client_for(alice).post(reverse("training:run-retry", args=[failed.pk]))

    new = TrainingRun.objects.exclude(pk=failed.pk).get()
    assert response.url == reverse("training:run-detail", args=[new.pk])
    assert new.params == failed.params
    first = new.events.get(from_status="")
    assert (first.source, first.detail) == (TrainingEvent.Source.USER, {"retry_of": str(failed.pk)})


def test_retrying_a_run_whose_photos_were_deleted_explains_what_to_do(
    character: Any, alice: Any, provider: FakeProvider
) -> None:
    failed = make_run(
        character,
        TrainingRun.Status.FAILED,
        manifest=[{"name": "gone.jpg", "sha256": "0" * 64, "storage_name": "x", "caption": None, "bytes": 1}],
    )

    response = client_for(alice).post(reverse("training:run-retry", args=[failed.pk]), follow=True)

    assert "Start a new run with the character&#x27;s current images instead." in response.content.decode()
    assert TrainingRun.objects.count() == 1


# ============================================================================================ runs list


def test_the_runs_list_shows_only_my_runs(character: Any, alice: Any, bob: Any) -> None:
    mine = completed_run(character)
    theirs = make_run(CharacterFactory(owner=bob, name="Bobs secret"), TrainingRun.Status.TRAINING)

    page = client_for(alice).get(reverse("training:run-list")).content.decode()

    assert reverse("training:run-detail", args=[mine.pk]) in page
    assert reverse("training:run-detail", args=[theirs.pk]) not in page
    assert "Bobs secret" not in page


def test_every_page_links_the_runs_and_the_developer_pages(alice: Any) -> None:
    page = client_for(alice).get(reverse("characters:list")).content.decode()

    nav = page.split('<nav aria-label="Main">')[1].split("</nav>")[0]
    for name in ("training:run-list", "developer:tokens", "developer:webhooks"):
        assert f'href="{reverse(name)}"' in nav


def test_a_run_whose_photos_were_deleted_offers_train_again_instead_of_retry(
    character: Any, alice: Any
) -> None:
    failed = make_run(
        character,
        TrainingRun.Status.FAILED,
        manifest=[{"name": "gone.jpg", "sha256": "0" * 64, "storage_name": "x", "caption": None, "bytes": 1}],
        error_message="The worker could not download gone.jpg.",
    )

    page = client_for(alice).get(reverse("training:run-detail", args=[failed.pk])).content.decode()

    assert reverse("training:run-retry", args=[failed.pk]) not in page
    assert (
        f'<a class="button" href="{reverse("training:start", args=[character.pk])}">Train again</a>' in page
    )
    assert "1 of this run&#x27;s photos have since been deleted, so it cannot be repeated exactly." in page


def test_a_run_that_cannot_be_repeated_while_another_trains_says_to_wait(character: Any, alice: Any) -> None:
    failed = make_run(character, TrainingRun.Status.FAILED, manifest=_manifest(character))
    make_run(character, TrainingRun.Status.TRAINING)

    page = client_for(alice).get(reverse("training:run-detail", args=[failed.pk])).content.decode()

    assert reverse("training:run-retry", args=[failed.pk]) not in page
    assert "Anna is already training. Wait for that run to finish, or cancel it, first." in page


def test_a_run_over_budget_to_repeat_says_so_before_the_click(character: Any, alice: Any) -> None:
    alice.monthly_gpu_budget_usd = Decimal("0.01")
    alice.save()
    failed = make_run(character, TrainingRun.Status.FAILED, manifest=_manifest(character))

    page = client_for(alice).get(reverse("training:run-detail", args=[failed.pk])).content.decode()

    assert reverse("training:run-retry", args=[failed.pk]) not in page
    assert "Repeating it would cost about $" in page
    assert "of your budget is left. Train again from the training form instead:" in page


def test_a_run_that_can_be_repeated_offers_retry(character: Any, alice: Any) -> None:
    failed = make_run(character, TrainingRun.Status.FAILED, manifest=_manifest(character))

    page = client_for(alice).get(reverse("training:run-detail", args=[failed.pk])).content.decode()

    assert f'action="{reverse("training:run-retry", args=[failed.pk])}"' in page
    assert 'id="retry-refusal"' not in page


def test_the_form_offers_pods_only_to_an_account_staff_enabled_them_for(character: Any, alice: Any) -> None:
    url = reverse("training:start", args=[character.pk])
    without = client_for(alice).get(url).content.decode()
    alice.pod_training_allowed = True
    alice.save()
    with_pods = client_for(alice).get(url).content.decode()

    assert 'name="provider"' not in without
    assert 'name="provider" value="pod"' in with_pods


def test_an_account_with_pods_starts_a_pod_run_from_the_form_through_the_confirm_step(
    character: Any, alice: Any
) -> None:
    alice.pod_training_allowed = True
    alice.save()
    pod = Pod(name="pod-a", ui_url="http://127.0.0.1:9", hourly_price_usd=Decimal("1"))
    pod_token_set(pod, "token")
    pod.save()
    url = reverse("training:start", args=[character.pk])

    confirm = client_for(alice).post(url, {"preset": "fast", "provider": "pod"}).content.decode()
    client_for(alice).post(url, {"preset": "fast", "provider": "pod", "confirm": "1"})

    assert 'name="provider" value="pod"' in confirm  # carried as a hidden field
    assert TrainingRun.objects.get(character=character).provider == "pod"


def test_a_pod_posted_by_an_account_without_pods_trains_serverless(character: Any, alice: Any) -> None:
    url = reverse("training:start", args=[character.pk])

    client_for(alice).post(url, {**START, "provider": "pod"})

    assert TrainingRun.objects.get(character=character).provider == "serverless"
