"""A character's base model: what its LoRAs are trained on unless a run says otherwise, and what auto-train
uses. Set on the character's form and through the API, as one of the models the worker trains."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from characters.forms import BASE_MODEL_CHOICES
from characters.models import Character
from runpod_worker.contract import BaseModel
from tests.characters.factories import CharacterFactory
from tests.characters.test_views import client_for
from tests.developer.api_helpers import alice_api, api_isolation, assert_error

__all__ = ["alice_api", "api_isolation"]

pytestmark = pytest.mark.django_db

CHARACTERS = "/api/v1/characters"


def test_the_form_offers_every_base_model_the_worker_trains_and_flux_dev_first() -> None:
    assert [key for key, _ in BASE_MODEL_CHOICES] == list(BaseModel.SUPPORTED)
    assert BaseModel.DEFAULT == BaseModel.FLUX_DEV


def test_the_create_page_shows_the_choice_with_flux_dev_chosen(alice: Any) -> None:
    page = client_for(alice).get(reverse("characters:create")).content.decode()

    for key, label in BASE_MODEL_CHOICES:
        assert f'value="{key}"' in page and label in page
    assert '<option value="flux-dev" selected>' in page


@pytest.mark.parametrize("base_model", [BaseModel.QWEN_IMAGE, BaseModel.WAN22_5B])
def test_a_character_created_with_a_base_model_keeps_it(alice: Any, base_model: str) -> None:
    client_for(alice).post(
        reverse("characters:create"), {"name": "Bea", "trigger_word": "ohwx_bea", "base_model": base_model}
    )

    assert Character.objects.get(owner=alice, name="Bea").base_model == base_model


def test_a_character_created_without_a_base_model_gets_flux_dev(alice: Any) -> None:
    client_for(alice).post(reverse("characters:create"), {"name": "Bea", "trigger_word": "ohwx_bea"})

    assert Character.objects.get(owner=alice, name="Bea").base_model == BaseModel.FLUX_DEV


def test_editing_changes_the_base_model(alice: Any) -> None:
    anna = CharacterFactory(owner=alice, name="Anna", trigger_word="ohwx_anna")

    client_for(alice).post(
        reverse("characters:edit", args=[anna.pk]),
        {"name": "Anna", "trigger_word": "ohwx_anna", "base_model": BaseModel.Z_IMAGE},
    )

    anna.refresh_from_db()
    assert anna.base_model == BaseModel.Z_IMAGE


def test_an_edit_that_does_not_post_the_base_model_keeps_the_characters(alice: Any) -> None:
    # An older page or a script posting only the fields it knows.
    anna = CharacterFactory(owner=alice, name="Anna", trigger_word="ohwx_anna", base_model=BaseModel.WAN22)

    client_for(alice).post(
        reverse("characters:edit", args=[anna.pk]), {"name": "Anna K", "trigger_word": "ohwx_anna"}
    )

    anna.refresh_from_db()
    assert (anna.name, anna.base_model) == ("Anna K", BaseModel.WAN22)


def test_a_base_model_that_is_not_offered_is_shown_beside_the_field(alice: Any) -> None:
    response = client_for(alice).post(
        reverse("characters:create"), {"name": "Bea", "trigger_word": "ohwx_bea", "base_model": "wan21"}
    )

    assert response.status_code == 400
    assert "base_model" in response.context["form"].errors
    assert not Character.objects.exists()


# --- The API ------------------------------------------------------------------------------


def test_the_api_creates_a_character_with_its_base_model_and_defaults_to_flux_dev(
    alice_api: APIClient,
) -> None:
    chosen = alice_api.post(
        CHARACTERS, {"name": "Anna", "trigger_word": "ohwx_anna", "base_model": "qwen-image"}, format="json"
    )
    default = alice_api.post(CHARACTERS, {"name": "Bea", "trigger_word": "ohwx_bea"}, format="json")

    assert (chosen.status_code, chosen.json()["base_model"]) == (201, "qwen-image")
    assert (default.status_code, default.json()["base_model"]) == (201, "flux-dev")
    assert Character.objects.get(name="Anna").base_model == "qwen-image"


def test_the_api_changes_a_characters_base_model_and_reads_it_back(alice_api: APIClient, alice: Any) -> None:
    anna = CharacterFactory(owner=alice, name="Anna", trigger_word="ohwx_anna")
    url = f"{CHARACTERS}/{anna.pk}"

    response = alice_api.patch(url, {"base_model": "wan22-5b"}, format="json")

    assert (response.status_code, response.json()["base_model"]) == (200, "wan22-5b")
    assert alice_api.get(url).json()["base_model"] == "wan22-5b"
    anna.refresh_from_db()
    assert anna.base_model == "wan22-5b"


def test_the_api_refuses_a_base_model_the_worker_does_not_train(alice_api: APIClient, alice: Any) -> None:
    anna = CharacterFactory(owner=alice, name="Anna", trigger_word="ohwx_anna")

    error = assert_error(
        alice_api.patch(f"{CHARACTERS}/{anna.pk}", {"base_model": "sdxl"}, format="json"), 400, "invalid"
    )

    assert "base_model" in error["fields"]
    anna.refresh_from_db()
    assert anna.base_model == BaseModel.FLUX_DEV


def test_the_schema_lists_the_base_models_as_an_enum(client: Client) -> None:
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    schemas = schema["components"]["schemas"]
    fields = {
        name: component["properties"]["base_model"]
        for name, component in schemas.items()
        if "base_model" in component.get("properties", {}) and "Character" in name
    }

    assert schemas["BaseModelEnum"]["enum"] == list(BaseModel.SUPPORTED)
    assert {"CharacterCreateInputRequest", "PatchedCharacterUpdateInputRequest", "CharacterWithLora"} <= set(
        fields
    )
    for field in fields.values():
        assert "#/components/schemas/BaseModelEnum" in str(field)
