"""The UI's API routes the studio uses, each following its `ui/src/app/api/**/route.ts` at 27a03a91.

Every handler takes the stand-in (`pod`), the request and the path's parameters, and returns an
`Answer`. Bodies, status codes and the order of JSON keys are the route's; where a route returns the
job as it was *before* its own update (start, stop, mark_stopped, delete), so does this one.
An exception a route does not catch becomes Next.js's bare 500 (`NextError`), as in the real server.
"""

from __future__ import annotations

import contextlib
import email.parser
import email.policy
import gzip
import json
import os
import re
import shutil
import signal
import sqlite3
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from runpod_worker.local_ai_toolkit_ui import db

if TYPE_CHECKING:
    from runpod_worker.local_ai_toolkit_ui.server import Pod

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".mp4", ".avi", ".mov", ".mkv", ".wmv", ".m4v", ".flv")
AUDIO_EXTENSIONS = (".mp3", ".wav", ".flac", ".ogg")
SAMPLE_SUFFIXES = (
    ".png",
    ".jpg",
    ".jpeg",
    ".webp",
    ".mp4",
    "mp3",
    "wav",
    "flac",
    "ogg",
)  # samples/route.ts:35
ACTIVE_CACHE_S = 5.0  # `GET /api/jobs?only_active=true` is cached 5 s (`jobs/route.ts:32-44`)


class NextError(Exception):
    """An exception the route does not catch: Next.js answers 500 with an empty body."""


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body or b"null")


@dataclass
class Answer:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def stringify(value: Any) -> str:
    """`JSON.stringify`: compact, UTF-8 kept, and a whole-valued float written as an integer (JavaScript
    has one number type, so a config's `4.0` comes back as `4`, as the real UI answers)."""
    return json.dumps(_js_numbers(value), separators=(",", ":"), ensure_ascii=False)


def _js_numbers(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return int(value)
    if isinstance(value, dict):
        return {k: _js_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_js_numbers(v) for v in value]
    return value


def js(payload: Any, status: int = 200) -> Answer:
    """`NextResponse.json`: `JSON.stringify`'d, `application/json`."""
    return Answer(status, stringify(payload).encode(), {"Content-Type": "application/json"})


def text(body: str, status: int = 200) -> Answer:
    return Answer(status, body.encode(), {"Content-Type": "text/plain;charset=UTF-8"})


def not_found_job() -> Answer:
    return js({"error": "Job not found"}, 404)


# ------------------------------------------------------------------------------------------- misc


def auth(pod: Pod, request: Request) -> Answer:
    return js({"isAuthenticated": True})  # reached only past the middleware (`auth/route.ts:3-6`)


def settings_get(pod: Pod, request: Request) -> Answer:
    """`settings/route.ts:6-32`: stored keys, with the three folders filled in from the defaults."""
    with pod.connection() as conn:
        body = {row["key"]: row["value"] for row in conn.execute('SELECT key, value FROM "Settings"')}
    if not body.get("TRAINING_FOLDER"):
        body["TRAINING_FOLDER"] = str(pod.paths.root / "output")
    if not body.get("DATASETS_FOLDER"):
        body["DATASETS_FOLDER"] = str(pod.paths.root / "datasets")
    body["MODELS_PATH"] = (
        os.environ.get("MODELS_PATH", "").strip() or body.get("MODELS_PATH") or str(pod.paths.root / "models")
    )
    return js(body)


def settings_post(pod: Pod, request: Request) -> Answer:
    """`settings/route.ts:34-69`: upserts the four keys."""
    payload = request.json()
    with pod.connection() as conn:
        for key in ("HF_TOKEN", "TRAINING_FOLDER", "DATASETS_FOLDER", "MODELS_PATH"):
            if payload.get(key) is None:
                return js({"error": "Failed to update settings"}, 500)
            conn.execute(
                'INSERT INTO "Settings"(key, value) VALUES(?, ?)'
                " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, str(payload[key])),
            )
    return js({"success": True})


# ------------------------------------------------------------------------------------------ queue


def queues(pod: Pod, request: Request) -> Answer:
    with pod.connection() as conn:
        rows = conn.execute('SELECT * FROM "Queue" ORDER BY gpu_ids ASC').fetchall()
    return js({"queues": [db.queue_json(row) for row in rows]})  # `queue/route.ts:8-11`


def queue_start(pod: Pod, request: Request, queue_id: str) -> Answer:
    """`queue/[queueID]/start/route.ts`: created running if missing; else set running, old row returned."""
    with pod.connection() as conn:
        row = conn.execute('SELECT * FROM "Queue" WHERE gpu_ids = ?', (queue_id,)).fetchone()
        if row is None:
            conn.execute('INSERT INTO "Queue"(gpu_ids, is_running) VALUES(?, 1)', (queue_id,))
            row = conn.execute('SELECT * FROM "Queue" WHERE gpu_ids = ?', (queue_id,)).fetchone()
            return js(db.queue_json(row))
        conn.execute('UPDATE "Queue" SET is_running = 1 WHERE id = ?', (row["id"],))
    return js(db.queue_json(row))


def queue_stop(pod: Pod, request: Request, queue_id: str) -> Answer:
    with pod.connection() as conn:
        row = conn.execute('SELECT * FROM "Queue" WHERE gpu_ids = ?', (queue_id,)).fetchone()
        if row is None:
            return js({"error": "Queue not found"}, 404)  # `queue/[queueID]/stop/route.ts:11-13`
        conn.execute('UPDATE "Queue" SET is_running = 0 WHERE id = ?', (row["id"],))
    return js(db.queue_json(row))


# ------------------------------------------------------------------------------------------- jobs


def jobs_get(pod: Pod, request: Request) -> Answer:
    """`jobs/route.ts:6-56`: one job by id (JSON null when unknown) or by job_ref, else the list."""
    with pod.connection() as conn:
        if request.query.get("id"):
            row = conn.execute('SELECT * FROM "Job" WHERE id = ?', (request.query["id"],)).fetchone()
            return js(db.job_json(row))
        if request.query.get("job_ref"):
            row = conn.execute(
                'SELECT * FROM "Job" WHERE job_ref = ? ORDER BY updated_at DESC LIMIT 1',
                (request.query["job_ref"],),
            ).fetchone()
            return js(db.job_json(row))
        where, params = "1 = 1", []
        if request.query.get("job_type"):
            where, params = "job_type = ?", [request.query["job_type"]]
        if request.query.get("only_active") == "true":
            return js(
                {
                    "jobs": pod.cached_active(
                        request.query.get("job_type"), lambda: _active(conn, where, params)
                    )
                }
            )
        rows = conn.execute(f'SELECT * FROM "Job" WHERE {where} ORDER BY created_at DESC', params).fetchall()  # noqa: S608
    return js({"jobs": [db.job_json(row) for row in rows]})


def _active(conn: sqlite3.Connection, where: str, params: list[Any]) -> list[Any]:
    rows = conn.execute(
        f"SELECT * FROM \"Job\" WHERE {where} AND status IN ('running', 'queued', 'stopping')"  # noqa: S608
        " ORDER BY created_at DESC",
        params,
    ).fetchall()
    return [db.job_json(row) for row in rows]


def jobs_post(pod: Pod, request: Request) -> Answer:
    """`jobs/route.ts:58-119`: update with `id`, else create at the end of the queue; a taken name is 409."""
    try:
        payload = request.json()
        name, gpu_ids, job_config = payload["name"], payload["gpu_ids"], payload["job_config"]
        if not isinstance(name, str) or not isinstance(gpu_ids, str) or job_config is None:
            raise ValueError("name, gpu_ids and job_config are required")
        extra = {key: payload[key] for key in ("job_ref", "job_type") if key in payload}
        with pod.connection() as conn:
            if payload.get("id"):
                if not db.update_job(
                    conn, payload["id"], name=name, gpu_ids=gpu_ids, job_config=stringify(job_config), **extra
                ):
                    raise ValueError("no such job")  # Prisma's P2025: a 500 below
                row = conn.execute('SELECT * FROM "Job" WHERE id = ?', (payload["id"],)).fetchone()
                return js(db.job_json(row))
            highest = conn.execute('SELECT MAX(queue_position) FROM "Job"').fetchone()[0] or 0
            job_id = str(uuid.uuid4())
            now = db.now_ms()
            values = {
                "id": job_id,
                "name": name,
                "gpu_ids": gpu_ids,
                "job_config": stringify(job_config),
                "created_at": now,
                "updated_at": now,
                "queue_position": highest + 1000,
                "job_type": extra.get("job_type", "train"),
                "job_ref": extra.get("job_ref"),
            }
            conn.execute(
                f'INSERT INTO "Job"({", ".join(values)}) VALUES({", ".join("?" * len(values))})',
                tuple(values.values()),
            )
            row = conn.execute('SELECT * FROM "Job" WHERE id = ?', (job_id,)).fetchone()
            return js(db.job_json(row))
    except sqlite3.IntegrityError:
        return js({"error": "Job name already exists"}, 409)  # Prisma P2002
    except (ValueError, KeyError, TypeError):
        return js({"error": "Failed to save training data"}, 500)


def _job(conn: sqlite3.Connection, job_id: str) -> sqlite3.Row | None:
    row: sqlite3.Row | None = conn.execute('SELECT * FROM "Job" WHERE id = ?', (job_id,)).fetchone()
    return row


def job_start(pod: Pod, request: Request, job_id: str) -> Answer:
    """`jobs/[jobID]/start/route.ts`: to the end of the queue, the queue created (not running) if
    missing, status `queued`; the job is returned as it was before."""
    with pod.connection() as conn:
        row = _job(conn, job_id)
        if row is None:
            return not_found_job()
        highest = conn.execute('SELECT MAX(queue_position) FROM "Job"').fetchone()[0] or 0
        db.update_job(conn, job_id, queue_position=highest + 1000)
        if conn.execute('SELECT id FROM "Queue" WHERE gpu_ids = ?', (row["gpu_ids"],)).fetchone() is None:
            conn.execute('INSERT INTO "Queue"(gpu_ids, is_running) VALUES(?, 0)', (row["gpu_ids"],))
        db.update_job(conn, job_id, status="queued", stop=False, return_to_queue=False, info="Job queued")
    return js(db.job_json(row))


def job_stop(pod: Pod, request: Request, job_id: str) -> Answer:
    """`jobs/[jobID]/stop/route.ts:46-96`: `stop` set, then SIGINT to the pid and `stopped`; a pid that
    is gone (ESRCH) leaves the status as it was."""
    with pod.connection() as conn:
        row = _job(conn, job_id)
        if row is None:
            return not_found_job()
        db.update_job(conn, job_id, stop=True, info="Stopping job...")
        if row["pid"] is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                pod.cron.signal(int(row["pid"]), signal.SIGINT)
                db.update_job(conn, job_id, status="stopped", info="Job stopped")
    return js(db.job_json(row))


def job_mark_stopped(pod: Pod, request: Request, job_id: str) -> Answer:
    """`jobs/[jobID]/mark_stopped/route.ts`: forced `stopped`, pid cleared; no 404 check, so an unknown
    id makes `prisma.job.update` throw (a bare 500)."""
    with pod.connection() as conn:
        row = _job(conn, job_id)
        if not db.update_job(conn, job_id, stop=True, status="stopped", info="Job stopped", pid=None):
            raise NextError("Record to update not found")
    return js(db.job_json(row))


def job_flag(column: str) -> Callable[..., Answer]:
    """`save_now` / `sample_now` (`jobs/[jobID]/save_now/route.ts`): the updated job; unknown id is a 500."""

    def handler(pod: Pod, request: Request, job_id: str) -> Answer:
        with pod.connection() as conn:
            if not db.update_job(conn, job_id, **{column: True}):
                raise NextError("Record to update not found")
            return js(db.job_json(_job(conn, job_id)))

    return handler


def job_delete(pod: Pod, request: Request, job_id: str) -> Answer:
    """`jobs/[jobID]/delete/route.ts`: `rm -rf <TRAINING_FOLDER>/<name>`, then the row."""
    with pod.connection() as conn:
        row = _job(conn, job_id)
        if row is None:
            return not_found_job()
        shutil.rmtree(pod.paths.training_folder(conn) / row["name"], ignore_errors=True)
        conn.execute('DELETE FROM "Job" WHERE id = ?', (job_id,))
    return js(db.job_json(row))


def job_files(pod: Pod, request: Request, job_id: str) -> Answer:
    """`jobs/[jobID]/files/route.ts:18-60`: `*.safetensors` of the job folder sorted, then optimizer.pt."""
    with pod.connection() as conn:
        row = _job(conn, job_id)
        if row is None:
            return not_found_job()
        folder = pod.paths.training_folder(conn) / row["name"]
    if not folder.is_dir():
        return js({"files": []})
    paths = sorted(str(folder / name) for name in os.listdir(folder) if name.endswith(".safetensors"))
    files = [{"path": path, "size": os.stat(path).st_size} for path in paths]
    optimizer = folder / "optimizer.pt"
    if optimizer.exists():
        files.append({"path": str(optimizer), "size": optimizer.stat().st_size})
    return js({"files": files})


def job_samples(pod: Pod, request: Request, job_id: str) -> Answer:
    """`jobs/[jobID]/samples/route.ts:18-42`: files (not folders) of `<job>/samples` with media suffixes."""
    with pod.connection() as conn:
        row = _job(conn, job_id)
        if row is None:
            return not_found_job()
        folder = pod.paths.training_folder(conn) / row["name"] / "samples"
    if not folder.is_dir():
        return js({"samples": []})
    names = [e.name for e in os.scandir(folder) if e.is_file() and e.name.endswith(SAMPLE_SUFFIXES)]
    return js({"samples": sorted(str(folder / name) for name in names)})


def job_loss(pod: Pod, request: Request, job_id: str) -> Answer:
    """`jobs/[jobID]/loss/route.ts:32-98`: one metric of `loss_log.db`, after `since_step`, every `stride`."""
    with pod.connection() as conn:
        row = _job(conn, job_id)
        if row is None:
            return not_found_job()
        path = pod.paths.training_folder(conn) / row["name"] / "loss_log.db"
    if not path.exists():
        return js({"keys": [], "key": "loss", "points": []})
    key = request.query.get("key", "loss")
    limit = min(int(float(request.query.get("limit", 2000))), 20000)
    since = request.query.get("since_step")
    since_step = int(float(since)) if since is not None else None
    stride = max(1, int(float(request.query.get("stride", 1))))
    loss_db = sqlite3.connect(str(path), timeout=30.0)
    try:
        keys = [r[0] for r in loss_db.execute("SELECT key FROM metric_keys ORDER BY key ASC")]
        rows = loss_db.execute(
            "SELECT m.step, s.wall_time, m.value_real, m.value_text"
            " FROM metrics m JOIN steps s ON s.step = m.step"
            " WHERE m.key = ? AND (? IS NULL OR m.step > ?) AND (m.step % ?) = 0"
            " ORDER BY m.step ASC LIMIT ?",
            (key, since_step, since_step, stride, limit),
        ).fetchall()
    finally:
        loss_db.close()
    points = [
        {"step": s, "wall_time": w, "value": v if v is not None else (float(t) if t else None)}
        for s, w, v, t in rows
    ]
    return js({"key": key, "keys": keys, "points": points})


def job_log(pod: Pod, request: Request, job_id: str) -> Answer:
    """`jobs/[jobID]/log/route.ts`: the bytes after `offset`, or the last 5 MB (`reset`) without one."""
    with pod.connection() as conn:
        row = _job(conn, job_id)
        if row is None:
            return not_found_job()
        path = pod.paths.training_folder(conn) / row["name"] / "log.txt"
    if not path.exists():
        return js({"log": "", "offset": 0, "reset": True})
    size = path.stat().st_size
    try:
        offset: int | None = int(request.query["offset"])
    except (KeyError, ValueError):
        offset = None
    with path.open("rb") as handle:
        if offset is None or offset > size:
            start = max(0, size - 5 * 1024 * 1024)
            handle.seek(start)
            log = handle.read().decode("utf-8", "replace")
            if start > 0 and "\n" in log:
                log = log[log.index("\n") + 1 :]
            return js({"log": log, "offset": size, "reset": True})
        handle.seek(offset)
        return js(
            {"log": handle.read(size - offset).decode("utf-8", "replace"), "offset": size, "reset": False}
        )


# --------------------------------------------------------------------------------------- datasets


def dataset_create(pod: Pod, request: Request) -> Answer:
    """`datasets/create/route.tsx`: lower-cased, runs of other characters as `_`; mkdir if missing."""
    try:
        name = re.sub(r"[^a-z0-9]+", "_", str(request.json()["name"]).lower())
        with pod.connection() as conn:
            folder = pod.paths.datasets_folder(conn) / name
        if not folder.exists():
            folder.mkdir()
        return js({"success": True, "name": name})
    except (OSError, KeyError, TypeError, ValueError):
        return js({"error": "Failed to create dataset"}, 500)


def dataset_delete(pod: Pod, request: Request) -> Answer:
    try:
        name = request.json()["name"]
        with pod.connection() as conn:
            folder = pod.paths.datasets_folder(conn) / name
        shutil.rmtree(folder, ignore_errors=True)
        return js({"success": True})  # `datasets/delete/route.tsx:13-20`
    except (KeyError, TypeError, ValueError):
        return js({"error": "Failed to delete dataset"}, 500)


def dataset_list(pod: Pod, request: Request) -> Answer:
    with pod.connection() as conn:
        root = pod.paths.datasets_folder(conn)
    root.mkdir(exist_ok=True)
    return js([e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith(".")])


def dataset_upload(pod: Pod, request: Request) -> Answer:
    """`datasets/upload/route.ts`: every `files` part written under its sanitised name."""
    try:
        fields, files = _multipart(request)
        if not files:
            return js({"error": "No files provided"}, 400)
        with pod.connection() as conn:
            folder = pod.paths.datasets_folder(conn) / fields.get("datasetName", "")
        folder.mkdir(parents=True, exist_ok=True)
        saved = []
        for filename, content in files:
            clean = re.sub(r"[^a-zA-Z0-9.-]", "_", filename)  # `upload/route.ts:34`
            (folder / clean).write_bytes(content)
            saved.append(clean)
        return js({"message": "Files uploaded successfully", "files": saved})
    except (OSError, ValueError):
        return js({"error": "Error uploading files"}, 500)


def dataset_images(pod: Pod, request: Request) -> Answer:
    """`datasets/listImages/route.ts`: the folder with a trailing separator and each image's sub-path,
    gzip-compressed when the client accepts it (brotli, preferred there, is not in Python's stdlib)."""
    name = request.json()["datasetName"]
    with pod.connection() as conn:
        folder = pod.paths.datasets_folder(conn) / name
    if not folder.exists():
        return js({"error": f"Folder '{name}' not found"}, 404)
    root = str(folder) + os.sep
    images = sorted((p[len(root) :] for p in _images(folder)), key=str.casefold)
    answer = js({"root": root, "images": images})
    if "gzip" in request.headers.get("accept-encoding", ""):
        answer.body = gzip.compress(answer.body)
        answer.headers["Content-Encoding"] = "gzip"
    return answer


def _images(folder: Path) -> list[str]:
    found: list[str] = []
    for entry in os.scandir(folder):
        if entry.name.startswith("."):
            continue
        if entry.is_dir() and entry.name != "_controls":
            found += _images(Path(entry.path))
        elif (
            entry.is_file() and os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS + AUDIO_EXTENSIONS
        ):
            found.append(entry.path)
    return found


def file_delete(pod: Pod, request: Request) -> Answer:
    """`files/delete/route.ts`: one file under the datasets or training folder."""
    payload = request.json()
    file_path = payload.get("filePath") if isinstance(payload, dict) else None
    if not file_path or not isinstance(file_path, str):
        return text("filePath is required", 400)
    resolved = Path(os.path.abspath(unquote(file_path)))
    with pod.connection() as conn:
        roots = [pod.paths.datasets_folder(conn), pod.paths.training_folder(conn)]
    if not any(resolved == r or str(resolved).startswith(str(r) + os.sep) for r in roots):
        return text("Access denied", 403)
    if not resolved.exists():
        return text("File not found", 404)
    if not resolved.is_file():
        return text("Not a file", 400)
    resolved.unlink()
    return js({"success": True})


def _multipart(request: Request) -> tuple[dict[str, str], list[tuple[str, bytes]]]:
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise ValueError("not a multipart body")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + request.body
    )
    fields: dict[str, str] = {}
    files: list[tuple[str, bytes]] = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True) or b""
        filename = part.get_filename()
        if name == "files" and filename is not None:
            files.append((filename, payload))
        elif isinstance(name, str):
            fields[name] = payload.decode("utf-8")
    return fields, files


ROUTES: list[tuple[str, re.Pattern[str], Callable[..., Answer]]] = [
    (method, re.compile(f"^{pattern}$"), handler)
    for method, pattern, handler in [
        ("GET", "/api/auth", auth),
        ("GET", "/api/settings", settings_get),
        ("POST", "/api/settings", settings_post),
        ("GET", "/api/queue", queues),
        ("GET", r"/api/queue/(?P<queue_id>[^/]+)/start", queue_start),
        ("GET", r"/api/queue/(?P<queue_id>[^/]+)/stop", queue_stop),
        ("GET", "/api/jobs", jobs_get),
        ("POST", "/api/jobs", jobs_post),
        ("GET", r"/api/jobs/(?P<job_id>[^/]+)/start", job_start),
        ("GET", r"/api/jobs/(?P<job_id>[^/]+)/stop", job_stop),
        ("GET", r"/api/jobs/(?P<job_id>[^/]+)/mark_stopped", job_mark_stopped),
        ("GET", r"/api/jobs/(?P<job_id>[^/]+)/save_now", job_flag("save_now")),
        ("GET", r"/api/jobs/(?P<job_id>[^/]+)/sample_now", job_flag("sample_now")),
        ("GET", r"/api/jobs/(?P<job_id>[^/]+)/delete", job_delete),
        ("GET", r"/api/jobs/(?P<job_id>[^/]+)/files", job_files),
        ("GET", r"/api/jobs/(?P<job_id>[^/]+)/samples", job_samples),
        ("GET", r"/api/jobs/(?P<job_id>[^/]+)/loss", job_loss),
        ("GET", r"/api/jobs/(?P<job_id>[^/]+)/log", job_log),
        ("GET", "/api/datasets/list", dataset_list),
        ("POST", "/api/datasets/create", dataset_create),
        ("POST", "/api/datasets/delete", dataset_delete),
        ("POST", "/api/datasets/upload", dataset_upload),
        ("POST", "/api/datasets/listImages", dataset_images),
        ("POST", "/api/files/delete", file_delete),
    ]
]


def dispatch(pod: Pod, request: Request) -> Answer:
    allowed = False
    for method, pattern, handler in ROUTES:
        match = pattern.match(request.path)
        if match is None:
            continue
        if method != request.method:
            allowed = True
            continue
        try:
            return handler(pod, request, **{k: unquote(v) for k, v in match.groupdict().items()})
        except (NextError, json.JSONDecodeError, KeyError, TypeError, sqlite3.Error):
            # A rejection the route does not catch: e.g. the loss route's query of a loss_log.db without
            # its tables yet, inside try/finally with no catch (`jobs/[jobID]/loss/route.ts`).
            return Answer(500)
    if allowed:
        return Answer(405)  # Next.js answers a method a route does not export with 405
    return Answer(404, b"", {"Content-Type": "text/html; charset=utf-8"})
