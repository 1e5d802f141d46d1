"""The number of queries a list answers with does not grow with the list: 2 items cost what 40 cost."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from developer.models import WebhookDelivery, WebhookEndpoint
from developer.services import api_token_create
from tests.characters.factories import CharacterFactory, ReferenceImageFactory
from tests.training.factories import TrainingRunFactory
from training.models import TrainingRun

pytestmark = pytest.mark.django_db


def characters(owner: Any, count: int) -> None:
    for _ in range(count):
        ReferenceImageFactory(character=CharacterFactory(owner=owner))


def images(owner: Any, count: int) -> None:
    character = owner.characters.first() or CharacterFactory(owner=owner, name="Anna")
    ReferenceImageFactory.create_batch(count, character=character)


def runs(owner: Any, count: int) -> None:
    for _ in range(count):
        TrainingRunFactory(
            character=CharacterFactory(owner=owner),
            status=TrainingRun.Status.TRAINING,
            runpod_job_id=f"job-{uuid.uuid4()}",
        )


def tokens(owner: Any, count: int) -> None:
    for index in range(count):
        api_token_create(user=owner, name=f"t{index}")


def deliveries(owner: Any, count: int) -> None:
    endpoint = WebhookEndpoint.objects.filter(user=owner).first() or WebhookEndpoint.objects.create(
        user=owner, url="https://example.com/h", secret="whsec_x"
    )
    for _ in range(count):
        WebhookDelivery.objects.create(
            endpoint=endpoint, event_id=f"evt_{uuid.uuid4()}", event_type="run.completed", payload={}
        )


def character_page(owner: Any) -> str:
    return f"/characters/{owner.characters.first().pk}/"


def character_images(owner: Any) -> str:
    return f"/api/v1/characters/{owner.characters.first().pk}/images?page_size=100"


def webhook_deliveries(owner: Any) -> str:
    return f"/api/v1/webhooks/{WebhookEndpoint.objects.get(user=owner).pk}/deliveries?page_size=100"


PAGES: dict[str, tuple[Callable[[Any, int], None], Any]] = {
    "character list page": (characters, "/characters/"),
    "character page with its images": (images, character_page),
    "characters API": (characters, "/api/v1/characters?page_size=100"),
    "images API": (images, character_images),
    "runs API": (runs, "/api/v1/runs?page_size=100"),
    "me API with active runs": (runs, "/api/v1/me"),
    "tokens API": (tokens, "/api/v1/tokens?page_size=100"),
    "tokens page": (tokens, "/developer/tokens/"),
    "webhook deliveries API": (deliveries, webhook_deliveries),
}


def queries_for(client: Client, path: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(path)
    assert response.status_code == 200, (path, response.content[:300])
    return len(captured)


@pytest.mark.parametrize(("make", "where"), PAGES.values(), ids=PAGES.keys())
def test_the_query_count_does_not_grow_with_the_number_of_items(
    make: Callable[[Any, int], None], where: Any, alice: Any, django_assert_max_num_queries: Any
) -> None:
    client = Client()
    client.force_login(alice)
    make(alice, 2)
    path = where(alice) if callable(where) else where
    with_two = queries_for(client, path)
    make(alice, 38)
    with django_assert_max_num_queries(with_two):
        response = client.get(path)
    assert response.status_code == 200
