"""Training's answers to other apps' signals (connected in `TrainingConfig.ready`)."""

from __future__ import annotations

import uuid
from typing import Any

from django.urls import reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.timezone import localtime

from characters.models import Character, ReferenceImage
from studio.errors import Conflict
from training.models import DeletedRunSpend, TrainingEvent, TrainingRun
from training.selectors import training_run_charge
from training.services import stray_jobs_of_erased_runs, training_run_autostart, training_run_cancel


def start_training_when_sheet_complete(sender: Any, *, character_id: uuid.UUID, **kwargs: Any) -> None:
    """Auto-train: the character's first run starts once it has enough reference images and the face check
    has seen them, or once auto-train is turned on for a character that already has them."""
    training_run_autostart(character_id=character_id)


def cancel_runs_of_deleting_character(sender: Any, *, character: Character, **kwargs: Any) -> None:
    """A character about to be deleted stops training first, so no GPU keeps billing for it; a job RunPod
    could not stop yet (or any stray job of its runs: one RunPod ran twice) has the character's folder
    emptied again once it has ended, as its signed links may write there until then."""
    active = TrainingRun.objects.filter(character=character, status__in=TrainingRun.ACTIVE_STATUSES)
    for run in active:
        try:
            training_run_cancel(run=run, source=TrainingEvent.Source.SYSTEM, keep_artifacts=False)
        except Conflict:
            continue  # it ended on its own meanwhile
    runs = list(TrainingRun.objects.filter(character=character).values_list("pk", flat=True))
    stray_jobs_of_erased_runs(run_ids=runs, folder=f"characters/{character.pk}/")


def refuse_deleting_a_photo_in_training(sender: Any, *, image: ReferenceImage, **kwargs: Any) -> None:
    """A photo an active run trains on stays until that run ends: its worker may still be downloading it,
    and a deleted photo would fail the run after its GPU time was paid for."""
    active = TrainingRun.objects.filter(
        character_id=image.character_id, status__in=TrainingRun.ACTIVE_STATUSES
    ).only("id", "created_at", "manifest")
    for run in active:
        # Its face crop goes with it: a run that trains on the crop alone keeps the photo too.
        if any(image.sha256 in (item.get("sha256"), item.get("photo_sha256")) for item in run.manifest):
            started = date_format(localtime(run.created_at), "DATETIME_FORMAT")
            raise Conflict(
                f"{image.original_filename} cannot be deleted while the training run started {started} "
                f"uses it. Wait for that run to finish, or cancel it at "
                f"{reverse('training:run-detail', args=[run.pk])}, then delete the photo.",
                code="photo_in_use",
            )


def keep_the_spend_of_a_deleted_run(sender: Any, *, instance: TrainingRun, **kwargs: Any) -> None:
    """Before a run goes (alone, with its character or with its owner's account), what it cost stays
    counted: a delete must never lower this month's spend, or train-delete-train would pass the budget."""
    # As `training.selectors.training_run_charge` counts it: RunPod's cost with the estimate of start-up and
    # idle time beside it, else the estimate of a run that started.
    charge = training_run_charge(instance)
    exact, amount = charge.exact, charge.amount
    if not amount:
        return  # it never reached a GPU: nothing was billed
    character = Character.objects.select_related("owner").get(pk=instance.character_id)
    DeletedRunSpend.objects.get_or_create(
        run_id=instance.pk,
        defaults={
            "owner_id": character.owner_id,
            "owner_username": character.owner.get_username(),
            "character_name": character.name,
            "amount_usd": amount,
            "exact": exact,
            "finished_at": instance.finished_at or timezone.now(),
        },
    )
