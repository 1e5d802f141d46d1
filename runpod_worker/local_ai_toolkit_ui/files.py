"""The public file routes the UI's front server answers itself: GET/HEAD `/api/files/…` and `/api/img/…`.

`ui/cron/fileServer.ts` at 27a03a91 serves both prefixes before any other handling (`:477-486`), so
no token is ever asked for (the Next.js middleware never sees these requests). Its `serveFile`
(`:244-390`) is followed here: per-segment percent-decoding, the allowed roots, 403/404/400 in plain
text, Range requests, the download headers for `/api/files/` and the cache headers for `/api/img/`.
Thumbnails (`?thumb=1`, generated with sharp or ffmpeg) are not simulated: the full file is served.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote

FILES = "/api/files/"
IMG = "/api/img/"
CONTENT_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".svg": "image/svg+xml",
    ".bmp": "image/bmp",
    ".safetensors": "application/octet-stream",
    ".zip": "application/zip",
    ".mp4": "video/mp4",
    ".mp3": "audio/mpeg",
    ".wav": "audio/wav",
    ".flac": "audio/flac",
    ".ogg": "audio/ogg",
}  # `fileServer.ts:219-242` (the video types beyond mp4 are left out: the studio makes none)


@dataclass
class FileAnswer:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    text: str = ""
    path: Path | None = None
    start: int = 0
    length: int = 0


def public_prefix(method: str, path: str) -> str | None:
    """The prefix the front server serves itself, if this request is one of them (`fileServer.ts:480-485`)."""
    if method not in ("GET", "HEAD"):
        return None
    return next((p for p in (FILES, IMG) if path.startswith(p)), None)


def serve(prefix: str, url_path: str, headers: dict[str, str], roots: list[Path]) -> FileAnswer:
    rest = url_path[len(prefix) :]
    # Each segment decoded on its own, so `%2F`-joined and `/`-joined forms name the same file (`:258-261`).
    decoded = "/".join(unquote(segment) for segment in rest.split("/"))
    resolved = Path(os.path.abspath(os.path.join(os.getcwd(), decoded)))
    allowed = any(resolved == root or str(resolved).startswith(str(root) + os.sep) for root in roots)
    if not allowed:
        return FileAnswer(403, text="Access denied")  # `:279-284`
    if not resolved.exists():
        return FileAnswer(404, text="File not found")  # `:304-311`
    if not resolved.is_file():
        return FileAnswer(400, text="Not a file")  # `:312-316`
    size = resolved.stat().st_size
    answer_headers = {"Content-Type": CONTENT_TYPES.get(resolved.suffix.lower(), "application/octet-stream")}
    answer_headers["Accept-Ranges"] = "bytes"
    if prefix == IMG:
        stat = resolved.stat()
        answer_headers["Cache-Control"] = "public, max-age=86400, immutable"
        answer_headers["ETag"] = f'W/"{_b36(stat.st_ino)}-{_b36(size)}-{_b36(int(stat.st_mtime * 1000))}"'
        if headers.get("if-none-match") == answer_headers["ETag"]:
            return FileAnswer(304, headers={k: answer_headers[k] for k in ("ETag", "Cache-Control")})
    else:
        answer_headers["Cache-Control"] = "public, max-age=86400"
        answer_headers["Content-Disposition"] = f'attachment; filename="{quote(resolved.name, safe="")}"'
        answer_headers["X-Content-Type-Options"] = "nosniff"
    start, end, status = 0, size - 1, 200
    if "range" in headers:
        parsed = _range(headers["range"], size)
        if parsed is None:
            return FileAnswer(416, headers={"Content-Range": f"bytes */{size}"})  # `:354-358`
        start, end = parsed
        status = 206
        answer_headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    answer_headers["Content-Length"] = str(end - start + 1)
    return FileAnswer(status, headers=answer_headers, path=resolved, start=start, length=end - start + 1)


def _range(header: str, size: int) -> tuple[int, int] | None:
    """`bytes=a-b` or the open-ended `bytes=a-` (to the end), as `fileServer.ts:351-358` parses them."""
    parts = header.replace("bytes=", "").split("-")
    try:
        start = int(parts[0])
        end = int(parts[1]) if len(parts) > 1 and parts[1] else size - 1
    except ValueError:
        return None
    if start > end or start >= size:
        return None
    return start, end


def _b36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    text = ""
    while True:
        number, rest = divmod(number, 36)
        text = digits[rest] + text
        if number == 0:
            return text
