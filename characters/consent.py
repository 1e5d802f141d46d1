"""The consent statement an owner agrees to before uploading photos of a character.

Reference photos of a real person are biometric data once a face embedding is computed from them
(GDPR art. 9; BIPA in Illinois). Each published wording keeps its version forever, so a recorded
consent always says exactly what was agreed to; a new wording gets a new version.
"""

from __future__ import annotations

CURRENT_VERSION = "2026-12-1"

WORDINGS: dict[str, str] = {
    "2026-12-1": (
        "I confirm that I am the person shown in the photos I upload for this character, or that the "
        "person shown has given me their explicit permission to upload them for training an image model "
        "of their likeness. I understand that the studio computes a face description (biometric data) "
        "from each photo to check the set and to score the trained model's likeness, keeps it only as "
        "long as the photo, and that erasing the character deletes the photos, crops, face descriptions "
        "and every file made from them."
    ),
}

BASES = {
    "self": "I am the person in these photos.",
    "permission": "The person in these photos gave me their explicit permission.",
}
