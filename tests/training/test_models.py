from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction

from tests.characters.factories import CharacterFactory
from tests.training.factories import TrainingRunFactory
from training.models import TrainingRun

pytestmark = pytest.mark.django_db


def test_the_database_refuses_a_second_active_run_for_one_character() -> None:
    character = CharacterFactory()
    TrainingRunFactory(character=character, status=TrainingRun.Status.TRAINING)

    with pytest.raises(IntegrityError), transaction.atomic():
        TrainingRunFactory(character=character, status=TrainingRun.Status.PENDING)

    assert character.training_runs.count() == 1


def test_finished_runs_do_not_block_a_new_run() -> None:
    character = CharacterFactory()
    for status in TrainingRun.FINAL_STATUSES:
        TrainingRunFactory(character=character, status=status)

    TrainingRunFactory(character=character, status=TrainingRun.Status.PENDING)

    assert character.training_runs.count() == 4


def test_two_characters_may_train_at_once() -> None:
    TrainingRunFactory(status=TrainingRun.Status.QUEUED)
    TrainingRunFactory(status=TrainingRun.Status.QUEUED)

    assert TrainingRun.objects.filter(status=TrainingRun.Status.QUEUED).count() == 2


def test_a_runpod_job_id_belongs_to_one_run_only() -> None:
    TrainingRunFactory(runpod_job_id="job-1", status=TrainingRun.Status.COMPLETED)

    with pytest.raises(IntegrityError), transaction.atomic():
        TrainingRunFactory(runpod_job_id="job-1", status=TrainingRun.Status.COMPLETED)
