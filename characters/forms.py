from __future__ import annotations

from django import forms

from characters import consent
from characters.models import trigger_word_validator
from characters.services import CAPTION_MAX_LENGTH
from studio.errors import ApplicationError


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
