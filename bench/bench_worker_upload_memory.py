"""Uploads a 200 MB file with the worker's streaming PUT and reports the process's peak memory growth.

    .venv/bin/python bench/bench_worker_upload_memory.py

The receiving server runs in a child process so its buffers do not count against the uploader.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runpod_worker.upload import upload_file

SIZE = 200 * 1024 * 1024
LIMIT_MB = 50


def _serve(port_queue: multiprocessing.Queue, digest_queue: multiprocessing.Queue) -> None:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_PUT(self) -> None:
            remaining = int(self.headers["Content-Length"])
            digest = hashlib.sha256()
            while remaining:
                chunk = self.rfile.read(min(remaining, 1024 * 1024))
                digest.update(chunk)
                remaining -= len(chunk)
            digest_queue.put(digest.hexdigest())
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = HTTPServer(("127.0.0.1", 0), Handler)
    port_queue.put(server.server_address[1])
    server.handle_request()


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-upload-") as work:
        path = Path(work) / "lora.safetensors"
        with open(path, "wb") as handle:
            for _ in range(SIZE // (1024 * 1024)):
                handle.write(os.urandom(1024 * 1024))  # small chunks keep the baseline peak honest
        ports: multiprocessing.Queue = multiprocessing.Queue()
        digests: multiprocessing.Queue = multiprocessing.Queue()
        server = multiprocessing.Process(target=_serve, args=(ports, digests), daemon=True)
        server.start()
        url = f"http://127.0.0.1:{ports.get(timeout=10)}/lora.safetensors"
        before = _peak_rss_mb()
        started = time.perf_counter()
        result = upload_file(path, url)
        elapsed = time.perf_counter() - started
        growth = _peak_rss_mb() - before
        received = digests.get(timeout=10)
        server.join(timeout=10)
    print(
        f"uploaded {SIZE // (1024 * 1024)} MB in {elapsed:.2f} s; "
        f"sha256 matches receiver: {received == result.sha256}"
    )
    print(f"peak memory growth of the uploading process: {growth:.1f} MB (limit {LIMIT_MB} MB)")
    if growth >= LIMIT_MB or received != result.sha256:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
