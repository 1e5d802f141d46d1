"""The character page sums up the face check — its score, the worst problems with how many photos have
each, the set's warnings — and links to the full report and to the consent statement."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from characters.models import Character
from tests.characters import photos
from tests.characters.factories import CharacterFactory
from tests.characters.identity import character_with, person_a_and_b

pytestmark = pytest.mark.django_db


def page_of(character: Character) -> str:
    client = Client()
    client.force_login(character.owner)
    return client.get(reverse("characters:detail", args=[character.pk])).content.decode()


def test_the_character_page_shows_the_score_the_worst_problems_and_links_the_report(alice: Any) -> None:
    named = {**person_a_and_b(), "room.jpg": photos.without_face(), "white.jpg": photos.blank()}
    anna = character_with(alice, named)

    page = page_of(anna)

    summary = page.split('<section class="card identity-summary"')[1].split("</section>")[0]
    assert f"<strong>{anna.dataset_report.score}</strong> / 100" in summary
    worst = summary.split('<ul class="worst-flags"')[1].split("</ul>")[0]
    assert worst.index('data-code="blank"') < worst.index('data-code="no_face"')  # the worst first
    assert "1 photo: blank" in worst and "1 photo: no face found" in worst
    assert "1 photo: may be someone else" in worst
    assert 'data-code="several_people"' in summary
    assert f'href="{reverse("characters:report", args=[anna.pk])}"' in summary


def test_the_character_page_says_who_consented_and_links_the_statement(alice: Any) -> None:
    anna = character_with(alice, {photos.PERSON_A[0]: photos.photo(photos.PERSON_A[0])})

    page = page_of(anna)

    summary = page.split('<section class="card identity-summary"')[1].split("</section>")[0]
    assert f'href="{reverse("characters:consent", args=[anna.pk])}"' in summary
    assert "statement 2026-12-1" in summary and alice.username in summary


def test_a_character_without_consent_is_asked_for_it_before_the_first_upload(alice: Any) -> None:
    anna = CharacterFactory(owner=alice, with_consent=None)

    summary = page_of(anna).split('<section class="card identity-summary"')[1].split("</section>")[0]

    assert "No consent recorded yet" in summary
    assert f'href="{reverse("characters:consent", args=[anna.pk])}"' in summary


def test_a_character_whose_photos_are_not_checked_yet_says_so(alice: Any) -> None:
    anna = CharacterFactory(owner=alice)

    summary = page_of(anna).split('<section class="card identity-summary"')[1].split("</section>")[0]

    assert "The face check runs after each upload" in summary
