"""Celery tasks for characters: thin wrappers that load by id and call the analysis services."""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings
from django.db.models import F, Q

from characters import analysis
from characters.faces.photo import VERSION
from characters.models import Character

logger = logging.getLogger(__name__)


@shared_task(acks_late=True)
def analyse_character_photos(character_id: str) -> None:
    """Analyses the character's new photos, then recomputes its dataset report. A character with many
    new photos is worked through in slices, each task queueing the next, so none nears the time limit."""
    character = Character.objects.filter(pk=character_id).first()
    if character is None:
        return  # erased meanwhile: nothing to analyse, nothing to keep
    finished = analysis.character_photos_analyse(
        character=character, budget_seconds=settings.CHARACTERS_ANALYSIS_SLICE_SECONDS
    )
    if not finished:
        analyse_character_photos.delay(character_id)
        return
    analysis.dataset_report_refresh(character=character)


@shared_task(acks_late=True)
def sweep_dataset_reports() -> None:
    """Queues the analysis of characters whose report is missing or older than their photos: the safety
    net under a task lost to a broker outage or a killed worker."""
    stale = (
        Character.objects.filter(images__isnull=False)
        .filter(
            Q(dataset_report__isnull=True)
            | Q(dataset_report__dataset_as_of__lt=F("dataset_changed_at"))
            | Q(dataset_report__dataset_as_of__isnull=True, dataset_changed_at__isnull=False)
            | ~Q(dataset_report__analyser=VERSION)
        )
        .values_list("pk", flat=True)
        .distinct()[: settings.CHARACTERS_REPORT_SWEEP_BATCH]
    )
    for character_id in stale:
        analyse_character_photos.delay(str(character_id))
