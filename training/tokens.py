"""The per-run secret that authenticates RunPod's webhook and the worker's callbacks.

The token is derived, never stored: an HMAC of the run id under SECRET_KEY, derived again whenever the run
is submitted (or resubmitted) and whenever a request presents it, and compared in constant time.

Rotating SECRET_KEY therefore invalidates the tokens of runs in flight: their webhooks and callbacks get
404 (the worker stops calling back; the sweep's polling of RunPod finishes the run), while a run submitted
again after the rotation carries a token derived under the new key, and its callbacks are heard. A key
kept in SECRET_KEY_FALLBACKS keeps accepting the tokens it made until it is removed from there.
"""

from __future__ import annotations

import hmac
import uuid

from django.conf import settings
from django.utils.crypto import salted_hmac

_SALT = "training.run-token"


def run_token(run_id: uuid.UUID | str) -> str:
    """The run's token under the current SECRET_KEY: what a submission puts in the job input and webhook."""
    return _derived(run_id, settings.SECRET_KEY)


def run_token_matches(run_id: uuid.UUID | str, presented: str) -> bool:
    """Whether `presented` is the run's token under SECRET_KEY or one of SECRET_KEY_FALLBACKS.

    Constant-time, and every key is tried whatever the answer: a wrong token takes as long to refuse as a
    nearly right one, and a run that does not exist as long as one that does.
    """
    given = presented.encode()
    matched = False
    for key in [settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS]:
        matched |= hmac.compare_digest(_derived(run_id, key).encode(), given)
    return matched


def _derived(run_id: uuid.UUID | str, key: str) -> str:
    return salted_hmac(_SALT, str(run_id), secret=key, algorithm="sha256").hexdigest()
