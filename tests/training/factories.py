from __future__ import annotations

import factory

from tests.characters.factories import CharacterFactory
from training.models import TrainingRun


class TrainingRunFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = TrainingRun

    character = factory.SubFactory(CharacterFactory)
    requested_by = factory.LazyAttribute(lambda run: run.character.owner)
    trigger_word = factory.LazyAttribute(lambda run: run.character.trigger_word)
    status = TrainingRun.Status.PENDING
    params = factory.LazyFunction(lambda: {"steps": 1000, "rank": 16})
