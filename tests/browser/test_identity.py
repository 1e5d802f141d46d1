"""The identity report and likeness, in headless Chromium at 1280 px and 390 px, on real photos
(tests/characters/photos.py): the character's dataset report (faces boxed, another person and a blank page
flagged), and a completed run whose samples at step 200 look like the character while the final LoRA's copy
a training photo, so the checkpoint at 200 is chosen and the page says why. Screenshots go to
test-artifacts/ (identity-report-<width>.png, likeness-<width>.png)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.browser.test_run_watch import DESKTOP, PAGE_WIDTH, PHONE, log_in, wait_until
from tests.characters import photos
from tests.characters.identity import character_with
from tests.support.grouping import in_one_process
from tests.training.likeness_helpers import TRAINED_ON, alike, copy, trained_run
from tests.training.test_checkpoint_choice import completed
from training.services import training_run_likeness_score

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), in_one_process(__name__)]


@pytest.fixture
def character(alice: Any) -> Any:
    named = {name: photos.photo(name) for name in TRAINED_ON}
    named[photos.PERSON_B] = photos.photo(photos.PERSON_B)
    named["white.jpg"] = photos.blank()
    return character_with(alice, named, name="Anna")


def fits(page: Any) -> None:
    width = page.evaluate(PAGE_WIDTH)
    assert width["scroll"] <= width["width"], width


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["1280", "390"])
def test_the_dataset_report_names_the_other_person_and_the_blank_page(
    page: Any, live_server: Any, alice: Any, character: Any, artifacts: Path, viewport: dict[str, int]
) -> None:
    log_in(page, live_server.url, alice)
    page.set_viewport_size(viewport)

    page.goto(f"{live_server.url}/characters/{character.pk}/report/")

    text = page.locator("main").inner_text()
    assert "biden.jpg" in text and "white.jpg" in text
    assert "someone else" in text.lower()
    fits(page)
    page.screenshot(path=str(artifacts / f"identity-report-{viewport['width']}.png"), full_page=True)


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["1280", "390"])
def test_the_run_page_shows_the_likeness_curve_and_the_checkpoint_chosen(
    page: Any, live_server: Any, alice: Any, character: Any, artifacts: Path, viewport: dict[str, int]
) -> None:
    run = completed(trained_run(character, {100: photos.without_face(), 200: alike(), 300: copy()}))
    training_run_likeness_score(run_id=run.pk)
    log_in(page, live_server.url, alice)
    page.set_viewport_size(viewport)

    page.goto(f"{live_server.url}/runs/{run.pk}/")

    assert "The studio chose the checkpoint at step 200" in page.locator("#lora-choice").inner_text()
    assert page.locator("#step-200 .in-use").is_visible()
    assert "copies photos" in page.locator("#step-300 .likeness").inner_text()
    wide, narrow = page.locator("svg.likeness-chart-wide"), page.locator("svg.likeness-chart-narrow")
    shown, hidden = (narrow, wide) if viewport is PHONE else (wide, narrow)
    assert shown.is_visible() and not hidden.is_visible()
    box = shown.bounding_box()
    assert box["width"] <= viewport["width"] and box["height"] > 120
    assert shown.locator("circle.in-use").count() == 1
    assert "same person" in shown.text_content()
    page.locator("#gallery img").evaluate_all("images => images.forEach(i => i.loading = 'eager')")
    wait_until(page, "() => Array.from(document.querySelectorAll('#gallery img')).every(i => i.complete)")
    fits(page)
    page.screenshot(path=str(artifacts / f"likeness-{viewport['width']}.png"), full_page=True)
