"""The one way a run changes status: lock the row, check the move, set it, write its event, save — once.

Every service that changes a run's status does it here, on a row locked with `select_for_update`, so a
webhook, a poll and a worker callback arriving together change a run once. Each change writes a
TrainingEvent in the same transaction and, after commit, announces it (`announcements`).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from django.db import transaction
from django.utils import timezone

from studio.errors import Conflict
from studio.log_redaction import redact
from training.models import TrainingEvent, TrainingRun
from training.services import queue
from training.services.announcements import ANNOUNCE_RETRY, announce
from training.services.cost import cost_settle_on_end

Status = TrainingRun.Status
RunId = uuid.UUID | str
Source = TrainingEvent.Source

# Forward-only: a run may skip a step (a webhook can report COMPLETED for a run still "queued" here) but
# never go back, and the three final states never change.
_RANK = {
    Status.PENDING: 0,
    Status.QUEUED: 1,
    Status.TRAINING: 2,
    Status.COMPLETED: 3,
    Status.FAILED: 3,
    Status.CANCELLED: 3,
}


def transition_allowed(from_status: str, to_status: str) -> bool:
    if from_status in TrainingRun.FINAL_STATUSES:
        return False
    return _RANK[Status(to_status)] > _RANK[Status(from_status)]


def run_locked(run_id: RunId) -> TrainingRun:
    """The run, locked until the caller's transaction ends (call it inside `transaction.atomic`)."""
    return TrainingRun.objects.select_for_update().select_related("character").get(pk=run_id)


def run_transition(run: TrainingRun, to_status: str, *, source: str, detail: dict[str, Any]) -> None:
    """Checks and makes one status change of a run locked by the caller: sets the status and its times,
    settles the cost when the run ends, writes the event (announced after commit) and saves the row.

    Raises Conflict for a move the state machine does not allow; nothing is written then.
    """
    from_status = run.status
    if not transition_allowed(from_status, to_status):
        raise Conflict(f"A run cannot go from {from_status} to {to_status}.", code="invalid_transition")
    now = timezone.now()
    run.status = to_status
    run.polls_since_change = 0
    run.submit_due_at = None  # only a pending run is sent to RunPod
    if to_status == Status.TRAINING and run.started_at is None:
        run.started_at = now
    if to_status in TrainingRun.FINAL_STATUSES:
        run.finished_at = now
        cost_settle_on_end(run, now)
        # Its last checkpoints are verified, its optimizer states (only a resume needs them) removed, and a
        # completed run's checkpoints beyond the cap pruned (`verification`, then `checkpoints`).
        queue.enqueue_on_commit(queue.VERIFY_ARTIFACTS, run.pk)
        if run.provider == TrainingRun.Provider.POD:
            # What the job made is verified in storage there first; then it leaves the pod (`pod_runs`).
            queue.enqueue_on_commit(queue.POD_OUTPUTS_DELETE, run.pk)
    event_write(run, from_status, to_status, source, detail)
    run.save()


# The trainer's last lines a failed run keeps (the worker sends at most 200, each at most 1000 characters).
LOG_TAIL_LINES = 200
LOG_TAIL_LINE_CHARS = 1000


def run_fail(run: TrainingRun, *, code: str, message: str, source: str, log_tail: Sequence[str] = ()) -> None:
    """Ends a run locked by the caller as failed with a message the user can act on, and the trainer's
    last lines when the worker sent them (one write)."""
    message = in_the_owners_names(run, message)
    run.error_code = code[:32]
    run.error_message = message
    if log_tail:
        run.log_tail = log_tail_clean(run, log_tail)
    run_transition(run, Status.FAILED, source=source, detail={"error_code": code, "message": message})


def log_tail_clean(run: TrainingRun, lines: Sequence[str]) -> str:
    """The worker redacted its lines (runpod_worker/redact.py); URL-borne secrets are taken out again here
    as the site's logs do, in case an older worker did not, and photos carry their uploaded names."""
    kept = [redact(line)[:LOG_TAIL_LINE_CHARS].replace("\x00", "") for line in lines[-LOG_TAIL_LINES:]]
    return in_the_owners_names(run, "\n".join(kept))


def in_the_owners_names(run: TrainingRun, message: str) -> str:
    """The worker names photos by the stored, content-addressed names it was given; the owner knows them
    by the names they uploaded, which the manifest keeps (runs started before it did keep the stored ones)."""
    for item in run.manifest:
        original = item.get("original_name")
        if original and item["name"] in message:
            message = message.replace(item["name"], original)
    return message


def event_write(
    run: TrainingRun, from_status: str, to_status: str, source: str, detail: dict[str, Any]
) -> None:
    """Writes a status change's event in the caller's transaction and announces it after commit."""
    event = TrainingEvent.objects.create(
        run=run,
        from_status=from_status,
        to_status=to_status,
        source=source,
        detail=detail,
        announce_due_at=timezone.now() + ANNOUNCE_RETRY[0],
    )

    def announce_change() -> None:  # named: Django's robust on_commit logs a failure by the callback's name
        announce(event)

    # robust: an error announcing (the sweep's to repair) must not fail the request whose change committed.
    transaction.on_commit(announce_change, robust=True)
