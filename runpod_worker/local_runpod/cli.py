"""The stand-in's entry point: `python -m runpod_worker.local_runpod --port 8765 --workers 1`."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import tempfile
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from runpod_worker.local_runpod.server import Handler
from runpod_worker.local_runpod.state import Platform

log = logging.getLogger("local_runpod")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m runpod_worker.local_runpod",
        description="Local stand-in for a RunPod serverless queue endpoint.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--endpoint-id", default="local-endpoint")
    parser.add_argument("--api-key", default=os.environ.get("RUNPOD_API_KEY", "local-runpod-key"))
    parser.add_argument("--workers", type=int, default=1, help="worker processes to start")
    parser.add_argument(
        "--max-workers",
        type=int,
        default=None,
        help="the endpoint's max workers (default: 3, or --workers if more)",
    )
    parser.add_argument(
        "--result-ttl", type=float, default=1800.0, help="seconds a final result stays readable"
    )
    parser.add_argument(
        "--execution-timeout", type=float, default=3 * 3600.0, help="seconds, endpoint default"
    )
    parser.add_argument(
        "--max-attempts", type=int, default=2, help="starts of a job before a lost worker fails it"
    )
    parser.add_argument("--webhook-retry-interval", type=float, default=10.0)
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the worker processes")
    parser.add_argument("--fault", action="append", default=[], help="KEY=VALUE fault switch at start-up")
    parser.add_argument("--log-dir", default=str(Path(tempfile.gettempdir()) / "local-runpod-logs"))
    parser.add_argument("--seed", type=int, default=None, help="seed for the 429/5xx fault dice")
    parser.add_argument(
        "--worker-key", default="", help="key of the worker-side API (default: random), for scripted workers"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    platform = Platform(args)
    Handler.platform = platform
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    base_url = f"http://{args.host}:{server.server_address[1]}"
    platform.rest.base_url = base_url
    stopping = threading.Event()

    def on_signal(_signum: int, _frame: Any) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    for _ in range(args.workers):
        platform.spawn(base_url)
    log.info("local RunPod endpoint %s on %s/v2/%s with %d worker(s)", args.endpoint_id, base_url,
             args.endpoint_id, args.workers)  # fmt: skip
    while not stopping.wait(0.2):
        platform.reap(base_url)
        platform.enforce_timeouts()
    platform.stop_all()
    server.shutdown()
    return 0
