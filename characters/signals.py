"""Signals other apps listen to, so that `characters` never has to import them."""

from __future__ import annotations

from django.dispatch import Signal

# Sent once per successful add (one image or a batch), after the transaction commits.
# sender=Character, kwargs: character_id (UUID). The training app hooks auto-train here.
reference_images_added = Signal()

# Sent after the transaction commits when `character_update` turns auto-train on for a character.
# sender=Character, kwargs: character_id (UUID). Training starts the first run if the sheet is complete.
auto_train_enabled = Signal()

# Sent after the transaction commits when `dataset_report_refresh` has recomputed a character's dataset report
# (the face check has seen its photos). sender=Character, kwargs: character_id (UUID). Auto-train, which waits
# for the check of a person's photos, starts here.
dataset_report_refreshed = Signal()

# Sent by `character_delete` before anything is deleted and outside any transaction it opens, so a
# listener may call other services (training cancels a run in progress on its GPU). A listener that
# raises stops the deletion. sender=Character, kwargs: character (Character).
character_deleting = Signal()

# Sent by `reference_image_delete` inside its transaction, with the image row locked and before it is
# deleted. A listener that raises an `ApplicationError` refuses the deletion with its message (training
# refuses while a run that trains on the photo is still active). sender=ReferenceImage, kwargs: image.
reference_image_deleting = Signal()
