from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from runpod_worker.contract import ImageSpec
from runpod_worker.dataset import (
    DownloadSettings,
    caption_text,
    download_images,
    write_captions,
    write_given_captions,
)
from runpod_worker.errors import JobFailed
from tests.runpod_worker.conftest import jpeg_bytes

FAST = DownloadSettings(concurrency=4, attempts=3, max_bytes=1024 * 1024, backoff_s=0.01)
CUT = -1  # a scripted answer: the body stops halfway


class Files:
    """A loopback file server whose answers the test scripts: content, status codes, flaky first tries.

    A scripted status of `CUT` sends the file's headers and only half its body, then closes the connection.
    """

    def __init__(self) -> None:
        self.content: dict[str, bytes] = {}
        self.fail_first: dict[str, list[int]] = {}
        self.hits: dict[str, int] = {}
        self.url = ""


@pytest.fixture
def files() -> Iterator[Files]:
    state = Files()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            with lock:
                state.hits[self.path] = state.hits.get(self.path, 0) + 1
                queued = state.fail_first.get(self.path, [])
                status = queued.pop(0) if queued else (200 if self.path in state.content else 404)
            if status == CUT:
                body = state.content[self.path]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            body = state.content.get(self.path, b"") if status == 200 else b"error"
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield state
    server.shutdown()
    server.server_close()


def _spec(files: Files, name: str, data: bytes, sha: str | None = None) -> ImageSpec:
    files.content[f"/{name}"] = data
    return ImageSpec(f"{files.url}/{name}", sha or hashlib.sha256(data).hexdigest(), name)


def test_it_downloads_and_verifies_every_image(files: Files, tmp_path: Path) -> None:
    specs = [_spec(files, f"i{n}.jpg", jpeg_bytes(n)) for n in range(6)]
    paths = download_images(specs, tmp_path, FAST)
    assert [p.read_bytes() for p in paths] == [jpeg_bytes(n) for n in range(6)]


def test_it_retries_a_server_error(files: Files, tmp_path: Path) -> None:
    spec = _spec(files, "flaky.jpg", jpeg_bytes(1))
    files.fail_first["/flaky.jpg"] = [503, 500]
    download_images([spec], tmp_path, FAST)
    assert files.hits["/flaky.jpg"] == 3
    assert (tmp_path / "flaky.jpg").read_bytes() == jpeg_bytes(1)


def test_it_retries_a_throttled_request(files: Files, tmp_path: Path) -> None:
    spec = _spec(files, "busy.jpg", jpeg_bytes(4))
    files.fail_first["/busy.jpg"] = [429]
    download_images([spec], tmp_path, FAST)
    assert files.hits["/busy.jpg"] == 2


def test_a_body_cut_off_midway_is_fetched_again(files: Files, tmp_path: Path) -> None:
    spec = _spec(files, "cut.jpg", jpeg_bytes(5))
    files.fail_first["/cut.jpg"] = [CUT]
    download_images([spec], tmp_path / "dataset", FAST)
    assert files.hits["/cut.jpg"] == 2
    assert (tmp_path / "dataset" / "cut.jpg").read_bytes() == jpeg_bytes(5)
    assert [p.name for p in (tmp_path / "dataset").iterdir()] == ["cut.jpg"]  # no partial file left


def test_server_errors_and_cut_bodies_share_one_bounded_budget(files: Files, tmp_path: Path) -> None:
    spec = _spec(files, "bad.jpg", jpeg_bytes(6))
    files.fail_first["/bad.jpg"] = [503, CUT, 503, 503, 503]
    with pytest.raises(JobFailed) as caught:
        download_images([spec], tmp_path, FAST)
    assert caught.value.code == "download_failed"
    assert (
        "Image 1 (bad.jpg)" in caught.value.message and "after 3 attempts (HTTP 503)" in caught.value.message
    )
    assert files.hits["/bad.jpg"] == 3  # FAST allows three requests for one image, whatever failed


def test_a_server_error_on_every_attempt_fails_naming_the_status(files: Files, tmp_path: Path) -> None:
    spec = _spec(files, "down.jpg", jpeg_bytes(7))
    files.fail_first["/down.jpg"] = [503, 502, 500, 503]
    with pytest.raises(JobFailed) as caught:
        download_images([spec], tmp_path, FAST)
    assert "after 3 attempts (HTTP 500)" in caught.value.message
    assert files.hits["/down.jpg"] == 3


def test_a_missing_image_fails_with_its_name_and_status(files: Files, tmp_path: Path) -> None:
    spec = ImageSpec(f"{files.url}/gone.jpg", "a" * 64, "gone.jpg")
    with pytest.raises(JobFailed) as caught:
        download_images([spec], tmp_path, FAST)
    assert caught.value.code == "download_failed"
    assert "Image 1 (gone.jpg)" in caught.value.message and "HTTP 404" in caught.value.message
    assert files.hits["/gone.jpg"] == 1  # a 404 is not retried


def test_a_hash_mismatch_fails_and_leaves_no_file(files: Files, tmp_path: Path) -> None:
    spec = _spec(files, "changed.jpg", jpeg_bytes(2), sha="b" * 64)
    with pytest.raises(JobFailed) as caught:
        download_images([spec], tmp_path / "dataset", FAST)
    assert "fingerprint" in caught.value.message
    assert list((tmp_path / "dataset").iterdir()) == []


def test_a_file_that_is_not_an_image_is_refused(files: Files, tmp_path: Path) -> None:
    spec = _spec(files, "fake.jpg", b"<html>not an image</html>")
    with pytest.raises(JobFailed) as caught:
        download_images([spec], tmp_path, FAST)
    assert caught.value.code == "bad_input"
    assert "not a JPEG, PNG or WebP" in caught.value.message


def test_an_image_over_the_size_cap_is_refused(files: Files, tmp_path: Path) -> None:
    spec = _spec(files, "huge.jpg", jpeg_bytes(3) + b"\0" * (2 * 1024 * 1024))
    with pytest.raises(JobFailed) as caught:
        download_images([spec], tmp_path, FAST)
    assert "larger than 1 MB" in caught.value.message


def test_an_unreachable_server_fails_after_bounded_retries(tmp_path: Path) -> None:
    spec = ImageSpec("http://127.0.0.1:9/x.jpg", "a" * 64, "x.jpg")
    with pytest.raises(JobFailed) as caught:
        download_images([spec], tmp_path, FAST)
    assert "after 3 attempts" in caught.value.message


@pytest.mark.parametrize(
    ("caption", "expected"),
    [
        (None, "a photo of ohwx"),
        ("", "a photo of ohwx"),
        ("[trigger] smiling at the camera", "ohwx smiling at the camera"),
        ("a woman in a red coat", "ohwx, a woman in a red coat"),
        ("portrait of ohwx,\nsoft light", "portrait of ohwx, soft light"),
        ("ohwxy in a park", "ohwx, ohwxy in a park"),
    ],
)
def test_captions_always_carry_the_trigger_word(caption: str | None, expected: str) -> None:
    assert caption_text(caption, "ohwx") == expected


def test_captions_are_written_beside_their_images(tmp_path: Path) -> None:
    images = [ImageSpec("https://s/a.jpg", "a" * 64, "face01.png", "[trigger] at the beach")]
    write_captions(images, tmp_path, "ohwx")
    assert (tmp_path / "face01.txt").read_text() == "ohwx at the beach"


def test_before_captioning_only_the_images_sent_with_a_caption_get_a_caption_file(tmp_path: Path) -> None:
    images = [
        ImageSpec("https://s/a.jpg", "a" * 64, "face01.png", "[trigger] at the beach"),
        ImageSpec("https://s/b.jpg", "b" * 64, "face02.png", None),
        ImageSpec("https://s/c.jpg", "c" * 64, "face03.png", "  "),
    ]
    write_given_captions(images, tmp_path, "ohwx")
    assert sorted(path.name for path in tmp_path.glob("*.txt")) == ["face01.txt"]


def test_a_caption_the_captioner_made_is_used_only_where_none_was_sent(tmp_path: Path) -> None:
    images = [
        ImageSpec("https://s/a.jpg", "a" * 64, "face01.png", "[trigger] at the beach"),
        ImageSpec("https://s/b.jpg", "b" * 64, "face02.png", None),
        ImageSpec("https://s/c.jpg", "c" * 64, "face03.png", None),
    ]
    made = {"face01.png": "[trigger], ignored", "face02.png": "[trigger], a woman in a red coat"}
    write_captions(images, tmp_path, "ohwx", made)
    assert (tmp_path / "face01.txt").read_text() == "ohwx at the beach"
    assert (tmp_path / "face02.txt").read_text() == "ohwx, a woman in a red coat"
    assert (tmp_path / "face03.txt").read_text() == "a photo of ohwx"
