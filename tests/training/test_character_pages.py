"""Training on the character pages, drawn as parts the pages draw, with a bounded number of queries."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from characters.models import Character
from tests.characters.factories import CharacterFactory, ReferenceImageFactory
from tests.training.conftest import make_run
from training.character_pages import training_by_character
from training.models import TrainingRun
from training.selectors import character_current_lora

pytestmark = pytest.mark.django_db

# Session, user, characters, the runs of all of them, and nothing per character.
LIST_PAGE_QUERIES = 5
# Session, user, character, images; the run history and the current LoRA.
DETAIL_PAGE_QUERIES = 6


def client_for(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def trained_characters(owner: Any, count: int, start: int = 0) -> list[Character]:
    """Characters with an old LoRA, a newer LoRA and a run in progress each."""
    characters = []
    for index in range(start, start + count):
        character = CharacterFactory(owner=owner, name=f"Person {index}")
        ReferenceImageFactory(character=character)
        make_run(character, "completed", runpod_job_id=f"old-{index}", finished_at=timezone.now())
        make_run(character, "completed", runpod_job_id=f"new-{index}", finished_at=timezone.now())
        make_run(character, "training", runpod_job_id=f"active-{index}", progress_step=5, progress_total=10)
        characters.append(character)
    return characters


def list_page_queries(user: Any) -> tuple[int, str]:
    client = client_for(user)
    with CaptureQueriesContext(connection) as queries:
        response = client.get(reverse("characters:list"))
    assert response.status_code == 200
    return len(queries), response.content.decode()


def test_the_list_reads_every_characters_training_in_one_query(
    alice: Any, django_assert_max_num_queries: Any
) -> None:
    trained_characters(alice, 2)
    few, _ = list_page_queries(alice)
    trained_characters(alice, 6, start=2)

    client = client_for(alice)
    with django_assert_max_num_queries(LIST_PAGE_QUERIES):
        client.get(reverse("characters:list"))
    many, page = list_page_queries(alice)

    assert page.count("LoRA ready") == 8
    assert few == many


def test_the_list_shows_the_active_runs_progress_and_links_it(alice: Any) -> None:
    (character,) = trained_characters(alice, 1)
    active = TrainingRun.objects.get(character=character, status="training")

    _, page = list_page_queries(alice)

    assert f'href="{reverse("training:run-detail", args=[active.pk])}"' in page
    assert '<progress class="mini" max="100" value="50"' in page


def test_a_character_without_runs_has_no_lora_yet(alice: Any) -> None:
    CharacterFactory(owner=alice)

    _, page = list_page_queries(alice)

    assert "No LoRA yet" in page


def test_the_tag_picks_the_same_lora_as_the_selector(alice: Any) -> None:
    characters = trained_characters(alice, 3)

    found = training_by_character([character.pk for character in characters])

    for character in characters:
        assert found[character.pk].lora == character_current_lora(character)
        assert found[character.pk].active is not None
        assert found[character.pk].active.status == "training"


def test_the_detail_page_shows_the_current_lora_the_run_history_and_no_train_button_while_training(
    alice: Any, django_assert_max_num_queries: Any
) -> None:
    (character,) = trained_characters(alice, 1)
    lora = character_current_lora(character)
    assert lora is not None

    client = client_for(alice)
    with django_assert_max_num_queries(DETAIL_PAGE_QUERIES):
        page = client.get(reverse("characters:detail", args=[character.pk])).content.decode()

    assert f'href="{reverse("training:run-lora", args=[lora.pk])}"' in page
    history = page.split('<table class="runs')[1].split("</table>")[0]
    assert history.count("<tr>") == 1 + 3
    assert f'href="{reverse("training:start", args=[character.pk])}"' not in page
    assert "Follow the run" in page


def test_the_detail_page_offers_train_when_nothing_runs(alice: Any, settings: Any) -> None:
    settings.TRAINING_MIN_IMAGES = 2
    character = CharacterFactory(owner=alice)
    ReferenceImageFactory.create_batch(2, character=character)

    page = client_for(alice).get(reverse("characters:detail", args=[character.pk])).content.decode()

    assert f'<a class="button" href="{reverse("training:start", args=[character.pk])}">Train</a>' in page


def test_below_the_minimum_of_photos_train_is_disabled_with_the_reason(alice: Any, settings: Any) -> None:
    settings.TRAINING_MIN_IMAGES = 10
    character = CharacterFactory(owner=alice, name="Anna")
    ReferenceImageFactory.create_batch(8, character=character)

    page = client_for(alice).get(reverse("characters:detail", args=[character.pk])).content.decode()

    assert 'disabled aria-describedby="train-refusal">Train</button>' in page
    assert "Training needs at least 10 photos; Anna has 8. Add 2 more below." in page
    assert reverse("training:start", args=[character.pk]) not in page
