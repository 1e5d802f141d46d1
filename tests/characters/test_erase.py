"""Erasing a character leaves nothing of it: no row in any table names it, its photos or their hashes, and
no stored file remains (on local files and on the S3 test server)."""

from __future__ import annotations

from typing import Any

import pytest
from django.apps import apps
from django.core.files.storage import default_storage

from characters import services
from characters.models import Character
from tests.characters import photos
from tests.characters.identity import character_with, person_a_and_b

pytestmark = pytest.mark.django_db


def traces_in_database(needles: list[str]) -> list[str]:
    """Every row of every table whose values mention one of `needles` (ids, hashes), as 'model: value'."""
    found = []
    for model in apps.get_models():
        for row in model.objects.all().values_list():
            text = " ".join(str(value) for value in row)
            found.extend(f"{model.__name__}: {needle}" for needle in needles if needle in text)
    return found


def stored_files(folder: str) -> list[str]:
    try:
        directories, files = default_storage.listdir(folder)
    except FileNotFoundError:
        return []
    return files + [name for directory in directories for name in stored_files(f"{folder}{directory}/")]


def erased_leaves_nothing(alice: Any, django_capture_on_commit_callbacks: Any) -> None:
    anna = character_with(alice, person_a_and_b())
    needles = [str(anna.pk), anna.pk.hex]
    for image in anna.images.all():
        needles += [str(image.pk), image.pk.hex, image.sha256]
    assert traces_in_database(needles)  # the check finds what is there
    assert len(stored_files(f"characters/{anna.pk}/")) >= 12  # photos, thumbnails, crops

    with django_capture_on_commit_callbacks(execute=True):
        services.character_delete(character=anna)

    assert traces_in_database(needles) == []
    assert stored_files(f"characters/{anna.pk}/") == []
    assert not Character.objects.exists()


def test_erasing_a_character_leaves_nothing_in_the_database_or_local_storage(
    alice: Any, django_capture_on_commit_callbacks: Any, isolated_media: Any
) -> None:
    erased_leaves_nothing(alice, django_capture_on_commit_callbacks)

    assert [path for path in isolated_media.rglob("*") if path.is_file()] == []


def test_erasing_a_character_leaves_nothing_in_the_bucket(
    alice: Any, django_capture_on_commit_callbacks: Any, s3_storage: Any
) -> None:
    erased_leaves_nothing(alice, django_capture_on_commit_callbacks)


def test_erasing_one_character_keeps_another_ones_photos(
    alice: Any, django_capture_on_commit_callbacks: Any
) -> None:
    anna = character_with(alice, {photos.PERSON_B: photos.photo(photos.PERSON_B)})
    other = character_with(alice, {photos.PERSON_A[0]: photos.photo(photos.PERSON_A[0])})
    kept = other.images.get()

    with django_capture_on_commit_callbacks(execute=True):
        services.character_delete(character=anna)

    assert default_storage.exists(kept.file.name) and default_storage.exists(kept.analysis.crop.name)
