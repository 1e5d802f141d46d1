"""The stand-in's HTTP face: RunPod's public job API, the worker-facing protocol and a control side.

Public (Bearer `--api-key`): `POST /v2/<eid>/run`, `GET /v2/<eid>/status/<id>`, `POST /v2/<eid>/cancel/<id>`,
`GET /v2/<eid>/health` (docs: serverless/endpoints/operation-reference.mdx). Worker side (the key in
`RUNPOD_AI_API_KEY`, sent bare): `GET …/job-take/<worker>`, `GET …/job-stop/<worker>`,
`POST …/job-done/<worker>/<job>`, `GET …/ping/<worker>` as the pinned SDK calls them (runpod 1.12.0
rp_job.py, rp_http.py, rp_ping.py). REST v2 (Bearer `--api-key`): `/v2/templates`, `/v2/network-volumes`,
`/v2/serverless`, `/v2/pods` (`rest_v2.py`). Control (Bearer `--api-key`): `/_control/faults`,
`/_control/state`, `/_control/reset` (back to the start-up state, for tests sharing one stand-in),
`/_control/idle`.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlparse

from runpod_worker.local_runpod.rest_v2 import Problem
from runpod_worker.local_runpod.state import Platform

log = logging.getLogger("local_runpod")

REST_COLLECTIONS = frozenset({"templates", "network-volumes", "serverless", "pods"})


class Handler(BaseHTTPRequestHandler):
    platform: Platform
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, the body waits for the client's delayed
    # ACK (~40 ms on Linux) on every kept-alive request.
    disable_nagle_algorithm = True
    _raw_body = b""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        # Read the whole body before any answer, early refusals (401, 429, 5xx, 404) included: bytes left
        # unread on a kept-alive connection would be parsed as the start of the client's next request.
        self._raw_body = self._read_body()
        url = urlparse(self.path)
        parts = [p for p in url.path.split("/") if p]
        try:
            if parts[:1] == ["_worker"]:
                self._worker(method, parts[1:], parse_qs(url.query))
            elif parts[:1] == ["_control"]:
                self._control(method, parts[1:])
            elif parts[:1] == ["v2"] and len(parts) >= 2 and parts[1] in REST_COLLECTIONS:
                self._rest(method, parts[1:])
            elif parts[:1] == ["v2"] and len(parts) >= 3 and self.platform.serves_endpoint(parts[1]):
                self._public(method, parts[2:])
            else:
                self._send(404, {"error": "not found"})
        except (ValueError, KeyError) as exc:
            self._send(400, {"error": f"bad request: {exc}"})

    def _read_body(self) -> bytes:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        if length <= 0:
            return b""
        return self.rfile.read(length)

    def _body(self) -> Any:
        return json.loads(self._raw_body) if self._raw_body else {}

    def _send(self, status: int, body: Any = None) -> None:
        payload = b"" if body is None else json.dumps(body).encode()
        self._send_raw(status, payload, "application/json" if body is not None else None)

    def _send_raw(self, status: int, payload: bytes, content_type: str | None) -> None:
        self.send_response(status)
        if content_type is not None:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _authorised_public(self) -> bool:
        expected = f"Bearer {self.platform.args.api_key}"
        return secrets.compare_digest(self.headers.get("Authorization", ""), expected)

    def _public(self, method: str, parts: list[str]) -> None:
        with self.platform.lock:
            self.platform.api_calls[parts[0]] = self.platform.api_calls.get(parts[0], 0) + 1
        faults = self.platform.faults
        if faults["public_down"]:
            self.close_connection = True  # no status line at all: the client sees the connection drop
            return
        if not self._authorised_public():
            self._send(401, {"error": "Unauthorized"})
            return
        roll = self.platform.random.random()
        delay = float(faults["slow_s"]) if self.platform.random.random() < faults["slow_rate"] else 0.0
        if roll < faults["rate_429"]:
            self._send(429, {"error": "Too Many Requests"})
            return
        if roll < faults["rate_429"] + faults["rate_5xx"]:
            self._send(500, {"error": "Internal Server Error"})
            return
        route = (method, parts[0], len(parts))
        if route == ("POST", "run", 1):
            self._public_run(delay)
            return
        time.sleep(delay)
        if route == ("GET", "status", 2):
            status = self.platform.find(parts[1])
            self._send(200, status) if status else self._send(404, {"error": "request does not exist"})
        elif route == ("POST", "cancel", 2):
            job = self.platform.cancel(parts[1])
            self._send(200, {"id": job.id, "status": job.status}) if job else self._send(
                404, {"error": "not found"}
            )
        elif route == ("GET", "health", 1):
            self._send(200, self.platform.health())
        else:
            self._send(404, {"error": "not found"})

    def _public_run(self, delay: float) -> None:
        body = self._body()
        if not isinstance(body, dict) or "input" not in body:
            self._send(400, {"error": "body must be an object with 'input'"})
            return
        job = self.platform.submit(body)  # the job exists from here on, whatever the answer says
        time.sleep(delay)
        if self.platform.take_fault("lose_run_answer"):
            self._send(500, {"error": "Internal Server Error"})
            return
        if self.platform.take_fault("garble_run_answer"):
            self._send_raw(200, b"<html><body>502 Bad Gateway</body></html>", "text/html")
            return
        self._send(200, job)

    def _rest(self, method: str, parts: list[str]) -> None:
        """REST v2 (`rest_v2.py`): RFC 9457 problems for every refusal."""
        try:
            if not self._authorised_public():
                raise Problem(
                    401, "missing bearer token" if "Authorization" not in self.headers else "invalid token"
                )
            try:
                body = json.loads(self._raw_body) if self._raw_body else None
            except ValueError as exc:
                raise Problem(400, f"the request body is not valid JSON: {exc}") from exc
            answer = self.platform.rest.handle(method, parts, body)
        except Problem as problem:
            payload = json.dumps(problem.body).encode()
            self._send_raw(problem.status, payload, "application/problem+json")
            return
        if answer.body is None:
            self._send_raw(answer.status, b"", None)
        else:
            self._send(answer.status, answer.body)

    def _worker(self, method: str, parts: list[str], query: dict[str, list[str]]) -> None:
        if not secrets.compare_digest(self.headers.get("Authorization", ""), self.platform.worker_key):
            self._send(401, {"error": "Unauthorized"})
            return
        if len(parts) < 3 or parts[0] != self.platform.args.endpoint_id:
            self._send(404, {"error": "not found"})
            return
        kind, worker_id = parts[1], parts[2]
        if kind == "job-take" and method == "GET":
            job = self.platform.take(worker_id)
            self._send(200, job) if job else self._send(204)
        elif kind == "job-stop" and method == "GET":
            ids = self.platform.stop_signals(worker_id)
            self._send(200, {"jobsToStop": ids}) if ids else self._send(204)
        elif kind in ("job-done", "job-stream") and method == "POST" and len(parts) == 4:
            # The SDK sends a JSON string under a form content type.
            body = json.loads(self._raw_body or b"{}")
            if kind == "job-done" and body.get("status") == "IN_PROGRESS":
                time.sleep(float(self.platform.faults["progress_delay_s"]))  # lands late (#250)
            if kind == "job-done":
                self.platform.result(worker_id, parts[3], body)
            self._send(200, {})
        elif kind == "ping":
            self.platform.ping(worker_id)
            self._send(200, {})
        else:
            self._send(404, {"error": "not found"})

    def _control(self, method: str, parts: list[str]) -> None:
        if not self._authorised_public():
            self._send(401, {"error": "Unauthorized"})
            return
        platform = self.platform
        if parts == ["faults"] and method == "POST":
            self._send(200, platform.set_faults(self._body()))
        elif parts == ["faults"]:
            self._send(200, dict(platform.faults))
        elif parts == ["reset"] and method == "POST":
            self._send(200, platform.reset())
        elif parts == ["idle"]:
            self._send(200, {"idle": platform.idle()})
        elif parts == ["state"]:
            with platform.lock:
                state = {
                    "jobs": {job.id: job.internals() for job in platform.jobs.values()},
                    "workers": {
                        w.worker_id: {"pid": w.process.pid, "jobs": sorted(w.jobs)}
                        for w in platform.workers.values()
                    },
                    "retried": platform.retried,
                    "faults": dict(platform.faults),
                    "api_calls": dict(platform.api_calls),
                }
            self._send(200, state)
        else:
            self._send(404, {"error": "not found"})
