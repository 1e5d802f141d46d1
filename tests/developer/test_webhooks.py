from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from django.urls import reverse
from rest_framework.test import APIClient
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from developer.models import WebhookDelivery, WebhookEndpoint
from developer.services import webhook_endpoint_create, webhook_events_record
from developer.tasks import deliver_webhook
from developer.webhooks import sign
from studio.celery import app
from tests.developer.api_helpers import assert_error
from tests.developer.receiver import Receiver, receiver
from tests.training.factories import TrainingRunFactory
from training.models import TrainingRun
from training.signals import training_run_status_changed

__all__ = ["receiver"]


@pytest.fixture(autouse=True)
def retries_run_in_process() -> Iterator[None]:
    """`apply()` runs each retry at once, as a worker would after the pause; a retry is not an error."""
    propagates = app.conf.task_eager_propagates
    app.conf.task_eager_propagates = False
    yield
    app.conf.task_eager_propagates = propagates


@pytest.fixture
def fast_retries(settings: Any) -> None:
    # `apply()` does not wait out a retry's countdown, so the next attempt must be due at once.
    settings.WEBHOOK_RETRY_DELAYS_SECONDS = [0, 0, 0]
    settings.WEBHOOK_TIMEOUT_SECONDS = 2.0


def completed_run(owner: Any) -> TrainingRun:
    return TrainingRunFactory(
        character__owner=owner,
        status=TrainingRun.Status.COMPLETED,
        lora_name="characters/x/loras/run.safetensors",
        lora_bytes=1234,
        lora_sha256="b" * 64,
    )


def record_and_capture(django_capture_on_commit_callbacks: Any, run: TrainingRun, status: str) -> list[Any]:
    with django_capture_on_commit_callbacks(execute=False):
        training_run_status_changed.send(
            sender=TrainingRun, run_id=run.pk, from_status="training", to_status=status
        )
    return list(WebhookDelivery.objects.order_by("created_at"))


# --- Registering endpoints ----------------------------------------------------------------


def test_alice_registers_an_endpoint_and_sees_its_secret_once(alice_api: APIClient) -> None:
    response = alice_api.post("/api/v1/webhooks", {"url": "http://127.0.0.1:9/hook"}, format="json")
    assert response.status_code == 201
    secret = response.json()["secret"]
    assert secret.startswith("whsec_") and len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    endpoint_id = response.json()["id"]
    assert "secret" not in alice_api.get(f"/api/v1/webhooks/{endpoint_id}").json()
    assert all("secret" not in item for item in alice_api.get("/api/v1/webhooks").json()["results"])


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1/hook", "http://10.1.2.3/hook", "http://169.254.169.254/latest", "http://[::1]/x"],
)
def test_it_refuses_loopback_private_and_link_local_urls(
    alice_api: APIClient, settings: Any, url: str
) -> None:
    settings.WEBHOOKS_ALLOW_PRIVATE_URLS = False
    error = assert_error(
        alice_api.post("/api/v1/webhooks", {"url": url}, format="json"), 400, "webhook_url_not_allowed"
    )
    assert "url" in error["fields"]
    assert not WebhookEndpoint.objects.exists()


def test_it_refuses_a_host_name_that_resolves_to_a_private_address(
    alice_api: APIClient, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.WEBHOOKS_ALLOW_PRIVATE_URLS = False
    monkeypatch.setattr(
        socket,
        "getaddrinfo",
        lambda *args, **kwargs: [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.168.1.5", 443))],
    )
    response = alice_api.post("/api/v1/webhooks", {"url": "https://hooks.example.com/x"}, format="json")
    assert_error(response, 400, "webhook_url_not_allowed")


def test_it_accepts_a_public_address(
    alice_api: APIClient, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.WEBHOOKS_ALLOW_PRIVATE_URLS = False
    monkeypatch.setattr(
        socket,
        "getaddrinfo",
        lambda *args, **kwargs: [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", 443))],
    )
    response = alice_api.post("/api/v1/webhooks", {"url": "https://hooks.example.com/x"}, format="json")
    assert response.status_code == 201


def test_it_refuses_a_url_that_is_not_http(alice_api: APIClient) -> None:
    response = alice_api.post("/api/v1/webhooks", {"url": "ftp://example.com/x"}, format="json")
    assert_error(response, 400, "webhook_url_not_allowed")


def test_alice_pauses_and_deletes_an_endpoint(alice_api: APIClient, alice: Any) -> None:
    endpoint, _ = webhook_endpoint_create(user=alice, url="http://127.0.0.1:9/hook")
    response = alice_api.patch(f"/api/v1/webhooks/{endpoint.pk}", {"active": False}, format="json")
    assert response.status_code == 200 and response.json()["active"] is False
    assert alice_api.delete(f"/api/v1/webhooks/{endpoint.pk}").status_code == 204
    assert not WebhookEndpoint.objects.filter(pk=endpoint.pk).exists()


def test_bob_can_neither_read_nor_change_alices_endpoint(bob_api: APIClient, alice: Any) -> None:
    endpoint, _ = webhook_endpoint_create(user=alice, url="http://127.0.0.1:9/hook")
    base = f"/api/v1/webhooks/{endpoint.pk}"
    assert_error(bob_api.get(base), 404, "not_found")
    assert_error(bob_api.get(f"{base}/deliveries"), 404, "not_found")
    assert_error(bob_api.patch(base, {"active": False}, format="json"), 404, "not_found")
    assert_error(bob_api.delete(base), 404, "not_found")
    endpoint.refresh_from_db()
    assert endpoint.active
    assert bob_api.get("/api/v1/webhooks").json()["results"] == []


def test_the_webhooks_page_registers_an_endpoint_and_shows_the_secret_once(client: Any, alice: Any) -> None:
    client.force_login(alice)
    response = client.post(reverse("developer:webhooks"), {"url": "http://127.0.0.1:9/hook"}, follow=True)
    secret = response.context["new_secret"]
    assert secret.startswith("whsec_") and secret in response.content.decode()
    endpoint = WebhookEndpoint.objects.get(user=alice)
    page = client.get(reverse("developer:webhook", args=[endpoint.pk])).content.decode()
    assert secret not in page


def test_the_webhooks_page_explains_a_refused_url(client: Any, alice: Any, settings: Any) -> None:
    settings.WEBHOOKS_ALLOW_PRIVATE_URLS = False
    client.force_login(alice)
    response = client.post(reverse("developer:webhooks"), {"url": "http://127.0.0.1/hook"})
    assert "private" in response.content.decode()
    assert not WebhookEndpoint.objects.exists()


# --- Events -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "event_type"),
    [
        ("training", "training_run.started"),
        ("completed", "training_run.completed"),
        ("failed", "training_run.failed"),
        ("cancelled", "training_run.cancelled"),
    ],
)
def test_a_status_change_records_an_event_per_active_endpoint(
    alice: Any, django_capture_on_commit_callbacks: Any, status: str, event_type: str
) -> None:
    webhook_endpoint_create(user=alice, url="http://127.0.0.1:9/a")
    webhook_endpoint_create(user=alice, url="http://127.0.0.1:9/b")
    paused, _ = webhook_endpoint_create(user=alice, url="http://127.0.0.1:9/c")
    paused.active = False
    paused.save()
    run = TrainingRunFactory(character__owner=alice, status=status)
    deliveries = record_and_capture(django_capture_on_commit_callbacks, run, status)
    assert len(deliveries) == 2
    assert {delivery.event_type for delivery in deliveries} == {event_type}
    assert deliveries[0].payload["data"]["id"] == str(run.pk)
    assert deliveries[0].payload["type"] == event_type


def test_queued_and_pending_runs_send_no_event(alice: Any, django_capture_on_commit_callbacks: Any) -> None:
    webhook_endpoint_create(user=alice, url="http://127.0.0.1:9/a")
    run = TrainingRunFactory(character__owner=alice, status="queued")
    assert record_and_capture(django_capture_on_commit_callbacks, run, "queued") == []


def test_bobs_endpoints_hear_nothing_of_alices_runs(
    alice: Any, bob: Any, django_capture_on_commit_callbacks: Any
) -> None:
    webhook_endpoint_create(user=bob, url="http://127.0.0.1:9/a")
    run = completed_run(alice)
    assert record_and_capture(django_capture_on_commit_callbacks, run, "completed") == []


def test_the_same_status_change_announced_twice_records_one_event(alice: Any) -> None:
    webhook_endpoint_create(user=alice, url="http://127.0.0.1:9/a")
    run = completed_run(alice)
    webhook_events_record(run_id=run.pk, status="completed")
    webhook_events_record(run_id=run.pk, status="completed")
    assert WebhookDelivery.objects.count() == 1


def test_a_recorded_event_is_queued_for_sending_after_commit(
    alice: Any, django_capture_on_commit_callbacks: Any
) -> None:
    webhook_endpoint_create(user=alice, url="http://127.0.0.1:9/a")
    run = completed_run(alice)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        webhook_events_record(run_id=run.pk, status="completed")
    assert len(callbacks) == 1


# --- Delivery -----------------------------------------------------------------------------


def test_a_delivery_is_signed_the_standard_webhooks_way(alice: Any, receiver: Receiver) -> None:
    _, secret = webhook_endpoint_create(user=alice, url=receiver.url)
    run = completed_run(alice)
    [delivery] = webhook_events_record(run_id=run.pk, status="completed")
    deliver_webhook.apply(args=[str(delivery.pk)])
    [request] = receiver.received
    # An independent implementation (the standardwebhooks package) accepts the signature.
    payload = Webhook(secret).verify(request.body, request.headers)
    assert payload["type"] == "training_run.completed"
    assert payload["data"]["lora"]["sha256"] == "b" * 64
    assert request.headers["webhook-id"] == delivery.event_id
    assert request.headers["content-type"] == "application/json"


def test_a_tampered_body_fails_verification(alice: Any, receiver: Receiver) -> None:
    _, secret = webhook_endpoint_create(user=alice, url=receiver.url)
    [delivery] = webhook_events_record(run_id=completed_run(alice).pk, status="completed")
    deliver_webhook.apply(args=[str(delivery.pk)])
    [request] = receiver.received
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(request.body.replace(b"completed", b"failed"), request.headers)


def test_the_signature_matches_the_specification_by_hand() -> None:
    key = b"k" * 32
    secret = "whsec_" + base64.b64encode(key).decode()
    headers = sign(secret, "msg_1", 1700000000, b'{"a":1}')
    expected = base64.b64encode(hmac.new(key, b'msg_1.1700000000.{"a":1}', hashlib.sha256).digest()).decode()
    assert headers == {
        "webhook-id": "msg_1",
        "webhook-timestamp": "1700000000",
        "webhook-signature": f"v1,{expected}",
    }


def test_a_receiver_that_fails_twice_then_succeeds_gets_the_event_once_as_delivered(
    alice: Any, receiver: Receiver, fast_retries: None
) -> None:
    _, secret = webhook_endpoint_create(user=alice, url=receiver.url)
    receiver.answers = [500, 503]
    [delivery] = webhook_events_record(run_id=completed_run(alice).pk, status="completed")
    deliver_webhook.apply(args=[str(delivery.pk)])
    delivery.refresh_from_db()
    assert delivery.status == WebhookDelivery.Status.DELIVERED
    assert delivery.attempts == 3
    assert delivery.last_status_code == 204
    assert WebhookDelivery.objects.count() == 1
    assert {request.headers["webhook-id"] for request in receiver.received} == {delivery.event_id}
    for request in receiver.received:
        Webhook(secret).verify(request.body, request.headers)


def test_a_delivered_event_is_not_sent_again(alice: Any, receiver: Receiver) -> None:
    webhook_endpoint_create(user=alice, url=receiver.url)
    [delivery] = webhook_events_record(run_id=completed_run(alice).pk, status="completed")
    deliver_webhook.apply(args=[str(delivery.pk)])
    deliver_webhook.apply(args=[str(delivery.pk)])
    assert len(receiver.received) == 1


def test_it_gives_up_after_the_last_attempt(alice: Any, receiver: Receiver, fast_retries: None) -> None:
    webhook_endpoint_create(user=alice, url=receiver.url)
    receiver.answers = [500] * 10
    [delivery] = webhook_events_record(run_id=completed_run(alice).pk, status="completed")
    deliver_webhook.apply(args=[str(delivery.pk)])
    delivery.refresh_from_db()
    assert delivery.status == WebhookDelivery.Status.FAILED
    assert delivery.attempts == 4 == len(receiver.received)
    assert delivery.last_status_code == 500
    assert "500" in delivery.last_error


def test_an_unreachable_endpoint_is_recorded_as_an_error(alice: Any, fast_retries: None) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    webhook_endpoint_create(user=alice, url=f"http://127.0.0.1:{port}/gone")
    [delivery] = webhook_events_record(run_id=completed_run(alice).pk, status="completed")
    deliver_webhook.apply(args=[str(delivery.pk)])
    delivery.refresh_from_db()
    assert delivery.status == WebhookDelivery.Status.FAILED
    assert delivery.last_status_code is None
    assert "Connection" in delivery.last_error


def test_a_delivery_to_an_address_that_became_private_is_not_sent(
    alice: Any, receiver: Receiver, settings: Any, fast_retries: None
) -> None:
    webhook_endpoint_create(user=alice, url=receiver.url)
    [delivery] = webhook_events_record(run_id=completed_run(alice).pk, status="completed")
    settings.WEBHOOKS_ALLOW_PRIVATE_URLS = False
    deliver_webhook.apply(args=[str(delivery.pk)])
    delivery.refresh_from_db()
    assert receiver.received == []
    assert delivery.status == WebhookDelivery.Status.FAILED
    assert "private" in delivery.last_error


def test_alice_reads_the_delivery_log(alice_api: APIClient, alice: Any, receiver: Receiver) -> None:
    endpoint, _ = webhook_endpoint_create(user=alice, url=receiver.url)
    [delivery] = webhook_events_record(run_id=completed_run(alice).pk, status="completed")
    deliver_webhook.apply(args=[str(delivery.pk)])
    [item] = alice_api.get(f"/api/v1/webhooks/{endpoint.pk}/deliveries").json()["results"]
    assert item["status"] == "delivered" and item["attempts"] == 1
    assert item["event_type"] == "training_run.completed"
    assert json.dumps(item["payload"])


def test_the_delivery_log_page_lists_attempts(client: Any, alice: Any, receiver: Receiver) -> None:
    endpoint, _ = webhook_endpoint_create(user=alice, url=receiver.url)
    [delivery] = webhook_events_record(run_id=completed_run(alice).pk, status="completed")
    deliver_webhook.apply(args=[str(delivery.pk)])
    client.force_login(alice)
    page = client.get(reverse("developer:webhook", args=[endpoint.pk])).content.decode()
    assert delivery.event_id in page and "Delivered" in page
