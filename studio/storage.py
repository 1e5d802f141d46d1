"""The media storage's configuration on S3-compatible object storage (AWS S3, R2, MinIO, SeaweedFS).

Built in one place so that production and the tests' S3 server run the same client: private objects
read through presigned URLs, and bounded time and retries on every call to the bucket.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

from botocore.config import Config
from django.core.files.storage import FileSystemStorage, Storage, default_storage
from storages.backends.s3 import S3Storage

# A call to the bucket must never hang a request or a task: connecting is quick or the bucket is down,
# and a read that stalls for a minute is as good as lost. Retries use botocore's "standard" mode
# (exponential backoff with jitter, throttling and transient errors only).
S3_CONNECT_TIMEOUT = 5
S3_READ_TIMEOUT = 60
S3_MAX_ATTEMPTS = 3  # in all, the first included


def s3_media_storage(
    *,
    bucket_name: str,
    access_key: str | None,
    secret_key: str | None,
    endpoint_url: str | None,
    region_name: str | None,
    addressing_style: str = "path",
) -> dict[str, Any]:
    """The STORAGES entry for media on an S3-compatible bucket."""
    return {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": bucket_name,
            "access_key": access_key,
            "secret_key": secret_key,
            "endpoint_url": endpoint_url,
            "region_name": region_name,
            # The client's own configuration; django-storages ignores its signature_version and
            # addressing_style options once one is given, so they are set here.
            "client_config": Config(
                signature_version="s3v4",
                s3={"addressing_style": addressing_style},
                connect_timeout=S3_CONNECT_TIMEOUT,
                read_timeout=S3_READ_TIMEOUT,
                retries={"total_max_attempts": S3_MAX_ATTEMPTS, "mode": "standard"},
            ),
            # Objects are private; every read goes through a short-lived presigned URL.
            "default_acl": None,
            "querystring_auth": True,
            "querystring_expire": 600,
            "file_overwrite": False,
        },
    }


def storage_folder_delete(folder: str, storage: Storage | None = None) -> None:
    """Deletes every file under `folder` (a prefix ending in '/'), and on local files the folder itself."""
    storage = storage or default_storage
    if isinstance(storage, FileSystemStorage):
        path = storage.path(folder)
        if os.path.isdir(path):
            shutil.rmtree(path)
        return
    directories, files = storage.listdir(folder)
    for name in files:
        storage.delete(f"{folder}{name}")
    for directory in directories:
        storage_folder_delete(f"{folder}{directory}/", storage)


def is_s3(storage: Any) -> bool:
    """Whether `storage` (`default_storage` included) keeps its files in a bucket: callers then reach the
    bucket's own API (presigned URLs, streamed reads, server-side copies)."""
    return isinstance(storage, S3Storage)
