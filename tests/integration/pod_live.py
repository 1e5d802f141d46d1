"""What the live pod tests share: the helpers that start a run on the test's pod (the `ui` and `pod`
fixtures, tests/integration/conftest.py) and read what came of it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db.models import Q

from tests.integration.conftest import Stack, wait_for
from tests.support.local_ai_toolkit_ui import LocalAIToolkitUI
from tests.training.pod_helpers import pod_ready_character
from training.models import TrainingRun
from training.pod_config import pod_dataset_name, pod_job_name
from training.services import training_run_start

# The Celery worker reads the pod every half second (production: every 10 s).
POD_WORKER_ENV = {"TRAINING_POD_POLL_SECONDS": "0.5"}


def character_ready_to_train(owner: Any, name: str = "Anna") -> Any:
    return pod_ready_character(owner, name)


def start(character: Any, provider: str = "pod", steps: int = 100, save_every: int = 50) -> TrainingRun:
    params = {
        "steps": steps,
        "save_every": save_every,
        "rank": 4,
        "sample_prompts": ["[trigger] portrait"],
        "sample_every": save_every,
    }
    return training_run_start(
        character=character, requested_by=character.owner, params=params, provider=provider, source="user"
    )


def final(run: TrainingRun, timeout: float = 120.0, *, logs: Callable[[], str] | None = None) -> TrainingRun:
    """The run once it has ended; a run that never does fails the test with `logs()` when given."""

    def done() -> TrainingRun | None:
        run.refresh_from_db()
        return run if run.is_final else None

    try:
        return wait_for(done, timeout=timeout, what=f"run {run.pk} to end")
    except TimeoutError as timeout_error:
        if logs is None:
            raise
        raise TimeoutError(f"{timeout_error}\n{logs()}") from timeout_error


def files_settled(run: TrainingRun, timeout: float = 60.0) -> TrainingRun:
    """The run once every checkpoint and sample it recorded is verified in storage and every sample has its
    thumbnail: tasks of their own do both after each file is recorded, the last ones after the run
    completed."""

    def settled() -> TrainingRun | None:
        pending = run.checkpoints.filter(verified_at__isnull=True).exists() or (
            run.samples.filter(Q(verified_at__isnull=True) | Q(thumbnail="")).exists()
        )
        return None if pending else TrainingRun.objects.get(pk=run.pk)

    return wait_for(settled, timeout=timeout, what=f"run {run.pk}'s files verified")


def outputs_deleted(run: TrainingRun, timeout: float = 60.0) -> TrainingRun:
    return wait_for(
        lambda: TrainingRun.objects.filter(pk=run.pk, pod_outputs_deleted_at__isnull=False).first(),
        timeout=timeout,
        what=f"run {run.pk}'s outputs to leave the pod",
    )


def statuses(run: TrainingRun) -> list[str]:
    """Its status changes (a restart of its job on the pod is an event that changes none)."""
    return [e.to_status for e in run.events.order_by("created_at", "id") if e.from_status != e.to_status]


def explain(stack: Stack, ui: LocalAIToolkitUI) -> str:
    return stack.worker.logs() + "\n" + ui.logs()


def on_pod(ui: LocalAIToolkitUI, run: TrainingRun) -> list[str]:
    """What the pod still holds of the run: its job, job folder, dataset."""
    held = [job.name for job in ui.client().jobs() if job.name == pod_job_name(run)]
    if (ui.root / "output" / pod_job_name(run)).exists():
        held.append("job folder")
    if (ui.root / "datasets" / pod_dataset_name(run)).exists():
        held.append("dataset")
    return held
