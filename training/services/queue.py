"""Queueing training's Celery tasks after commit, by name: the services never import the tasks that call
them, so `training.tasks -> training.services` is the only direction between the two."""

from __future__ import annotations

from importlib import import_module
from typing import Any

from celery import current_app
from django.db import transaction

SUBMIT = "training.tasks.submit_training_run"
POLL = "training.tasks.poll_training_run"
CANCEL_JOB = "training.tasks.cancel_runpod_job"
VERIFY_ARTIFACTS = "training.tasks.verify_run_artifacts"
POD_OUTPUTS_DELETE = "training.tasks.delete_pod_outputs"
SCORE_LIKENESS = "training.tasks.score_run_likeness"


def enqueue_on_commit(task_name: str, argument: Any) -> None:
    """Queues `task_name(argument)` once the caller's transaction commits.

    robust: a broker outage must not fail the request that changed the run; Django logs the error and the
    sweep, which finds every due run and stray job in the database, is the fallback.
    """

    def enqueue() -> None:  # named: Django's robust on_commit logs a failure by the callback's name
        task_get(task_name).delay(str(argument))

    transaction.on_commit(enqueue, robust=True)


def task_get(task_name: str) -> Any:
    """The registered task called `task_name`; its module is imported on first use (a web process has not
    imported the task modules, which the Celery worker does at start)."""
    tasks = current_app.tasks
    if task_name not in tasks:
        import_module(task_name.rpartition(".")[0])
    return tasks[task_name]
