"""Watching a run learn, in headless Chromium at 1280 px and 390 px: the sample gallery (a row per prompt,
a column per step, newest first, each step's checkpoint in its column), the loss chart, the enlarged
sample and its keys, and a sample or a loss point arriving while the page is open. Screenshots go to
test-artifacts/ (run-watch-<width>.png, run-watch-viewer-<width>.png)."""

from __future__ import annotations

import hashlib
import io
import math
import time
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.test import Client
from django.utils import timezone
from PIL import Image, ImageDraw, ImageFilter

from tests.browser.photos import photo_bytes
from tests.characters.factories import CharacterFactory
from tests.support.grouping import in_one_process
from tests.training.factories import TrainingRunFactory
from training.models import Checkpoint, LossSeries, Sample, TrainingRun
from training.run_files import checkpoint_file, sample_file, sample_thumbnails_make

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), in_one_process(__name__)]

DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
PROMPTS = [
    "ohwx_anna, a close-up portrait photo, soft window light",
    "ohwx_anna, three-quarter view, walking down a city street at dusk",
    "ohwx_anna, full-body shot, standing on a beach in summer",
]
STEPS = 300
SAVE_EVERY = 100
# The page polls every 2 s; a new sample must show within 5 s of being recorded (the gallery's target).
VISIBLE_WITHIN_S = 5.0

IMAGES_LOADED = (
    "() => Array.from(document.querySelectorAll('#gallery img')).every(i => i.complete && i.naturalWidth > 0)"
)
PAGE_WIDTH = (
    "() => ({width: document.documentElement.clientWidth, scroll: document.documentElement.scrollWidth})"
)


@cache  # drawn once per test process
def sample_image(prompt_index: int, step: int) -> bytes:
    """A figure that sharpens as the steps go by, labelled with its step, as a simulated trainer draws."""
    image = Image.open(io.BytesIO(photo_bytes(prompt_index, (512, 512)))).convert("RGB")
    image = image.filter(ImageFilter.GaussianBlur(radius=max(0, (STEPS - step) / 25)))
    ImageDraw.Draw(image).text((12, 488), f"step {step} · simulated", fill=(255, 255, 255))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return out.getvalue()


def add_sample(run: TrainingRun, step: int, prompt_index: int) -> Sample:
    """A verified sample with its thumbnails made by the studio's own code, as verification leaves it."""
    content = sample_image(prompt_index, step)
    name = default_storage.save(sample_file(run, step, prompt_index), ContentFile(content))
    thumbnails = sample_thumbnails_make(run, step, prompt_index)
    assert thumbnails is not None
    return Sample.objects.create(
        run=run,
        step=step,
        prompt_index=prompt_index,
        prompt=PROMPTS[prompt_index],
        image=name,
        thumbnail=thumbnails.small,
        thumbnail_large=thumbnails.large,
        width=thumbnails.width,
        height=thumbnails.height,
        bytes=len(content),
        sha256=hashlib.sha256(content).hexdigest(),
        verified_at=timezone.now(),
    )


def add_checkpoint(run: TrainingRun, step: int, *, final: bool = False) -> Checkpoint:
    content = b"\x08\x00\x00\x00\x00\x00\x00\x00{}      " + bytes([step % 256]) * 4096
    name = default_storage.save(checkpoint_file(run, step), ContentFile(content))
    return Checkpoint.objects.create(
        run=run,
        step=step,
        final=final,
        name="anna.safetensors" if final else f"anna_{step:09d}.safetensors",
        file=name,
        bytes=len(content),
        sha256=hashlib.sha256(content).hexdigest(),
        verified_at=timezone.now(),
    )


def loss_points(last_step: int) -> list[list[float]]:
    return [
        [step, round(0.32 + 0.28 * math.exp(-step / 90) + 0.05 * math.sin(step * 1.7), 5)]
        for step in range(1, last_step + 1, 3)
    ]


def learning_run(alice: Any, *, status: str, step: int) -> TrainingRun:
    """Alice's run of 300 steps with 3 prompts, samples and checkpoints every 100 steps up to `step`."""
    character = CharacterFactory(owner=alice, name="Anna", trigger_word="ohwx_anna")
    run = TrainingRunFactory(
        character=character,
        status=status,
        params={
            "steps": STEPS,
            "rank": 4,
            "save_every": SAVE_EVERY,
            "sample_every": SAVE_EVERY,
            "sample_prompts": PROMPTS,
        },
        progress_step=step,
        progress_total=STEPS,
        progress_loss=0.34,
        runpod_job_id="job-watch",
        started_at=timezone.now(),
    )
    for saved in range(SAVE_EVERY, step + 1, SAVE_EVERY):
        for index in range(len(PROMPTS)):
            add_sample(run, saved, index)
        add_checkpoint(run, saved, final=saved == STEPS)
    val = [[saved, round(0.5 - saved / 2000, 4)] for saved in range(SAVE_EVERY, step + 1, SAVE_EVERY)]
    LossSeries.objects.create(run=run, loss=loss_points(step), val_loss=val)
    return run


def log_in(page: Any, base: str, user: Any) -> None:
    client = Client()
    client.force_login(user)
    page.context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": base}])


def wait_until(page: Any, script: str, timeout: float = 10.0) -> None:
    """Polls a script in the page (wait_for_function would need eval, which the site's CSP forbids)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(script):
        assert time.monotonic() < deadline, f"still false after {timeout}s: {script}"
        page.wait_for_timeout(100)


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["1280", "390"])
def test_a_finished_run_shows_its_gallery_checkpoints_and_loss_chart(
    page: Any, live_server: Any, alice: Any, artifacts: Path, viewport: dict[str, int]
) -> None:
    run = learning_run(alice, status=TrainingRun.Status.COMPLETED, step=STEPS)
    log_in(page, live_server.url, alice)
    page.set_viewport_size(viewport)

    page.goto(f"{live_server.url}/runs/{run.pk}/")
    page.locator("#gallery img").evaluate_all("images => images.forEach(i => i.loading = 'eager')")
    wait_until(page, IMAGES_LOADED)

    heads = page.locator("#gallery thead th.gallery-step .step-label").all_inner_texts()
    assert heads == ["Step 300", "Step 200", "Step 100"]
    assert page.locator("#gallery tbody tr").count() == len(PROMPTS)
    assert page.locator("#gallery a.sample").count() == len(PROMPTS) * 3
    assert page.locator("#gallery .checkpoint-download").count() == 3
    assert page.locator("#step-300 .checkpoint-kind").inner_text() == "Final LoRA"
    wide, narrow = page.locator("svg.loss-chart-wide"), page.locator("svg.loss-chart-narrow")
    shown = narrow if viewport is PHONE else wide
    assert shown.is_visible() and not (wide if viewport is PHONE else narrow).is_visible()
    box = shown.bounding_box()
    assert box["width"] <= viewport["width"] and box["height"] > 120
    assert "Training loss" in shown.text_content() and "Validation loss" in shown.text_content()
    width = page.evaluate(PAGE_WIDTH)
    assert width["scroll"] <= width["width"], width  # the gallery scrolls inside its card, not the page
    page.screenshot(path=str(artifacts / f"run-watch-{viewport['width']}.png"), full_page=True)

    with page.expect_download() as download_info:
        page.locator("#step-200 .checkpoint-download").click()
    content = Path(download_info.value.path()).read_bytes()
    assert hashlib.sha256(content).hexdigest() == run.checkpoints.get(step=200).sha256
    assert download_info.value.suggested_filename == f"ohwx_anna-{str(run.pk)[:8]}_000000200.safetensors"


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["1280", "390"])
def test_a_sample_enlarges_and_the_keyboard_walks_the_gallery(
    page: Any, live_server: Any, alice: Any, artifacts: Path, viewport: dict[str, int]
) -> None:
    run = learning_run(alice, status=TrainingRun.Status.COMPLETED, step=STEPS)
    log_in(page, live_server.url, alice)
    page.set_viewport_size(viewport)
    page.goto(f"{live_server.url}/runs/{run.pk}/")
    viewer = page.locator("#sample-viewer")

    page.locator("#sample-300-1").focus()
    page.keyboard.press("Enter")

    assert viewer.is_visible()
    assert page.locator("#sample-viewer-title").inner_text() == "Step 300"
    assert page.locator("#sample-viewer-prompt").inner_text() == PROMPTS[1]
    wait_until(page, "() => document.getElementById('sample-viewer-image').naturalWidth === 512")
    image_box = page.locator("#sample-viewer-image").bounding_box()
    assert image_box["width"] <= viewport["width"]
    page.screenshot(path=str(artifacts / f"run-watch-viewer-{viewport['width']}.png"))

    page.keyboard.press("ArrowRight")
    assert page.locator("#sample-viewer-title").inner_text() == "Step 200"
    page.keyboard.press("ArrowDown")
    assert page.locator("#sample-viewer-prompt").inner_text() == PROMPTS[2]
    assert page.locator("#sample-viewer-image").get_attribute("alt") == f"Step 200: {PROMPTS[2]}"
    page.keyboard.press("ArrowLeft")
    assert page.locator("#sample-viewer-title").inner_text() == "Step 300"
    assert page.locator("#sample-viewer-later").is_disabled()

    page.keyboard.press("Escape")
    assert not viewer.is_visible()
    assert page.evaluate("() => document.activeElement.id") == "sample-300-2"


# Focus as the dialog's `close` event finds it, before the page's own listeners run: a capturing listener on
# the window sees the event first. The event is a task queued after the dialog closes, so focus must already
# be back on the sample shown by then, not on the thumbnail the viewer opened from.
FOCUS_AT_CLOSE = """() => {
    window.focusAtClose = null;
    window.addEventListener("close", () => { window.focusAtClose = document.activeElement.id; },
                            {capture: true, once: true});
}"""


@pytest.mark.parametrize("closing", ["Escape", "Close button"])
def test_closing_the_viewer_returns_focus_to_the_sample_shown_as_it_closes(
    page: Any, live_server: Any, alice: Any, closing: str
) -> None:
    run = learning_run(alice, status=TrainingRun.Status.COMPLETED, step=STEPS)
    log_in(page, live_server.url, alice)
    page.goto(f"{live_server.url}/runs/{run.pk}/")
    page.locator("#sample-300-1").focus()
    page.keyboard.press("Enter")
    page.keyboard.press("ArrowDown")
    assert page.locator("#sample-viewer-prompt").inner_text() == PROMPTS[2]

    page.evaluate(FOCUS_AT_CLOSE)
    if closing == "Escape":
        page.keyboard.press("Escape")
    else:
        page.locator("#sample-viewer button[type=submit]").click()

    wait_until(page, "() => window.focusAtClose !== null")
    assert page.evaluate("() => window.focusAtClose") == "sample-300-2"
    assert page.evaluate("() => document.activeElement.id") == "sample-300-2"


def test_a_new_sample_and_new_loss_appear_on_the_open_page_without_a_reload(
    page: Any, live_server: Any, alice: Any, artifacts: Path
) -> None:
    run = learning_run(alice, status=TrainingRun.Status.TRAINING, step=200)
    log_in(page, live_server.url, alice)
    page.goto(f"{live_server.url}/runs/{run.pk}/")
    page.evaluate("() => { window.notReloaded = true; }")
    chart_version = page.locator("#loss-chart").get_attribute("data-version")
    assert page.locator("#sample-250-0").count() == 0

    recorded = time.monotonic()
    add_sample(run, 250, 0)
    series = LossSeries.objects.get(run=run)
    series.loss = loss_points(250)
    series.save()
    TrainingRun.objects.filter(pk=run.pk).update(progress_step=250)
    page.locator("#sample-250-0").wait_for(timeout=VISIBLE_WITHIN_S * 1000)
    wait_until(page, "() => document.querySelector('#sample-250-0 img').naturalWidth > 0", VISIBLE_WITHIN_S)
    shown_after = time.monotonic() - recorded

    assert shown_after <= VISIBLE_WITHIN_S
    assert page.evaluate("() => window.notReloaded === true")
    assert page.locator("#gallery thead th.gallery-step").count() == 3
    assert page.locator("#step-250 .checkpoint").count() == 0  # no checkpoint at 250: an empty head
    wait_until(page, f"() => document.getElementById('loss-chart').dataset.version !== '{chart_version}'")
    assert "250" in page.locator("svg.loss-chart-wide desc").text_content()
    assert page.locator("#run-step").inner_text() == "250"
    page.screenshot(path=str(artifacts / "run-watch-live.png"), full_page=True)


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["1280", "390"])
def test_a_failed_run_shows_the_trainers_last_lines_under_its_message_within_the_screen(
    page: Any, live_server: Any, alice: Any, artifacts: Path, viewport: dict[str, int]
) -> None:
    run = learning_run(alice, status=TrainingRun.Status.FAILED, step=200)
    long_line = "torch.OutOfMemoryError: CUDA out of memory. " + "Tried to allocate 2.00 GiB; " * 12
    lines = [f"step {step}/300 loss 0.{40 - step % 9}" for step in range(150, 199)] + [long_line]
    TrainingRun.objects.filter(pk=run.pk).update(
        error_code="out_of_memory",
        error_message="The GPU ran out of memory. Lower the rank or the resolutions, then retry.",
        log_tail="\n".join(lines),
    )
    log_in(page, live_server.url, alice)
    page.set_viewport_size(viewport)

    page.goto(f"{live_server.url}/runs/{run.pk}/")
    page.locator("#run-log summary").click()

    log = page.locator("#run-log pre")
    assert log.is_visible()
    assert log.inner_text().splitlines()[-1] == long_line
    scroller = page.locator("#run-log .log-scroll")
    last_line_shown = (
        "s => { const box = s.getBoundingClientRect(), pre = s.firstElementChild.getBoundingClientRect();"
        " return pre.bottom <= box.bottom + 1 && pre.top < box.top; }"
    )
    assert scroller.evaluate(last_line_shown), "the log should open at its newest lines"
    message_box, log_box = page.locator("#run-error").bounding_box(), scroller.bounding_box()
    assert message_box["y"] < log_box["y"]
    assert log_box["x"] + log_box["width"] <= viewport["width"]
    width = page.evaluate(PAGE_WIDTH)
    assert width["scroll"] <= width["width"], width
    page.screenshot(path=str(artifacts / f"run-watch-failed-{viewport['width']}.png"), full_page=True)
