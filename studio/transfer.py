"""Short-lived URLs through which the GPU worker reads and writes media, without credentials.

    url = download_url("characters/<id>/images/<sha>.jpg", ttl=3600)
    url = upload_url("characters/<id>/loras/uploads/<run>.safetensors", ttl=7200)

On S3 these are presigned URLs for the bucket itself. On local files they are signed,
expiring URLs of this site, served by `transfer_view`, which streams in both directions.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any, Literal

from django.conf import settings
from django.core import signing
from django.core.exceptions import SuspiciousFileOperation
from django.core.files.storage import FileSystemStorage, default_storage
from django.core.files.utils import validate_file_name
from django.http import (
    FileResponse,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    HttpResponseForbidden,
    JsonResponse,
)
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from studio.storage import is_s3

Operation = Literal["get", "put"]

_SALT = "studio.transfer"
_CHUNK = 1024 * 1024


def download_url(name: str, ttl: int) -> str:
    """A URL that answers GET with the stored file for `ttl` seconds."""
    return _transfer_url(name, "get", ttl)


def upload_url(name: str, ttl: int) -> str:
    """A URL that stores the body of a PUT under `name` for `ttl` seconds."""
    return _transfer_url(name, "put", ttl)


def clean_storage_name(name: str) -> str:
    """The name itself, or SuspiciousFileOperation for anything that could leave the media root."""
    if not name or "\\" in name or "\x00" in name or name.startswith("/"):
        raise SuspiciousFileOperation(f"Refusing storage name {name!r}.")
    validate_file_name(name, allow_relative_path=True)
    return name


def _transfer_url(name: str, operation: Operation, ttl: int) -> str:
    clean_storage_name(name)
    if is_s3(default_storage):
        return _presigned_s3_url(name, operation, ttl)
    token = signing.dumps({"n": name, "o": operation, "e": int(time.time()) + ttl}, salt=_SALT)
    return settings.PUBLIC_BASE_URL + reverse("transfer", args=[token])


def _presigned_s3_url(name: str, operation: Operation, ttl: int) -> str:
    storage: Any = default_storage
    client = storage.connection.meta.client
    method = "get_object" if operation == "get" else "put_object"
    params = {"Bucket": storage.bucket_name, "Key": storage._normalize_name(name)}
    return str(client.generate_presigned_url(method, Params=params, ExpiresIn=ttl))


def _read_token(token: str, operation: Operation) -> str | None:
    """The storage name a valid, unexpired token grants for `operation`, else None."""
    try:
        payload = signing.loads(token, salt=_SALT)
        name = clean_storage_name(payload["n"])
    except (signing.BadSignature, SuspiciousFileOperation, KeyError, TypeError):
        return None
    if payload.get("o") != operation or int(payload.get("e", 0)) < time.time():
        return None
    return name


@csrf_exempt
@require_http_methods(["GET", "HEAD", "PUT"])
def transfer_view(request: HttpRequest, token: str) -> HttpResponseBase:
    """Serve a signed transfer URL. The signature is checked before storage is touched."""
    operation: Operation = "put" if request.method == "PUT" else "get"
    name = _read_token(token, operation)
    if name is None:
        return HttpResponseForbidden("This transfer link is invalid or has expired.")
    storage = default_storage
    if not isinstance(storage, FileSystemStorage):
        return HttpResponseForbidden("Transfer links are served by the bucket, not by this site.")
    if operation == "get":
        if not storage.exists(name):
            return JsonResponse({"error": "not found"}, status=404)
        return FileResponse(storage.open(name, "rb"), as_attachment=False)
    return _receive_upload(request, storage, name)


def _receive_upload(request: HttpRequest, storage: FileSystemStorage, name: str) -> HttpResponse:
    declared = request.headers.get("Content-Length")
    if declared is None:
        return JsonResponse({"error": "Send a Content-Length header with the upload."}, status=411)
    if not (declared.isascii() and declared.isdigit()):
        return JsonResponse({"error": "Content-Length must be a number of bytes."}, status=400)
    expected = int(declared)
    if expected > settings.TRANSFER_MAX_UPLOAD_BYTES:
        return JsonResponse({"error": "The upload is larger than this site accepts."}, status=413)
    target = storage.path(name)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    # Write beside the target and rename only once every declared byte arrived, so a reader never sees
    # half a file, and an upload cut short neither replaces the stored file nor leaves anything behind.
    handle, partial = tempfile.mkstemp(dir=os.path.dirname(target), suffix=".partial")
    received = 0
    try:
        with os.fdopen(handle, "wb") as out:
            while chunk := request.read(_CHUNK):
                out.write(chunk)
                received += len(chunk)
        if received != expected:
            os.unlink(partial)
            message = f"The upload ended after {received:,} of {expected:,} bytes; nothing was stored."
            return JsonResponse({"error": f"{message} Send it again."}, status=400)
        os.replace(partial, target)
    except BaseException:
        os.unlink(partial)
        raise
    return HttpResponse(status=200)
