"""Fault hooks a test's Celery worker imports (`--include`): SIGKILL the whole worker (main process, pool
children and beat) once, at the worst moment of a task, as if its host died there.

`STUDIO_FAULT_KILL_IN` chooses the moment:
- `sweep`: right after the sweep committed which runs are due (their next poll pushed back) and before it
  queued a single poll;
- `poll`: inside a poll, after RunPod said COMPLETED, while the LoRA in storage is being verified;
- `deliver`: inside a webhook delivery, after the endpoint answered 2xx and before the outcome is recorded;
- `webhook_sweep`: inside the webhook sweep, after it made lost deliveries due and before it queued them;
- `cancel`: inside the cancel of a RunPod job no run owns, after the attempt claimed its stray-job row and
  while it calls RunPod (any RunPod cancel in the worker process: the test makes only that one).
`STUDIO_FAULT_MARKER` is a file created when the fault fires, so the restarted worker does not fire again.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from training import services
from training.services import completion

MOMENT = os.environ.get("STUDIO_FAULT_KILL_IN", "")
MARKER = Path(os.environ.get("STUDIO_FAULT_MARKER", "/nonexistent/marker"))


def _die() -> None:
    try:
        MARKER.open("x").close()
    except FileExistsError:
        return  # fired already, in the worker before this one
    os.killpg(os.getpgrp(), signal.SIGKILL)


if MOMENT == "sweep":
    _claim_due = services.training_runs_claim_due

    def _claim_due_then_die(*args: Any, **kwargs: Any) -> Any:
        due = _claim_due(*args, **kwargs)
        if any(status == services.Status.TRAINING for _, status in due):
            _die()
        return due

    services.training_runs_claim_due = _claim_due_then_die

elif MOMENT == "poll":
    _digest = completion.stored_file_digest

    def _die_while_verifying(*args: Any, **kwargs: Any) -> Any:
        _die()
        return _digest(*args, **kwargs)

    completion.stored_file_digest = _die_while_verifying  # type: ignore[assignment]

elif MOMENT == "deliver":
    from developer import webhooks

    _post = webhooks.post

    def _post_then_die(*args: Any, **kwargs: Any) -> Any:
        result = _post(*args, **kwargs)
        if result.ok:
            _die()
        return result

    webhooks.post = _post_then_die

elif MOMENT == "webhook_sweep":
    from developer import tasks as developer_tasks

    _claim_overdue = developer_tasks.webhook_deliveries_claim_overdue

    def _claim_overdue_then_die(*args: Any, **kwargs: Any) -> Any:
        overdue = _claim_overdue(*args, **kwargs)
        if overdue:
            _die()
        return overdue

    developer_tasks.webhook_deliveries_claim_overdue = _claim_overdue_then_die

elif MOMENT == "cancel":
    from training.runpod import RunPodClient

    _cancel = RunPodClient.cancel

    def _die_while_cancelling(*args: Any, **kwargs: Any) -> Any:
        # The attempt has claimed its stray-job row (leased it) and is calling RunPod: the worst moment.
        _die()
        return _cancel(*args, **kwargs)

    RunPodClient.cancel = _die_while_cancelling  # type: ignore[method-assign]
