"""gunicorn settings for the web image (`gunicorn --config gunicorn.conf.py studio.wsgi:application`).

The access log goes through `RedactingLogger`, so the run token in RunPod's webhook URL and signed
transfer links never reach the log (see studio/log_redaction.py).
"""

from __future__ import annotations

import os
from typing import Any

from gunicorn.glogging import Logger

from studio.log_redaction import redact

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
# WEB_CONCURRENCY is gunicorn's own variable for the worker count; 3 suits a 2-core container.
workers = int(os.environ.get("WEB_CONCURRENCY", "3"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "-")
errorlog = "-"


class RedactingLogger(Logger):
    """gunicorn's logger with URL-borne secrets taken out of every access-log field."""

    def atoms(self, resp: Any, req: Any, environ: Any, request_time: Any) -> dict[str, Any]:
        atoms = super().atoms(resp, req, environ, request_time)
        return {key: redact(value) if isinstance(value, str) else value for key, value in atoms.items()}


logger_class = RedactingLogger
