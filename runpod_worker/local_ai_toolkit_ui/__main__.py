"""`python -m runpod_worker.local_ai_toolkit_ui --root DIR [--port 8675] [--token T | --token-file F]
[--host 127.0.0.1]` (without either, AI_TOOLKIT_AUTH from the environment, as the real UI reads it)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from runpod_worker.local_ai_toolkit_ui.cron import SIMULATED_RUN_PY
from runpod_worker.local_ai_toolkit_ui.server import Pod


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--root", required=True, type=Path, help="the toolkit root: database, output/, datasets/"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8675)
    token = parser.add_mutually_exclusive_group()
    token.add_argument(
        "--token", default=os.environ.get("AI_TOOLKIT_AUTH"), help="AI_TOOLKIT_AUTH (none: open)"
    )
    token.add_argument(
        "--token-file",
        type=Path,
        help="a file holding the token (kept off the command line, which `ps` shows)",
    )
    parser.add_argument("--run-py", type=Path, default=SIMULATED_RUN_PY, help="the trainer to launch")
    parser.add_argument("--python", default=sys.executable, help="the interpreter that runs it")
    args = parser.parse_args(argv)
    if args.token_file is not None:
        args.token = args.token_file.read_text().strip() or None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.run_py == SIMULATED_RUN_PY:
        logging.warning("AI Toolkit UI stand-in: jobs run the SIMULATED trainer (%s)", args.run_py)
    pod = Pod(
        root=args.root,
        run_py=args.run_py,
        token=args.token,
        host=args.host,
        port=args.port,
        python=args.python,
    )
    pod.start()
    print(f"AI Toolkit UI stand-in on http://{args.host}:{pod.port} (root {pod.paths.root})", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    pod.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
