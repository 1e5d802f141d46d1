"""The training form: a preset, optionally tuned by advanced fields, validated like the API's params."""

from __future__ import annotations

from typing import Any

from django import forms

from runpod_worker.contract import ALLOWED_RESOLUTIONS
from studio.errors import ApplicationError
from training.base_models import CHOICES, DEFAULT_BASE_MODEL
from training.models import TrainingRun
from training.presets import DEFAULT_PRESET, DEFAULT_SAMPLE_PROMPTS, PRESETS
from training.services import training_params_validate

PRESET_LABELS = {
    "fast": "Fast — a quick likeness check",
    "balanced": "Balanced — the usual character LoRA",
    "quality": "Quality — more detail, about twice the cost",
}

# The advanced fields that map one to one onto training parameters; empty means "the preset's value".
ADVANCED_FIELDS = (
    "steps",
    "rank",
    "learning_rate",
    "resolutions",
    "seed",
    "sample_prompts",
    "sample_every",
    "auto_caption",
)


class TrainingForm(forms.Form):
    # Empty: the character's base model.
    base_model = forms.ChoiceField(
        choices=CHOICES, initial=DEFAULT_BASE_MODEL, widget=forms.RadioSelect, required=False
    )
    preset = forms.ChoiceField(
        choices=[(name, PRESET_LABELS.get(name, name.title())) for name in PRESETS],
        initial=DEFAULT_PRESET,
        widget=forms.RadioSelect,
    )
    steps = forms.IntegerField(
        required=False,
        min_value=1,
        help_text="100 to 6000. More steps learn more detail and cost more.",
        widget=forms.NumberInput(attrs={"inputmode": "numeric"}),
    )
    rank = forms.IntegerField(
        required=False, min_value=1, help_text="4 to 128. Higher ranks hold more detail in a larger file."
    )
    learning_rate = forms.FloatField(
        required=False,
        help_text="For example 0.0001. Too high overcooks the likeness; too low learns slowly.",
        widget=forms.NumberInput(attrs={"step": "any", "inputmode": "decimal"}),
    )
    resolutions = forms.TypedMultipleChoiceField(
        required=False,
        coerce=int,
        choices=[(size, f"{size} px") for size in ALLOWED_RESOLUTIONS],
        widget=forms.CheckboxSelectMultiple,
        help_text="The image sizes the photos are trained at; none ticked uses the preset's.",
    )
    seed = forms.IntegerField(
        required=False,
        min_value=0,
        help_text="A fixed seed makes a run repeatable; empty picks one at random.",
    )
    # A choice rather than a checkbox: a form posted without it (an older page) keeps the default, on.
    auto_caption = forms.TypedChoiceField(
        required=False,
        choices=[
            ("on", "Caption them automatically"),
            ("off", "Train them on the trigger word alone"),
        ],
        coerce=lambda value: value == "on",
        empty_value=None,
        initial="on",
        widget=forms.RadioSelect,
        label="Photos without a caption",
        help_text="Before training, a vision model describes each photo that has no caption (framing, pose, "
        "clothes, setting), the trigger word first; the captions are kept on the photos, where you can "
        "edit them.",
    )

    sample_prompts = forms.CharField(
        required=False,
        initial="\n".join(DEFAULT_SAMPLE_PROMPTS),
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text="One prompt per line, up to 10, with [trigger] where the character goes. Empty uses these "
        "defaults: a portrait, a three-quarter view, a full-body shot and a different setting.",
    )
    sample_every = forms.IntegerField(
        required=False,
        min_value=0,
        help_text="Steps between samples; empty: at each checkpoint; 0: no samples.",
        widget=forms.NumberInput(attrs={"inputmode": "numeric"}),
    )

    def __init__(self, *args: Any, pods_allowed: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if pods_allowed:
            # Offered only to staff and the accounts staff enabled pods for (the start checks it again).
            self.fields["provider"] = forms.ChoiceField(
                choices=TrainingRun.Provider.choices,
                initial=TrainingRun.Provider.SERVERLESS,
                required=False,
                widget=forms.RadioSelect,
                label="Where it trains",
                help_text="Serverless starts a GPU for this run; a pod trains on the studio's running AI "
                "Toolkit pod, without the start-up wait.",
            )

    def clean_sample_prompts(self) -> list[str]:
        text = self.cleaned_data.get("sample_prompts") or ""
        return [line.strip() for line in text.splitlines() if line.strip()]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if self.errors:
            return cleaned
        try:
            self.params = training_params_validate(params=self.overrides(), preset=cleaned.get("preset"))
        except ApplicationError as error:
            self._add_service_error(error)
        return cleaned

    def overrides(self) -> dict[str, Any]:
        """The advanced values the user filled in; the preset supplies the rest."""
        data = self.cleaned_data
        return {name: data[name] for name in ADVANCED_FIELDS if data.get(name) not in (None, "", [])}

    def _add_service_error(self, error: ApplicationError) -> None:
        if not error.fields:
            self.add_error(None, error.message)
        for name, messages in error.fields.items():
            field = name.split("[", 1)[0]
            for message in messages:
                self.add_error(field if field in self.fields else None, f"{message}.")
