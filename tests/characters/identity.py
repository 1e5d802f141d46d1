"""Helpers for the identity tests: a character of alice's filled with real photos and analysed."""

from __future__ import annotations

from typing import Any

from PIL import Image

from characters import services, tasks
from characters.models import Character, ReferenceImage
from tests.characters import images, photos
from tests.characters.factories import CharacterFactory


def character_with(owner: Any, named: dict[str, Image.Image], **fields: Any) -> Character:
    """A character (consent recorded) holding these photos, analysed and with its report computed."""
    character = CharacterFactory(owner=owner, **fields)
    add(character, named)
    analyse(character)
    return character


def add(character: Character, named: dict[str, Image.Image]) -> None:
    uploads = [images.upload(photos.jpeg(image), name) for name, image in named.items()]
    report = services.reference_images_add_many(character=character, uploads=uploads)
    assert not report.rejected, [rejected.message for rejected in report.rejected]


def analyse(character: Character) -> None:
    """What the Celery worker does after an upload, run here in-process."""
    tasks.analyse_character_photos(str(character.pk))


def image_named(character: Character, name: str) -> ReferenceImage:
    return character.images.get(original_filename=name)


def flags_by_name(character: Character) -> dict[str, list[str]]:
    report = character.dataset_report
    report.refresh_from_db()
    return {
        image.original_filename: [flag["code"] for flag in report.photos[str(image.pk)]["flags"]]
        for image in character.images.all()
    }


def person_a_and_b() -> dict[str, Image.Image]:
    named = {name: photos.photo(name) for name in photos.PERSON_A}
    named[photos.PERSON_B] = photos.photo(photos.PERSON_B)
    return named
