from __future__ import annotations

from django import forms

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
