"""Malformed bodies and wrong types on every field of every JSON endpoint of the API, and absurd
training parameters. Each answers 4xx in the API's one error shape, names the field when it is one
field's fault, and changes nothing: no new row, no changed row."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from django.apps import apps
from rest_framework.test import APIClient

from characters.models import Character, ReferenceImage
from developer.models import ApiToken, WebhookEndpoint
from tests.characters.factories import CharacterFactory, ReferenceImageFactory
from tests.developer.api_helpers import alice_api, api_isolation, assert_error
from training.models import TrainingRun

__all__ = ["alice_api", "api_isolation"]

pytestmark = pytest.mark.django_db


@dataclass(frozen=True)
class Field:
    name: str
    kind: str  # text, bool, url, choice, object


@dataclass(frozen=True)
class Endpoint:
    id: str
    method: str
    path: str  # formatted with the objects of `world`
    valid: dict[str, Any]
    fields: tuple[Field, ...]


ENDPOINTS = [
    Endpoint(
        "characters_create",
        "post",
        "/api/v1/characters",
        {"name": "Zoe", "trigger_word": "ohwx_zoe", "description": "", "auto_train": False},
        (
            Field("name", "text"),
            Field("trigger_word", "text"),
            Field("description", "text"),
            Field("auto_train", "bool"),
        ),
    ),
    Endpoint(
        "characters_update",
        "patch",
        "/api/v1/characters/{character}",
        {"name": "Anna B"},
        (
            Field("name", "text"),
            Field("trigger_word", "text"),
            Field("description", "text"),
            Field("auto_train", "bool"),
        ),
    ),
    Endpoint(
        "images_update",
        "patch",
        "/api/v1/characters/{character}/images/{image}",
        {"caption": "[trigger] smiling"},
        (Field("caption", "text"),),
    ),
    Endpoint(
        "runs_start",
        "post",
        "/api/v1/characters/{character}/runs",
        {"preset": "fast"},
        (Field("preset", "choice"), Field("params", "object")),
    ),
    Endpoint("tokens_create", "post", "/api/v1/tokens", {"name": "ci"}, (Field("name", "text"),)),
    Endpoint(
        "webhooks_create",
        "post",
        "/api/v1/webhooks",
        {"url": "https://example.com/hook", "description": ""},
        (Field("url", "url"), Field("description", "text")),
    ),
    Endpoint(
        "webhooks_update",
        "patch",
        "/api/v1/webhooks/{webhook}",
        {"active": False},
        (Field("url", "url"), Field("description", "text"), Field("active", "bool")),
    ),
]

# Values no field of that kind may accept. Numbers are not here for text fields: JSON clients that
# send 42 for a name get "42", which is DRF's documented coercion and harmless.
WRONG = {
    "text": {
        "object": {"a": 1},
        "list": ["a"],
        "bool": True,
        "nul-byte": "an\x00na",
        "10k-chars": "a" * 10_000,
    },
    "bool": {"object": {}, "list": [], "word": "perhaps", "number": 2, "null": None},
    "url": {
        "object": {},
        "list": [],
        "javascript": "javascript:alert(1)",
        "no-scheme": "example.com",
        "nul": "https://a\x00b.com",
    },
    "choice": {"object": {}, "list": [], "unknown": "ultra", "number": 3},
    "object": {"list": [1, 2], "text": "steps=1000", "number": 5, "bool": True},
}

CASES = [
    pytest.param(endpoint, field, value, id=f"{endpoint.id}-{field.name}-{label}")
    for endpoint in ENDPOINTS
    for field in endpoint.fields
    for label, value in WRONG[field.kind].items()
]


@pytest.fixture
def world(alice: Any, settings: Any) -> dict[str, Any]:
    """One of each thing alice owns, with enough images that a run could start."""
    settings.TRAINING_MIN_IMAGES = 3
    character = CharacterFactory(owner=alice, name="Anna", trigger_word="ohwx_anna")
    images = ReferenceImageFactory.create_batch(3, character=character)
    webhook = WebhookEndpoint.objects.create(user=alice, url="https://example.com/h", secret="whsec_x")
    return {"character": character.pk, "image": images[0].pk, "webhook": webhook.pk}


def snapshot() -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the tables an API request could write, as plain values."""
    models = [Character, ReferenceImage, TrainingRun, WebhookEndpoint]
    rows = {model.__name__: sorted(model.objects.values_list(), key=str) for model in models}
    rows["ApiToken"] = sorted(ApiToken.objects.values_list("id", "name", "revoked_at"), key=str)
    rows["TrainingEvent"] = list(apps.get_model("training", "TrainingEvent").objects.values_list("id"))
    return rows


def send(client: APIClient, endpoint: Endpoint, world: dict[str, Any], body: Any) -> Any:
    path = endpoint.path.format(**world)
    return getattr(client, endpoint.method)(path, body, format="json")


@pytest.mark.parametrize(("endpoint", "field", "value"), CASES)
def test_a_wrong_value_in_any_field_is_a_field_error_that_changes_nothing(
    endpoint: Endpoint, field: Field, value: Any, alice_api: APIClient, world: dict[str, Any]
) -> None:
    before = snapshot()
    response = send(alice_api, endpoint, world, {**endpoint.valid, field.name: value})
    error = assert_error(response, 400, response.json()["error"]["code"])
    assert error["code"] in {"invalid", "invalid_params"}
    assert any(name == field.name or name.startswith(f"{field.name}.") for name in error.get("fields", {})), (
        error
    )
    assert snapshot() == before


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda endpoint: endpoint.id)
def test_the_valid_body_used_above_is_accepted(
    endpoint: Endpoint, alice_api: APIClient, world: dict[str, Any]
) -> None:
    response = send(alice_api, endpoint, world, endpoint.valid)
    assert response.status_code in {200, 201, 202}, response.content


MALFORMED = {
    "truncated": "{",
    "not-json": "name=Anna",
    "trailing-garbage": '{"name": "x"} {}',
    "nan": '{"name": NaN, "trigger_word": Infinity}',
    "invalid-utf8": b'{"name": "\xff\xfe"}',
    "utf16-bom": '{"name": "x"}'.encode("utf-16"),
    "deeply-nested": "[" * 100_000 + "]" * 100_000,
    "deeply-nested-object": '{"a":' * 50_000 + "1" + "}" * 50_000,
    "top-level-list": '[{"name": "Anna"}]',
    "top-level-string": '"Anna"',
    "top-level-null": "null",
    "duplicate-keys-huge-number": '{"name": 1' + "0" * 5000 + "}",
}


@pytest.mark.parametrize("body", MALFORMED.values(), ids=MALFORMED.keys())
@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda endpoint: endpoint.id)
def test_a_malformed_body_is_a_400_that_changes_nothing(
    endpoint: Endpoint, body: Any, alice_api: APIClient, world: dict[str, Any]
) -> None:
    before = snapshot()
    path = endpoint.path.format(**world)
    response = alice_api.generic(endpoint.method.upper(), path, body, content_type="application/json")
    assert response.status_code == 400, response.content
    assert response.json()["error"]["message"]
    assert snapshot() == before


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda endpoint: endpoint.id)
def test_a_body_of_an_unsupported_type_is_a_415(
    endpoint: Endpoint, alice_api: APIClient, world: dict[str, Any]
) -> None:
    before = snapshot()
    path = endpoint.path.format(**world)
    response = alice_api.generic(endpoint.method.upper(), path, "<x/>", content_type="application/xml")
    assert_error(response, 415, "unsupported_media_type")
    assert snapshot() == before


ABSURD_PARAMS = {
    "negative-steps": {"steps": -1},
    "zero-steps": {"steps": 0},
    "googol-steps": {"steps": 10**100},
    "float-steps": {"steps": 1000.5},
    "string-steps": {"steps": "1000"},
    "bool-steps": {"steps": True},
    "null-steps": {"steps": None},
    "rank-zero": {"rank": 0},
    "rank-huge": {"rank": 4096},
    "learning-rate-zero": {"learning_rate": 0},
    "learning-rate-huge": {"learning_rate": 1e300},
    "learning-rate-negative": {"learning_rate": -1e-4},
    "resolution-unknown": {"resolutions": [4096]},
    "resolutions-empty": {"resolutions": []},
    "resolutions-repeated": {"resolutions": [512] * 1000},
    "resolutions-object": {"resolutions": {"512": True}},
    "batch-size-huge": {"batch_size": 512},
    "seed-negative": {"seed": -1},
    "seed-huge": {"seed": 2**64},
    "caption-dropout-one": {"caption_dropout": 1.0},
    "too-many-prompts": {"sample_prompts": ["a portrait"] * 1000},
    "prompt-too-long": {"sample_prompts": ["a" * 5000]},
    "prompt-blank": {"sample_prompts": ["   "]},
    "prompt-nul-byte": {"sample_prompts": ["a portrait\x00"]},
    "prompt-not-text": {"sample_prompts": [{"text": "x"}]},
    "unknown-key": {"steps": 1000, "trigger_override": "x"},
    "unknown-key-nul": {"\x00": 1},
    "nested-junk": {"steps": {"steps": {"steps": 1}}},
    "save-every-zero": {"save_every": 0},
}


@pytest.mark.parametrize("params", ABSURD_PARAMS.values(), ids=ABSURD_PARAMS.keys())
def test_absurd_training_parameters_start_no_run(
    params: dict[str, Any], alice_api: APIClient, world: dict[str, Any]
) -> None:
    path = f"/api/v1/characters/{world['character']}/runs"
    response = alice_api.post(path, {"params": params}, format="json")
    error = assert_error(response, 400, response.json()["error"]["code"])
    assert error["code"] in {"invalid", "invalid_params"}
    assert TrainingRun.objects.count() == 0


def test_an_idempotency_key_of_megabytes_or_control_characters_is_refused_or_harmless(
    alice_api: APIClient, world: dict[str, Any]
) -> None:
    path = f"/api/v1/characters/{world['character']}/runs"
    for key in ("k" * 100_000, "bad\x01key", "ключ-🙂"):
        response = alice_api.post(path, {"preset": "fast"}, format="json", HTTP_IDEMPOTENCY_KEY=key)
        assert response.status_code < 500, response.content
    assert TrainingRun.objects.count() <= 1
