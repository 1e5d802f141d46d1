from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection

from characters.models import Character
from characters.signals import reference_images_added
from tests.characters.factories import CharacterFactory, ReferenceImageFactory
from tests.training.conftest import FakeProvider, face_checked
from training.models import Pod, TrainingRun
from training.pod_secrets import pod_token_set
from training.selectors import training_cost_estimate


def announce(character: Any) -> None:
    reference_images_added.send(sender=Character, character_id=character.pk)


def test_a_character_with_auto_train_starts_once_it_has_enough_images(
    alice: Any, settings: Any, provider: FakeProvider
) -> None:
    settings.TRAINING_MIN_IMAGES = 3
    character = CharacterFactory(owner=alice, auto_train=True)
    ReferenceImageFactory.create_batch(2, character=character)
    face_checked(character)
    announce(character)
    assert not TrainingRun.objects.exists()

    ReferenceImageFactory(character=character)
    announce(character)

    run = TrainingRun.objects.get()
    assert (run.character, run.requested_by, run.events.get().source) == (character, alice, "system")


def test_auto_train_trains_on_the_characters_default_provider(
    alice: Any, settings: Any, provider: FakeProvider
) -> None:
    settings.TRAINING_MIN_IMAGES = 3
    alice.pod_training_allowed = True
    alice.save()
    pod = Pod(name="pod-a", ui_url="http://127.0.0.1:9", hourly_price_usd=Decimal("1"))
    pod_token_set(pod, "token")
    pod.save()
    character = CharacterFactory(owner=alice, auto_train=True, training_provider="pod")
    ReferenceImageFactory.create_batch(3, character=character)
    face_checked(character)

    announce(character)

    assert TrainingRun.objects.get().provider == "pod"


def test_auto_train_on_pods_for_an_owner_without_them_starts_nothing(alice: Any, settings: Any) -> None:
    settings.TRAINING_MIN_IMAGES = 3
    character = CharacterFactory(owner=alice, auto_train=True, training_provider="pod")
    ReferenceImageFactory.create_batch(3, character=character)
    face_checked(character)

    announce(character)

    assert not TrainingRun.objects.exists()


def test_a_character_without_auto_train_does_not_start(alice: Any, settings: Any) -> None:
    settings.TRAINING_MIN_IMAGES = 3
    character = CharacterFactory(owner=alice, auto_train=False)
    ReferenceImageFactory.create_batch(3, character=character)

    announce(character)

    assert not TrainingRun.objects.exists()


def test_more_uploads_after_the_first_run_start_nothing_new(
    alice: Any, settings: Any, provider: FakeProvider
) -> None:
    settings.TRAINING_MIN_IMAGES = 3
    character = CharacterFactory(owner=alice, auto_train=True)
    ReferenceImageFactory.create_batch(3, character=character)
    face_checked(character)
    announce(character)
    TrainingRun.objects.update(status="completed")

    ReferenceImageFactory(character=character)
    announce(character)

    assert TrainingRun.objects.count() == 1


def test_auto_train_over_budget_starts_nothing_and_raises_nothing(alice: Any, settings: Any) -> None:
    settings.TRAINING_MIN_IMAGES = 3
    alice.monthly_gpu_budget_usd = 0
    alice.save()
    character = CharacterFactory(owner=alice, auto_train=True)
    ReferenceImageFactory.create_batch(3, character=character)
    face_checked(character)

    announce(character)

    assert not TrainingRun.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_many_uploads_arriving_at_once_start_exactly_one_run(
    alice: Any, settings: Any, provider: FakeProvider
) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("concurrent writers need Postgres")
    settings.TRAINING_MIN_IMAGES = 3
    character = CharacterFactory(owner=alice, auto_train=True)
    ReferenceImageFactory.create_batch(3, character=character)
    face_checked(character)
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def upload_finished() -> None:
        try:
            barrier.wait()
            announce(character)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=upload_finished) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert TrainingRun.objects.filter(character=character).count() == 1


def test_auto_train_trains_on_the_characters_base_model(
    alice: Any, settings: Any, provider: FakeProvider
) -> None:
    settings.TRAINING_MIN_IMAGES = 3
    character = CharacterFactory(owner=alice, auto_train=True, base_model="wan22-5b")
    ReferenceImageFactory.create_batch(3, character=character)
    face_checked(character)

    announce(character)

    run = TrainingRun.objects.get()
    assert run.base_model == "wan22-5b"
    assert run.estimated_cost_usd == training_cost_estimate(steps=run.params["steps"], base_model="wan22-5b")


def test_auto_train_starts_nothing_when_no_gpu_pool_fits_the_characters_base_model(
    alice: Any, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.TRAINING_MIN_IMAGES = 3
    settings.RUNPOD_GPU_POOLS = ["AMPERE_16"]
    character = CharacterFactory(owner=alice, auto_train=True, base_model="qwen-image")
    ReferenceImageFactory.create_batch(3, character=character)
    face_checked(character)

    with caplog.at_level("INFO", logger="training.services"):
        announce(character)

    assert not TrainingRun.objects.exists()
    assert "Qwen-Image needs a GPU with at least 24 GB" in caplog.text
