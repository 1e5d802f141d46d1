"""Peak memory of a web process while it receives 20 photos of about 10 MB in one request.

    .venv/bin/python bench/bench_upload_memory.py [--images 20] [--budget-mb 64]

Starts the studio with `manage.py runserver --noreload` (one process, so its memory is the web
process's) on a free port, against a temporary SQLite database and media folder; signs in;
streams one multipart request with all the photos to the real upload view; and reads the
server's VmRSS and VmHWM (peak resident memory) from /proc before and after. Exits 1 when the
peak grew by more than the budget. The photos are random noise, which JPEG cannot compress,
so each ~10 MB file is also ~8.5 megapixels to decode.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import requests
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
USERNAME, PASSWORD = "bench", "bench passphrase 2024"
SIDE = 2920  # noise at JPEG quality 95 comes to ~10 MB at this size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--budget-mb", type=float, default=64.0)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench-upload-"))
    server: subprocess.Popen[bytes] | None = None
    try:
        env = studio_environment(workdir)
        character_ids = prepare_database(env)
        photos = make_photos(workdir / "photos", args.images)
        total_mb = sum(path.stat().st_size for path in photos) / 1024**2
        port = free_port()
        server = start_server(env, port, workdir / "server.log")
        base = f"http://127.0.0.1:{port}"
        session = sign_in(base)

        # Warm-up: the first upload imports Pillow's plugins and fills Django's caches once.
        upload(base, session, character_ids[0], [make_warmup_photo(workdir)])
        before = memory(server.pid)
        started = time.monotonic()
        status, body = upload(base, session, character_ids[1], photos)
        elapsed = time.monotonic() - started
        after = memory(server.pid)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)

    result = json.loads(body)
    growth = (after["VmHWM"] - before["VmRSS"]) / 1024
    print(f"request: {len(photos)} photos, {total_mb:.1f} MB in one body, {elapsed:.1f} s, HTTP {status}")
    print(f"kept {len(result['added'])}, refused {len(result['rejected'])}")
    for rejected in result["rejected"]:
        print(f"  refused {rejected['message']}")
    print(f"server RSS before: {before['VmRSS'] / 1024:.1f} MB, peak before: {before['VmHWM'] / 1024:.1f} MB")
    print(f"server peak after: {after['VmHWM'] / 1024:.1f} MB, RSS after: {after['VmRSS'] / 1024:.1f} MB")
    print(f"peak growth during the upload: {growth:.1f} MB (budget {args.budget_mb:.0f} MB)")
    ok = growth < args.budget_mb and len(result["added"]) == len(photos)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


def studio_environment(workdir: Path) -> dict[str, str]:
    """The embedded default, pointed at throw-away folders: no Postgres, Redis or bucket."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "REDIS_URL", "AWS_STORAGE_BUCKET_NAME", "TEST_DATABASE_NAME"}
    }
    env.update(
        STUDIO_VAR_DIR=str(workdir / "var"),
        MEDIA_ROOT=str(workdir / "media"),
        DATABASE_URL=f"sqlite:///{workdir / 'bench.sqlite3'}",
        DJANGO_DEBUG="true",
        PYTHONUNBUFFERED="1",
    )
    return env


def prepare_database(env: dict[str, str]) -> list[str]:
    subprocess.run([PYTHON, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
    script = (
        "from studio.models import User\n"
        "from characters.services import character_create\n"
        f"user = User.objects.create_user({USERNAME!r}, password={PASSWORD!r})\n"
        "for name in ('Warm-up', 'Bench'):\n"
        "    print(character_create(owner=user, name=name, trigger_word='ohwx_' + name.lower()[:4]).pk)\n"
    )
    output = subprocess.run(
        [PYTHON, "manage.py", "shell", "-c", script],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return re.findall(r"[0-9a-f-]{36}", output)


def make_photos(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True)
    noise = Image.frombytes("RGB", (SIDE, SIDE), os.urandom(SIDE * SIDE * 3))
    paths = []
    for index in range(count):
        noise.paste((index * 12 % 256, 0, 0), (0, 0, 64, 64))  # each photo differs, so none is a duplicate
        path = folder / f"photo-{index:02d}.jpg"
        noise.save(path, "JPEG", quality=95)
        paths.append(path)
    return paths


def make_warmup_photo(workdir: Path) -> Path:
    path = workdir / "warmup.jpg"
    Image.new("RGB", (640, 640), (90, 90, 90)).save(path, "JPEG")
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    command = [PYTHON, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"]
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/accounts/login/", timeout=2).status_code == 200:
                return server
        except requests.ConnectionError:
            time.sleep(0.2)
    server.terminate()
    raise SystemExit(f"The server did not start; see {log}")


def sign_in(base: str) -> requests.Session:
    session = requests.Session()
    session.get(f"{base}/accounts/login/", timeout=10)
    response = session.post(
        f"{base}/accounts/login/",
        data={
            "username": USERNAME,
            "password": PASSWORD,
            "csrfmiddlewaretoken": session.cookies["csrftoken"],
        },
        headers={"Referer": f"{base}/accounts/login/"},
        timeout=10,
    )
    if "sessionid" not in session.cookies:
        raise SystemExit(f"Could not sign in (HTTP {response.status_code}).")
    return session


def upload(base: str, session: requests.Session, character_id: str, paths: list[Path]) -> tuple[int, bytes]:
    """POST every file in one multipart body, streamed from disk with a Content-Length."""
    boundary = uuid.uuid4().hex
    parts = [_part_header(boundary, path) for path in paths]
    closing = f"--{boundary}--\r\n".encode()
    length = sum(len(head) + path.stat().st_size + 2 for head, path in zip(parts, paths, strict=True)) + len(
        closing
    )
    connection = http.client.HTTPConnection(base.removeprefix("http://"), timeout=600)
    connection.putrequest("POST", f"/characters/{character_id}/images/")
    cookies = "; ".join(f"{name}={value}" for name, value in session.cookies.items())
    for header, value in {
        "Content-Type": f"multipart/form-data; boundary={boundary}",
        "Content-Length": str(length),
        "Cookie": cookies,
        "X-CSRFToken": session.cookies["csrftoken"],
        "Referer": base + "/",
        "Accept": "application/json",
    }.items():
        connection.putheader(header, value)
    connection.endheaders()
    for chunk in _body(parts, paths, closing):
        connection.send(chunk)
    response = connection.getresponse()
    return response.status, response.read()


def _part_header(boundary: str, path: Path) -> bytes:
    return (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="files"; filename="{path.name}"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()


def _body(parts: list[bytes], paths: list[Path], closing: bytes) -> Iterator[bytes]:
    for head, path in zip(parts, paths, strict=True):
        yield head
        with path.open("rb") as photo:
            while chunk := photo.read(1024 * 1024):
                yield chunk
        yield b"\r\n"
    yield closing


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in kB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return {key: int(value) for key, value in re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", status, re.MULTILINE)}


if __name__ == "__main__":
    sys.exit(main())
