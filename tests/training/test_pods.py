"""Staff register pods for pod-mode runs; a pod's UI token is a secret: stored encrypted, never shown back."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib import admin as django_admin
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from tests.characters.factories import CharacterFactory, ReferenceImageFactory
from tests.developer.api_helpers import api_isolation, client_for  # noqa: F401
from tests.training.factories import TrainingRunFactory
from training.models import Pod, TrainingRun
from training.pod_secrets import PodTokenUnreadable, pod_token, pod_token_set
from training.selectors import pod_cost_usd

pytestmark = pytest.mark.django_db

TOKEN = "aitk-secret-token-1234"
PODS = reverse("admin:training_pod_changelist")


@pytest.fixture
def staff_client(client: Client, staff: Any) -> Client:
    client.force_login(staff)
    return client


def register(staff_client: Client, **overrides: Any) -> Any:
    form = {
        "name": "pod-a",
        "runpod_pod_id": "abc123",
        "ui_url": "https://abc123-8675.proxy.runpod.net",
        "gpu_ids": "0",
        "hourly_price_usd": "0.69",
        "accepts_runs": "on",
        "idle_stop_minutes": "",
        "token": TOKEN,
        **overrides,
    }
    return staff_client.post(reverse("admin:training_pod_add"), form, follow=True)


def test_a_run_is_serverless_unless_told_otherwise() -> None:
    run = TrainingRunFactory()

    assert run.provider == TrainingRun.Provider.SERVERLESS
    assert run.pod is None


def test_staff_register_a_pod_whose_token_is_stored_encrypted(staff_client: Client) -> None:
    register(staff_client)

    pod = Pod.objects.get(name="pod-a")
    assert TOKEN not in pod.token_encrypted
    assert pod_token(pod) == TOKEN
    assert pod.state == Pod.State.RUNNING


def test_the_pods_page_never_shows_the_token_back(staff_client: Client) -> None:
    register(staff_client)
    pod = Pod.objects.get(name="pod-a")

    page = staff_client.get(reverse("admin:training_pod_change", args=[pod.pk]))
    listing = staff_client.get(PODS)

    for response in (page, listing):
        assert response.status_code == 200
        assert TOKEN not in response.content.decode()
        assert pod.token_encrypted not in response.content.decode()
    assert TOKEN not in repr(pod) and TOKEN not in str(pod)


def test_saving_a_pod_with_the_token_left_empty_keeps_the_stored_one(staff_client: Client) -> None:
    register(staff_client)
    pod = Pod.objects.get(name="pod-a")

    staff_client.post(
        reverse("admin:training_pod_change", args=[pod.pk]),
        {
            "name": "pod-a",
            "runpod_pod_id": "abc123",
            "ui_url": "https://abc123-8675.proxy.runpod.net",
            "gpu_ids": "0",
            "hourly_price_usd": "0.79",
            "accepts_runs": "on",
            "token": "",
        },
    )

    pod.refresh_from_db()
    assert (pod.hourly_price_usd, pod_token(pod)) == (Decimal("0.79"), TOKEN)


def test_a_new_pod_without_a_token_is_refused(staff_client: Client) -> None:
    response = register(staff_client, token="")

    assert "A new pod needs its UI token." in response.content.decode()
    assert not Pod.objects.exists()


def test_a_token_encrypted_under_another_secret_key_says_to_enter_it_again(settings: Any) -> None:
    pod = Pod(name="pod-b", ui_url="http://127.0.0.1:8675", hourly_price_usd=Decimal("1"))
    pod_token_set(pod, TOKEN)
    settings.SECRET_KEY = "another-key-" + "y" * 40

    with pytest.raises(PodTokenUnreadable, match="enter it again"):
        pod_token(pod)


def test_a_pods_cost_is_its_running_hours_at_its_price() -> None:
    now = timezone.now()
    pod = Pod(
        name="pod-c",
        ui_url="http://127.0.0.1:8675",
        hourly_price_usd=Decimal("2.00"),
        uptime_seconds=3600,
        running_since=now - timedelta(minutes=30),
    )

    assert pod_cost_usd(pod, now) == Decimal("3.0000")


# --- Choosing the provider -----------------------------------------------------------------------


@pytest.fixture
def accepting_pod() -> Pod:
    pod = Pod(name="pod-z", ui_url="http://127.0.0.1:9", hourly_price_usd=Decimal("1"))
    pod_token_set(pod, TOKEN)
    pod.save()
    return pod


def start_url(character: Any) -> str:
    return f"/api/v1/characters/{character.pk}/runs"


@pytest.fixture
def staff_character(staff: Any, settings: Any) -> Any:
    settings.TRAINING_MIN_IMAGES = 3
    character = CharacterFactory(owner=staff, name="Cleo", trigger_word="ohwx_cleo")
    ReferenceImageFactory.create_batch(3, character=character)
    return character


def test_staff_start_a_pod_run_through_the_api(staff: Any, staff_character: Any, accepting_pod: Pod) -> None:
    api = client_for(staff)
    character = staff_character

    response = api.post(start_url(character), {"preset": "fast", "provider": "pod"}, format="json")

    assert response.status_code == 202, response.content
    assert response.json()["provider"] == "pod"
    assert TrainingRun.objects.get(pk=response.json()["id"]).provider == "pod"


def test_a_user_staff_did_not_enable_pods_for_is_refused_a_pod_run(
    alice: Any, character: Any, accepting_pod: Pod
) -> None:
    response = client_for(alice).post(
        start_url(character), {"preset": "fast", "provider": "pod"}, format="json"
    )

    assert (response.status_code, response.json()["error"]["code"]) == (400, "pod_not_allowed")
    assert not TrainingRun.objects.exists()


def test_a_user_staff_enabled_pods_for_may_start_one(alice: Any, character: Any, accepting_pod: Pod) -> None:
    alice.pod_training_allowed = True
    alice.save()

    response = client_for(alice).post(
        start_url(character), {"preset": "fast", "provider": "pod"}, format="json"
    )

    assert response.status_code == 202, response.content


def test_a_pod_run_with_no_pod_taking_runs_is_refused(staff: Any, staff_character: Any) -> None:
    response = client_for(staff).post(
        start_url(staff_character), {"preset": "fast", "provider": "pod"}, format="json"
    )

    assert (response.status_code, response.json()["error"]["code"]) == (400, "no_pod")


def test_staff_start_a_characters_run_on_a_pod_from_the_admin(
    staff_client: Client, character: Any, accepting_pod: Pod
) -> None:
    response = staff_client.post(
        reverse("admin:characters_character_changelist"),
        {"action": "start_training_on_pod", django_admin.helpers.ACTION_CHECKBOX_NAME: [str(character.pk)]},
        follow=True,
    )

    run = TrainingRun.objects.get(character=character)
    assert run.provider == "pod"
    assert "training started on a pod" in response.content.decode()
    page = staff_client.get(reverse("admin:training_trainingrun_change", args=[run.pk]))
    assert page.status_code == 200 and "Pod (AI Toolkit UI)" in page.content.decode()
