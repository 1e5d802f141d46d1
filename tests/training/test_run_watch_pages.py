"""The run page shows how a run learned: the sample gallery with each step's checkpoint beside its samples,
the loss chart, and a failed run's last trainer lines; the parts its script fetches again; the sample
images and checkpoint downloads. Only the owner sees any of it, and runs without samples read correctly."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
from datetime import timedelta
from typing import Any

import numpy
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from PIL import Image
from safetensors.numpy import save

from tests.characters.factories import CharacterFactory
from tests.training.conftest import make_run
from training.artifacts import LoraInvalid, StorageUnavailable
from training.models import Checkpoint, LossSeries, Sample, TrainingRun
from training.run_files import checkpoint_file, sample_file, sample_thumbnail_file
from training.selectors import character_current_lora

pytestmark = pytest.mark.django_db

PROMPTS = [
    "ohwx_anna, a portrait photo, soft window light",
    "ohwx_anna, three-quarter view, city street",
    "ohwx_anna, full-body shot on a beach",
]
SAMPLING = {"steps": 300, "rank": 4, "save_every": 100, "sample_every": 100, "sample_prompts": PROMPTS}


def client_for(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def jpeg(colour: tuple[int, int, int], size: int = 64, kind: str = "JPEG") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(out, kind)
    return out.getvalue()


def add_sample(run: TrainingRun, step: int, prompt_index: int, *, verified: bool = True) -> Sample:
    content = jpeg((step % 256, prompt_index * 60, 90))
    image = default_storage.save(sample_file(run, step, prompt_index), ContentFile(content))
    small = default_storage.save(
        sample_thumbnail_file(run, step, prompt_index), ContentFile(jpeg((1, 2, 3), 32, "WEBP"))
    )
    large = default_storage.save(
        sample_thumbnail_file(run, step, prompt_index, large=True), ContentFile(jpeg((1, 2, 3), 48, "WEBP"))
    )
    return Sample.objects.create(
        run=run,
        step=step,
        prompt_index=prompt_index,
        prompt=PROMPTS[prompt_index],
        image=image,
        thumbnail=small if verified else "",
        thumbnail_large=large if verified else "",
        width=64,
        height=64,
        bytes=len(content),
        sha256=hashlib.sha256(content).hexdigest(),
        verified_at=timezone.now() if verified else None,
    )


def checkpoint_bytes(step: int) -> bytes:
    """A small LoRA as AI Toolkit saves a checkpoint: safetensors, its step in the metadata."""
    tensors = {
        "transformer.single_transformer_blocks.0.proj_out.lora_A.weight": numpy.ones((4, 8), numpy.float16)
    }
    return save(tensors, metadata={"training_info": json.dumps({"step": step})})


def add_checkpoint(run: TrainingRun, step: int, **fields: Any) -> Checkpoint:
    content = checkpoint_bytes(step)
    name = default_storage.save(checkpoint_file(run, step), ContentFile(content))
    values: dict[str, Any] = {
        "name": f"anna_{step:09d}.safetensors",
        "file": name,
        "bytes": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),
        "verified_at": timezone.now(),
        **fields,
    }
    return Checkpoint.objects.create(run=run, step=step, **values)


def learning_run(character: Any, status: str = TrainingRun.Status.TRAINING, **fields: Any) -> TrainingRun:
    """A run of 300 steps with 3 prompts, samples at 100 and 200 and checkpoints at 100 and 200."""
    values = {"progress_step": 230, "progress_total": 300, **fields}
    run = make_run(character, status, params=dict(SAMPLING), **values)
    for step in (100, 200):
        for index in range(len(PROMPTS)):
            add_sample(run, step, index)
        add_checkpoint(run, step)
    LossSeries.objects.create(
        run=run,
        loss=[[step, 0.6 - step / 1000] for step in range(1, 231, 5)],
        val_loss=[[100, 0.55], [200, 0.45]],
    )
    return run


def page(client: Client, run: TrainingRun) -> str:
    response = client.get(reverse("training:run-detail", args=[run.pk]))
    assert response.status_code == 200
    return response.content.decode()


def section(html: str, element_id: str) -> str:
    """The HTML from the element with this id to the end of its card."""
    start = html.index(f'id="{element_id}"')
    return html[start : html.index("</section>", start)]


# ============================================================================================ gallery


def test_the_gallery_has_a_row_per_prompt_and_a_column_per_step_newest_first(
    alice: Any, character: Any
) -> None:
    run = learning_run(character)

    html = section(page(client_for(alice), run), "samples")

    steps = re.findall(r'<th scope="col" class="gallery-step[^"]*" id="step-(\d+)"', html)
    assert steps == ["200", "100"]
    rows = re.findall(r'<th scope="row" class="gallery-prompt"><span class="prompt-text"[^>]*>([^<]*)<', html)
    assert rows == [prompt.replace("'", "&#x27;") for prompt in PROMPTS]
    thumbnails = re.findall(r'id="sample-(\d+)-(\d+)"', html)
    assert thumbnails == [(step, str(i)) for i in range(3) for step in ("200", "100")]


def test_prompts_read_as_the_trainer_drew_them_with_the_trigger_word_in_place(
    alice: Any, character: Any
) -> None:
    run = learning_run(character)
    run.params = {**run.params, "sample_prompts": ["a photo of [trigger] at the beach", *PROMPTS[1:]]}
    run.save()
    run.samples.filter(prompt_index=0).update(prompt="a photo of [trigger] at the beach")

    html = section(page(client_for(alice), run), "samples")

    assert "[trigger]" not in html
    assert 'title="a photo of ohwx_anna at the beach">a photo of ohwx_anna at the beach<' in html
    assert 'alt="Step 200: a photo of ohwx_anna at the beach"' in html


def test_a_thumbnail_links_to_its_full_image_and_names_its_step_and_prompt(
    alice: Any, character: Any
) -> None:
    run = learning_run(character)
    sample = run.samples.get(step=200, prompt_index=1)
    url = reverse("training:run-sample", args=[run.pk, 200, 1])
    version = sample.sha256[:12]

    html = page(client_for(alice), run)

    assert f'href="{url}?v={version}"' in html
    assert f'src="{url}?size=256&amp;v={version}"' in html
    assert f'data-large="{url}?size=512&amp;v={version}"' in html
    assert f'alt="Step 200: {PROMPTS[1]}"' in html


def test_a_sample_not_yet_verified_is_not_shown(alice: Any, character: Any) -> None:
    run = learning_run(character)
    add_sample(run, 300, 0, verified=False)

    html = page(client_for(alice), run)

    assert 'id="step-300"' not in html
    assert client_for(alice).get(reverse("training:run-sample", args=[run.pk, 300, 0])).status_code == 404


def test_each_step_column_carries_its_checkpoint_with_a_download(alice: Any, character: Any) -> None:
    run = learning_run(character)

    html = section(page(client_for(alice), run), "samples")

    for step in (100, 200):
        link = reverse("training:run-checkpoint", args=[run.pk, step])
        assert f'href="{link}"' in html
        assert f'aria-label="Download the checkpoint at step {step} (' in html


def test_a_step_with_a_checkpoint_and_no_samples_gets_an_empty_column(alice: Any, character: Any) -> None:
    run = learning_run(character)
    add_checkpoint(run, 250)

    html = section(page(client_for(alice), run), "samples")

    steps = re.findall(r'id="step-(\d+)"', html)
    assert steps == ["250", "200", "100"]
    assert html.count('class="no-sample"') == len(PROMPTS)


def test_a_pruned_checkpoint_is_listed_without_a_download(alice: Any, character: Any) -> None:
    run = learning_run(character, status=TrainingRun.Status.COMPLETED)
    run.checkpoints.filter(step=100).update(pruned_at=timezone.now())

    html = section(page(client_for(alice), run), "samples")
    download = client_for(alice).get(reverse("training:run-checkpoint", args=[run.pk, 100]))

    assert reverse("training:run-checkpoint", args=[run.pk, 100]) not in html
    assert "File deleted by the storage limit" in html
    assert download.status_code == 404


def test_an_active_run_that_samples_says_when_the_first_samples_come(alice: Any, character: Any) -> None:
    run = make_run(character, TrainingRun.Status.TRAINING, params=dict(SAMPLING), progress_step=40)

    html = section(page(client_for(alice), run), "samples")

    assert "The first samples appear at step 100" in html
    assert "<table" not in html


# ============================================================================================ no samples


def test_an_older_run_without_samples_or_checkpoints_shows_neither_card(alice: Any, character: Any) -> None:
    run = make_run(character, TrainingRun.Status.COMPLETED, params={"steps": 1000, "rank": 16})

    html = page(client_for(alice), run)

    assert 'id="samples"' not in html
    assert 'id="loss"' not in html
    assert 'id="sample-viewer"' in html  # the empty viewer costs nothing and needs no condition


def test_a_run_with_sample_every_zero_lists_its_checkpoints_without_a_gallery(
    alice: Any, character: Any
) -> None:
    params = {**SAMPLING, "sample_every": 0}
    run = make_run(character, TrainingRun.Status.TRAINING, params=params, progress_step=150)
    add_checkpoint(run, 100)

    html = section(page(client_for(alice), run), "samples")

    assert '<h2 id="samples-heading">Checkpoints</h2>' in html
    assert "<table" not in html
    assert "Step 100" in html
    assert reverse("training:run-checkpoint", args=[run.pk, 100]) in html


def test_an_active_run_without_samples_or_checkpoints_yet_says_what_will_appear(
    alice: Any, character: Any
) -> None:
    run = make_run(character, TrainingRun.Status.QUEUED, params={"steps": 1000, "save_every": 250})

    html = page(client_for(alice), run)

    assert "Checkpoints appear here as the trainer saves them, every 250 steps." in html
    assert "The loss appears here once training has begun." in html


# ============================================================================================ chart


def test_the_loss_chart_is_drawn_wide_and_narrow_with_its_description(alice: Any, character: Any) -> None:
    run = learning_run(character)

    html = section(page(client_for(alice), run), "loss")

    assert html.count("<svg ") == 2
    assert 'class="loss-chart-wide"' in html and 'class="loss-chart-narrow"' in html
    assert "Validation loss: 0.55 at step 100, 0.45 at step 200" in html
    assert "<script" not in html


def test_a_finished_run_without_a_loss_series_shows_no_chart(alice: Any, character: Any) -> None:
    run = make_run(character, TrainingRun.Status.CANCELLED, params=dict(SAMPLING))
    add_checkpoint(run, 100)

    html = page(client_for(alice), run)

    assert 'id="loss"' not in html


# ============================================================================================ log tail


def test_a_failed_run_shows_the_trainers_last_lines_under_its_message(alice: Any, character: Any) -> None:
    tail = "step 10/300 loss 0.61\nCUDA out of memory. Tried to allocate 2.00 GiB\n<not markup>\n"
    run = make_run(
        character,
        TrainingRun.Status.FAILED,
        error_code="out_of_memory",
        error_message="The GPU ran out of memory.",
        log_tail=tail,
    )

    html = page(client_for(alice), run)

    message, log = html.index("The GPU ran out of memory."), html.index('id="run-log"')
    assert message < log
    assert "The trainer's last 3 lines" in html
    assert "CUDA out of memory. Tried to allocate 2.00 GiB\n&lt;not markup&gt;</pre>" in html


def test_a_run_that_did_not_fail_shows_no_log(alice: Any, character: Any) -> None:
    run = make_run(character, TrainingRun.Status.CANCELLED, log_tail="something")

    assert 'id="run-log"' not in page(client_for(alice), run)


# ============================================================================================ live


def test_the_progress_json_versions_the_gallery_and_the_chart(alice: Any, character: Any) -> None:
    run = learning_run(character)
    client = client_for(alice)
    url = reverse("training:run-progress", args=[run.pk])

    before = client.get(url).json()["watch"]
    add_sample(run, 300, 0)
    after_sample = client.get(url).json()["watch"]
    series = LossSeries.objects.get(run=run)
    series.loss = [*series.loss, [240, 0.3]]
    series.save()
    after_loss = client.get(url).json()["watch"]

    assert before["gallery"] != after_sample["gallery"]
    assert before["chart"] == after_sample["chart"]
    assert after_sample["chart"] != after_loss["chart"]
    assert after_sample["gallery"] == after_loss["gallery"]


def test_an_unverified_sample_changes_no_version(alice: Any, character: Any) -> None:
    run = learning_run(character)
    client = client_for(alice)
    url = reverse("training:run-progress", args=[run.pk])

    before = client.get(url).json()["watch"]
    add_sample(run, 300, 0, verified=False)
    after = client.get(url).json()["watch"]

    assert (after["gallery"], after["chart"]) == (before["gallery"], before["chart"])


@pytest.mark.parametrize(("part", "root"), [("gallery", 'id="gallery"'), ("chart", 'id="loss-chart"')])
def test_each_part_is_served_as_the_page_draws_it_with_its_version(
    alice: Any, character: Any, part: str, root: str
) -> None:
    run = learning_run(character)
    client = client_for(alice)
    version = client.get(reverse("training:run-progress", args=[run.pk])).json()["watch"][part]

    response = client.get(reverse(f"training:run-{part}", args=[run.pk]))

    body = response.content.decode()
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    assert body.lstrip().startswith(f'<div {root} data-version="{version}">')
    assert "<html" not in body
    assert section(page(client, run), "samples" if part == "gallery" else "loss").count(root) == 1


def test_the_chart_part_is_sent_compressed_to_a_browser_that_accepts_it(alice: Any, character: Any) -> None:
    run = learning_run(character)
    client = client_for(alice)
    url = reverse("training:run-chart", args=[run.pk])

    plain = client.get(url)
    compressed = client.get(url, headers={"accept-encoding": "gzip"})

    assert compressed["Content-Encoding"] == "gzip"
    assert gzip.decompress(compressed.content) == plain.content
    assert len(compressed.content) < len(plain.content) / 3


# ============================================================================================ files


def test_a_sample_and_its_thumbnails_are_served_with_their_types(alice: Any, character: Any) -> None:
    run = learning_run(character)
    sample = run.samples.get(step=100, prompt_index=2)
    url = reverse("training:run-sample", args=[run.pk, 100, 2])
    client = client_for(alice)

    full, small, large = (client.get(url), client.get(url + "?size=256"), client.get(url + "?size=512"))

    assert full["Content-Type"] == "image/jpeg"
    assert b"".join(full.streaming_content) == default_storage.open(sample.image.name).read()
    assert small["Content-Type"] == large["Content-Type"] == "image/webp"
    assert b"".join(small.streaming_content) == default_storage.open(sample.thumbnail.name).read()
    assert b"".join(large.streaming_content) == default_storage.open(sample.thumbnail_large.name).read()


def test_a_sample_link_naming_its_hash_may_be_kept_by_the_browser_and_no_other(
    alice: Any, character: Any
) -> None:
    run = learning_run(character)
    sample = run.samples.get(step=100, prompt_index=0)
    url = reverse("training:run-sample", args=[run.pk, 100, 0])
    client = client_for(alice)

    named = client.get(f"{url}?size=256&v={sample.sha256[:12]}")
    stale = client.get(f"{url}?size=256&v=000000000000")
    bare = client.get(url)

    assert named["Cache-Control"] == "private, max-age=31536000, immutable"
    assert stale["Cache-Control"] == bare["Cache-Control"] == "private, no-cache"


def test_a_checkpoint_downloads_under_ai_toolkits_numbering(alice: Any, character: Any) -> None:
    run = learning_run(character)
    checkpoint = run.checkpoints.get(step=200)

    response = client_for(alice).get(reverse("training:run-checkpoint", args=[run.pk, 200]))

    content = b"".join(response.streaming_content)
    assert hashlib.sha256(content).hexdigest() == checkpoint.sha256
    expected = f"ohwx_anna-{str(run.pk)[:8]}_000000200.safetensors"
    assert response["Content-Disposition"] == f'attachment; filename="{expected}"'
    assert response["Cache-Control"] == "private, no-cache"


def test_an_unverified_checkpoint_cannot_be_downloaded(alice: Any, character: Any) -> None:
    run = learning_run(character)
    add_checkpoint(run, 250, verified_at=None)

    response = client_for(alice).get(reverse("training:run-checkpoint", args=[run.pk, 250]))

    assert response.status_code == 404


# ============================================================================================ access


def watch_urls(run: TrainingRun) -> list[str]:
    return [
        reverse("training:run-gallery", args=[run.pk]),
        reverse("training:run-chart", args=[run.pk]),
        reverse("training:run-sample", args=[run.pk, 100, 0]),
        reverse("training:run-sample", args=[run.pk, 100, 0]) + "?size=256",
        reverse("training:run-checkpoint", args=[run.pk, 100]),
    ]


def test_another_user_sees_nothing_of_a_runs_samples_checkpoints_or_loss(
    alice: Any, bob: Any, character: Any
) -> None:
    run = learning_run(character)
    client = client_for(bob)

    for url in watch_urls(run):
        assert client.get(url).status_code == 404, url


def test_a_visitor_who_is_not_logged_in_is_sent_to_log_in(character: Any) -> None:
    run = learning_run(character)

    for url in watch_urls(run):
        response = Client().get(url)
        assert response.status_code == 302 and "/login" in response["Location"], url


def test_a_sample_of_another_run_is_not_reachable_through_this_one(alice: Any, character: Any) -> None:
    run = learning_run(character)
    other = make_run(character, TrainingRun.Status.COMPLETED, params=dict(SAMPLING))
    other.created_at = run.created_at - timedelta(days=1)
    other.save()

    response = client_for(alice).get(reverse("training:run-sample", args=[other.pk, 100, 0]))

    assert response.status_code == 404


# ============================================================================================ use this one


def finished_run(character: Any) -> TrainingRun:
    """A completed run whose final LoRA (step 300) is the character's current one."""
    run = learning_run(character, status=TrainingRun.Status.COMPLETED, finished_at=timezone.now())
    final = add_checkpoint(run, 300, final=True)
    run.lora_name, run.lora_bytes, run.lora_sha256 = final.file, final.bytes, final.sha256
    run.save()
    return run


def test_the_final_lora_is_in_use_and_each_other_checkpoint_offers_use_this_one(
    alice: Any, character: Any
) -> None:
    run = finished_run(character)

    html = section(page(client_for(alice), run), "samples")

    assert re.search(r'id="step-300">.*?Final LoRA.*?In use', html, re.S)
    for step in (100, 200):
        assert reverse("training:run-checkpoint-use", args=[run.pk, step]) in html
    assert reverse("training:run-checkpoint-use", args=[run.pk, 300]) not in html


def test_use_this_one_makes_the_checkpoint_the_characters_lora(alice: Any, character: Any) -> None:
    run = finished_run(character)
    checkpoint = run.checkpoints.get(step=200)
    client = client_for(alice)

    response = client.post(reverse("training:run-checkpoint-use", args=[run.pk, 200]), follow=True)

    run.refresh_from_db()
    assert run.lora_step == 200
    assert run.lora_sha256 == checkpoint.sha256
    html = response.content.decode()
    assert "Anna now uses the LoRA from this run&#x27;s step 200." in html
    assert "Your LoRA: the checkpoint at step 200" in html
    assert re.search(r'id="step-200">.*?In use', section(html, "samples"), re.S)
    assert "Checkpoint at step 200 chosen" in section(html, "run-timeline")
    assert response.redirect_chain[-1][0].endswith(f"/runs/{run.pk}/#step-200")


def test_a_running_run_offers_no_use_this_one_and_refuses_it_with_a_message(
    alice: Any, character: Any
) -> None:
    run = learning_run(character)
    client = client_for(alice)

    html = page(client, run)
    response = client.post(reverse("training:run-checkpoint-use", args=[run.pk, 100]), follow=True)

    assert "Use this one" not in html
    run.refresh_from_db()
    assert run.lora_step is None and not run.lora_name
    assert "still training" in response.content.decode()


def test_another_user_cannot_choose_a_checkpoint(alice: Any, bob: Any, character: Any) -> None:
    run = finished_run(character)

    response = client_for(bob).post(reverse("training:run-checkpoint-use", args=[run.pk, 100]))

    assert response.status_code == 404
    run.refresh_from_db()
    assert run.lora_step is None


def test_use_this_one_needs_a_post(alice: Any, character: Any) -> None:
    run = finished_run(character)

    response = client_for(alice).get(reverse("training:run-checkpoint-use", args=[run.pk, 100]))

    assert response.status_code == 405


# ============================================================================================ polling pace


def soon(client: Client, run: TrainingRun) -> bool:
    return bool(client.get(reverse("training:run-progress", args=[run.pk])).json()["watch"]["soon"])


def test_the_page_is_told_to_poll_faster_once_the_trainer_is_past_a_sample_step(
    alice: Any, character: Any
) -> None:
    run = learning_run(character)  # samples at 100 and 200 shown, trainer at 230
    client = client_for(alice)
    assert not soon(client, run)

    TrainingRun.objects.filter(pk=run.pk).update(progress_step=300)  # the last samples are being drawn
    assert soon(client, run)

    for index in range(len(PROMPTS)):
        add_sample(run, 300, index)
    assert not soon(client, run)


def test_a_sample_reported_and_not_yet_verified_keeps_the_page_polling_fast(
    alice: Any, character: Any
) -> None:
    run = learning_run(character)
    add_sample(run, 300, 0, verified=False)

    assert soon(client_for(alice), run)


def test_a_step_a_resumed_run_skipped_does_not_keep_the_page_hurrying(alice: Any, character: Any) -> None:
    run = learning_run(character)
    run.samples.filter(step=100).delete()  # resumed from 100: its samples there were never rendered again

    assert not soon(client_for(alice), run)


def test_a_finished_run_and_a_run_without_samples_never_hurry(alice: Any, character: Any) -> None:
    finished = learning_run(character, status=TrainingRun.Status.COMPLETED, progress_step=300)
    other = CharacterFactory(owner=alice, name="Bea", trigger_word="ohwx_bea")
    plain = make_run(other, TrainingRun.Status.TRAINING, params={"steps": 1000}, progress_step=500)
    client = client_for(alice)

    assert not soon(client, finished)
    assert not soon(client, plain)


def test_the_final_lora_of_an_older_run_can_be_made_the_characters_lora_again(
    alice: Any, character: Any
) -> None:
    older = finished_run(character)
    older.finished_at = timezone.now() - timedelta(days=1)
    older.save()
    newer = make_run(
        character, TrainingRun.Status.COMPLETED, runpod_job_id="job-newer", finished_at=timezone.now()
    )
    final = add_checkpoint(newer, 300, final=True)
    newer.lora_name, newer.lora_bytes, newer.lora_sha256 = final.file, final.bytes, final.sha256
    newer.save()
    client = client_for(alice)
    assert "In use" not in section(page(client, older), "samples")

    client.post(reverse("training:run-checkpoint-use", args=[older.pk, 300]))

    assert character_current_lora(character) == older
    assert re.search(r'id="step-300">.*?In use', section(page(client, older), "samples"), re.S)


@pytest.mark.parametrize(
    ("failure", "message"),
    [
        (StorageUnavailable("down"), "Storage could not be read just now"),
        (LoraInvalid("not safetensors"), "changed since it was verified"),
    ],
)
def test_use_this_one_says_what_went_wrong_when_storage_fails_and_changes_nothing(
    alice: Any, character: Any, monkeypatch: pytest.MonkeyPatch, failure: Exception, message: str
) -> None:
    run = finished_run(character)

    def fails(name: str) -> None:
        raise failure

    monkeypatch.setattr("training.services.completion.stored_lora_digest", fails)
    response = client_for(alice).post(reverse("training:run-checkpoint-use", args=[run.pk, 100]), follow=True)

    assert response.status_code == 200
    assert message in response.content.decode()
    run.refresh_from_db()
    assert run.lora_step is None
