"""Pod mode on the live stack: runs train on the AI Toolkit UI stand-in (a pod) through the studio's real
HTTP client, driven by the real Celery worker and its beat (the sweep polls: the UI has no webhooks), with
storage on the S3 test server. The tests share the module's stack, each with a pod of its own; the pod
settings they change are read by the worker when a task runs (`RUNTIME_SETTINGS`). A test that needs the
worker started differently is in test_training_live_pod_own_stack.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.core.files.storage import default_storage
from django.test import Client
from django.urls import reverse

from tests.developer.api_helpers import client_for
from tests.integration.conftest import Stack, wait_for
from tests.integration.pod_live import (
    POD_WORKER_ENV,
    character_ready_to_train,
    explain,
    files_settled,
    final,
    on_pod,
    outputs_deleted,
    start,
    statuses,
)
from tests.support.grouping import in_one_process
from tests.support.local_ai_toolkit_ui import LocalAIToolkitUI
from training.models import Pod, TrainingRun
from training.services import training_run_cancel

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True), in_one_process(__name__)]


@pytest.fixture
def pod_stack(shared_stack: Callable[..., Stack]) -> Callable[..., Stack]:
    """The module's stack, its worker reading the pod every half second and given `worker_env` for this
    test."""

    def use(**worker_env: str) -> Stack:
        return shared_stack(worker_env={**POD_WORKER_ENV, **worker_env})

    return use


def test_a_pod_run_trains_on_the_pod_through_its_ui_and_leaves_nothing_there(
    alice: Any, pod_stack: Any, ui: LocalAIToolkitUI, pod: Pod
) -> None:
    stack = pod_stack()
    character = character_ready_to_train(alice)

    run = final(start(character))

    assert run.status == "completed", explain(stack, ui) + run.error_message
    assert statuses(run) == ["pending", "queued", "training", "completed"]
    assert run.pod == pod and (run.progress_step, run.progress_total) == (100, 100)
    # The LoRA came from the pod, was verified, and is the run's own copy in S3.
    stored = default_storage.open(run.lora_name).read()
    assert len(stored) == run.lora_bytes
    # Samples, checkpoints and the loss series came from the pod's files and loss log, each file verified.
    run = files_settled(run)
    assert [(c.step, c.final) for c in run.checkpoints.order_by("step")] == [(50, False), (100, True)]
    assert sorted((s.step, s.prompt_index) for s in run.samples.all()) == [(50, 0), (100, 0)]
    assert [point[0] for point in run.loss.loss] == list(range(1, 100))
    assert (run.cost_state, run.cost_usd is not None) == ("settled", True)
    # Once kept in storage, the job (folder, row) and dataset leave the pod, whose files are public by path.
    outputs_deleted(run)
    assert on_pod(ui, run) == []
    calls = ui.state()["api_calls"]
    assert calls.get(f"/api/jobs/{run.runpod_job_id}/start") == 1 and calls.get("/api/queue/0/start", 0) >= 1


def test_cancel_stops_the_job_on_the_pod_and_then_clears_it(
    alice: Any, pod_stack: Any, ui: LocalAIToolkitUI, pod: Pod
) -> None:
    stack = pod_stack()
    run = start(character_ready_to_train(alice), steps=3000)
    wait_for(lambda: TrainingRun.objects.filter(pk=run.pk, progress_step__gt=0).exists(), what="progress")

    run = training_run_cancel(run=run, source="user")

    assert run.status == "cancelled", explain(stack, ui)
    assert run.events.get(to_status="cancelled").detail["pod"] == "stopped"
    outputs_deleted(run)
    assert on_pod(ui, run) == []


def test_a_job_stuck_running_after_its_trainer_died_is_marked_stopped_and_runs_again(
    alice: Any, pod_stack: Any, ui: LocalAIToolkitUI, pod: Pod
) -> None:
    # The trainer is SIGKILLed at its first step where the UI's cron never sees it exit: the job shows
    # `running` for ever and blocks its GPU queue (the UI's "mark stopped" case).
    stack = pod_stack(TRAINING_POD_STALL_SECONDS="4", TRAINING_POD_MAX_RESTARTS="3")
    ui.control("faults", {"stick_next_job": 1})

    run = final(start(character_ready_to_train(alice)), timeout=180)

    assert run.status == "completed", explain(stack, ui) + run.error_message
    restarts = run.events.filter(detail__has_key="pod_job_restarted")
    assert restarts.count() >= 1
    assert statuses(run) == ["pending", "queued", "training", "completed"]


def test_a_pod_restarted_mid_run_gets_the_job_made_again_and_the_run_completes(
    alice: Any, pod_stack: Any, ui: LocalAIToolkitUI, pod: Pod
) -> None:
    stack = pod_stack()
    # Long enough to restart the pod mid-run, with few saves: each is a FLUX-sized LoRA to bring back.
    run = start(character_ready_to_train(alice), steps=600, save_every=300)
    wait_for(lambda: TrainingRun.objects.filter(pk=run.pk, progress_step__gt=0).exists(), what="progress")
    first_job = TrainingRun.objects.get(pk=run.pk).runpod_job_id

    ui.control("restart_pod", {"down_s": 2.0, "keep_state": False})

    run = final(run, timeout=180, logs=lambda: explain(stack, ui))
    assert run.status == "completed", explain(stack, ui) + run.error_message
    assert run.runpod_job_id != first_job
    assert run.events.filter(detail__has_key="pod_job_remade").count() == 1


def test_the_same_run_through_serverless_and_a_pod_gives_the_same_records(
    alice: Any, pod_stack: Any, ui: LocalAIToolkitUI, pod: Pod, settings: Any
) -> None:
    stack = pod_stack()
    on_serverless = start(character_ready_to_train(alice, "Anna"), provider="serverless")
    on_pod = start(character_ready_to_train(alice, "Bert"), provider="pod")

    runs = [final(on_serverless), final(on_pod)]
    for run in runs:
        assert run.status == "completed", explain(stack, ui) + run.error_message
    runs = [
        wait_for(lambda r=run: TrainingRun.objects.filter(pk=r.pk, cost_state="settled").first(), what="cost")
        for run in runs
    ]
    wait_for(lambda: all(r.samples.filter(thumbnail="").count() == 0 for r in runs), what="thumbnails")

    api = client_for(alice)
    documents = [api.get(f"/api/v1/runs/{run.pk}").json() for run in runs]
    # A pod bills no worker start-up or idle timeout per run: `startup_idle_cost_usd` is null there.
    assert shape_differences(documents[0], documents[1]) == []
    for document in documents:
        assert document["progress"] | {"loss": None} == {
            "step": 100, "total": 100, "percent": 100, "loss": None, "eta_seconds": 0,
        }  # fmt: skip
        assert document["lora"]["bytes"] > 0 and document["cost_state"] == "settled"
    assert [d["provider"] for d in documents] == ["serverless", "pod"]
    listings = [
        (
            [(c["step"], c["final"]) for c in api.get(f"/api/v1/runs/{run.pk}/checkpoints").json()],
            sorted((s["step"], s["prompt_index"]) for s in api.get(f"/api/v1/runs/{run.pk}/samples").json()),
            [point[0] for point in api.get(f"/api/v1/runs/{run.pk}/loss").json()["loss"]],
        )
        for run in runs
    ]
    assert listings[0] == listings[1], listings
    # A GPU worker that takes the serverless job at once may report it before its submission is recorded:
    # that run may go from pending straight to training (a pod run is read only by the sweep's polls).
    queued, skipped = ["pending", "queued", "training", "completed"], ["pending", "training", "completed"]
    assert statuses(runs[0]) in (queued, skipped) and statuses(runs[1]) == queued

    page = Client()
    page.force_login(alice)
    pages = [page.get(reverse("training:run-progress", args=[run.pk])).json() for run in runs]
    assert shape_differences(pages[0], pages[1]) == []
    assert [(p["status"], p["step"], p["percent"]) for p in pages] == [("completed", 100, 100)] * 2
    html = [page.get(reverse("training:run-detail", args=[run.pk])) for run in runs]
    assert [response.status_code for response in html] == [200, 200]


def shape_differences(left: Any, right: Any, path: str = "") -> list[str]:
    """Where two documents differ in structure: keys, and the type of each leaf (a null matches any)."""
    if isinstance(left, dict) and isinstance(right, dict):
        if set(left) != set(right):
            return [f"{path}: keys {sorted(set(left) ^ set(right))}"]
        return [d for key in left for d in shape_differences(left[key], right[key], f"{path}.{key}")]
    if isinstance(left, list) and isinstance(right, list):
        if bool(left) != bool(right):
            return [f"{path}: one list is empty"]
        return shape_differences(left[0], right[0], f"{path}[0]") if left else []
    if left is None or right is None or type(left) is type(right):
        return []
    return [f"{path}: {type(left).__name__} != {type(right).__name__}"]


# Training takes 5 s: polls slowed by the faults below still see it (at 0.01 s a step the 100 steps could end
# between two polls that each waited out a late answer, and the run would go from queued to completed).
@pytest.mark.parametrize("ui", ["0.05"], indirect=True)
def test_a_pod_whose_answers_come_late_or_are_lost_still_gets_one_job_and_the_run_completes(
    alice: Any, pod_stack: Any, ui: LocalAIToolkitUI, pod: Pod
) -> None:
    # A third of the UI's answers arrive after the client's timeout (the work done first, as a slow proxy
    # would), and the answer to the job's creation is lost once: every repeat meets what already exists.
    stack = pod_stack(TRAINING_POD_TIMEOUT_SECONDS="1")
    ui.control("faults", {"slow_s": 1.5, "slow_rate": 0.33, "lose_create_answer": 1})

    run = final(start(character_ready_to_train(alice)), timeout=240)

    assert run.status == "completed", explain(stack, ui) + run.error_message
    assert statuses(run) == ["pending", "queued", "training", "completed"]
    run = files_settled(run)
    assert [c.step for c in run.checkpoints.order_by("step")] == [50, 100]
    # The creation's answer was lost and the run still has its first job: the repeat met it by its name
    # (409), and nothing was made again.
    assert ui.state()["faults"]["lose_create_answer"] == 0
    assert run.events.filter(detail__has_key="pod_job_remade").count() == 0
    ui.control("faults", {"slow_s": 0.0, "slow_rate": 0.0})
    outputs_deleted(run)
    assert on_pod(ui, run) == []
