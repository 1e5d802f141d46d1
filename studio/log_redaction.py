"""Keep bearer secrets that travel in URLs out of every log line.

RunPod's webhook carries the run's token in its path (`/hooks/runpod/<run>/<token>`), signed transfer
links are themselves the credential (`/transfer/<token>`), and presigned S3 links carry a signature.
Access logs (runserver's `django.server`, gunicorn's access log) and `django.request`'s "Not Found:
<path>" would otherwise write them down for anyone who can read logs. `gunicorn.conf.py` uses
`redact` too.
"""

from __future__ import annotations

import logging
import re

REDACTED = "[redacted]"

_PATTERNS = (
    # Same shape as the routes: the run id stays (useful when reading logs), the token goes.
    (re.compile(r"(/hooks/runpod/[^/\s\"?]+/)[^\s\"?]+"), rf"\g<1>{REDACTED}"),
    (re.compile(r"(/transfer/)[^\s\"?]+"), rf"\g<1>{REDACTED}"),
    (
        re.compile(r"((?:X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token|Signature)=)[^&\s\"]+"),
        rf"\g<1>{REDACTED}",
    ),
    (re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+"), rf"\g<1>{REDACTED}"),
)


def redact(text: str) -> str:
    """`text` with every URL-borne secret replaced by `[redacted]`."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactSecretsFilter(logging.Filter):
    """Rewrites a record's message (and arguments) with the secrets taken out; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is the logging module's problem, not ours
            return True
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True
