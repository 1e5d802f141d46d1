"""A webhook delivery whose task is lost — the broker down when it is queued, Redis restarted without
persistence, the worker killed mid-send — is sent again: each attempt claims only a due delivery, a claim
holds it for a lease, and beat's sweep queues pending deliveries long past their time."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from kombu.exceptions import OperationalError
from standardwebhooks.webhooks import Webhook

from developer import deliveries
from developer.deliveries import attempt_lease, webhook_deliveries_claim_overdue, webhook_delivery_attempt
from developer.models import WebhookDelivery, WebhookEndpoint
from developer.services import webhook_endpoint_create, webhook_events_record
from developer.tasks import deliver_webhook, sweep_webhook_deliveries
from studio.celery import app
from tests.developer.receiver import Receiver, receiver
from tests.training.factories import TrainingRunFactory
from training.models import TrainingRun
from training.services import training_run_cancel

__all__ = ["receiver"]

INTERVAL_S = 60.0


@pytest.fixture(autouse=True)
def sweep_interval(settings: Any) -> None:
    settings.WEBHOOK_SWEEP_INTERVAL_SECONDS = INTERVAL_S


@pytest.fixture
def tasks_run_in_process() -> Iterator[None]:
    """Tasks the sweep queues run at once, in this process, as a worker would take them."""
    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True
    yield
    app.conf.task_always_eager = False


class WorkerKilled(BaseException):
    """The worker process dying: nothing after it runs, and nothing catches it."""


def completed_run_delivery(alice: Any, url: str) -> tuple[WebhookDelivery, str]:
    _, secret = webhook_endpoint_create(user=alice, url=url)
    run = TrainingRunFactory(character__owner=alice, status=TrainingRun.Status.COMPLETED)
    [delivery] = webhook_events_record(run_id=run.pk, status="completed")
    return delivery, secret


def delivery_due(
    endpoint: WebhookEndpoint, name: str, *, seconds_ago: float, **fields: Any
) -> WebhookDelivery:
    return WebhookDelivery.objects.create(
        endpoint=endpoint,
        event_id=f"msg_{name}",
        event_type="training_run.completed",
        payload={"type": "training_run.completed"},
        next_attempt_at=timezone.now() - timedelta(seconds=seconds_ago),
        **fields,
    )


def killed_after_the_receiver_answered(monkeypatch: pytest.MonkeyPatch, delivery: WebhookDelivery) -> None:
    """One attempt whose worker dies after the endpoint answered 2xx, before the outcome is written."""

    def die(*args: Any, **kwargs: Any) -> None:
        raise WorkerKilled

    with monkeypatch.context() as patch:
        patch.setattr(deliveries, "_record", die)
        with pytest.raises(WorkerKilled):
            webhook_delivery_attempt(delivery_id=delivery.pk)


# --- The due claim ------------------------------------------------------------------------


def test_a_new_delivery_is_due_at_once(alice: Any) -> None:
    delivery, _ = completed_run_delivery(alice, "http://127.0.0.1:9/hook")

    delivery.refresh_from_db()
    assert delivery.status == "pending" and delivery.next_attempt_at <= timezone.now()


def test_a_task_for_a_delivery_not_yet_due_sends_nothing(alice: Any, receiver: Receiver) -> None:
    delivery, _ = completed_run_delivery(alice, receiver.url)
    later = timezone.now() + timedelta(minutes=1)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=later)

    deliver_webhook.apply(args=[str(delivery.pk)])

    delivery.refresh_from_db()
    assert receiver.received == []
    assert (delivery.status, delivery.attempts) == ("pending", 0)


def test_a_failed_attempt_is_due_again_after_its_retry_delay_and_not_before(
    alice: Any, receiver: Receiver, settings: Any
) -> None:
    settings.WEBHOOK_RETRY_DELAYS_SECONDS = [10, 60]
    receiver.answers = [503]
    delivery, _ = completed_run_delivery(alice, receiver.url)

    with time_machine.travel(timezone.now(), tick=False) as clock:
        outcome = webhook_delivery_attempt(delivery_id=delivery.pk)
        delivery.refresh_from_db()
        assert (outcome.attempt, outcome.retry_in) == (1, 10)
        assert delivery.next_attempt_at == timezone.now() + timedelta(seconds=10)

        clock.shift(9)
        assert webhook_delivery_attempt(delivery_id=delivery.pk) == deliveries.NOTHING_SENT  # early duplicate
        clock.shift(1)
        assert webhook_delivery_attempt(delivery_id=delivery.pk).attempt == 2

    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, len(receiver.received)) == ("delivered", 2, 2)
    assert delivery.next_attempt_at is None


# --- A killed attempt ---------------------------------------------------------------------


def test_an_attempt_whose_worker_died_holds_the_delivery_for_its_lease(
    alice: Any, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    delivery, _ = completed_run_delivery(alice, receiver.url)

    with time_machine.travel(timezone.now(), tick=False) as clock:
        killed_after_the_receiver_answered(monkeypatch, delivery)
        delivery.refresh_from_db()
        assert (delivery.status, delivery.attempts) == ("pending", 1)
        assert delivery.next_attempt_at == timezone.now() + attempt_lease()

        # A copy of its task (a redelivered message) within the lease: the attempt may still be running.
        clock.shift(attempt_lease() - timedelta(seconds=1))
        deliver_webhook.apply(args=[str(delivery.pk)])

    assert len(receiver.received) == 1
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("pending", 1)


def test_after_the_lease_the_event_is_sent_again_with_the_same_id_and_recorded_once(
    alice: Any, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    delivery, secret = completed_run_delivery(alice, receiver.url)
    killed_after_the_receiver_answered(monkeypatch, delivery)

    with time_machine.travel(timezone.now() + attempt_lease()):
        deliver_webhook.apply(args=[str(delivery.pk)])

    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 2, 204)
    assert [request.headers["webhook-id"] for request in receiver.received] == [delivery.event_id] * 2
    for request in receiver.received:
        Webhook(secret).verify(request.body, request.headers)


def test_the_lease_covers_the_posts_timeouts(settings: Any) -> None:
    settings.WEBHOOK_TIMEOUT_SECONDS = 10.0
    # Connect (5 s) and read (10 s) timeouts, and as long again for the DNS checks and the write.
    assert attempt_lease() == timedelta(seconds=25)


# --- The sweep ----------------------------------------------------------------------------


def test_the_sweep_takes_only_pending_deliveries_due_for_longer_than_an_interval(alice: Any) -> None:
    endpoint, _ = webhook_endpoint_create(user=alice, url="http://127.0.0.1:9/hook")
    lost = delivery_due(endpoint, "lost", seconds_ago=INTERVAL_S + 1)
    delivery_due(endpoint, "queued", seconds_ago=INTERVAL_S - 1)  # its task may simply not have run yet
    delivery_due(endpoint, "in-flight", seconds_ago=-20, attempts=1)  # an attempt holds its lease
    delivery_due(endpoint, "delivered", seconds_ago=3600, status="delivered")
    delivery_due(endpoint, "failed", seconds_ago=3600, status="failed")

    with time_machine.travel(timezone.now(), tick=False):
        assert webhook_deliveries_claim_overdue() == [lost.pk]
        lost.refresh_from_db()
        assert lost.next_attempt_at == timezone.now()  # due for its new task, and not overdue


def test_the_sweep_does_not_take_a_delivery_again_before_another_interval(alice: Any) -> None:
    endpoint, _ = webhook_endpoint_create(user=alice, url="http://127.0.0.1:9/hook")
    lost = delivery_due(endpoint, "lost", seconds_ago=INTERVAL_S * 10)

    with time_machine.travel(timezone.now(), tick=False) as clock:
        assert webhook_deliveries_claim_overdue() == [lost.pk]
        assert webhook_deliveries_claim_overdue() == []
        clock.shift(INTERVAL_S + 1)  # its new task was lost as well
        assert webhook_deliveries_claim_overdue() == [lost.pk]


def test_the_sweep_takes_a_bounded_batch_oldest_first(alice: Any, settings: Any) -> None:
    settings.WEBHOOK_SWEEP_BATCH_SIZE = 3
    endpoint, _ = webhook_endpoint_create(user=alice, url="http://127.0.0.1:9/hook")
    lost = [delivery_due(endpoint, str(index), seconds_ago=INTERVAL_S + 100 - index) for index in range(5)]

    assert webhook_deliveries_claim_overdue() == [delivery.pk for delivery in lost[:3]]
    assert webhook_deliveries_claim_overdue() == [delivery.pk for delivery in lost[3:]]


def test_the_sweep_costs_the_same_queries_for_one_lost_delivery_or_fifty(alice: Any) -> None:
    endpoint, _ = webhook_endpoint_create(user=alice, url="http://127.0.0.1:9/hook")

    def queries_to_sweep(count: int) -> int:
        for index in range(count):
            delivery_due(endpoint, f"{count}-{index}", seconds_ago=INTERVAL_S * 2)
        with CaptureQueriesContext(connection) as queries:
            assert len(webhook_deliveries_claim_overdue()) == count
        return len(queries)

    assert queries_to_sweep(1) == queries_to_sweep(50)


def test_the_sweep_task_sends_a_lost_delivery_once(
    alice: Any, receiver: Receiver, tasks_run_in_process: None, caplog: pytest.LogCaptureFixture
) -> None:
    delivery, _ = completed_run_delivery(alice, receiver.url)  # its task never ran

    with time_machine.travel(timezone.now() + timedelta(seconds=INTERVAL_S + 1)):
        with caplog.at_level(logging.INFO, logger="developer.tasks"):
            assert sweep_webhook_deliveries.apply().get() == 1
        assert sweep_webhook_deliveries.apply().get() == 0

    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, len(receiver.received)) == ("delivered", 1, 1)
    assert str(delivery.pk) in caplog.text


# --- Queuing with the broker down ---------------------------------------------------------


def test_a_broker_outage_when_the_event_is_queued_fails_neither_the_run_change_nor_the_event(
    alice: Any,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
    caplog: pytest.LogCaptureFixture,
    tasks_run_in_process: None,
) -> None:
    webhook_endpoint_create(user=alice, url=receiver.url)
    run = TrainingRunFactory(character__owner=alice, status=TrainingRun.Status.PENDING)

    def broker_down(*args: Any, **kwargs: Any) -> None:
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    with monkeypatch.context() as patch:
        patch.setattr(deliver_webhook, "delay", broker_down)
        with django_capture_on_commit_callbacks(execute=True), caplog.at_level(logging.ERROR):
            training_run_cancel(run=run, source="user")

    run.refresh_from_db()
    assert run.status == "cancelled"
    [delivery] = WebhookDelivery.objects.all()
    assert delivery.event_type == "training_run.cancelled"
    assert (delivery.status, delivery.attempts) == ("pending", 0)
    assert f"could not queue webhook delivery {delivery.pk}" in caplog.text

    with time_machine.travel(timezone.now() + timedelta(seconds=INTERVAL_S + 1)):
        sweep_webhook_deliveries.apply()

    delivery.refresh_from_db()
    assert delivery.status == "delivered" and len(receiver.received) == 1
