"""The unmodified handler, in production mode through the pinned SDK, against the local RunPod stand-in,
with the simulated trainer and images served from the S3 test server through presigned URLs."""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from safetensors import safe_open

from runpod_worker.contract import JobOutput, Progress, parse_error
from tests.runpod_worker.conftest import Bucket, FakeBackend, image_entry, jpeg_bytes
from tests.support.grouping import in_one_process
from tests.support.local_runpod import LocalRunPod

pytestmark = [pytest.mark.integration, in_one_process(__name__)]


@pytest.fixture(scope="module")
def runpod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRunPod]:
    stand_in = LocalRunPod(
        workdir=tmp_path_factory.mktemp("local-runpod"),
        workers=2,
        env={"SIMULATED_TRAINER_SECONDS_PER_STEP": "0.03", "WORKER_PROGRESS_INTERVAL_S": "0.2"},
    )
    stand_in.start()
    try:
        yield stand_in
    finally:
        stand_in.kill()  # the module is over: no grace for the GPU workers


def _job(bucket: Bucket, images: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "contract_version": 1,
        "run_id": str(uuid.uuid4()),
        "trigger_word": "ohwx",
        "base_model": "flux-dev",
        "gpu_preset": None,
        "params": {"steps": 100, "rank": 4, "save_every": 50},
        "images": images if images is not None else [image_entry(bucket, n) for n in range(3)],
        "output": {"lora_name": "alice_v1", "lora_upload_url": bucket.put_url("loras/alice_v1.safetensors")},
        "callback": None,
        **extra,
    }


def _finish(runpod: LocalRunPod, job_id: str, timeout: float = 60) -> dict[str, Any]:
    try:
        return runpod.wait_for(job_id, timeout=timeout)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n{runpod.logs()}") from exc


def test_the_lora_is_uploaded_and_its_sha256_matches(
    runpod: LocalRunPod, bucket: Bucket, fake_backend: FakeBackend, tmp_path: Path
) -> None:
    job_id = runpod.run(_job(bucket, callback=fake_backend.callback()))
    final = _finish(runpod, job_id)
    assert final["status"] == "COMPLETED", runpod.logs()
    output = JobOutput.from_dict(final["output"])
    stored = bucket.read("loras/alice_v1.safetensors")
    assert output.lora.sha256 == hashlib.sha256(stored).hexdigest()
    assert output.lora.bytes == len(stored)
    assert output.steps == 100
    assert output.trainer_version == "0.12.26-simulated"
    (tmp_path / "lora.safetensors").write_bytes(stored)
    with safe_open(str(tmp_path / "lora.safetensors"), "np") as lora:
        key = "transformer.single_transformer_blocks.37.proj_out.lora_A.weight"
        assert lora.get_slice(key).get_shape() == [4, 15360]
    [started] = fake_backend.of("started")
    assert (started["event"], started["job_id"], len(started["delivery_id"])) == ("started", job_id, 32)
    # Right after the upload, before the handler returns, the backend hears "finished" with the output.
    assert fake_backend.events[-1]["event"] == "finished"
    assert fake_backend.events[-2]["stage"] == "uploading"
    [finished] = fake_backend.of("finished")
    assert finished["delivery_id"] == started["delivery_id"]
    assert JobOutput.from_dict(finished["output"]) == output
    assert set(fake_backend.auth_headers) == {"Bearer callback-secret-token"}


def test_images_sent_without_a_caption_come_back_captioned_by_the_simulated_captioner(
    runpod: LocalRunPod, bucket: Bucket, fake_backend: FakeBackend
) -> None:
    images = [
        image_entry(bucket, 0, caption="[trigger] smiling"),
        image_entry(bucket, 1),
        image_entry(bucket, 2),
    ]
    job_id = runpod.run(_job(bucket, images=images, callback=fake_backend.callback()))
    final = _finish(runpod, job_id)
    assert final["status"] == "COMPLETED", runpod.logs()

    output = JobOutput.from_dict(final["output"])
    assert [(c.filename, c.sha256) for c in output.captions] == [
        (image["filename"], image["sha256"]) for image in images[1:]
    ]
    assert all(
        c.caption.startswith("[trigger], simulated caption: a square photo in ") for c in output.captions
    )
    assert output.captioner is not None and output.captioner.startswith("simulated captioner")
    assert output.caption_error is None and output.timings.caption_s > 0
    [finished] = fake_backend.of("finished")
    assert JobOutput.from_dict(finished["output"]).captions == output.captions


def test_with_auto_captions_off_no_caption_comes_back(runpod: LocalRunPod, bucket: Bucket) -> None:
    job = _job(bucket)
    job["params"]["auto_caption"] = False
    final = _finish(runpod, runpod.run(job))

    assert final["status"] == "COMPLETED", runpod.logs()
    assert "captions" not in final["output"] and "caption_s" not in final["output"]["timings"]


def test_progress_is_visible_in_status_while_in_progress(
    runpod: LocalRunPod, bucket: Bucket, fake_backend: FakeBackend
) -> None:
    job_id = runpod.run(_job(bucket, callback=fake_backend.callback()))
    seen = runpod.wait_until(
        job_id, lambda s: s["status"] == "IN_PROGRESS" and (s.get("output") or {}).get("stage") == "training"
    )
    progress = Progress.from_dict(seen["output"])
    assert progress.total_steps == 100 and 0 <= progress.step <= 100
    assert _finish(runpod, job_id)["status"] == "COMPLETED"
    training = [e for e in fake_backend.of("progress") if e["stage"] == "training"]
    assert training and all(e["job_id"] == job_id for e in training)


def test_cancel_mid_run_ends_the_job_without_a_lora(runpod: LocalRunPod, bucket: Bucket) -> None:
    job = _job(bucket)
    job["params"]["steps"] = 1000
    job_id = runpod.run(job)
    runpod.wait_until(job_id, lambda s: (s.get("output") or {}).get("stage") == "training")
    assert runpod.cancel(job_id)["status"] == "CANCELLED"
    assert _finish(runpod, job_id)["status"] == "CANCELLED"
    # The worker is free again: the next job completes.
    next_id = runpod.run(_job(bucket))
    assert _finish(runpod, next_id)["status"] == "COMPLETED"
    assert "loras/alice_v1.safetensors" in bucket.stored()
    workers = runpod.state()["workers"]
    assert all(job_id not in w["jobs"] for w in workers.values())


def test_a_worker_killed_mid_job_is_retried_on_a_new_worker(runpod: LocalRunPod, bucket: Bucket) -> None:
    retried_before = runpod.health()["jobs"]["retried"]
    runpod.set_faults(kill_worker_mid_job=1)
    job_id = runpod.run(_job(bucket))
    final = _finish(runpod, job_id, timeout=90)
    assert final["status"] == "COMPLETED", runpod.logs()
    job = runpod.state()["jobs"][job_id]
    first, second = (d["worker_id"] for d in job["deliveries"])
    assert first != second
    assert runpod.health()["jobs"]["retried"] == retried_before + 1
    assert len(runpod.state()["workers"]) == 2  # the dead worker was replaced


@pytest.mark.parametrize("kept", ["first", "last"])
def test_a_job_handed_out_twice_produces_one_lora(
    runpod: LocalRunPod, bucket: Bucket, fake_backend: FakeBackend, kept: str
) -> None:
    """Whichever of the two final results RunPod keeps, one LoRA is made, the duplicate ends
    `claimed_elsewhere`, and the holder's `finished` callback carries the LoRA to the backend."""

    def only_once(event: dict[str, Any], seen: list[dict[str, Any]]) -> dict[str, Any]:
        if event["event"] == "started" and any(e["event"] == "started" for e in seen):
            return {"action": "stop", "reason": "another worker holds the run", "code": "claimed_elsewhere"}
        return {"action": "continue"}

    fake_backend.decide = only_once
    runpod.set_faults(duplicate_jobs=1, duplicate_result=kept)
    try:
        job_id = runpod.run(_job(bucket, callback=fake_backend.callback()))
        final = _finish(runpod, job_id)
        job = runpod.wait_until(job_id, lambda s: len(runpod.state()["jobs"][job_id]["ignored_results"]) == 1)
        job = runpod.state()["jobs"][job_id]
    finally:
        runpod.set_faults(duplicate_result="assigned")
    assert len({d["worker_id"] for d in job["deliveries"]}) == 2
    holder, duplicate = (e["delivery_id"] for e in fake_backend.of("started"))
    [finished] = fake_backend.of("finished")
    assert finished["delivery_id"] == holder != duplicate
    stored = bucket.read("loras/alice_v1.safetensors")
    reported = JobOutput.from_dict(finished["output"])
    assert (reported.lora.bytes, reported.lora.sha256) == (len(stored), hashlib.sha256(stored).hexdigest())
    [ignored] = job["ignored_results"]
    if kept == "first":  # the duplicate stopped at start, long before the holder finished training
        assert (final["status"], parse_error(final["error"]).code) == ("FAILED", "claimed_elsewhere")
        assert JobOutput.from_dict(ignored["output"]) == reported
    else:
        assert final["status"] == "COMPLETED", runpod.logs()
        assert JobOutput.from_dict(final["output"]) == reported
        assert parse_error(ignored["error"]).code == "claimed_elsewhere"
    assert bucket.stored() == [
        "images/img00.jpg",
        "images/img01.jpg",
        "images/img02.jpg",
        "loras/alice_v1.safetensors",
    ]


def test_a_stop_answer_at_start_means_no_training(
    runpod: LocalRunPod, bucket: Bucket, fake_backend: FakeBackend
) -> None:
    fake_backend.decide = lambda event, seen: {"action": "stop", "reason": "the run was cancelled"}
    final = _finish(runpod, runpod.run(_job(bucket, callback=fake_backend.callback())))
    error = parse_error(final["error"])
    assert (final["status"], error.code) == ("FAILED", "cancelled")
    assert "the run was cancelled" in error.message
    assert fake_backend.of("progress") == []
    assert "loras/alice_v1.safetensors" not in bucket.stored()


def test_a_stop_answer_saying_claimed_elsewhere_ends_the_job_claimed_elsewhere(
    runpod: LocalRunPod, bucket: Bucket, fake_backend: FakeBackend
) -> None:
    fake_backend.decide = lambda event, seen: {
        "action": "stop",
        "reason": "another worker is already running this job",
        "code": "claimed_elsewhere",
    }
    final = _finish(runpod, runpod.run(_job(bucket, callback=fake_backend.callback())))
    error = parse_error(final["error"])
    assert (final["status"], error.code) == ("FAILED", "claimed_elsewhere")
    assert "another worker is already running this job" in error.message
    assert fake_backend.of("progress") == [] and fake_backend.of("finished") == []
    assert "loras/alice_v1.safetensors" not in bucket.stored()


def test_a_stop_answer_during_training_stops_the_trainer(
    runpod: LocalRunPod, bucket: Bucket, fake_backend: FakeBackend
) -> None:
    def stop_when_training(event: dict[str, Any], seen: list[dict[str, Any]]) -> dict[str, Any]:
        return {"action": "stop", "reason": "cancelled by alice"} if event.get("stage") == "training" else {}

    fake_backend.decide = stop_when_training
    job = _job(bucket, callback=fake_backend.callback())
    job["params"]["steps"] = 1000
    final = _finish(runpod, runpod.run(job))
    error = parse_error(final["error"])
    assert error.code == "cancelled" and "cancelled by alice" in error.message
    assert "loras/alice_v1.safetensors" not in bucket.stored()


@pytest.mark.parametrize(
    ("broken", "code", "words"),
    [
        ("missing", "download_failed", "HTTP 404"),
        ("corrupt", "bad_input", "not a JPEG, PNG or WebP image"),
        ("mismatch", "download_failed", "does not match its recorded fingerprint"),
    ],
)
def test_a_bad_image_fails_the_job_with_its_own_message(
    runpod: LocalRunPod, bucket: Bucket, broken: str, code: str, words: str
) -> None:
    images = [image_entry(bucket, 0), image_entry(bucket, 1)]
    if broken == "missing":
        images[1]["url"] = bucket.get_url("images/nowhere.jpg")
    elif broken == "corrupt":
        images[1] = image_entry(bucket, 1, data=b"\x00garbage, not an image" * 10)
    else:
        images[1]["sha256"] = hashlib.sha256(jpeg_bytes(99)).hexdigest()
    final = _finish(runpod, runpod.run(_job(bucket, images=images)))
    error = parse_error(final["error"])
    assert (final["status"], error.code) == ("FAILED", code)
    assert words in error.message and "Image 2 (img01.jpg)" in error.message


def test_an_image_that_does_not_decode_is_refused_before_training_naming_every_such_file(
    runpod: LocalRunPod, bucket: Bucket, fake_backend: FakeBackend
) -> None:
    # JPEG magic bytes and header, then cut off: AI Toolkit would skip it and train on the others.
    truncated = jpeg_bytes(5, size=128)[:300]
    images = [
        image_entry(bucket, 0),
        image_entry(bucket, 1, data=truncated),
        image_entry(bucket, 2, data=truncated),
    ]
    final = _finish(runpod, runpod.run(_job(bucket, images=images, callback=fake_backend.callback())))
    error = parse_error(final["error"])
    assert (final["status"], error.code) == ("FAILED", "bad_input")
    assert "2 of 3 images cannot be decoded" in error.message
    assert "img01.jpg" in error.message and "img02.jpg" in error.message and "img00.jpg" not in error.message
    assert not [e for e in fake_backend.of("progress") if e["stage"] == "training"]
    assert bucket.stored() == ["images/img00.jpg", "images/img01.jpg", "images/img02.jpg"]


def test_bad_input_fails_at_once_and_names_the_field(runpod: LocalRunPod, bucket: Bucket) -> None:
    job = _job(bucket)
    job["params"]["rank"] = 512
    final = _finish(runpod, runpod.run(job))
    error = parse_error(final["error"])
    assert error.code == "bad_input" and "params.rank" in error.message


# ------------------------------------------------------------------------------ the public API itself


@pytest.fixture
def webhook_sink() -> Iterator[dict[str, Any]]:
    sink: dict[str, Any] = {"bodies": [], "fail_first": 0}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            sink["bodies"].append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            failing = sink["fail_first"] > 0
            sink["fail_first"] -= 1
            self.send_response(500 if failing else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    sink["url"] = f"http://127.0.0.1:{server.server_address[1]}/hooks/runpod/secret-token"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield sink
    server.shutdown()
    server.server_close()


def test_the_webhook_carries_the_cloud_body_and_is_retried(
    runpod: LocalRunPod, bucket: Bucket, webhook_sink: dict[str, Any]
) -> None:
    webhook_sink["fail_first"] = 2
    job = _job(bucket)
    job_id = runpod.run(job, webhook=webhook_sink["url"])
    _finish(runpod, job_id)
    runpod.wait_until(job_id, lambda s: len(webhook_sink["bodies"]) == 3, timeout=10)
    body = webhook_sink["bodies"][-1]
    assert set(body) >= {"id", "status", "delayTime", "executionTime", "input", "output", "webhook"}
    assert (body["id"], body["status"], body["input"]) == (job_id, "COMPLETED", job)


def test_dropped_webhooks_are_never_sent(
    runpod: LocalRunPod, bucket: Bucket, webhook_sink: dict[str, Any]
) -> None:
    runpod.set_faults(drop_webhooks=True)
    try:
        job = _job(bucket, images=[{**image_entry(bucket, 0), "sha256": "0" * 64}])
        _finish(runpod, runpod.run(job, webhook=webhook_sink["url"]))
    finally:
        runpod.set_faults(drop_webhooks=False)
    assert webhook_sink["bodies"] == []


def test_the_public_api_wants_the_api_key(runpod: LocalRunPod) -> None:
    response = requests.get(f"{runpod.api_url}/health", headers={"Authorization": "Bearer wrong"}, timeout=5)
    assert response.status_code == 401


def test_the_fault_switches_answer_429_and_500(runpod: LocalRunPod) -> None:
    runpod.set_faults(rate_429=1.0)
    try:
        assert runpod.session.get(f"{runpod.api_url}/health", timeout=5).status_code == 429
        runpod.set_faults(rate_429=0.0, rate_5xx=1.0)
        assert runpod.session.get(f"{runpod.api_url}/health", timeout=5).status_code == 500
    finally:
        runpod.set_faults(rate_429=0.0, rate_5xx=0.0)


def test_an_unknown_job_is_404(runpod: LocalRunPod) -> None:
    assert runpod.status("no-such-job") is None
