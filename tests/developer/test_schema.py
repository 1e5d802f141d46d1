from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.test import Client
from drf_spectacular.validation import validate_schema
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from developer.services import api_token_create
from studio.wsgi import application
from tests.characters.factories import CharacterFactory, ReferenceImageFactory


def openapi(client: Client) -> dict[str, Any]:
    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    return dict(response.json())


def test_the_schema_is_valid_openapi_3(client: Client, db: None) -> None:
    schema = openapi(client)
    validate_schema(schema)  # raises on any violation of the OpenAPI 3 meta-schema
    assert schema["openapi"].startswith("3.")


def test_every_operation_takes_a_bearer_token_and_documents_the_error_shape(client: Client, db: None) -> None:
    schema = openapi(client)
    assert schema["components"]["securitySchemes"]["apiToken"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schema["components"]["securitySchemes"]["apiToken"]["description"],
    }
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            assert {"apiToken": []} in operation["security"], (method, path)
            error = operation["responses"]["401"]["content"]["application/json"]["schema"]
            assert error == {"$ref": "#/components/schemas/Error"}, (method, path)


def test_the_swagger_ui_is_served_by_the_app_without_a_cdn(client: Client, db: None) -> None:
    page = client.get("/api/docs/").content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/" in page
    assert "cdn" not in page.lower()


# --- Property-based run against the live app ----------------------------------------------

# Bounded and repeatable: a few examples per operation, the same ones every run.
EXAMPLES_PER_OPERATION = 10


@pytest.fixture
def wsgi_keeps_the_test_connection() -> Iterator[None]:
    """Calls through the raw WSGI app must not close the test's database connection after each
    request (Django's own test client disconnects the same receiver)."""
    for signal in (request_started, request_finished):
        signal.disconnect(close_old_connections)
    yield
    for signal in (request_started, request_finished):
        signal.connect(close_old_connections)


def test_the_live_api_never_fails_and_always_matches_its_schema(
    alice: Any, wsgi_keeps_the_test_connection: None
) -> None:
    """Every operation, called through the WSGI app with alice's token: no 5xx, no response
    outside its documented status codes, content types and schemas."""
    character = CharacterFactory(owner=alice)
    ReferenceImageFactory.create_batch(3, character=character)
    _, raw = api_token_create(user=alice, name="schemathesis")
    schema = schemathesis.openapi.from_wsgi("/api/schema/", application)
    headers = {"Authorization": f"Bearer {raw}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    for operation in operations:
        _exercise(operation, headers)


def _exercise(operation: Any, headers: dict[str, str]) -> None:
    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def call(case: Any) -> None:
        # Schema-valid input may still be refused by design (an opaque cursor that is not one of
        # ours, a character with too few images, a spent budget), so that check is left out; the
        # 4xx answers must still be documented and match the error schema.
        case.call_and_validate(headers=headers, excluded_checks=[positive_data_acceptance])

    call()


def test_the_schema_types_the_training_parameters_with_ranges_and_preset_defaults(
    client: Client, db: None
) -> None:
    schema = openapi(client)
    start = schema["components"]["schemas"]["TrainingRunStartInputRequest"]["properties"]["params"]
    params = schema["components"]["schemas"]["TrainingParamsRequest"]["properties"]

    assert "TrainingParams" in str(start)
    assert params["steps"]["type"] == "integer"
    assert (params["steps"]["minimum"], params["steps"]["maximum"]) == (100, 6000)
    assert "fast 600, balanced 1500, quality 3000" in params["steps"]["description"]
    assert (params["rank"]["minimum"], params["rank"]["maximum"]) == (4, 128)
    assert params["resolutions"]["items"] == {"$ref": "#/components/schemas/ResolutionsEnum"}
    assert schema["components"]["schemas"]["ResolutionsEnum"]["enum"] == [512, 768, 1024]
    assert {"learning_rate", "seed", "batch_size", "sample_prompts"} <= set(params)


def test_the_schema_shows_each_characters_lora_status_and_current_lora(client: Client, db: None) -> None:
    schema = openapi(client)
    character = schema["components"]["schemas"]["CharacterWithLora"]["properties"]

    assert {"lora_status", "lora", "active_run"} <= set(character)
    assert "download" in str(schema["components"]["schemas"]["CharacterLoraUrls"])
