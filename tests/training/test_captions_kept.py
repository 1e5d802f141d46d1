"""The captions the worker made for photos sent without one are kept on those photos when the run
completes, marked as the captioner's, for the next run and for their owner to edit; one the owner wrote
meanwhile stays."""

from __future__ import annotations

from typing import Any

import pytest

from characters.models import ReferenceImage
from characters.services import reference_image_update_caption, reference_images_update_captions
from runpod_worker.contract import JobOutput
from tests.training.conftest import HOLDER, held_run, store_lora
from training.models import TrainingRun
from training.run_watch import captions_summary
from training.services import training_run_worker_finished

pytestmark = pytest.mark.django_db

CAPTIONER = "Qwen/Qwen3-VL-2B-Instruct@89644892e4d85e24eaac8bacfd4f463576704203"


@pytest.fixture
def photos(character: Any) -> list[ReferenceImage]:
    photos = list(character.images.order_by("created_at", "id"))
    photos[0].caption = "[trigger] at the beach"
    photos[0].save()
    return photos


@pytest.fixture
def run(character: Any, photos: list[ReferenceImage]) -> TrainingRun:
    run = held_run(character)
    run.manifest = [
        {
            "name": f"{p.sha256}.jpg",
            "sha256": p.sha256,
            "storage_name": p.file.name,
            "caption": p.caption or None,
        }
        for p in photos
    ]
    run.save()
    return run


def _made(photo: ReferenceImage, caption: str) -> dict[str, str]:
    return {"filename": f"{photo.sha256}.jpg", "sha256": photo.sha256, "caption": caption}


def _finish(run: TrainingRun, **output: Any) -> TrainingRun:
    document = {**store_lora(run, b"the trained lora"), **output}
    training_run_worker_finished(
        run=run, job_id="job-1", delivery_id=HOLDER, output=JobOutput.from_dict(document)
    )
    run.refresh_from_db()
    return run


def _captions(photos: list[ReferenceImage]) -> list[tuple[str, bool]]:
    return [(p.caption, p.caption_auto) for p in ReferenceImage.objects.filter(pk__in=[p.pk for p in photos])
            .order_by("created_at", "id")]  # fmt: skip


def test_the_captions_the_worker_made_are_kept_on_the_photos_sent_without_one(
    run: TrainingRun, photos: list[ReferenceImage]
) -> None:
    made = [
        _made(photos[1], "[trigger], a woman in a red coat"),
        _made(photos[2], "[trigger], a woman outside"),
    ]

    run = _finish(run, captions=made, captioner=CAPTIONER)

    assert run.status == "completed"
    assert _captions(photos) == [
        ("[trigger] at the beach", False),
        ("[trigger], a woman in a red coat", True),
        ("[trigger], a woman outside", True),
    ]
    event = run.events.get(to_status="completed")
    assert (event.detail["captions_made"], event.detail["captions_kept"]) == (2, 2)


def test_a_caption_the_owner_wrote_while_the_run_trained_is_not_replaced(
    run: TrainingRun, photos: list[ReferenceImage]
) -> None:
    reference_image_update_caption(image=photos[1], caption="[trigger] in my favourite coat")

    run = _finish(run, captions=[_made(photos[1], "[trigger], a woman in a red coat")])

    assert _captions(photos)[1] == ("[trigger] in my favourite coat", False)
    assert run.events.get(to_status="completed").detail["captions_kept"] == 0


def test_a_caption_for_a_photo_that_was_sent_with_one_is_ignored(
    run: TrainingRun, photos: list[ReferenceImage]
) -> None:
    photos[0].caption = ""
    photos[0].save()  # emptied after the run started, which sent it captioned

    _finish(run, captions=[_made(photos[0], "[trigger], not asked for")])

    assert _captions(photos)[0] == ("", False)


def test_why_captions_are_missing_is_kept_on_the_completion_event(run: TrainingRun) -> None:
    error = "The captioner failed (exit code 1): b.jpg, c.jpg trained on the trigger word alone."

    run = _finish(run, captioner=CAPTIONER, caption_error=error)

    detail = run.events.get(to_status="completed").detail
    assert (detail["captions_made"], detail["caption_error"]) == (0, error)


def test_a_run_without_captions_says_nothing_of_them(run: TrainingRun) -> None:
    run = _finish(run)

    assert "captions_made" not in run.events.get(to_status="completed").detail
    assert captions_summary(run) == ""


def test_editing_a_captioners_caption_makes_it_the_owners(
    run: TrainingRun, photos: list[ReferenceImage]
) -> None:
    _finish(run, captions=[_made(photos[1], "[trigger], a woman"), _made(photos[2], "[trigger], a man")])

    reference_image_update_caption(
        image=ReferenceImage.objects.get(pk=photos[1].pk), caption="[trigger], Anna"
    )
    reference_images_update_captions(character=run.character, captions={photos[2].pk: "[trigger] outdoors"})

    assert _captions(photos)[1:] == [("[trigger], Anna", False), ("[trigger] outdoors", False)]


def test_the_run_page_says_what_the_captioner_did(run: TrainingRun, photos: list[ReferenceImage]) -> None:
    run = _finish(run, captions=[_made(photos[1], "[trigger], a woman in a red coat")], captioner=CAPTIONER)

    assert captions_summary(run) == (
        "The worker wrote captions for 1 photo sent without one; 1 is now on the character's photos, marked "
        "Auto, to read and edit."
    )


def test_the_run_page_says_why_photos_trained_without_a_caption(run: TrainingRun) -> None:
    error = "The captioner failed (exit code 1): b.jpg, c.jpg trained on the trigger word alone."

    run = _finish(run, captioner=CAPTIONER, caption_error=error)

    summary = captions_summary(run)
    assert (
        summary == f"Some photos could not be captioned ({error}), so they trained on the trigger word alone."
    )
