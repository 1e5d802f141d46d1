"""Signals the training app sends; other apps (outbound webhooks, notifications) listen."""

from __future__ import annotations

from django.dispatch import Signal

# Sent after the transaction that changed a run's status commits, for every transition, including the
# creation of a run (from_status=""). sender=TrainingRun, kwargs: run_id (UUID), from_status, to_status,
# changed_at (when the change committed; a late announcement comes after it).
# At least once: a change whose announcement was lost with its process, or whose receiver raised, is
# announced again by the sweep, so receivers must be idempotent and may raise to be called again.
training_run_status_changed = Signal()

# Sent once a checkpoint or sample of a run is verified in storage. sender=TrainingRun, kwargs: run_id
# (UUID), kind ("checkpoint" or "sample"), artifact_id (the row's id). At least once, as above: receivers
# must be idempotent and may raise to be called again (the sweep announces it again).
training_run_artifact_created = Signal()
