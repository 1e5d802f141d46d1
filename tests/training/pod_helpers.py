"""A character ready to train on a pod: three photos, each with its caption (both providers train on the
captions as given), and an owner staff enabled pods for."""

from __future__ import annotations

from typing import Any

from django.core.files.base import ContentFile

from tests.characters.factories import CharacterFactory, ReferenceImageFactory
from tests.characters.images import jpeg_bytes


def pod_ready_character(owner: Any, name: str = "Anna") -> Any:
    owner.pod_training_allowed = True
    owner.save()
    character = CharacterFactory(owner=owner, name=name, trigger_word=f"ohwx_{name.lower()}")
    for index in range(3):
        content = jpeg_bytes(size=(64 + index, 64))
        ReferenceImageFactory(
            character=character,
            content=content,
            caption=f"[trigger] photo {index}",
            file=ContentFile(content, name=f"photo-{index}.jpg"),
        )
    return character
