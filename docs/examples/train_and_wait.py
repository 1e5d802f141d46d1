"""Start a LoRA training run for a character, wait for it, and download the LoRA.

Needs only `requests`. Usage:

    STUDIO_URL=http://127.0.0.1:8000 STUDIO_TOKEN=cls_... \
        python train_and_wait.py <character-id> [--preset fast] [--steps 800] [--out lora.safetensors]

Exit codes: 0 the LoRA is saved and its sha256 checked; 1 the run failed or was cancelled;
2 the API refused the request (the message says why).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
import uuid
from typing import Any

import requests

FINAL = {"completed", "failed", "cancelled"}
TIMEOUT = (5, 30)  # connect, read: no call may hang the script


class ApiError(Exception):
    pass


def call(session: requests.Session, method: str, url: str, **kwargs: Any) -> requests.Response:
    """One API call; 429 and 5xx are retried a few times with backoff, other errors raise ApiError."""
    for attempt in range(5):
        response = session.request(method, url, timeout=TIMEOUT, **kwargs)
        if response.status_code == 429 or response.status_code >= 500:
            time.sleep(float(response.headers.get("Retry-After", 2**attempt)))
            continue
        if response.status_code >= 400:
            error = response.json().get("error", {})
            raise ApiError(f"{response.status_code} {error.get('code')}: {error.get('message')}")
        return response
    raise ApiError(f"{method} {url} kept failing; try again later.")


def start(session: requests.Session, base: str, character_id: str, body: dict[str, Any]) -> dict[str, Any]:
    # One key per intended run: if this request is retried (here or by rerunning the script with
    # the same key) the studio returns the same run instead of starting a second one.
    key = os.environ.get("IDEMPOTENCY_KEY") or str(uuid.uuid4())
    url = f"{base}/api/v1/characters/{character_id}/runs"
    run = call(session, "POST", url, json=body, headers={"Idempotency-Key": key}).json()
    print(f"run {run['id']} accepted ({run['status']}), idempotency key {key}")
    return dict(run)


def wait(session: requests.Session, run: dict[str, Any]) -> dict[str, Any]:
    delay = 5.0
    while run["status"] not in FINAL:
        time.sleep(delay)
        delay = min(delay * 1.5, 60.0)
        run = call(session, "GET", run["urls"]["get"]).json()
        progress = run["progress"]
        print(f"{run['status']}: step {progress['step']}/{progress['total']} ({progress['percent']}%)")
    return run


def download(session: requests.Session, run: dict[str, Any], out: str) -> None:
    lora = call(session, "GET", run["urls"]["lora"]).json()
    digest = hashlib.sha256()
    # The link is presigned: no Authorization header, and it expires, so fetch it right away.
    with requests.get(lora["url"], stream=True, timeout=TIMEOUT) as response, open(out, "wb") as file:
        response.raise_for_status()
        for chunk in response.iter_content(1024 * 1024):
            file.write(chunk)
            digest.update(chunk)
    if digest.hexdigest() != lora["sha256"]:
        raise ApiError(f"{out} does not match the LoRA's sha256; download it again.")
    print(f"saved {out} ({lora['bytes']} bytes, sha256 {lora['sha256']})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("character_id")
    parser.add_argument("--preset", default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--out", default="lora.safetensors")
    args = parser.parse_args()
    base = os.environ.get("STUDIO_URL", "http://127.0.0.1:8000").rstrip("/")
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {os.environ['STUDIO_TOKEN']}"
    body: dict[str, Any] = {"preset": args.preset} if args.preset else {}
    if args.steps:
        body["params"] = {"steps": args.steps}
    try:
        run = wait(session, start(session, base, args.character_id, body))
        if run["status"] != "completed":
            print(f"run {run['status']}: {(run['error'] or {}).get('message', '')}", file=sys.stderr)
            return 1
        download(session, run, args.out)
    except ApiError as error:
        print(error, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
