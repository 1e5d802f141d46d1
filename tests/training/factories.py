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
    # As a run reaches its state: settled once it ended, except a completed run whose execution time the
    # sweep still has to read from RunPod (the worker's "finished" callback completed it).
    cost_state = factory.LazyAttribute(lambda run: _cost_state(run))


def _cost_state(run: object) -> str:
    if run.status not in TrainingRun.FINAL_STATUSES:  # type: ignore[attr-defined]
        return TrainingRun.CostState.PENDING
    unread = (
        run.status == TrainingRun.Status.COMPLETED  # type: ignore[attr-defined]
        and getattr(run, "execution_ms", None) is None
        and getattr(run, "next_poll_at", None) is not None
        and bool(getattr(run, "runpod_job_id", ""))
    )
    return TrainingRun.CostState.PENDING if unread else TrainingRun.CostState.SETTLED
