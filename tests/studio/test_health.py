from __future__ import annotations

import pytest
from django.test import Client

from studio import health

pytestmark = pytest.mark.django_db


def test_healthz_reports_every_dependency_ok(client: Client) -> None:
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json()["checks"] == {
        "database": {"ok": True},
        "broker": {"ok": True},
        "storage": {"ok": True},
    }


def test_healthz_turns_503_when_the_broker_is_down(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    def broker_down() -> None:
        raise ConnectionRefusedError("broker down")

    monkeypatch.setitem(health.CHECKS, "broker", broker_down)

    response = client.get("/healthz")

    assert response.status_code == 503
    assert response.json()["checks"]["broker"] == {"ok": False, "error": "ConnectionRefusedError"}
    assert response.json()["checks"]["database"] == {"ok": True}


def test_healthz_turns_503_when_the_database_is_down(client: Client, settings: object) -> None:
    from django.db import connection

    real = connection.settings_dict["PORT"]
    connection.close()
    connection.settings_dict["PORT"] = "1"
    try:
        response = client.get("/healthz")
    finally:
        connection.close()
        connection.settings_dict["PORT"] = real

    if connection.vendor == "sqlite":
        # SQLite has no server to lose; the broker and storage checks still stand on their own.
        assert response.status_code == 200
    else:
        assert response.status_code == 503
        assert response.json()["checks"]["database"]["ok"] is False


@pytest.mark.integration
def test_healthz_turns_503_when_the_bucket_is_unreachable(
    client: Client, settings: object, s3_storage: object
) -> None:
    settings.STORAGES["default"]["OPTIONS"]["endpoint_url"] = "http://127.0.0.1:1"  # type: ignore[attr-defined]
    settings.STORAGES = {**settings.STORAGES}  # type: ignore[attr-defined]

    response = client.get("/healthz")

    assert response.status_code == 503
    assert response.json()["checks"]["storage"]["ok"] is False
