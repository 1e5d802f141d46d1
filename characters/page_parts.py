"""What other apps add to the character pages, so that the pages, and this app, never name those apps.

An app registers its parts in its `AppConfig.ready`, as it connects to `characters.signals`:

- a card part adds HTML to each character's card on the list page; it is given all the page's
  characters at once, so it can read what it needs in one query whatever their number;
- a panel adds a section to a character's page, above its photos.

The pages draw them with the `character_pages` template tags. Training adds each card's LoRA status and
the page's training panel (training/character_pages.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.template import Context
from django.utils.html import format_html_join
from django.utils.safestring import SafeString

from characters.models import Character

# (the template context, the page's characters) -> the HTML each character's card gets, by character id
CardPart = Callable[[Context, list[Character]], dict[Any, SafeString]]
# (the template context, the character, its photo count) -> the panel's HTML
Panel = Callable[[Context, Character, int], SafeString]

_card_parts: list[CardPart] = []
_panels: list[Panel] = []


def card_part_register(part: CardPart) -> None:
    if part not in _card_parts:  # `ready` may run more than once (tests)
        _card_parts.append(part)


def panel_register(panel: Panel) -> None:
    if panel not in _panels:
        _panels.append(panel)


def cards(context: Context, characters: list[Character]) -> list[tuple[Character, SafeString]]:
    """Each character with what the registered card parts add to its card, in registration order."""
    drawn = [part(context, characters) for part in _card_parts]
    return [
        (character, format_html_join("", "{}", ((parts.get(character.pk, ""),) for parts in drawn)))
        for character in characters
    ]


def panels(context: Context, character: Character, image_count: int) -> SafeString:
    return format_html_join("", "{}", ((panel(context, character, image_count),) for panel in _panels))
