"""The studio's pages as a person sees them on a desktop (1280 px) and a phone (390 px): nothing wider than
the screen, and the character page with a dozen photos short enough to use. Screenshots and the measured
heights go to test-artifacts/ (layout-<page>-<width>.png, layout.json) for people to look at."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils import timezone

from characters import services as character_services
from developer import services as developer_services
from developer.models import WebhookDelivery, WebhookEndpoint
from tests.browser.photos import photo_bytes
from tests.characters.factories import CharacterFactory
from tests.support.grouping import in_one_process
from tests.training.factories import TrainingRunFactory
from training.models import TrainingEvent, TrainingRun

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), in_one_process(__name__)]

DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
PHOTOS = 12
# The character page with 12 photos: about three phone screens, under two desktop screens (measured before
# the compact grid: 8,099 px on the phone, one photo per row with its caption box and two buttons).
CHARACTER_PAGE_MAX_SCREENS = {DESKTOP["width"]: 2.0, PHONE["width"]: 3.0}

# Every visible element whose right edge lies beyond the viewport (a clipped table, a long hash, a row of
# buttons), described well enough to find it.
OVERFLOW_SCRIPT = """() => {
  const width = document.documentElement.clientWidth;
  const found = [];
  for (const element of document.querySelectorAll("body *")) {
    const box = element.getBoundingClientRect();
    if (box.width < 2 || box.height < 2 || getComputedStyle(element).visibility === "hidden") continue;
    if (box.right > width + 1) {
      const classes = typeof element.className === "string" ? element.className.trim().split(/\\s+/) : [];
      const name = element.tagName.toLowerCase() + (element.id ? "#" + element.id : "") +
        classes.filter(Boolean).map(c => "." + c).join("");
      found.push(name + " right=" + Math.round(box.right));
    }
  }
  return {width: width, scrollWidth: document.documentElement.scrollWidth,
          height: document.documentElement.scrollHeight, overflowing: found.slice(0, 12)};
}"""


@pytest.fixture
def studio(alice: Any, settings: Any) -> dict[str, str]:
    """Alice's studio as a returning user has it: a character with 12 photos, a completed run with its LoRA,
    a cancelled run, an API token and a webhook endpoint with a delivery. Returns the pages' paths."""
    settings.TRAINING_MIN_IMAGES = 10
    character = CharacterFactory(owner=alice, name="Anna", trigger_word="ohwx_anna")
    uploads = [
        SimpleUploadedFile(f"anna-{index:02d}-from-the-summer-holiday.jpg", photo_bytes(index), "image/jpeg")
        for index in range(PHOTOS)
    ]
    report = character_services.reference_images_add_many(character=character, uploads=uploads)
    assert len(report.added) == PHOTOS, report.rejected
    completed = _run(character, TrainingRun.Status.COMPLETED, minutes_ago=90)
    cancelled = _run(character, TrainingRun.Status.CANCELLED, minutes_ago=30)
    developer_services.api_token_create(user=alice, name="render farm")
    endpoint = WebhookEndpoint.objects.create(
        user=alice, url="https://hooks.example.com/studio/training-events", secret="whsec_x"
    )
    WebhookDelivery.objects.create(
        endpoint=endpoint,
        event_id="evt_0123456789abcdef0123456789abcdef",
        event_type="training_run.completed",
        payload={},
        status=WebhookDelivery.Status.DELIVERED,
        attempts=1,
        last_status_code=200,
        delivered_at=timezone.now(),
    )
    return {
        "characters": "/characters/",
        "character": f"/characters/{character.pk}/",
        "train": f"/characters/{character.pk}/train/",
        "captions": f"/characters/{character.pk}/captions/",
        "run": f"/runs/{completed.pk}/",
        "cancelled-run": f"/runs/{cancelled.pk}/",
        "runs": "/runs/",
        "tokens": "/developer/tokens/",
        "webhook": f"/developer/webhooks/{endpoint.pk}/",
    }


def _run(character: Any, status: str, *, minutes_ago: int) -> TrainingRun:
    started = timezone.now() - timedelta(minutes=minutes_ago)
    completed = status == TrainingRun.Status.COMPLETED
    run = TrainingRunFactory(
        character=character,
        status=status,
        params={"steps": 1500, "rank": 16, "learning_rate": 1e-4, "resolutions": [512, 768, 1024]},
        manifest=[{"name": f"{index}.jpg"} for index in range(PHOTOS)],
        progress_step=1500 if completed else 700,
        progress_total=1500,
        progress_loss=0.1234,
        lora_name=f"runs/{character.pk}/lora.safetensors" if completed else "",
        lora_bytes=171_966_464 if completed else None,
        lora_sha256="9f2c" * 16 if completed else "",
        gpu_type="NVIDIA A100 80GB PCIe",
        execution_ms=2_400_000 if completed else 1_100_000,
        estimated_cost_usd="2.4600",
        cost_usd="1.8240" if completed else None,
        started_at=started,
        finished_at=started + timedelta(minutes=40 if completed else 18),
        error_code="" if completed else "cancelled",
        error_message="" if completed else "The run was cancelled by its owner.",
    )
    for from_status, to_status in (("", "pending"), ("pending", "queued"), ("queued", "training")):
        TrainingEvent.objects.create(run=run, from_status=from_status, to_status=to_status, source="poll")
    TrainingEvent.objects.create(run=run, from_status="training", to_status=status, source="webhook")
    return run


def _log_in(page: Any, base: str, user: Any) -> None:
    client = Client()
    client.force_login(user)
    page.context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": base}])


def _measure(page: Any, url: str, viewport: dict[str, int], shot: Path) -> dict[str, Any]:
    page.set_viewport_size(viewport)
    page.goto(url)
    page.locator("img[loading=lazy]").evaluate_all("images => images.forEach(i => i.loading = 'eager')")
    page.wait_for_load_state("networkidle")
    measured: dict[str, Any] = page.evaluate(OVERFLOW_SCRIPT)
    page.screenshot(path=str(shot), full_page=True)
    return measured


def _record(artifacts: Path, key: str, measured: dict[str, Any]) -> None:
    """Keeps every page's height in test-artifacts/layout.json, for people comparing before and after."""
    path = artifacts / "layout.json"
    table = json.loads(path.read_text()) if path.exists() else {}
    table[key] = {"height": measured["height"], "overflowing": measured["overflowing"]}
    path.write_text(json.dumps(table, indent=2, sort_keys=True))


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["1280", "390"])
@pytest.mark.parametrize(
    "name",
    ["characters", "character", "train", "captions", "run", "cancelled-run", "runs", "tokens", "webhook"],
)
def test_no_part_of_the_page_is_wider_than_the_screen(
    page: Any, live_server: Any, alice: Any, studio: dict[str, str], artifacts: Path, name: str, viewport: Any
) -> None:
    _log_in(page, live_server.url, alice)
    shot = artifacts / f"layout-{name}-{viewport['width']}.png"

    measured = _measure(page, live_server.url + studio[name], viewport, shot)
    _record(artifacts, f"{name}-{viewport['width']}", measured)

    assert measured["scrollWidth"] <= measured["width"], measured
    assert measured["overflowing"] == [], measured


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["1280", "390"])
def test_the_character_page_with_a_dozen_photos_fits_in_a_few_screens(
    page: Any, live_server: Any, alice: Any, studio: dict[str, str], artifacts: Path, viewport: Any
) -> None:
    _log_in(page, live_server.url, alice)
    shot = artifacts / f"layout-character-{viewport['width']}.png"

    measured = _measure(page, live_server.url + studio["character"], viewport, shot)

    screens = measured["height"] / viewport["height"]
    limit = CHARACTER_PAGE_MAX_SCREENS[viewport["width"]]
    assert screens <= limit, f"{measured['height']} px = {screens:.1f} screens"
