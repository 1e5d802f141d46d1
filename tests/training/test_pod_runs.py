"""A pod run through the training services, against the AI Toolkit UI stand-in driven by the real client:
the job made and started on the pod, its progress, samples, checkpoints and loss brought into storage, the
LoRA verified and kept, the pod's copies deleted; and cancel, a restarted pod, a stuck job, a 409."""

from __future__ import annotations

import contextlib
import re
import time
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import requests
from django.core.files.storage import default_storage
from django.urls import reverse
from django.utils import timezone

from tests.runpod_worker.ui_pod import TOKEN, UIPod
from tests.training.pod_helpers import pod_ready_character
from training.aitoolkit import AIToolkitNotFound, AIToolkitUnavailable
from training.models import Pod, TrainingRun
from training.pod_config import pod_dataset_name, pod_job_name
from training.pod_secrets import pod_token_set
from training.services import pod_runs, training_run_cancel, training_run_poll, training_run_start

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def pod(ui_pod: UIPod, settings: Any) -> Pod:
    settings.TRAINING_POD_TIMEOUT_SECONDS = 5.0
    pod = Pod(name="pod-a", ui_url=ui_pod.url, hourly_price_usd=Decimal("0.69"))
    pod_token_set(pod, TOKEN)
    pod.save()
    return pod


@pytest.fixture
def character(alice: Any, settings: Any) -> Any:
    settings.TRAINING_MIN_IMAGES = 3
    return pod_ready_character(alice)  # staff enabled pods for her


def start(character: Any, steps: int = 100, **params: Any) -> TrainingRun:
    params = {
        "steps": steps,
        "save_every": 50,
        "rank": 4,
        "sample_prompts": ["[trigger] portrait"],
        "sample_every": 50,
        **params,
    }
    return training_run_start(
        character=character, requested_by=character.owner, params=params, provider="pod", source="user"
    )


def poll_until(run: TrainingRun, done: Any, timeout: float = 120.0) -> TrainingRun:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(AIToolkitUnavailable):  # the poll task retries it, so does this
            training_run_poll(run_id=run.pk)
        run.refresh_from_db()
        if done(run):
            return run
        if time.monotonic() > deadline:
            raise AssertionError(
                f"run {run.pk} never got there: {run.status} at step {run.progress_step}; "
                f"the pod's job: {run.last_provider_payload}"
            )
        time.sleep(0.2)


def control(ui: UIPod, path: str, body: dict[str, object]) -> None:
    requests.post(
        f"{ui.url}/_control/{path}", json=body, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    ).raise_for_status()


def statuses(run: TrainingRun) -> list[str]:
    """The run's status changes (a restart of its job is an event that changes none)."""
    return [event.to_status for event in run.events.all() if event.from_status != event.to_status]


def test_a_pod_run_trains_on_the_pod_and_completes_with_its_lora_kept_and_the_pod_cleared(
    character: Any,
    pod: Pod,
    ui_pod: UIPod,
) -> None:
    run = start(character)
    run.refresh_from_db()
    assert (run.status, run.pod) == ("queued", pod)  # the job is made and started on commit

    run = poll_until(run, lambda r: r.is_final)

    assert run.status == "completed", run.error_message
    assert statuses(run) == ["pending", "queued", "training", "completed"]
    with default_storage.open(run.lora_name, "rb") as handle:
        assert len(handle.read()) == run.lora_bytes
    assert run.progress_step == 100 and run.cost_state == "settled" and run.cost_usd is not None
    assert [(c.step, c.final, c.verified_at is not None) for c in run.checkpoints.all()] == [
        (50, False, True),
        (100, True, True),
    ]
    assert sorted((s.step, s.verified_at is not None) for s in run.samples.all()) == [(50, True), (100, True)]
    assert len(run.loss.loss) >= 90
    assert run.pod_outputs_deleted_at is not None
    assert ui_pod.client.job_find(pod_job_name(run)) is None
    assert pod_dataset_name(run) not in ui_pod.client._request("GET", "/api/datasets/list").json()


def test_a_cancelled_pod_run_stops_its_job_and_keeps_what_it_made(
    character: Any,
    pod: Pod,
    ui_pod: UIPod,
) -> None:
    run = start(character, steps=3000)
    run = poll_until(run, lambda r: r.status == "training" and r.progress_step > 0)
    job_id = run.runpod_job_id

    run = training_run_cancel(run=run, source="user")

    assert run.status == "cancelled"
    assert run.events.get(to_status="cancelled").detail["pod"] == "stopped"
    with pytest.raises(AIToolkitNotFound):  # its outputs left the pod once kept
        ui_pod.client.job_get(job_id)


def test_a_stuck_job_is_marked_stopped_and_started_again(
    character: Any, pod: Pod, ui_pod: UIPod, settings: Any
) -> None:
    control(ui_pod, "faults", {"stick_next_job": 1})
    run = start(character)
    run = poll_until(run, lambda r: r.status == "training" and r.progress_step > 0)
    # Its trainer is gone and nobody saw it exit: the UI shows the job `running` for ever.
    wait = time.monotonic() + 30
    while ui_pod.pod.state()["trainers"] and time.monotonic() < wait:
        time.sleep(0.1)
    assert ui_pod.client.job_get(run.runpod_job_id).status == "running"
    settings.TRAINING_POD_STALL_SECONDS = 1.0

    run = poll_until(run, lambda r: r.events.filter(detail__has_key="pod_job_restarted").exists())
    settings.TRAINING_POD_STALL_SECONDS = 600.0  # the restarted trainer is alive: let it save at its pace
    run = poll_until(run, lambda r: r.is_final)

    assert run.status == "completed", run.error_message
    restarted = [e.detail for e in run.events.filter(from_status="training", to_status="training")]
    assert len(restarted) == 1 and "pod_job_restarted" in restarted[0]


def test_a_pod_restarted_with_a_fresh_database_gets_the_job_made_again(
    character: Any,
    pod: Pod,
    ui_pod: UIPod,
) -> None:
    # Long enough to restart the pod mid-run, with few saves: each is a FLUX-sized LoRA to bring back.
    run = start(character, steps=600, save_every=300, sample_every=300)
    run = poll_until(run, lambda r: r.status == "training" and r.progress_step > 0)
    first_job = run.runpod_job_id
    control(ui_pod, "restart_pod", {"down_s": 0.5, "keep_state": False})
    time.sleep(1.5)

    run = poll_until(run, lambda r: r.runpod_job_id != first_job)
    run = poll_until(run, lambda r: r.is_final)

    assert run.status == "completed", run.error_message
    assert run.events.filter(detail__has_key="pod_job_remade").count() == 1


def test_a_pod_restarted_between_reading_the_job_and_its_files_gets_the_job_made_again(
    character: Any, pod: Pod, ui_pod: UIPod, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The poll read the job running, then the pod restarted with a fresh database before its files were
    # read: the file routes answer 404 for a job the pod no longer has (`jobs/[jobID]/files/route.ts:15-17`).
    run = start(character, steps=600, save_every=300, sample_every=300)
    run = poll_until(run, lambda r: r.status == "training" and r.progress_step > 0)
    first_job = run.runpod_job_id
    collect = pod_runs.pod_artifacts_collect

    def restart_then_collect(**kwargs: Any) -> int:
        monkeypatch.setattr(pod_runs, "pod_artifacts_collect", collect)
        ui_pod.pod.restart(down_s=0.0, keep_state=False)
        return collect(**kwargs)

    monkeypatch.setattr(pod_runs, "pod_artifacts_collect", restart_then_collect)

    run = training_run_poll(run_id=run.pk)

    assert run.runpod_job_id != first_job
    assert run.events.filter(detail__has_key="pod_job_remade").count() == 1
    assert [job.id for job in ui_pod.client.jobs()] == [run.runpod_job_id]


def test_a_lost_create_answer_finds_the_runs_own_job_instead_of_making_a_second(
    character: Any,
    pod: Pod,
    ui_pod: UIPod,
) -> None:
    control(ui_pod, "faults", {"lose_create_answer": 1})

    run = start(character)
    run.refresh_from_db()

    assert run.status == "queued", run.error_message
    jobs = [job for job in ui_pod.client.jobs() if job.name == pod_job_name(run)]
    assert [job.id for job in jobs] == [run.runpod_job_id]


def waiting_since(run: TrainingRun, hours: float) -> TrainingRun:
    """The run as if it had been sent to the pod `hours` ago and its job had not started yet."""
    TrainingRun.objects.filter(pk=run.pk).update(
        submitted_at=timezone.now() - timedelta(hours=hours), started_at=None
    )
    return TrainingRun.objects.get(pk=run.pk)


def test_a_pod_run_waiting_in_the_pods_queue_is_not_held_to_runpods_queue_ttl(
    character: Any, pod: Pod, ui_pod: UIPod, settings: Any
) -> None:
    # RunPod's serverless queue drops a job at its TTL; the pod's own queue drops nothing, runs wait there
    # one at a time per GPU (`ui/cron/actions/processQueue.ts`): the pod's waiting limit applies instead.
    settings.TRAINING_JOB_TTL_SECONDS = 12 * 3600
    settings.TRAINING_POD_QUEUE_TIMEOUT_SECONDS = 24 * 3600
    run = waiting_since(start(character), hours=13)

    training_run_poll(run_id=run.pk)

    run.refresh_from_db()
    assert run.status in {"queued", "training"} and run.error_code == ""


def test_a_pod_run_the_pod_never_started_within_its_waiting_limit_fails_and_leaves_the_pod(
    character: Any, pod: Pod, ui_pod: UIPod, settings: Any, client: Any
) -> None:
    # Another run holds the pod's GPU, so this one's job waits `queued` in the UI's queue behind it.
    settings.TRAINING_POD_QUEUE_TIMEOUT_SECONDS = 24 * 3600
    ahead = poll_until(
        start(pod_ready_character(character.owner, "Bert"), steps=3000), lambda r: r.started_at
    )
    run = start(character)
    assert ui_pod.client.job_get(TrainingRun.objects.get(pk=run.pk).runpod_job_id).status == "queued"
    run = waiting_since(run, hours=25)

    training_run_poll(run_id=run.pk)

    run.refresh_from_db()
    assert (run.status, run.error_code) == ("failed", "timed_out")
    assert run.error_message.startswith("Pod pod-a did not start the run within 24 h")
    assert "nothing was charged" in run.error_message
    assert run.cost_usd is None
    deleted = poll_until(run, lambda r: r.pod_outputs_deleted_at is not None)
    assert ui_pod.client.job_find(pod_job_name(deleted)) is None
    # The run ahead was left alone, and the page does not charge the one that never trained.
    assert ui_pod.client.job_get(ahead.runpod_job_id).status == "running"
    client.force_login(character.owner)
    page = client.get(reverse("training:run-detail", args=[run.pk])).content.decode()
    assert "Nothing was billed" in page and "Pod time" not in page
    training_run_cancel(run=ahead, source="user")


def test_a_pod_run_past_its_waiting_limit_whose_job_started_since_the_last_poll_trains_on(
    character: Any, pod: Pod, ui_pod: UIPod, settings: Any
) -> None:
    settings.TRAINING_POD_QUEUE_TIMEOUT_SECONDS = 24 * 3600
    run = start(character, steps=3000)
    wait = time.monotonic() + 30
    while (
        ui_pod.client.job_get(run.runpod_job_id or TrainingRun.objects.get(pk=run.pk).runpod_job_id).status
        != "running"
    ):
        assert time.monotonic() < wait, "the pod never started the job"
        time.sleep(0.1)
    run = waiting_since(run, hours=25)  # the studio has not seen it start yet

    training_run_poll(run_id=run.pk)

    run.refresh_from_db()
    assert (run.status, run.error_code) == ("training", "")
    training_run_cancel(run=run, source="user")


def test_a_pod_runs_page_shows_its_cost_as_pod_time_at_the_pods_price(
    character: Any, pod: Pod, ui_pod: UIPod, client: Any
) -> None:
    run = poll_until(start(character), lambda r: r.is_final)
    assert run.status == "completed", run.error_message
    client.force_login(character.owner)

    page = client.get(reverse("training:run-detail", args=[run.pk])).content.decode()

    cost = re.search(r'<p id="run-cost">(.*?)</p>', page, re.S)
    assert cost is not None
    text = re.sub(r"<[^>]+>", "", cost.group(1))
    assert text.startswith(f"Pod time ${run.cost_usd:.2f}: ")
    assert "on pod pod-a at $0.69 an hour." in text
    assert "idle hours are the studio's and are not charged to runs" in text
