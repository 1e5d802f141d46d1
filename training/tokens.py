"""The per-run secret that authenticates RunPod's webhook and the worker's callbacks.

The token is an HMAC of the run id under SECRET_KEY, so it can be derived again when the run is
submitted (or resubmitted) without ever being stored; the database keeps only its SHA-256, and a
request's token is checked by hashing it and comparing in constant time. Rotating SECRET_KEY
invalidates the tokens of runs in flight: their webhooks and callbacks then get 404 and the sweep's
polling finishes them.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid

from django.utils.crypto import salted_hmac

_SALT = "training.run-token"


def run_token(run_id: uuid.UUID) -> str:
    return salted_hmac(_SALT, str(run_id), algorithm="sha256").hexdigest()


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_matches(presented: str, stored_hash: str) -> bool:
    """Constant-time: a wrong token takes as long to refuse as a nearly right one."""
    if not stored_hash:
        return False
    return hmac.compare_digest(token_hash(presented), stored_hash)
