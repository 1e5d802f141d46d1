"""A pod's UI token (its AI_TOOLKIT_AUTH), kept encrypted at rest and read only to talk to the pod.

Fernet (AES-128-CBC with HMAC-SHA256) under a key derived from SECRET_KEY, so a database dump alone does
not give anyone the pod. Changing SECRET_KEY makes the stored tokens unreadable: staff enter them again
(`PodTokenUnreadable` says so).
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings

from training.models import Pod

_LABEL = b"character-lora-studio/pod-ui-token/v1"


class PodTokenUnreadable(Exception):
    """The pod's stored token cannot be decrypted (SECRET_KEY changed) or none was stored."""


def _fernet() -> Fernet:
    digest = hashlib.sha256(_LABEL + settings.SECRET_KEY.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def pod_token_set(pod: Pod, token: str) -> None:
    """Encrypts `token` onto the (unsaved) pod."""
    pod.token_encrypted = _fernet().encrypt(token.encode()).decode()


def pod_token(pod: Pod) -> str:
    if not pod.token_encrypted:
        raise PodTokenUnreadable(f"Pod {pod.name} has no UI token: enter it in the admin.")
    try:
        return _fernet().decrypt(pod.token_encrypted.encode()).decode()
    except InvalidToken as exc:
        raise PodTokenUnreadable(
            f"Pod {pod.name}'s UI token cannot be read (the site's SECRET_KEY changed?): enter it again."
        ) from exc
