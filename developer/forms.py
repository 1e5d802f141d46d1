from __future__ import annotations

from django import forms


class ApiTokenForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="Where the token is used, e.g. “render farm”.")


class WebhookEndpointForm(forms.Form):
    url = forms.URLField(
        max_length=500, assume_scheme="https", label="URL", help_text="We POST signed JSON events here."
    )
    description = forms.CharField(max_length=200, required=False)
