"""The stand-in's HTTP face: the front server, the auth middleware, fault switches and a control API.

Request handling follows AI Toolkit's UI at 27a03a91:

1. GET/HEAD under `/api/files/` or `/api/img/` is answered by the front server itself, with no token
   asked (`ui/cron/fileServer.ts:477-486`): see `files.py`.
2. Everything else passes Next.js's middleware (`ui/src/middleware.ts`): with `AI_TOOLKIT_AUTH` set,
   an `/api/` request outside the public prefixes `/api/img/` and `/api/files/` (so POST
   `/api/files/delete` is public too, `:6,20-22`) needs the second word of its
   Authorization header to equal the token (`:17,27`), else 401 `{"error":"Unauthorized"}`.
3. Then the route (`routes.py`).

Fault switches (`POST /_control/faults`, JSON; Bearer auth like the API):
`slow_s` + `slow_rate` answer that share of API requests only after `slow_s` seconds, the work done
first (a client that times out meets a job that exists); `lose_create_answer` (count) creates the
job, then answers 502 as a proxy that lost the answer would, so the client's retry meets a 409;
`stick_next_job` (count) kills the next started trainer at its first step where nobody sees it exit,
leaving the job `running` for ever (the `mark_stopped` case). `POST /_control/restart_pod`
`{"down_s": 2, "keep_state": false}` kills every process and refuses connections for `down_s` (no
request the UI was handling reaches the state it comes back with, as none outlives a killed process), then
comes back as the pod's image starts: with a fresh database and empty folders, because the official
image keeps the database and outputs on the container disk, which RunPod clears on restart
(`docker/Dockerfile:100-112`, RunPod docs `pods/storage/types.mdx:14`); `keep_state` keeps them, as a
template that puts the toolkit on the volume would. `POST /_control/crash_trainer {"job_id", "seen"}`
SIGKILLs a running trainer now. `GET /_control/state` shows the jobs, queues, live trainers and API
calls by route.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import shutil
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from runpod_worker.local_ai_toolkit_ui import db, files, routes
from runpod_worker.local_ai_toolkit_ui.cron import Cron, Paths

log = logging.getLogger("local_ai_toolkit_ui")

# How long a restart waits for the requests in hand to end (the slowest is a dataset upload or a file).
REQUEST_DRAIN_S = 30.0
DEFAULT_FAULTS: dict[str, Any] = {"slow_s": 0.0, "slow_rate": 0.0, "lose_create_answer": 0}
PUBLIC_PREFIXES = ("/api/img/", "/api/files/")  # `ui/src/middleware.ts:6`


class Pod:
    """One pod's UI: its folders and database, the cron worker, the HTTP server and the faults."""

    def __init__(
        self, *, root: Path, run_py: Path, token: str | None, host: str, port: int, python: str
    ) -> None:
        self.paths = Paths(root=root.resolve(), run_py=run_py, python=python)
        self.token = token or None
        self.host, self.port = host, port
        self.faults: dict[str, Any] = dict(DEFAULT_FAULTS)
        self.api_calls: dict[str, int] = {}
        self.random = random.Random(0)
        self.lock = threading.Lock()
        self._active_cache: dict[str | None, tuple[float, list[Any]]] = {}
        self.cron = Cron(self.paths)
        self.server: ThreadingHTTPServer | None = None
        self._serve_thread: threading.Thread | None = None
        self.sockets: set[socket.socket] = set()  # open client connections, closed when the pod goes down
        self.closed = False
        # Requests being handled, and whether the pod is down: a restart restarts the pod's container (RunPod
        # docs pods/maintenance-and-outages.mdx:29, pods/manage-pods.mdx:100), killing the UI's process with
        # every request in it, so none may touch the folders or the database once the pod has gone down.
        self.handling = 0
        self.down = False
        self.idle = threading.Condition(self.lock)

    # ------------------------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self.paths.root.mkdir(parents=True, exist_ok=True)
        if not self.paths.db.exists():
            db.create(self.paths.db)
        self.cron.start()
        with self.lock:
            self.down = False
        self._listen()

    def _listen(self) -> None:
        handler = type("Handler", (Handler,), {"pod": self})
        self.server = ThreadingHTTPServer((self.host, self.port), handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._serve_thread = threading.Thread(target=self.server.serve_forever, name="aitk-http", daemon=True)
        self._serve_thread.start()

    def stop(self) -> None:
        self.closed = True
        self._go_down()

    def _go_down(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        with self.lock:
            self.down = True
            open_sockets, self.sockets = list(self.sockets), set()
        for sock in open_sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.cron.kill_all()
        self.cron.stop()
        # What a request already in hand does ends before a restart clears the state, as if it had died
        # with the process; a request read afterwards is dropped (`Handler._handle`).
        with self.lock:
            self.idle.wait_for(lambda: self.handling == 0, timeout=REQUEST_DRAIN_S)

    @contextlib.contextmanager
    def request(self) -> Iterator[bool]:
        """A request's hold on the pod: False when the pod is down and it must not be handled."""
        with self.lock:
            up = not self.down
            if up:
                self.handling += 1
        if not up:
            yield False
            return
        try:
            yield True
        finally:
            with self.lock:
                self.handling -= 1
                self.idle.notify_all()

    def restart(self, *, down_s: float, keep_state: bool) -> None:
        """The pod restarts: every process dies, the port is closed for `down_s`, then the UI comes back."""
        log.warning("fault: pod restart (down %.1fs, keep_state=%s)", down_s, keep_state)
        self._go_down()
        if not keep_state:
            for name in ("aitk_db.db", "aitk_db.db-wal", "aitk_db.db-shm"):
                (self.paths.root / name).unlink(missing_ok=True)
            for folder in ("output", "datasets", "data"):
                shutil.rmtree(self.paths.root / folder, ignore_errors=True)
        time.sleep(down_s)
        if self.closed:
            return
        self.cron = Cron(self.paths)
        self._active_cache.clear()
        self.start()

    # ---------------------------------------------------------------------------------------- state

    @contextlib.contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        conn = db.connect(self.paths.db)
        try:
            yield conn
        finally:
            conn.close()

    def cached_active(self, job_type: str | None, fetch: Callable[[], list[Any]]) -> list[Any]:
        """`cached('jobs-active', …, 5000, {job_type})` (`ui/src/server/apiCache.ts`)."""
        now = time.monotonic()
        hit = self._active_cache.get(job_type)
        if hit is not None and now - hit[0] < routes.ACTIVE_CACHE_S:
            return hit[1]
        value = fetch()
        self._active_cache[job_type] = (now, value)
        return value

    def take_fault(self, name: str) -> bool:
        with self.lock:
            if self.faults.get(name, 0) > 0:
                self.faults[name] -= 1
                return True
        return False

    def state(self) -> dict[str, Any]:
        with self.connection() as conn:
            jobs = [db.job_json(row) for row in conn.execute('SELECT * FROM "Job" ORDER BY created_at')]
            queues = [db.queue_json(row) for row in conn.execute('SELECT * FROM "Queue"')]
        with self.cron.lock:
            trainers = {job_id: t.process.pid for job_id, t in self.cron.trainers.items()}
            stick_next = self.cron.stick_next
        return {
            "jobs": jobs,
            "queues": queues,
            "trainers": trainers,
            "faults": {**self.faults, "stick_next_job": stick_next},
            "api_calls": self.api_calls,
        }


class Handler(BaseHTTPRequestHandler):
    pod: Pod
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        with self.pod.lock:
            self.pod.sockets.add(self.connection)

    def finish(self) -> None:
        with self.pod.lock:
            self.pod.sockets.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s - %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        with self.pod.request() as up:
            if up:
                self._handle_up()
            else:
                self.close_connection = True

    def _handle_up(self) -> None:
        parts = urlsplit(self.path)
        headers = {k.lower(): v for k, v in self.headers.items()}
        length = int(headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        if parts.path.startswith("/_control/"):
            self._control(parts.path, headers, body)
            return
        prefix = files.public_prefix(self.command, parts.path)
        if prefix is not None:
            self._count(prefix + "*")
            self._file(prefix, parts.path, headers)
            return
        if parts.path.startswith("/api/") and not self._authorised(parts.path, headers):
            self._send(routes.js({"error": "Unauthorized"}, 401))
            return
        request = routes.Request(self.command, parts.path, dict(parse_qsl(parts.query)), headers, body)
        self._count(parts.path)
        if (
            request.method == "POST"
            and request.path == "/api/jobs"
            and self.pod.take_fault("lose_create_answer")
        ):
            routes.dispatch(self.pod, request)
            self._send(routes.text("Bad Gateway", 502))
            return
        answer = routes.dispatch(self.pod, request)
        self._maybe_slow()
        self._send(answer)

    def _authorised(self, path: str, headers: dict[str, str]) -> bool:
        if self.pod.token is None or path.startswith(PUBLIC_PREFIXES):
            return True
        words = headers.get("authorization", "").split(" ")
        return len(words) > 1 and words[1] == self.pod.token

    def _count(self, route: str) -> None:
        with self.pod.lock:
            self.pod.api_calls[route] = self.pod.api_calls.get(route, 0) + 1

    def _maybe_slow(self) -> None:
        faults = self.pod.faults
        if faults["slow_s"] > 0 and self.pod.random.random() < float(faults["slow_rate"]):
            time.sleep(float(faults["slow_s"]))

    def _send(self, answer: routes.Answer) -> None:
        self.send_response(answer.status)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(answer.body)

    def _file(self, prefix: str, path: str, headers: dict[str, str]) -> None:
        with self.pod.connection() as conn:
            roots = [self.pod.paths.datasets_folder(conn), self.pod.paths.training_folder(conn)]
            if prefix == files.IMG:
                roots.append(self.pod.paths.data_root(conn))
        answer = files.serve(prefix, path, headers, roots)
        self.send_response(answer.status)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        if answer.path is None:
            body = answer.text.encode()
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            return
        self.end_headers()
        if self.command == "HEAD":
            return
        with answer.path.open("rb") as handle:
            handle.seek(answer.start)
            remaining = answer.length
            while remaining > 0:
                chunk = handle.read(min(1024 * 1024, remaining))
                if not chunk:
                    break
                self.wfile.write(chunk)
                remaining -= len(chunk)

    def _control(self, path: str, headers: dict[str, str], body: bytes) -> None:
        if not self._authorised("/api/_control", headers):
            self._send(routes.js({"error": "Unauthorized"}, 401))
            return
        payload = json.loads(body or b"{}")
        if path == "/_control/state":
            self._send(routes.js(self.pod.state()))
        elif path == "/_control/faults":
            with self.pod.lock:
                self.pod.faults.update({k: v for k, v in payload.items() if k in DEFAULT_FAULTS})
            with self.pod.cron.lock:
                self.pod.cron.stick_next += int(payload.get("stick_next_job", 0))
            self._send(routes.js(self.pod.state()["faults"]))
        elif path == "/_control/restart_pod":
            self._send(routes.js({"restarting": True}))
            threading.Thread(
                target=self.pod.restart,
                kwargs={
                    "down_s": float(payload.get("down_s", 2.0)),
                    "keep_state": bool(payload.get("keep_state")),
                },
                daemon=True,
            ).start()
        elif path == "/_control/crash_trainer":
            killed = self.pod.cron.kill(str(payload.get("job_id")), seen=bool(payload.get("seen", False)))
            self._send(routes.js({"killed": killed}))
        else:
            self._send(routes.js({"error": "no such control"}, 404))
