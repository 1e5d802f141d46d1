from __future__ import annotations

from django.apps import AppConfig
from django.db.models.signals import pre_delete


class TrainingConfig(AppConfig):
    name = "training"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # `characters` never imports `training`; training listens to its signal instead.
        from characters import page_parts
        from characters.models import Character, ReferenceImage
        from characters.signals import (
            auto_train_enabled,
            character_deleting,
            dataset_report_refreshed,
            reference_image_deleting,
            reference_images_added,
        )
        from training.character_pages import lora_status_card_part, training_panel
        from training.models import TrainingRun
        from training.receivers import (
            cancel_runs_of_deleting_character,
            keep_the_spend_of_a_deleted_run,
            refuse_deleting_a_photo_in_training,
            start_training_when_sheet_complete,
        )

        reference_images_added.connect(
            start_training_when_sheet_complete, sender=Character, dispatch_uid="training-autostart"
        )
        auto_train_enabled.connect(
            start_training_when_sheet_complete, sender=Character, dispatch_uid="training-autostart-on-enable"
        )
        dataset_report_refreshed.connect(
            start_training_when_sheet_complete,
            sender=Character,
            dispatch_uid="training-autostart-on-face-check",
        )
        character_deleting.connect(
            cancel_runs_of_deleting_character, sender=Character, dispatch_uid="training-cancel-on-delete"
        )
        reference_image_deleting.connect(
            refuse_deleting_a_photo_in_training,
            sender=ReferenceImage,
            dispatch_uid="training-keep-photos-of-active-runs",
        )
        pre_delete.connect(
            keep_the_spend_of_a_deleted_run, sender=TrainingRun, dispatch_uid="training-keep-deleted-spend"
        )
        # Training's parts of the character pages: each card's LoRA status, and the training panel.
        page_parts.card_part_register(lora_status_card_part)
        page_parts.panel_register(training_panel)
