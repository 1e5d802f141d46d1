"""The character pages' extension points: where other apps' parts are drawn (see characters/page_parts.py).

{% load character_pages %}
{% character_cards characters as rows %}              list page
{% for character, extra in rows %}…{{ extra }}{% endfor %}
{% character_panels character image_count %}           detail page
"""

from __future__ import annotations

from collections.abc import Iterable

from django import template
from django.utils.safestring import SafeString

from characters import page_parts
from characters.models import Character

register = template.Library()


@register.simple_tag(takes_context=True)
def character_cards(
    context: template.Context, characters: Iterable[Character]
) -> list[tuple[Character, SafeString]]:
    """Pairs each character with the HTML other apps add to its card."""
    return page_parts.cards(context, list(characters))


@register.simple_tag(takes_context=True)
def character_panels(context: template.Context, character: Character, image_count: int) -> SafeString:
    """The panels other apps add to the character's page."""
    return page_parts.panels(context, character, image_count)
