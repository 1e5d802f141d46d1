"""Training end to end on the live stack: each test is one story a user or an operator could tell. The
stories that need a stack of their own are in test_training_live_own_stack.py."""

from __future__ import annotations

import contextlib
import hashlib
import time
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from runpod_worker.contract import parse_error
from tests.characters.factories import CharacterFactory, ReferenceImageFactory
from tests.characters.images import jpeg_bytes
from tests.integration.conftest import Stack, wait_for
from tests.support.grouping import in_one_process
from training.models import TrainingRun
from training.selectors import character_current_lora
from training.services import TRAINING_POLL, training_run_cancel, training_run_start

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True), in_one_process(__name__)]
# The first step of a training run's poll backoff (training.services.schedule.TRAINING_POLL).
BACKOFF_POLL_S = TRAINING_POLL[0].total_seconds()


def character_ready_to_train(owner: Any) -> Any:
    character = CharacterFactory(owner=owner, name="Anna", trigger_word="ohwx_anna")
    for index in range(3):
        content = jpeg_bytes(size=(64 + index, 64))
        ReferenceImageFactory(
            character=character,
            content=content,
            file=ContentFile(content, name=f"photo-{index}.jpg"),
        )
    return character


def start(character: Any, steps: int = 100) -> TrainingRun:
    """A run of `steps` steps. Rank 4, one checkpoint and no samples: these stories are about the run's
    status, and every checkpoint (3 MB at rank 4 with the stand-ins' first two blocks of each kind) and
    sample is uploaded and verified; test_training_live_artifacts.py tells the stories of those files."""
    params = {"steps": steps, "save_every": max(50, steps // 2), "rank": 4, "sample_prompts": []}
    return training_run_start(character=character, requested_by=character.owner, params=params, source="user")


def final(run: TrainingRun, timeout: float = 60.0) -> TrainingRun:
    def done() -> TrainingRun | None:
        run.refresh_from_db()
        return run if run.is_final else None

    return wait_for(done, timeout=timeout, what=f"run {run.pk} to end")


def statuses(run: TrainingRun) -> list[str]:
    return list(run.events.order_by("created_at", "id").values_list("to_status", flat=True))


def lora_objects(stack: Stack, character: Any) -> list[str]:
    listing = stack.s3.client().list_objects_v2(
        Bucket="studio-media", Prefix=f"characters/{character.pk}/loras/"
    )
    return [item["Key"] for item in listing.get("Contents", [])]


def assert_only_stored_lora(stack: Stack, run: TrainingRun) -> None:
    """The run's own LoRA is the only one its character has in the bucket, once the completion has tidied
    up after its transaction (the upload, and any copy that was not kept, go right after it commits).

    A path that lost the race to complete the run removes its own copy only once it has made and read it:
    a copy and its hash, which took over 15 s on two loaded cores when every LoRA was 43 MB (a full run's
    fault test found a second copy at 15 s); so the wait is the stack's usual minute."""
    with contextlib.suppress(TimeoutError):
        wait_for(lambda: lora_objects(stack, run.character) == [run.lora_name], timeout=60)
    assert lora_objects(stack, run.character) == [run.lora_name]


def explain(stack: Stack) -> str:
    return stack.worker.logs() + "\n" + stack.runpod.logs()


def test_a_run_goes_from_start_to_the_characters_current_lora(alice: Any, shared_stack: Any) -> None:
    stack = shared_stack()
    character = character_ready_to_train(alice)

    run = final(start(character))

    assert run.status == "completed", explain(stack) + run.error_message
    # A GPU worker that takes the job at once may report it before the submission has recorded it queued:
    # the run then goes from pending straight to training (a forward skip, training/services/transitions.py).
    assert statuses(run) in (
        ["pending", "queued", "training", "completed"],
        ["pending", "training", "completed"],
    )
    assert character_current_lora(character) == run
    stored = default_storage.open(run.lora_name).read()
    assert (len(stored), hashlib.sha256(stored).hexdigest()) == (run.lora_bytes, run.lora_sha256)
    assert run.progress_step == 100
    # Completed by the worker's "finished" callback; the cost follows from RunPod's execution time once its
    # webhook for the job's end arrives.
    assert run.events.get(to_status="completed").source == "worker"
    run = wait_for(
        lambda: TrainingRun.objects.filter(pk=run.pk, cost_usd__isnull=False).first(), what="the cost"
    )
    assert run.cost_usd > 0 and run.execution_ms


def test_photos_sent_without_a_caption_come_back_captioned_and_are_kept_on_them(
    alice: Any, shared_stack: Any
) -> None:
    stack = shared_stack()
    character = character_ready_to_train(alice)
    captioned = character.images.order_by("created_at", "id").first()
    captioned.caption = "[trigger] at the beach"
    captioned.save()

    run = final(
        training_run_start(
            character=character, requested_by=alice, params={"steps": 100, "rank": 4}, source="user"
        )
    )

    assert run.status == "completed", explain(stack) + run.error_message
    photos = list(character.images.order_by("created_at", "id").values_list("caption", "caption_auto"))
    assert photos[0] == ("[trigger] at the beach", False)
    assert [auto for _, auto in photos[1:]] == [True, True]
    assert all(caption.startswith("[trigger], simulated caption: a ") for caption, _ in photos[1:]), photos
    assert run.events.get(to_status="completed").detail["captions_kept"] == 2


def test_cancel_while_training_stops_the_job(alice: Any, shared_stack: Any) -> None:
    stack = shared_stack()
    character = character_ready_to_train(alice)
    run = start(character, steps=3000)  # 30 s of simulated training: long enough to cancel
    wait_for(lambda: TrainingRun.objects.filter(pk=run.pk, progress_step__gt=0).exists(), what="progress")

    training_run_cancel(run=run, source="user")

    run.refresh_from_db()
    assert run.status == "cancelled"
    # The worker reports every half second here: it hears "stop" and ends the job itself, after uploading
    # what it made (RunPod's cancel is only the fallback, after TRAINING_CANCEL_GRACE_SECONDS).
    job = stack.runpod.wait_for(run.runpod_job_id, timeout=20)
    assert job["status"] in ("CANCELLED", "FAILED")
    if job["status"] == "FAILED":
        assert parse_error(job["error"]).code == "cancelled"
    assert lora_objects(stack, character) == []


def test_with_webhooks_dropped_the_sweep_completes_the_run_seconds_after_the_job_ends(
    alice: Any, shared_stack: Any, finished_callback_lost: list[str]
) -> None:
    stack = shared_stack(faults={"drop_webhooks": "true"})
    run = start(character_ready_to_train(alice), steps=300)  # long enough for the worker to report an ETA
    job_id = wait_for(lambda: TrainingRun.objects.get(pk=run.pk).runpod_job_id, what="a job id")

    stack.runpod.wait_for(job_id, timeout=60)  # polls every 0.1 s: this is when the job ended
    job_ended_at = time.time()
    run = final(run)

    assert run.status == "completed", explain(stack)
    assert stack.runpod.state()["jobs"][job_id]["webhook_attempts"] == [{"dropped": True}]
    assert run.finished_at is not None
    lag_s = run.finished_at.timestamp() - job_ended_at
    # The finishing poll (1 s here) plus one sweep interval (1 s) plus the poll's own work: seconds. Without
    # the finishing poll the run would wait for its backoff poll, 30 s or more after the last one. The
    # figure itself is measured by `make bench` (bench/bench_orchestration_completion.py), not bounded
    # tightly here, where a loaded machine stretches the poll's work.
    assert lag_s < BACKOFF_POLL_S, f"completed {lag_s:.2f}s after the job ended\n" + explain(stack)


def test_a_429_storm_creates_no_duplicate_runpod_job(alice: Any, shared_stack: Any) -> None:
    stack = shared_stack(faults={"rate_429": "0.6"})

    run = final(start(character_ready_to_train(alice)), timeout=90)

    assert run.status == "completed", run.error_message + explain(stack)
    assert len(stack.jobs()) == 1


def test_a_job_handed_out_twice_gives_one_lora_and_one_completion(alice: Any, shared_stack: Any) -> None:
    # RunPod keeps the first final result to arrive, and the duplicate's comes first: it is stopped after
    # one liveness window (3 s), while the holder trains for 10 s. Its FAILED `claimed_elsewhere` must not
    # end the run; the holder's "finished" callback completes it.
    stack = shared_stack(faults={"duplicate_jobs": "1", "duplicate_result": "first"})
    character = character_ready_to_train(alice)

    run = final(start(character, steps=1000), timeout=90)

    assert run.status == "completed", explain(stack) + run.error_message
    job = stack.runpod.state()["jobs"][run.runpod_job_id]
    assert len(job["deliveries"]) == 2
    assert job["status"] == "FAILED" and parse_error(job["error"]).code == "claimed_elsewhere"
    assert run.events.filter(to_status="completed").count() == 1
    assert run.events.filter(to_status="failed").count() == 0
    assert_only_stored_lora(stack, run)
    stored = default_storage.open(run.lora_name).read()
    assert (len(stored), hashlib.sha256(stored).hexdigest()) == (run.lora_bytes, run.lora_sha256)
    [ignored] = wait_for(
        lambda: stack.runpod.state()["jobs"][run.runpod_job_id]["ignored_results"], what="the holder's result"
    )
    assert ignored["output"]["lora"]["sha256"] == run.lora_sha256
