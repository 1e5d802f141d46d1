"""A new user's whole journey in headless Chromium, against the live stack: sign up, create a character,
upload ten photos, train on the local RunPod stand-in, watch the bar reach 100 %, download the LoRA."""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.browser.photos import photos
from tests.integration.conftest import Stack
from tests.support.grouping import in_one_process
from training.models import TrainingRun

pytestmark = [
    pytest.mark.browser,
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    in_one_process(__name__),
]

PASSWORD = "a long browser passphrase 7"
# Slow enough for the page to poll a few times mid-run, fast enough to keep the test well under a minute.
TRAINER = {"SIMULATED_TRAINER_SECONDS_PER_STEP": "0.08"}
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


def sign_up(page: Any, base: str) -> None:
    page.goto(f"{base}/accounts/signup/")
    page.get_by_label("Username").fill("dana")
    page.get_by_label("Email").fill("dana@example.com")
    page.get_by_label("Password:", exact=True).fill(PASSWORD)
    page.get_by_label("Password confirmation").fill(PASSWORD)
    page.get_by_role("button", name="Sign up").click()
    page.wait_for_url(f"{base}/characters/")


def create_character(page: Any) -> None:
    page.get_by_role("link", name="New character").first.click()
    page.get_by_label("Name:", exact=True).fill("Anna")
    page.get_by_label("Trigger word").fill("ohwx_anna")
    page.get_by_role("button", name="Create character").click()
    page.get_by_role("heading", name="Anna", level=1).wait_for()


def give_consent(page: Any, character_url: str) -> None:
    """Uploading needs the owner's consent first: agree to the statement on the consent page."""
    page.goto(character_url + "consent/")
    page.get_by_label("I am the person in these photos.").check()
    page.get_by_label("I agree to the statement above.").check()
    page.get_by_role("button", name="Record my consent").click()
    page.get_by_role("heading", name="Anna", level=1).wait_for()


def upload(page: Any, files: list[str]) -> None:
    """Uploads by the page's script; the grid and its count redraw themselves, in the order chosen."""
    page.locator("#upload-input").set_input_files(files)
    page.locator("#upload-list .file-result.ok").nth(len(files) - 1).wait_for()
    assert page.locator("#upload-list .file-result.error").count() == 0
    page.locator(".image-grid .image-tile").nth(len(files) - 1).wait_for()
    assert page.locator("#image-count").inner_text() == f"({len(files)})"
    names = page.locator(".image-grid .image-tile img").evaluate_all("images => images.map(i => i.alt)")
    assert names == [Path(file).name for file in files]


def start_training(page: Any, artifacts: Path) -> str:
    """Fast preset at 100 steps and rank 4; returns the estimate the confirm step showed."""
    page.get_by_role("link", name="Train", exact=True).click()
    page.get_by_role("heading", name="Train a LoRA of Anna").wait_for()
    page.get_by_role("radio", name=re.compile("^Fast")).check()
    page.locator("summary", has_text="Advanced settings").click()
    page.get_by_label("Steps:", exact=True).fill("100")
    page.get_by_label("Rank:", exact=True).fill("4")
    page.screenshot(path=str(artifacts / "train-form.png"), full_page=True)
    page.get_by_role("button", name="Review and confirm").click()
    estimate = page.locator("dd.estimate").inner_text()
    assert re.fullmatch(r"\$\d+\.\d\d", estimate)
    page.screenshot(path=str(artifacts / "train-confirm.png"), full_page=True)
    page.get_by_role("button", name="Start training").click()
    page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}/$"))
    return estimate


def watch_progress(page: Any, timeout: float = 60.0) -> list[int]:
    """The bar's values as the page's own script redraws it, until the finished run shows its LoRA."""
    seen: list[int] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if page.locator("#lora-download").count():
            seen.append(int(page.locator("#run-progress").get_attribute("value") or 0))
            return seen
        value = page.locator("#run-progress").get_attribute("value")
        if value is not None and (not seen or int(value) != seen[-1]):
            seen.append(int(value))
        assert page.locator("#run-error").is_hidden(), page.locator("#run-error").inner_text()
        page.wait_for_timeout(200)
    raise AssertionError(f"the run page showed no LoRA in {timeout}s; progress seen: {seen}")


def screenshot_whole_page(page: Any, path: Path) -> None:
    """Lazy thumbnails below the fold load only when scrolled to; load them all for the picture."""
    page.locator("img[loading=lazy]").evaluate_all("images => images.forEach(i => i.loading = 'eager')")
    loaded = "() => Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"
    deadline = time.monotonic() + 10
    while not page.evaluate(loaded) and time.monotonic() < deadline:
        page.wait_for_timeout(100)  # wait_for_function would need eval, which the site's CSP forbids
    page.screenshot(path=str(path), full_page=True)


def what_the_stack_did(stack: Stack) -> str:
    runs = list(TrainingRun.objects.values_list("status", "error_message"))
    return f"runs: {runs}\n{stack.worker.logs()[-3000:]}\n{stack.runpod.logs()[-3000:]}"


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["1280", "390"])
def test_a_new_user_trains_a_lora_in_the_browser_and_downloads_it(
    page: Any, live_server: Any, stack_factory: Any, tmp_path: Path, artifacts: Path, viewport: Any
) -> None:
    stack: Stack = stack_factory(runpod_env=TRAINER)
    base = live_server.url
    page.set_viewport_size(viewport)
    artifacts = artifacts / f"journey-{viewport['width']}"
    artifacts.mkdir(exist_ok=True)

    sign_up(page, base)
    create_character(page)
    character_url = page.url
    give_consent(page, character_url)
    upload(page, photos(tmp_path / "photos"))
    start_training(page, artifacts)

    try:
        seen = watch_progress(page)
    except AssertionError as error:
        raise AssertionError(f"{error}\n{what_the_stack_did(stack)}") from None

    assert seen[-1] == 100
    assert any(0 < value < 100 for value in seen), f"the bar never moved on its own: {seen}"
    assert page.locator("#run-status").inner_text() == "Completed"
    assert page.locator("#run-timeline li").count() >= 3
    shown_sha256 = page.locator("#lora-sha256").inner_text().strip()
    with page.expect_download() as download_info:
        page.locator("#lora-download").click()
    download = download_info.value
    content = Path(download.path()).read_bytes()
    assert hashlib.sha256(content).hexdigest() == shown_sha256
    assert download.suggested_filename.startswith("ohwx_anna-")
    assert download.suggested_filename.endswith(".safetensors")
    assert len(stack.jobs()) == 1
    page.screenshot(path=str(artifacts / "run-completed.png"), full_page=True)

    page.goto(character_url)
    assert shown_sha256 in page.locator(".lora-status + .meta").inner_text()
    screenshot_whole_page(page, artifacts / "character-page.png")
