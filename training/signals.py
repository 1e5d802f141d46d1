"""Signals the training app sends; other apps (outbound webhooks, notifications) listen."""

from __future__ import annotations

from django.dispatch import Signal

# Sent after the transaction that changed a run's status commits; once per transition, including the
# creation of a run (from_status=""). sender=TrainingRun, kwargs: run_id (UUID), from_status, to_status.
training_run_status_changed = Signal()
