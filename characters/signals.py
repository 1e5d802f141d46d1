"""Signals other apps listen to, so that `characters` never has to import them."""

from __future__ import annotations

from django.dispatch import Signal

# Sent once per successful add (one image or a batch), after the transaction commits.
# sender=Character, kwargs: character_id (UUID). The training app hooks auto-train here.
reference_images_added = Signal()
