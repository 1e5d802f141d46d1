"""Who may reach what: a matrix generated from the URL resolver, times every persona.

Every URL the site serves is found by walking `get_resolver().url_patterns`, so a new URL is tested
the day it is added, and one that nobody classified in RULES fails `test_every_url_is_classified`.
Each (URL, method) is asked by every persona, and each persona's answer is stated per rule below.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.contrib.contenttypes.models import ContentType
from django.core import signing
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone

from characters.models import Character
from developer.models import WebhookEndpoint
from developer.services import api_token_create, api_token_revoke
from studio import transfer
from tests.characters.factories import CharacterFactory, ReferenceImageFactory
from tests.training.factories import TrainingRunFactory
from training.models import Checkpoint, LossSeries, Sample, TrainingRun
from training.tokens import run_token

pytestmark = pytest.mark.django_db

PERSONAS = ("anonymous", "revoked_token", "wrong_run_token", "bob", "staff", "run_token", "alice")


# --- The URLs, from the resolver ----------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    name: str  # "namespace:name", or the pattern itself when it has no name
    pattern: str
    params: tuple[str, ...]
    view: Any


def walk(patterns: list[Any], prefix: str = "", namespace: str = "") -> Iterator[Route]:
    for entry in patterns:
        if isinstance(entry, URLResolver):
            inner = namespace + (f"{entry.namespace}:" if entry.namespace else "")
            yield from walk(entry.url_patterns, prefix + str(entry.pattern), inner)
        elif isinstance(entry, URLPattern):
            pattern = prefix + str(entry.pattern)
            name = namespace + entry.name if entry.name else pattern
            params = tuple(entry.pattern.regex.groupindex)
            yield Route(name, pattern, params, entry.callback)


def all_routes() -> list[Route]:
    seen: dict[str, Route] = {}
    for route in walk(get_resolver().url_patterns):
        seen.setdefault(route.name, route)  # the first match wins, as in the resolver
    return list(seen.values())


# --- What each kind of URL answers to each persona --------------------------------------------------

LOGIN = "login"  # a redirect to the site's log-in page
ADMIN_LOGIN = "admin-login"  # a redirect to the admin's log-in page
ALLOWED = "allowed"  # reaches the view: not 401/403/404, not a log-in redirect, never a 5xx
# Past the admin's staff check; the admin itself may then say 403 (no add permission) or 404.
PAST_ADMIN_LOGIN = "past-admin-login"


@dataclass(frozen=True)
class Rule:
    kind: str
    methods: tuple[str, ...] = ("GET",)


HUMANS = ("bob", "staff", "alice")
OUTSIDERS = ("anonymous", "revoked_token", "wrong_run_token", "run_token")

EXPECTED: dict[str, dict[str, Any]] = {
    # Anyone: the home page, sign-up, log-in, password reset (people who are signed in may be sent on).
    "public": {**dict.fromkeys(OUTSIDERS, 200), **dict.fromkeys(HUMANS, ALLOWED)},
    # The API's schema and docs: anyone, but a revoked token is told so rather than ignored.
    "api-public": {**dict.fromkeys(PERSONAS, 200), "revoked_token": 401},
    # A signed-in person's own pages (lists, forms).
    "signed-in": {**dict.fromkeys(OUTSIDERS, LOGIN), **dict.fromkeys(HUMANS, ALLOWED)},
    # One person's thing: others (staff too, outside the admin) find nothing there.
    "owned": {**dict.fromkeys(OUTSIDERS, LOGIN), "bob": 404, "staff": 404, "alice": ALLOWED},
    # API collections: a token (or a session) is required; everyone sees only their own rows.
    "api": {**dict.fromkeys(OUTSIDERS, 401), **dict.fromkeys(HUMANS, ALLOWED)},
    "api-owned": {**dict.fromkeys(OUTSIDERS, 401), "bob": 404, "staff": 404, "alice": ALLOWED},
    "api-unknown": {**dict.fromkeys(PERSONAS, 404), "revoked_token": 401},
    # Machine hooks: only the run's own token opens them; everything else is the same 404.
    "hook": {**dict.fromkeys(PERSONAS, 404), "run_token": ALLOWED},
    # Signed transfer links: the link is the credential; a forged or other link is a 403.
    "transfer": {**dict.fromkeys(PERSONAS, 403), "run_token": ALLOWED},
    # The admin: staff only.
    "admin": {**dict.fromkeys(PERSONAS, ADMIN_LOGIN), "staff": PAST_ADMIN_LOGIN},
    "admin-public": dict.fromkeys(PERSONAS, ALLOWED),
}

RULES: dict[str, Rule] = {
    "home": Rule("public"),
    "signup": Rule("public"),
    "login": Rule("public"),
    "logout": Rule("admin-public", ("POST",)),
    "password_reset": Rule("public"),
    "password_reset_done": Rule("public"),
    "password_reset_confirm": Rule("public"),
    "password_reset_complete": Rule("public"),
    "password_change": Rule("signed-in"),
    "password_change_done": Rule("signed-in"),
    "healthz": Rule("admin-public"),  # 200 or 503 by the services' health, never a secret
    "favicon": Rule("admin-public"),  # a redirect to the static icon, for anyone
    "api-schema": Rule("api-public"),
    "api-docs": Rule("api-public"),
    "api-redoc": Rule("api-public"),
    "characters:list": Rule("signed-in"),
    "characters:create": Rule("signed-in", ("GET", "POST")),
    "characters:detail": Rule("owned"),
    "characters:edit": Rule("owned", ("GET", "POST")),
    "characters:delete": Rule("owned", ("GET", "POST")),
    "characters:consent": Rule("owned", ("GET", "POST")),
    "characters:report": Rule("owned"),
    "characters:upload": Rule("owned", ("POST",)),
    "characters:captions": Rule("owned", ("GET", "POST")),
    "characters:caption": Rule("owned", ("POST",)),
    "characters:image_delete": Rule("owned", ("POST",)),
    "characters:thumbnail": Rule("owned"),
    "characters:image_file": Rule("owned"),
    "developer:tokens": Rule("signed-in", ("GET", "POST")),
    "developer:token-revoke": Rule("owned", ("POST",)),
    "developer:webhooks": Rule("signed-in", ("GET", "POST")),
    "developer:webhook": Rule("owned"),
    "developer:webhook-toggle": Rule("owned", ("POST",)),
    "developer:webhook-delete": Rule("owned", ("POST",)),
    "training:start": Rule("owned", ("GET", "POST")),
    "training:run-list": Rule("signed-in"),
    "training:run-detail": Rule("owned"),
    "training:run-progress": Rule("owned"),
    "training:run-cancel": Rule("owned", ("GET", "POST")),
    "training:run-retry": Rule("owned", ("POST",)),
    "training:run-lora": Rule("owned"),
    "training:run-gallery": Rule("owned"),
    "training:run-chart": Rule("owned"),
    "training:run-sample": Rule("owned"),
    "training:run-checkpoint": Rule("owned"),
    "training:run-checkpoint-use": Rule("owned", ("POST",)),
    "training:runpod-webhook": Rule("hook", ("POST",)),
    "training:worker-callback": Rule("hook", ("POST",)),
    "transfer": Rule("transfer", ("GET", "PUT")),
    "api:me": Rule("api"),
    "api:characters": Rule("api", ("GET", "POST")),
    "api:character": Rule("api-owned", ("GET", "PATCH", "DELETE")),
    "api:character-consent": Rule("api-owned", ("GET", "PUT")),
    "api:character-dataset-report": Rule("api-owned"),
    "api:character-images": Rule("api-owned", ("GET", "POST")),
    "api:character-image": Rule("api-owned", ("GET", "PATCH", "DELETE")),
    "api:character-runs": Rule("api-owned", ("POST",)),
    "api:runs": Rule("api"),
    "api:run": Rule("api-owned"),
    "api:run-cancel": Rule("api-owned", ("POST",)),
    "api:run-retry": Rule("api-owned", ("POST",)),
    "api:run-lora": Rule("api-owned"),
    "api:run-samples": Rule("api-owned"),
    "api:run-checkpoints": Rule("api-owned"),
    "api:run-checkpoint-use": Rule("api-owned", ("POST",)),
    "api:run-loss": Rule("api-owned"),
    "api:tokens": Rule("api", ("GET", "POST")),
    "api:token-revoke": Rule("api-owned", ("POST",)),
    "api:webhooks": Rule("api", ("GET", "POST")),
    "api:webhook": Rule("api-owned", ("GET", "PATCH", "DELETE")),
    "api:webhook-deliveries": Rule("api-owned"),
    "api/v1/^.*$": Rule("api-unknown", ("GET", "POST")),
    "admin:login": Rule("admin-public"),
    "admin:logout": Rule("admin-public", ("POST",)),
    "admin:jsi18n": Rule("admin"),
    # A run's own Cancel, Retry and Re-sync buttons (POST only).
    "admin:training_trainingrun_cancel": Rule("admin", ("POST",)),
    "admin:training_trainingrun_retry": Rule("admin", ("POST",)),
    "admin:training_trainingrun_resync": Rule("admin", ("POST",)),
}
ADMIN_DEFAULT = Rule("admin")


def rule_for(route: Route) -> Rule | None:
    if route.name in RULES:
        return RULES[route.name]
    if route.name.startswith("admin:") or route.pattern.startswith("admin/"):
        return ADMIN_DEFAULT  # every other admin page: staff only
    return None


ROUTES = all_routes()


def test_every_url_is_classified() -> None:
    unclassified = [f"{route.name} ({route.pattern})" for route in ROUTES if rule_for(route) is None]
    assert not unclassified, f"Say who may reach these URLs in RULES: {unclassified}"


CASES = [
    pytest.param(route, method, id=f"{method} {route.name}")
    for route in ROUTES
    if (rule := rule_for(route)) is not None
    for method in rule.methods
]


# --- The world the personas act in --------------------------------------------------------------------


@pytest.fixture
def world(alice: Any, bob: Any, staff: Any, settings: Any) -> dict[str, Any]:
    settings.TRAINING_MIN_IMAGES = 1
    settings.WEBHOOKS_ALLOW_PRIVATE_URLS = True
    character = CharacterFactory(owner=alice, name="Anna", trigger_word="ohwx_anna")
    image = ReferenceImageFactory(character=character)
    run = TrainingRunFactory(character=character, status=TrainingRun.Status.COMPLETED, runpod_job_id="job-1")
    content = b"lora bytes"
    lora = default_storage.save(f"characters/{character.pk}/loras/{run.pk}.safetensors", ContentFile(content))
    TrainingRun.objects.filter(pk=run.pk).update(
        lora_name=lora,
        lora_bytes=len(content),
        lora_sha256=hashlib.sha256(content).hexdigest(),
    )
    final = Checkpoint.objects.create(
        run=run, step=1000, final=True, name="final.safetensors", file=lora, bytes=len(content),
        sha256=hashlib.sha256(content).hexdigest(), verified_at=timezone.now(),
    )  # fmt: skip
    sample = Sample.objects.create(
        run=run, step=1000, prompt_index=0, prompt="[trigger]", image=lora, bytes=1, sha256="0" * 64,
        verified_at=timezone.now(),
    )  # fmt: skip
    series = LossSeries.objects.create(run=run, loss=[[1, 0.5]])
    bobs_run = TrainingRunFactory(character=CharacterFactory(owner=bob), status=TrainingRun.Status.TRAINING)
    endpoint = WebhookEndpoint.objects.create(user=alice, url="https://example.com/hook", secret="whsec_x")
    alices_token, _ = api_token_create(user=alice, name="to revoke in the URL")
    revoked, revoked_raw = api_token_create(user=alice, name="revoked")
    api_token_revoke(token=revoked)
    return {
        "objects": {
            "character_id": character.pk,
            "image_id": image.pk,
            "run_id": run.pk,
            "step": final.step,
            "prompt_index": sample.prompt_index,
            "token_id": alices_token.pk,
            "endpoint_id": endpoint.pk,
        },
        "run": run,
        "bobs_run": bobs_run,
        "image": image,
        "revoked_raw": revoked_raw,
        "users": {"alice": alice, "bob": bob, "staff": staff},
        "admin_objects": {
            "characters_character": character.pk,
            "characters_referenceimage": image.pk,
            "training_trainingrun": run.pk,
            "training_checkpoint": final.pk,
            "training_sample": sample.pk,
            "training_lossseries": series.pk,
            "developer_webhookendpoint": endpoint.pk,
            "developer_apitoken": alices_token.pk,
            "studio_user": alice.pk,
        },
    }


def client_for(persona: str, world: dict[str, Any]) -> Client:
    client = Client()
    if persona in world["users"]:
        user = world["users"][persona]
        client.force_login(user)
        _, raw = api_token_create(user=user, name="matrix")
        client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {raw}"
    elif persona == "revoked_token":
        client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {world['revoked_raw']}"
    return client


def path_for(route: Route, persona: str, world: dict[str, Any], method: str) -> str:
    if route.name == "api/v1/^.*$":
        return "/api/v1/no/such/endpoint"
    if route.name == "transfer":
        return transfer_path(persona, world, method)
    if route.name == "training:runpod-webhook":
        run = world["run"]
        token = {"run_token": run_token(run.pk), "wrong_run_token": run_token(world["bobs_run"].pk)}
        return reverse(route.name, args=[run.pk, token.get(persona, "0" * 64)])
    kwargs = {name: value for name, value in world["objects"].items() if name in route.params}
    if "object_id" in route.params:
        model = route.name.removeprefix("admin:").rsplit("_", 1)[0]
        if route.name == route.pattern:  # admin/<app>/<model>/<path:object_id>/
            model = "_".join(route.pattern.split("/")[1:3])
        kwargs["object_id"] = world["admin_objects"].get(model, world["objects"]["character_id"])
    if "id" in route.params:
        kwargs["id"] = world["users"]["alice"].pk
    if "app_label" in route.params:
        kwargs["app_label"] = "characters"
    if "content_type_id" in route.params:
        kwargs["content_type_id"] = ContentType.objects.get_for_model(Character).pk
    if {"uidb64", "token"} <= set(route.params):
        kwargs.update(uidb64="MQ", token="set-password")
    if "(?P<" in route.pattern:  # a regex catch-all (the admin's): any unknown page under it
        return "/" + route.pattern.split("(?P<", 1)[0] + "no/such/page/"
    if route.name == route.pattern:  # unnamed: fill the pattern's parameters in by hand
        return "/" + re.sub(
            r"<(?:\w+:)?(\w+)>", lambda match: str(kwargs.get(match[1], "nothing")), route.pattern
        )
    return reverse(route.name, kwargs=kwargs)


def transfer_path(persona: str, world: dict[str, Any], method: str) -> str:
    name = world["image"].file.name
    link = transfer.upload_url if method == "PUT" else transfer.download_url
    operation = "put" if method == "PUT" else "get"
    if persona == "run_token":
        return urlsplit(link(name, ttl=60)).path
    if persona == "wrong_run_token":  # a genuine link whose signature was altered
        token = urlsplit(link(name, ttl=60)).path.rsplit("/", 1)[1]
        return reverse("transfer", args=[token[:-2] + ("AA" if not token.endswith("AA") else "BB")])
    expired = signing.dumps({"n": name, "o": operation, "e": int(time.time()) - 1}, salt="studio.transfer")
    return reverse("transfer", args=[expired])


def ask(client: Client, method: str, path: str, route: Route, persona: str, world: dict[str, Any]) -> Any:
    extra: dict[str, Any] = {}
    if route.name == "training:worker-callback":
        token = {"run_token": run_token(world["run"].pk), "wrong_run_token": run_token(world["bobs_run"].pk)}
        extra["HTTP_AUTHORIZATION"] = f"Bearer {token.get(persona, 'f' * 64)}"
        body: Any = '{"event": "progress", "job_id": "job-1", "step": 1, "total_steps": 10}'
        return client.generic(method, path, body, content_type="application/json", **extra)
    if method == "PUT":
        return client.generic(method, path, b"bytes", content_type="application/octet-stream")
    if method in {"PATCH", "DELETE"}:
        return client.generic(method, path, "{}", content_type="application/json")
    return getattr(client, method.lower())(path)


def verdict(response: Any) -> Any:
    location = response.get("Location", "")
    if response.status_code == 302 and location.startswith("/admin/login/"):
        return ADMIN_LOGIN
    if response.status_code == 302 and location.startswith(reverse("login")):
        return LOGIN
    return response.status_code


def matches(expected: Any, response: Any) -> bool:
    if response.status_code >= 500:
        return False
    answer = verdict(response)
    if expected == ALLOWED:
        return answer not in {LOGIN, ADMIN_LOGIN, 401, 403, 404}
    if expected == PAST_ADMIN_LOGIN:
        return answer not in {LOGIN, ADMIN_LOGIN, 401}
    return bool(answer == expected)


@pytest.mark.parametrize(("route", "method"), CASES)
def test_each_persona_gets_the_answer_its_rule_says(route: Route, method: str, world: dict[str, Any]) -> None:
    rule = rule_for(route)
    assert rule is not None
    wrong = []
    for persona in PERSONAS:  # alice last: her requests may change or delete the thing
        client = client_for(persona, world)
        path = path_for(route, persona, world, method)
        response = ask(client, method, path, route, persona, world)
        expected = EXPECTED[rule.kind][persona]
        if not matches(expected, response):
            wrong.append(f"{persona}: expected {expected}, got {verdict(response)} for {method} {path}")
    assert not wrong, "\n".join(wrong)
