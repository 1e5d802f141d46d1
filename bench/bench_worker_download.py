"""Downloads 50 images of 2 MB from a local server that adds 100 ms per request, three ways:
our parallel downloader, a sequential loop, and the runpod SDK's own `download_files_from_urls`.

    .venv/bin/python bench/bench_worker_download.py
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runpod_worker.contract import ImageSpec
from runpod_worker.dataset import DownloadSettings, download_images

COUNT = 50
SIZE = 2 * 1024 * 1024
LATENCY_S = 0.1


def _payload(index: int) -> bytes:
    head = b"\xff\xd8\xff\xe0" + index.to_bytes(4, "big")
    return head + os.urandom(SIZE - len(head))


def main() -> None:
    blobs = {f"/img{n:02d}.jpg": _payload(n) for n in range(COUNT)}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            time.sleep(LATENCY_S)
            body = blobs[self.path.split("?")[0]]
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    specs = [ImageSpec(base + p, hashlib.sha256(b).hexdigest(), p.lstrip("/")) for p, b in blobs.items()]
    work = Path(tempfile.mkdtemp(prefix="bench-download-"))
    try:
        ours = _time(lambda: download_images(specs, work / "ours", DownloadSettings()))
        sequential = _time(lambda: _sequential(specs, work / "seq"))
        sdk = _time(lambda: _sdk(specs, work / "sdk"))
    finally:
        server.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    print(f"{COUNT} images x {SIZE // (1024 * 1024)} MB, +{int(LATENCY_S * 1000)} ms per request")
    print(f"ours (8 parallel, verified): {ours:6.2f} s")
    print(f"sequential requests loop:    {sequential:6.2f} s   ours is {sequential / ours:4.1f}x faster")
    print(f"runpod download_files_from_urls: {sdk:6.2f} s   ours is {sdk / ours:4.1f}x faster")


def _time(action) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def _sequential(specs: list[ImageSpec], dest: Path) -> None:
    dest.mkdir(parents=True)
    with requests.Session() as session:
        for spec in specs:
            (dest / spec.filename).write_bytes(session.get(spec.url, timeout=30).content)


def _sdk(specs: list[ImageSpec], dest: Path) -> None:
    # The SDK refuses loopback URLs since 1.12.0 unless told otherwise; it writes under the cwd.
    os.environ["RUNPOD_ALLOW_PRIVATE_DOWNLOAD_URLS"] = "1"
    from runpod.serverless.utils import download_files_from_urls

    dest.mkdir(parents=True)
    cwd = os.getcwd()
    os.chdir(dest)
    try:
        paths = download_files_from_urls("bench", [s.url for s in specs])
    finally:
        os.chdir(cwd)
    assert all(paths), "the SDK failed some downloads"


if __name__ == "__main__":
    main()
