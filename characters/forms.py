from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django import forms

from characters import consent
from characters.models import ReferenceImage, trigger_word_validator
from characters.services import CAPTION_MAX_LENGTH
from runpod_worker.contract import BaseModel
from studio.errors import ApplicationError

# Names only: what each model is for and costs is training's to say (training/base_models.py).
BASE_MODEL_CHOICES = [
    (BaseModel.FLUX_DEV, "FLUX.1 [dev]"),
    (BaseModel.FLUX_SCHNELL, "FLUX.1 [schnell]"),
    (BaseModel.QWEN_IMAGE, "Qwen-Image"),
    (BaseModel.WAN22, "Wan 2.2 (14B)"),
    (BaseModel.WAN22_5B, "Wan 2.2 TI2V (5B)"),
    (BaseModel.Z_IMAGE, "Z-Image"),
]


class CharacterForm(forms.Form):
    name = forms.CharField(max_length=100, widget=forms.TextInput(attrs={"autocomplete": "off"}))
    trigger_word = forms.CharField(
        max_length=32,
        validators=[trigger_word_validator],
        help_text="A rare token that stands for the character in captions, e.g. ohwx_anna.",
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}))
    auto_train = forms.BooleanField(
        required=False,
        label="Train automatically",
        help_text="Start training by itself once the character has enough reference images.",
    )
    base_model = forms.ChoiceField(
        required=False,
        choices=BASE_MODEL_CHOICES,
        initial=BaseModel.DEFAULT,
        label="Base model",
        help_text="What its LoRAs are trained on unless a run says otherwise; automatic training uses it. "
        "The training page compares the models' costs and licences.",
    )
    is_person = forms.BooleanField(
        required=False,
        initial=True,
        label="Is a person",
        help_text="Off for a style, an object or a drawn character: photos are then not checked for one "
        "person's face.",
    )
    face_crops = forms.BooleanField(
        required=False,
        initial=True,
        label="Add face crops",
        help_text="Train on a crop around the face of each photo as well as on the photo.",
    )

    def clean_base_model(self) -> str:
        # Not posted (an older page, a script): the character keeps what it has.
        return str(self.cleaned_data.get("base_model") or self.initial.get("base_model") or BaseModel.DEFAULT)

    def add_service_error(self, error: ApplicationError) -> None:
        """Show a service's refusal beside the fields it names, or above the form."""
        if not error.fields:
            self.add_error(None, error.message)
        for name, messages in error.fields.items():
            for message in messages:
                self.add_error(name if name in self.fields else None, message)


class CaptionForm(forms.Form):
    caption = forms.CharField(
        required=False,
        max_length=CAPTION_MAX_LENGTH,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Write [trigger] where the character's trigger word goes.",
    )


class ConsentForm(forms.Form):
    basis = forms.ChoiceField(
        choices=list(consent.BASES.items()),
        widget=forms.RadioSelect,
        label="Whose photos are these?",
    )
    agree = forms.BooleanField(label="I agree to the statement above.")
    wording_version = forms.CharField(widget=forms.HiddenInput, initial=consent.CURRENT_VERSION)


class CaptionsForm(forms.Form):
    """Every photo's caption at once (`caption-<image id>`), or one caption for them all (`apply_to_all`)."""

    all_caption = forms.CharField(
        required=False,
        max_length=CAPTION_MAX_LENGTH,
        label="One caption for every photo",
        help_text="Replaces every caption below when you press “Apply to all”.",
        widget=forms.TextInput(attrs={"placeholder": "[trigger] smiling, outdoors"}),
    )

    def __init__(self, *args: Any, images: Sequence[ReferenceImage], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.images = list(images)
        for image in self.images:
            self.fields[self.field_name(image)] = forms.CharField(
                required=False,
                max_length=CAPTION_MAX_LENGTH,
                initial=image.caption,
                label=f"Caption of {image.original_filename}",
                widget=forms.Textarea(attrs={"rows": 2, "placeholder": "[trigger] smiling, outdoors"}),
            )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if "apply_to_all" in self.data and not (cleaned.get("all_caption") or "").strip():
            self.add_error("all_caption", "Write the caption to give every photo, then press “Apply to all”.")
        return cleaned

    @staticmethod
    def field_name(image: ReferenceImage) -> str:
        return f"caption-{image.pk}"

    def rows(self) -> list[tuple[ReferenceImage, forms.BoundField]]:
        return [(image, self[self.field_name(image)]) for image in self.images]

    def captions(self) -> dict[Any, str]:
        """Image id -> caption: the one caption for all when "Apply to all" was pressed, else each field."""
        if "apply_to_all" in self.data:
            return {image.pk: self.cleaned_data["all_caption"] for image in self.images}
        return {image.pk: self.cleaned_data[self.field_name(image)] for image in self.images}
