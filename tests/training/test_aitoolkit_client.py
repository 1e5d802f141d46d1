"""The AI Toolkit UI client, against answers recorded from the real UI
(`fixtures/aitoolkit/PROVENANCE.md`)."""

from __future__ import annotations

import hashlib
import json
import struct
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
import responses

from runpod_worker.config import build_config
from runpod_worker.contract import GpuPreset, JobInput
from tests.runpod_worker.factories import job_input
from tests.training.payloads import aitoolkit_payload
from training.aitoolkit import (
    DOWNLOAD_CHUNK,
    AIToolkitClient,
    AIToolkitFileInvalid,
    AIToolkitJob,
    AIToolkitNameTaken,
    AIToolkitNotFound,
    AIToolkitRejected,
    AIToolkitUnauthorized,
    AIToolkitUnavailable,
    AIToolkitUncertain,
    ui_job_config,
)

URL = "https://pod-1-8675.proxy.runpod.test"
JOB_ID = "5a0f4f2e-9d1c-4b8a-8f3e-2c6d7e8f9a0b"


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def client(sleeps: list[float]) -> AIToolkitClient:
    return AIToolkitClient(
        base_url=URL, token="pod-secret", timeout_seconds=3.0, max_attempts=3, sleep=sleeps.append
    )


def job_payload(state: str, **overrides: object) -> dict[str, object]:
    payload = aitoolkit_payload(f"get_api_jobs_200_{state}")
    payload.update(id=JOB_ID, **overrides)
    return payload


def safetensors_bytes(tensor_bytes: int = 16) -> bytes:
    header = json.dumps(
        {"a.lora_A.weight": {"dtype": "F32", "shape": [4], "data_offsets": [0, tensor_bytes]}}
    ).encode()
    return struct.pack("<Q", len(header)) + header + b"\0" * tensor_bytes


# ---------------------------------------------------------------------------------------------- jobs


@responses.activate
def test_job_get_reads_a_running_row_into_a_typed_job(client: AIToolkitClient) -> None:
    responses.get(f"{URL}/api/jobs", json=job_payload("running"))

    job = client.job_get(JOB_ID)

    assert (job.id, job.status, job.gpu_ids) == (JOB_ID, "running", "0")
    assert job.step > 0 and job.info and job.is_active
    assert job.job_config["config"]["process"][0]["type"] == "diffusion_trainer"
    assert responses.calls[0].request.params == {"id": JOB_ID}


@responses.activate
def test_total_steps_fall_back_to_the_configs_steps_as_the_ui_shows_them(client: AIToolkitClient) -> None:
    responses.get(f"{URL}/api/jobs", json=job_payload("completed"))

    job = client.job_get(JOB_ID)

    assert job.total_steps is None
    assert job.steps_total == job.job_config["config"]["process"][0]["train"]["steps"] == job.step


@responses.activate
def test_an_unknown_job_answering_null_is_not_found(client: AIToolkitClient) -> None:
    responses.get(f"{URL}/api/jobs", body="null", content_type="application/json")

    with pytest.raises(AIToolkitNotFound):
        client.job_get(JOB_ID)


@responses.activate
def test_a_page_instead_of_json_is_a_transient_failure(client: AIToolkitClient) -> None:
    responses.get(f"{URL}/api/jobs", body="<html>pod starting</html>", content_type="text/html")

    with pytest.raises(AIToolkitUnavailable, match="not JSON"):
        client.job_get(JOB_ID)


@responses.activate
def test_every_call_sends_the_pods_token_as_a_bearer_header(client: AIToolkitClient) -> None:
    responses.get(f"{URL}/api/auth", json=aitoolkit_payload("get_api_auth_200"))

    client.check()

    assert responses.calls[0].request.headers["Authorization"] == "Bearer pod-secret"


@responses.activate
def test_a_refused_token_is_unauthorized_and_not_retried(client: AIToolkitClient) -> None:
    responses.get(f"{URL}/api/auth", json=aitoolkit_payload("get_api_auth_401"), status=401)

    with pytest.raises(AIToolkitUnauthorized, match="AI_TOOLKIT_AUTH"):
        client.check()

    assert len(responses.calls) == 1


@responses.activate
def test_job_create_posts_name_gpu_and_the_config_object(client: AIToolkitClient) -> None:
    created = aitoolkit_payload("post_api_jobs_200_stopped")
    config = json.loads(str(created["job_config"]))
    responses.post(
        f"{URL}/api/jobs",
        json=created,
        match=[
            responses.matchers.json_params_matcher(
                {"name": created["name"], "gpu_ids": "0", "job_config": config}
            )
        ],
    )

    job = client.job_create(name=str(created["name"]), job_config=config)

    assert (job.status, job.queue_position) == ("stopped", created["queue_position"])


@responses.activate
def test_a_taken_job_name_is_refused_as_name_taken(client: AIToolkitClient) -> None:
    responses.post(f"{URL}/api/jobs", json=aitoolkit_payload("post_api_jobs_409"), status=409)

    with pytest.raises(AIToolkitNameTaken, match="Job name already exists"):
        client.job_create(name="alice_v1", job_config={})


@responses.activate
def test_job_create_is_not_repeated_when_its_answer_is_lost(client: AIToolkitClient) -> None:
    responses.post(f"{URL}/api/jobs", body="Bad Gateway", status=502)

    with pytest.raises(AIToolkitUncertain):
        client.job_create(name="alice_v1", job_config={})

    assert len(responses.calls) == 1


@responses.activate
def test_job_create_is_not_repeated_after_a_read_timeout(client: AIToolkitClient) -> None:
    responses.post(f"{URL}/api/jobs", body=requests.ReadTimeout("slow pod"))

    with pytest.raises(AIToolkitUncertain, match="read the job"):
        client.job_create(name="alice_v1", job_config={})

    assert len(responses.calls) == 1


@responses.activate
def test_job_find_picks_the_job_of_that_name_from_the_list(client: AIToolkitClient) -> None:
    listing = aitoolkit_payload("get_api_jobs_200")
    name = listing["jobs"][0]["name"]
    responses.get(f"{URL}/api/jobs", json=listing)

    assert client.job_find(name).name == name  # type: ignore[union-attr]
    assert client.job_find("nobody") is None


@responses.activate
def test_job_start_queues_the_job_then_starts_its_gpu_queue(client: AIToolkitClient) -> None:
    job = AIToolkitJob.from_payload(job_payload("completed", status="stopped"))
    responses.get(
        f"{URL}/api/jobs/{JOB_ID}/start", json=aitoolkit_payload("get_api_jobs_id_start_200_stopped")
    )
    responses.get(f"{URL}/api/queue/0/start", json=aitoolkit_payload("get_api_queue_gpu_ids_start_200"))

    client.job_start(job)

    assert [c.request.url for c in responses.calls] == [
        f"{URL}/api/jobs/{JOB_ID}/start",
        f"{URL}/api/queue/0/start",
    ]


@responses.activate
def test_job_start_is_not_repeated_after_an_uncertain_failure(client: AIToolkitClient) -> None:
    job = AIToolkitJob.from_payload(job_payload("completed", status="stopped"))
    responses.get(f"{URL}/api/jobs/{JOB_ID}/start", body=requests.ReadTimeout("slow pod"))

    with pytest.raises(AIToolkitUncertain):
        client.job_start(job)

    assert len(responses.calls) == 1


@responses.activate
def test_job_stop_is_sent_once_even_when_its_answer_is_lost(client: AIToolkitClient) -> None:
    responses.get(f"{URL}/api/jobs/{JOB_ID}/stop", status=503)

    with pytest.raises(AIToolkitUncertain):
        client.job_stop(JOB_ID)

    assert len(responses.calls) == 1


@responses.activate
def test_mark_stopped_is_retried_like_a_read(client: AIToolkitClient, sleeps: list[float]) -> None:
    responses.get(f"{URL}/api/jobs/{JOB_ID}/mark_stopped", status=502)
    responses.get(
        f"{URL}/api/jobs/{JOB_ID}/mark_stopped",
        json=aitoolkit_payload("get_api_jobs_id_mark_stopped_200_stopped"),
    )

    client.job_mark_stopped(JOB_ID)

    assert len(responses.calls) == 2 and len(sleeps) == 1


@responses.activate
def test_reads_give_up_after_the_last_attempt_as_unavailable(
    client: AIToolkitClient, sleeps: list[float]
) -> None:
    responses.get(f"{URL}/api/jobs", body="UI server unavailable", status=502)

    with pytest.raises(AIToolkitUnavailable, match="UI server unavailable"):
        client.job_get(JOB_ID)

    assert len(responses.calls) == 3 and len(sleeps) == 2


@responses.activate
def test_job_delete_of_a_job_the_pod_no_longer_has_is_false(client: AIToolkitClient) -> None:
    responses.get(f"{URL}/api/jobs/{JOB_ID}/delete", json={"error": "Job not found"}, status=404)

    assert client.job_delete(JOB_ID) is False


@responses.activate
def test_a_refusal_the_client_cannot_fix_is_permanent(client: AIToolkitClient) -> None:
    responses.post(
        f"{URL}/api/datasets/listImages",
        json=aitoolkit_payload("post_api_datasets_listimages_404"),
        status=404,
    )

    with pytest.raises(AIToolkitRejected, match="not found"):
        client.dataset_images("missing")


# ------------------------------------------------------------------------------------------ datasets


@responses.activate
def test_dataset_create_lists_datasets_first_so_the_folder_above_it_exists(client: AIToolkitClient) -> None:
    responses.get(f"{URL}/api/datasets/list", json=aitoolkit_payload("get_api_datasets_list_200"))
    responses.post(f"{URL}/api/datasets/create", json=aitoolkit_payload("post_api_datasets_create_200"))

    name = client.dataset_create("Proof Set")

    assert name == aitoolkit_payload("post_api_datasets_create_200")["name"]
    assert [c.request.method for c in responses.calls] == ["GET", "POST"]


@responses.activate
def test_each_file_is_uploaded_alone_with_the_dataset_name(client: AIToolkitClient) -> None:
    responses.post(
        f"{URL}/api/datasets/upload", json={"message": "Files uploaded successfully", "files": ["a.jpg"]}
    )
    responses.post(
        f"{URL}/api/datasets/upload", json={"message": "Files uploaded successfully", "files": ["a.txt"]}
    )
    responses.post(
        f"{URL}/api/datasets/listImages", json={"root": "/app/ai-toolkit/datasets/set/", "images": ["a.jpg"]}
    )

    listing = client.dataset_upload_all("set", [("a.jpg", b"\xff\xd8jpeg"), ("a.txt", b"a photo of ohwx")])

    bodies = [c.request.body for c in responses.calls[:2]]
    assert all(b'name="datasetName"\r\n\r\nset' in body for body in bodies)  # type: ignore[operator]
    assert b'filename="a.txt"' in bodies[1] and b"a photo of ohwx" in bodies[1]  # type: ignore[operator]
    assert (listing.folder, listing.images) == ("/app/ai-toolkit/datasets/set", ["a.jpg"])


@responses.activate
def test_a_file_name_the_ui_would_change_is_refused(client: AIToolkitClient) -> None:
    responses.post(
        f"{URL}/api/datasets/upload", json={"message": "Files uploaded successfully", "files": ["a_b.jpg"]}
    )

    with pytest.raises(AIToolkitRejected, match=r"stored a b\.jpg as a_b\.jpg"):
        client.dataset_upload_all("set", [("a b.jpg", b"\xff\xd8")])


# ------------------------------------------------------------------------------- progress and outputs


@responses.activate
def test_the_loss_series_is_asked_for_by_the_key_ai_toolkit_logs(client: AIToolkitClient) -> None:
    recorded = aitoolkit_payload("get_api_jobs_id_loss_key_loss_loss_limit_2000_200")
    responses.get(f"{URL}/api/jobs/{JOB_ID}/loss", json=recorded)

    series = client.job_loss(JOB_ID, since_step=0)

    assert responses.calls[0].request.params == {"key": "loss/loss", "limit": "2000", "since_step": "0"}
    assert series.keys == ["learning_rate", "loss/loss"]
    assert [p.step for p in series.points] == [p["step"] for p in recorded["points"]]
    assert all(p.value is not None for p in series.points)


@responses.activate
def test_files_and_samples_list_what_the_pod_holds(client: AIToolkitClient) -> None:
    responses.get(f"{URL}/api/jobs/{JOB_ID}/files", json=aitoolkit_payload("get_api_jobs_id_files_200"))
    responses.get(f"{URL}/api/jobs/{JOB_ID}/samples", json=aitoolkit_payload("get_api_jobs_id_samples_200"))

    files, samples = client.job_files(JOB_ID), client.job_samples(JOB_ID)

    assert files[-1].name == "optimizer.pt" and files[0].name.endswith(".safetensors")
    assert all(f.size > 0 for f in files)
    assert samples and all(s.endswith(".jpg") for s in samples)


def test_a_files_url_encodes_its_folder_and_name_as_the_ui_does(client: AIToolkitClient) -> None:
    url = client.file_url("/app/ai-toolkit/output/alice v1/alice v1.safetensors")

    assert url == f"{URL}/api/files/%2Fapp%2Fai-toolkit%2Foutput%2Falice%20v1/alice%20v1.safetensors"


class FlakyFiles:
    """A file server that breaks its first answer half way, then honours a Range request."""

    def __init__(self, content: bytes) -> None:
        self.content = content
        self.ranges: list[str | None] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                outer.ranges.append(self.headers.get("Range"))
                if len(outer.ranges) == 1:
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(outer.content)))
                    self.end_headers()
                    self.wfile.write(outer.content[: len(outer.content) // 2])
                    self.wfile.flush()
                    self.connection.close()
                    return
                start = int(self.headers["Range"].split("=")[1].rstrip("-"))
                self.send_response(206)
                self.send_header(
                    "Content-Range", f"bytes {start}-{len(outer.content) - 1}/{len(outer.content)}"
                )
                self.send_header("Content-Length", str(len(outer.content) - start))
                self.end_headers()
                self.wfile.write(outer.content[start:])

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def flaky() -> Iterator[FlakyFiles]:
    server = FlakyFiles(safetensors_bytes(3 * DOWNLOAD_CHUNK))
    yield server
    server.server.shutdown()


def test_a_broken_download_resumes_where_it_stopped(flaky: FlakyFiles, tmp_path: Path) -> None:
    client = AIToolkitClient(base_url=flaky.url, token="t", sleep=lambda s: None)

    got = client.file_download("/app/ai-toolkit/output/a/a.safetensors", tmp_path / "a.safetensors")

    # The first answer broke half way through its second chunk: the client asks for what follows the first.
    assert flaky.ranges == [None, f"bytes={DOWNLOAD_CHUNK}-"]
    assert (tmp_path / "a.safetensors").read_bytes() == flaky.content and got.size == len(flaky.content)


@responses.activate
def test_the_final_lora_is_downloaded_not_a_checkpoint_and_verified(
    client: AIToolkitClient, tmp_path: Path
) -> None:
    job = AIToolkitJob.from_payload(job_payload("completed"))
    content = safetensors_bytes()
    responses.get(
        f"{URL}/api/jobs/{JOB_ID}/files",
        json={
            "files": [
                {"path": f"/app/ai-toolkit/output/{job.name}/{job.name}.safetensors", "size": len(content)},
                {"path": f"/app/ai-toolkit/output/{job.name}/{job.name}_000000010.safetensors", "size": 9},
            ]
        },
    )
    responses.get(client.file_url(f"/app/ai-toolkit/output/{job.name}/{job.name}.safetensors"), body=content)

    lora = client.lora_download(job, tmp_path / "lora.safetensors")

    assert lora.size == len(content) and (tmp_path / "lora.safetensors").read_bytes() == content
    assert lora.sha256 == hashlib.sha256(content).hexdigest()


@responses.activate
def test_a_lora_that_is_not_whole_is_refused_and_not_kept(client: AIToolkitClient, tmp_path: Path) -> None:
    job = AIToolkitJob.from_payload(job_payload("completed"))
    truncated = safetensors_bytes()[:-4]
    path = f"/app/ai-toolkit/output/{job.name}/{job.name}.safetensors"
    responses.get(f"{URL}/api/jobs/{JOB_ID}/files", json={"files": [{"path": path, "size": len(truncated)}]})
    responses.get(client.file_url(path), body=truncated)

    downloads = tmp_path / "downloads"
    downloads.mkdir()

    with pytest.raises(AIToolkitFileInvalid, match="not a complete safetensors file"):
        client.lora_download(job, downloads / "lora.safetensors")

    assert list(downloads.iterdir()) == []


@responses.activate
def test_a_download_shorter_than_the_listed_size_is_refused(client: AIToolkitClient, tmp_path: Path) -> None:
    content = safetensors_bytes()
    path = "/app/ai-toolkit/output/a/a.safetensors"
    responses.get(client.file_url(path), body=content)

    with pytest.raises(AIToolkitFileInvalid, match="received"):
        client.file_download(path, tmp_path / "a.safetensors", expected_size=len(content) + 1)

    assert not (tmp_path / "a.safetensors").exists()


@responses.activate
def test_a_job_without_its_final_lora_is_not_found(client: AIToolkitClient, tmp_path: Path) -> None:
    job = AIToolkitJob.from_payload(job_payload("completed"))
    responses.get(f"{URL}/api/jobs/{JOB_ID}/files", json={"files": []})

    with pytest.raises(AIToolkitNotFound, match=f"{job.name}.safetensors"):
        client.lora_download(job, tmp_path / "lora.safetensors")


@responses.activate
def test_deleting_a_file_already_gone_is_false(client: AIToolkitClient) -> None:
    responses.post(f"{URL}/api/files/delete", body="File not found", status=404)

    assert client.file_delete("/app/ai-toolkit/output/a/a.safetensors") is False


# ----------------------------------------------------------------------------------------- the config


def test_the_studios_config_is_made_ui_ready() -> None:
    job = JobInput.from_dict(job_input())
    serverless = build_config(
        job, preset=GpuPreset.LOW_VRAM_24GB, dataset_dir=Path("/data"), training_folder=Path("/out")
    )

    ready = ui_job_config(
        serverless,
        name="alice_v1_pod",
        training_folder="/app/ai-toolkit/output",
        dataset_folder="/app/ds/set",
    )

    process = ready["config"]["process"][0]
    assert ready["config"]["name"] == "alice_v1_pod"
    assert (process["type"], process["training_folder"]) == ("diffusion_trainer", "/app/ai-toolkit/output")
    assert [d["folder_path"] for d in process["datasets"]] == ["/app/ds/set"]
    assert process["logging"]["use_ui_logger"] is True and process["performance_log_every"] == 10
    assert serverless["config"]["process"][0]["type"] == "sd_trainer"  # the original is left alone
