"""The worker's smoke: the real AI Toolkit trains a tiny model through the unmodified handler.

    AI_TOOLKIT_DIR=/path/to/ai-toolkit python -m runpod_worker.smoke [--model DIR] [--steps 100]

Run with AI Toolkit's Python (the image's one environment). It builds a tiny random-weight base model
(`runpod_worker.tiny_models`, no download) unless `--model` names one, serves a few JPEGs and an upload
target from a local HTTP server, starts the local RunPod stand-in (`runpod_worker.local_runpod`, which runs
`python -m runpod_worker.handler` in production mode through the runpod SDK) and submits one job. It
fails loudly unless the job COMPLETED, the trainer's progress was parsed and called back up to the last
step, and the uploaded LoRA is a safetensors file of `transformer.*.lora_A/B.weight` tensors whose size
and sha256 are what the job output says. Then it prints its figures.

With `--save-every` / `--sample-every` it also gives the job an upload target for every checkpoint,
optimizer state and sample the run will make (contract.checkpoint_steps / sample_steps) and fails unless
each arrived, was reported in a progress callback with the sha256 of what arrived, and the loss series
from AI Toolkit's loss_log.db came with the callbacks. With `--resume-proof` (needs --save-every) the
stand-in kills the worker once training passes `--kill-after` (default: save_every + 10); RunPod runs the
job again, this script answers the new delivery's "started" with the last checkpoint reported (as the
studio does), and it fails unless the second delivery resumed at that step (its first parsed progress is
not below it: AI Toolkit's "resume restarts at 0" would show here), trained at most one save interval
twice, and the final LoRA's metadata says the full step count. The last `--uncaptioned` images (default 1)
are sent without a caption: the worker captions them with AI Toolkit's own Qwen3-VL captioner, here on a tiny
random-weight Qwen3-VL built like the base model (or `--captioner DIR`), and the smoke fails unless each one's
caption came back in the output, `[trigger]` first and text after it, and no other image's did. The real
AI Toolkit at the pinned commit passes all of these (runpod_worker/README.md, "The smoke"); the simulated
trainer passes the same scenario in tests/runpod_worker/test_learning_on_local_runpod.py.

On a machine without an NVIDIA GPU it puts `runpod_worker/image/cpu_only` on the trainer's PYTHONPATH
(see its docstring: an import-time CUDA query in an AI Toolkit module FLUX.1 does not use).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

from runpod_worker.contract import (
    CONTRACT_VERSION,
    BaseModel,
    JobInput,
    JobOutput,
    LoraArtifact,
    Stage,
    checkpoint_steps,
    sample_steps,
)
from runpod_worker.tiny_models.flux import SCHNELL_ADAPTER_DIR
from runpod_worker.trainer import is_simulator
from runpod_worker.weights import CAPTIONER_ENV

REPO_ROOT = Path(__file__).resolve().parent.parent
CPU_ONLY = Path(__file__).resolve().parent / "image" / "cpu_only"
# The smallest run the contract accepts (params.steps >= 100).
DEFAULT_STEPS = 100
MODEL_ENV = {
    "flux-dev": "FLUX_DEV_PATH",
    "flux-schnell": "FLUX_SCHNELL_PATH",
    "qwen-image": "QWEN_IMAGE_PATH",
    "wan22": "WAN22_PATH",
    "wan22-5b": "WAN22_5B_PATH",
    "z-image": "Z_IMAGE_PATH",
}


# How each model's LoRA names its tensors: FLUX.1 in diffusers' PEFT form; Qwen-Image, Z-Image and Wan 2.2
# as ComfyUI loads them (qwen_image.py:418-423, z_image.py:467-472; wan21.py's convert_to_original).
LORA_PREFIX = {"flux-dev": "transformer.", "flux-schnell": "transformer."}
DEFAULT_LORA_PREFIX = "diffusion_model."
CAPTIONER_MODEL = "qwen3-vl-captioner"  # runpod_worker.tiny_models


class SmokeFailed(Exception):
    pass


# ----------------------------------------------------------------------------- the local HTTP side


@dataclass
class LocalSide:
    """Images to GET, one PUT target for the LoRA, and the backend's worker callback."""

    images: dict[str, bytes]
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    uploads: dict[str, bytes] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    base_url: str = ""
    # Answer a second delivery's "started" with the last checkpoint an earlier delivery reported.
    resume: bool = False

    def answer(self, event: dict[str, Any]) -> dict[str, Any]:
        if not self.resume or event.get("event") != "started":
            return {"action": "continue"}
        earlier = [
            c
            for e in self.events
            if e.get("delivery_id") != event.get("delivery_id")
            for c in e.get("checkpoints", [])
        ]
        if not earlier:
            return {"action": "continue"}
        last = max(earlier, key=lambda c: c["step"])
        key = f"checkpoints/{last['step']}"
        resume = {
            "step": last["step"],
            "checkpoint_url": f"{self.base_url}/uploaded/{key}.safetensors",
            "checkpoint_sha256": last["sha256"],
        }
        if last.get("optimizer_sha256"):
            resume.update(
                optimizer_url=f"{self.base_url}/uploaded/{key}.optimizer.pt",
                optimizer_sha256=last["optimizer_sha256"],
            )
        return {"action": "continue", "resume": resume}

    def handler(self) -> type[BaseHTTPRequestHandler]:
        side = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                if self.path.startswith("/uploaded/"):
                    data = side.uploads.get(self.path.removeprefix("/uploaded/"))
                else:
                    data = side.images.get(self.path.removeprefix("/images/"))
                self._answer(200 if data is not None else 404, data or b"", "application/octet-stream")

            def do_PUT(self) -> None:
                side.uploads[self.path.removeprefix("/upload/")] = self._body()
                self._answer(200, b"", "text/plain")

            def do_POST(self) -> None:
                if self.headers.get("Authorization") != f"Bearer {side.token}":
                    self._answer(401, b"{}", "application/json")
                    return
                event = json.loads(self._body())
                answer = side.answer(event)
                side.events.append(event)
                self._answer(200, json.dumps(answer).encode(), "application/json")

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _answer(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler


@contextmanager
def serving(side: LocalSide) -> Iterator[LocalSide]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), side.handler())
    side.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield side
    finally:
        server.shutdown()
        server.server_close()


def smoke_images(count: int, size: int) -> dict[str, bytes]:
    """Noise JPEGs: AI Toolkit never upscales, so small images train at their own size, quickly."""
    from PIL import Image

    images = {}
    for index in range(count):
        buffer = io.BytesIO()
        Image.effect_noise((size, size), 32 + 8 * index).convert("RGB").save(buffer, "JPEG", quality=90)
        images[f"img{index:02d}.jpg"] = buffer.getvalue()
    return images


def job_input(side: LocalSide, args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {"steps": args.steps, "rank": args.rank, "resolutions": [512], "seed": 42,
                              "save_every": args.save_every or args.steps}  # fmt: skip
    if args.sample_every:
        params.update(sample_every=args.sample_every,
                      sample_prompts=["[trigger] smiling, studio light", "[trigger], full body"])  # fmt: skip
    document: dict[str, Any] = {
        "contract_version": CONTRACT_VERSION,
        "run_id": str(uuid.uuid4()),
        "trigger_word": "ohwx",
        "base_model": args.base_model,
        # Neither 8-bit quantisation nor 8-bit Adam is what a CPU smoke proves; the 80gb preset has neither.
        "gpu_preset": args.preset,
        "params": params,
        "images": [
            {
                "url": f"{side.base_url}/images/{name}",
                "sha256": hashlib.sha256(data).hexdigest(),
                "filename": name,
                "caption": None if index >= len(side.images) - args.uncaptioned else "[trigger], a photo",
            }
            for index, (name, data) in enumerate(side.images.items())
        ],
        "output": {
            "lora_name": "smoke_lora",
            "lora_upload_url": f"{side.base_url}/upload/smoke_lora.safetensors",
        },
        "callback": {"url": f"{side.base_url}/callback", "token": side.token},
    }
    if args.base_model in BaseModel.SPLIT:
        low_noise = f"{side.base_url}/upload/smoke_lora_low_noise.safetensors"
        document["output"]["lora_low_noise_upload_url"] = low_noise
    spec = JobInput.from_dict(document)
    upload = f"{side.base_url}/upload"
    document["output"]["checkpoints"] = [
        {"step": step, "upload_url": f"{upload}/checkpoints/{step}.safetensors",
         "optimizer_upload_url": f"{upload}/checkpoints/{step}.optimizer.pt"}
        for step in checkpoint_steps(spec.params)
    ]  # fmt: skip
    document["output"]["samples"] = [
        {"step": step, "prompt_index": index, "upload_url": f"{upload}/samples/{step}_{index}.jpg"}
        for step in sample_steps(spec.params)
        for index in range(len(spec.params.sample_prompts))
    ]
    return document


# ----------------------------------------------------------------------------- the RunPod stand-in


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def stand_in(
    workdir: Path, env: dict[str, str], faults: list[str] | None = None
) -> Iterator[tuple[str, str, Path]]:
    """The local RunPod stand-in with one worker; yields (endpoint URL, API key, worker log folder)."""
    port, key, logs = free_port(), uuid.uuid4().hex, workdir / "runpod-logs"
    command = [
        sys.executable,
        "-u",
        "-m",
        "runpod_worker.local_runpod",
        "--port",
        str(port),
        "--api-key",
        key,
        "--endpoint-id",
        "smoke",
        "--workers",
        "1",
        "--log-dir",
        str(logs),
    ]
    for fault in faults or []:
        command += ["--fault", fault]
    with open(workdir / "local_runpod.log", "wb") as log:
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        url = f"http://127.0.0.1:{port}/v2/smoke"
        _wait_healthy(url, key, process)
        yield url, key, logs
    finally:
        with_signal(process, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with_signal(process, signal.SIGKILL)
            process.wait()


def with_signal(process: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signum)


def _wait_healthy(url: str, key: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SmokeFailed(f"the RunPod stand-in exited with code {process.returncode} at start")
        try:
            if requests.get(f"{url}/health", headers=_auth(key), timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise SmokeFailed("the RunPod stand-in did not answer /health within 60 s")


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def run_job(url: str, key: str, document: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    answer = requests.post(f"{url}/run", json={"input": document}, headers=_auth(key), timeout=10)
    answer.raise_for_status()
    job_id = answer.json()["id"]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = requests.get(f"{url}/status/{job_id}", headers=_auth(key), timeout=10).json()
        if status["status"] in ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"):
            return dict(status)
        time.sleep(1)
    raise SmokeFailed(f"the job did not finish within {timeout_s:.0f} s")


# ----------------------------------------------------------------------------- verdict and figures


def lora_tensors(data: bytes) -> tuple[dict[str, Any], dict[str, str]]:
    """The tensor index and metadata of a safetensors file, read from its header (no torch needed)."""
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    metadata = header.pop("__metadata__", {}) or {}
    return header, metadata


def verify(
    status: dict[str, Any], side: LocalSide, steps: int, base_model: str = "flux-dev"
) -> dict[str, Any]:
    if status["status"] != "COMPLETED":
        raise SmokeFailed(f"the job ended {status['status']}: {status.get('error')}")
    output = JobOutput.from_dict(status["output"])
    training = [e for e in side.events if e.get("event") == "progress" and e.get("stage") == Stage.TRAINING]
    # Progress is throttled (WORKER_PROGRESS_INTERVAL_S), so not every step is called back; those that are
    # must be real steps of this run, in order within each delivery: a delivery that resumes after a lost
    # one starts again at the checkpoint, below where the lost one got to.
    seen: dict[str, list[int]] = {}
    for event in training:
        seen.setdefault(str(event.get("delivery_id")), []).append(int(event.get("step") or 0))
    every = [step for delivery in seen.values() for step in delivery]
    if not every or not 0 < max(every) <= steps or any(s != sorted(s) for s in seen.values()):
        raise SmokeFailed(
            f"the trainer's progress was not parsed (training callbacks saw steps {list(seen.values())})"
        )
    if output.steps != steps:
        raise SmokeFailed(f"the output says {output.steps} steps, not {steps}")
    files = [("smoke_lora.safetensors", output.lora)]
    if base_model in BaseModel.SPLIT:
        if output.lora_low_noise is None:
            raise SmokeFailed("the output names no low-noise LoRA")
        files.append(("smoke_lora_low_noise.safetensors", output.lora_low_noise))
    figures: dict[str, Any] = {"steps": output.steps, "train_s": output.timings.train_s, "lora_bytes": 0,
                               "tensors": 0, "progress_callbacks": len(training),
                               "trainer_version": output.trainer_version}  # fmt: skip
    for upload, artifact in files:
        prefix = LORA_PREFIX.get(base_model, DEFAULT_LORA_PREFIX)
        data, metadata, tensors = verify_lora(side, upload, artifact, prefix)
        if steps_in(metadata) != steps:
            raise SmokeFailed(f"{upload}'s training_info says step {steps_in(metadata)}, not {steps}")
        figures["lora_bytes"] += len(data)
        figures["tensors"] += tensors
        figures["lora_metadata_keys"] = sorted(metadata)
    return figures


def verify_lora(
    side: LocalSide, upload: str, artifact: LoraArtifact, prefix: str
) -> tuple[bytes, dict[str, str], int]:
    """The upload named `upload` is the file `artifact` describes, of `<prefix>*.lora_A/B.weight` tensors."""
    data = side.uploads.get(upload)
    if data is None:
        raise SmokeFailed(f"no LoRA arrived at the upload target {upload}")
    digest = hashlib.sha256(data).hexdigest()
    if (len(data), digest) != (artifact.bytes, artifact.sha256):
        raise SmokeFailed(f"the upload ({len(data)} B, {digest}) is not what the output says ({artifact})")
    tensors, metadata = lora_tensors(data)
    lora = [n for n in tensors if n.startswith(prefix) and n.endswith((".lora_A.weight", ".lora_B.weight"))]
    if not lora or len(lora) != len(tensors):
        raise SmokeFailed(f"the LoRA's tensors are not all {prefix}*.lora_A/B.weight: {sorted(tensors)[:5]}")
    return data, metadata, len(lora)


def steps_in(metadata: dict[str, str]) -> int | None:
    try:
        return int(json.loads(metadata["training_info"])["step"])
    except (KeyError, ValueError, TypeError):
        return None


def reported(side: LocalSide, key: str, delivery: str | None = None) -> list[dict[str, Any]]:
    events = [e for e in side.events if e.get("event") == "progress"]
    return [i for e in events if delivery is None or e.get("delivery_id") == delivery for i in e.get(key, [])]


def verify_artifacts(status: dict[str, Any], side: LocalSide, document: dict[str, Any]) -> dict[str, Any]:
    """Every checkpoint (with optimizer state) and sample the job had a target for arrived, each reported
    in a progress callback with the sha256 of what arrived, and the loss series came from loss_log.db."""
    spec = JobInput.from_dict(document)
    # After a resume too, every one is expected: the lost delivery made those up to where it was killed.
    want_checkpoints = checkpoint_steps(spec.params)
    got = {c["step"]: c for c in reported(side, "checkpoints")}
    for step in want_checkpoints:
        data = side.uploads.get(f"checkpoints/{step}.safetensors")
        optimizer = side.uploads.get(f"checkpoints/{step}.optimizer.pt")
        if data is None or optimizer is None or step not in got:
            raise SmokeFailed(
                f"checkpoint {step}: uploaded {data is not None}, optimizer state uploaded "
                f"{optimizer is not None}, reported {step in got}"
            )
        if got[step]["sha256"] != hashlib.sha256(data).hexdigest():
            raise SmokeFailed(f"checkpoint {step} arrived with another sha256 than reported")
        if got[step].get("optimizer_sha256") != hashlib.sha256(optimizer).hexdigest():
            raise SmokeFailed(f"the optimizer state of checkpoint {step} is not what was reported")
        if steps_in(lora_tensors(data)[1]) != step:
            raise SmokeFailed(f"checkpoint {step}'s training_info says {steps_in(lora_tensors(data)[1])}")
    prompts = len(spec.params.sample_prompts)
    want_samples = [(s, i) for s in sample_steps(spec.params) for i in range(prompts)]
    samples = {(s["step"], s["prompt_index"]): s for s in reported(side, "samples")}
    for step, index in want_samples:
        data = side.uploads.get(f"samples/{step}_{index}.jpg")
        if data is None or (step, index) not in samples:
            raise SmokeFailed(
                f"sample {step}/{index}: uploaded {data is not None}, reported {(step, index) in samples}"
            )
        if (
            samples[(step, index)]["sha256"] != hashlib.sha256(data).hexdigest()
            or data[:3] != b"\xff\xd8\xff"
        ):
            raise SmokeFailed(f"sample {step}/{index} is not the JPEG that was reported")
    loss = [
        p
        for e in side.events
        if e.get("event") == "progress"
        for p in (e.get("loss_series") or {}).get("loss", [])
    ]
    if not loss or not all(0 < step < spec.params.steps for step, _ in loss):
        raise SmokeFailed(
            f"no loss series from loss_log.db in the callbacks, or steps out of range: {loss[:5]}"
        )
    return {"checkpoints": len(want_checkpoints), "samples": len(want_samples), "loss_points": len(loss)}


def verify_captions(status: dict[str, Any], document: dict[str, Any]) -> dict[str, Any]:
    """Each image sent without a caption came back captioned by the captioner, `[trigger]` first and some
    text after it, and no image sent with one did."""
    output = JobOutput.from_dict(status["output"])
    wanted = sorted(image["filename"] for image in document["images"] if image["caption"] is None)
    made = {caption.filename: caption.caption for caption in output.captions}
    if sorted(made) != wanted or output.caption_error:
        raise SmokeFailed(f"captions came back for {sorted(made)}, not {wanted} ({output.caption_error})")
    for name, caption in made.items():
        if not caption.startswith("[trigger], ") or not caption.removeprefix("[trigger], ").strip():
            raise SmokeFailed(f"{name}'s caption is not `[trigger], ` and text: {caption!r}")
    return {"captions": len(made), "caption_s": output.timings.caption_s, "captioner": output.captioner}


def verify_resume(status: dict[str, Any], side: LocalSide, document: dict[str, Any]) -> dict[str, Any]:
    """The second delivery resumed at the last checkpoint the first one reported, and did not train from 0
    (its first parsed progress is at or after that step: the bar starts at step_num,
    BaseSDTrainProcess.py:2483-2490), so at most one save interval was trained twice."""
    spec = JobInput.from_dict(document)
    output = JobOutput.from_dict(status["output"])
    started = [e["delivery_id"] for e in side.events if e.get("event") == "started"]
    if len(started) < 2 or output.resumed_from_step is None:
        raise SmokeFailed(
            f"the job was not run again with a resume ({len(started)} deliveries started, "
            f"resumed_from_step {output.resumed_from_step})"
        )
    first, last = started[0], started[-1]
    lost = [c["step"] for c in reported(side, "checkpoints", first)]
    if not lost or output.resumed_from_step != max(lost):
        raise SmokeFailed(f"resumed from {output.resumed_from_step}, not the last reported checkpoint {lost}")

    def trained(delivery: str) -> list[int]:
        return [
            int(e.get("step") or 0)
            for e in side.events
            if e.get("event") == "progress"
            and e.get("delivery_id") == delivery
            and e.get("stage") == Stage.TRAINING
        ]

    before, after = trained(first), trained(last)
    if not after or min(after) < output.resumed_from_step:
        raise SmokeFailed(
            f"the resumed delivery's progress began at {min(after or [0])}, before step "
            f"{output.resumed_from_step}: AI Toolkit restarted instead of resuming"
        )
    total = max(before) + spec.params.steps - output.resumed_from_step
    if total > spec.params.steps + spec.params.save_every:
        raise SmokeFailed(f"{total} steps trained in all, more than one save interval lost")
    return {"resumed_from_step": output.resumed_from_step, "steps_trained_in_all": total}


def build_model(base_model: str, dest: Path) -> None:
    """`base_model`'s tiny model in `dest`; "all": every one, in `dest/<base model>`."""
    subprocess.run([sys.executable, "-m", "runpod_worker.tiny_models", base_model, str(dest)], cwd=REPO_ROOT,
                   check=True, timeout=1800)  # fmt: skip


def worker_env(
    args: argparse.Namespace, model: Path, workdir: Path, captioner: Path | None = None
) -> dict[str, str]:
    env = {**os.environ, "AI_TOOLKIT_DIR": str(args.ai_toolkit), MODEL_ENV[args.base_model]: str(model),
           "WORKER_WORKSPACE": str(workdir / "jobs"), "HF_HUB_OFFLINE": "1",
           # The worker may seed the trainer's Hugging Face cache (Wan 2.2's VAE): never the user's own.
           "HF_HOME": str(workdir / "hf-home")}  # fmt: skip
    if captioner is not None:
        env[CAPTIONER_ENV] = str(captioner)
    if args.base_model == BaseModel.FLUX_SCHNELL:
        # The tiny schnell's own training adapter (runpod_worker/tiny_models/flux.py), never the Hub's.
        env["FLUX_SCHNELL_ADAPTER_PATH"] = str(model / SCHNELL_ADAPTER_DIR)
    if shutil.which("nvidia-smi") is None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(CPU_ONLY), os.environ.get("PYTHONPATH")]))
    return env


def smoke(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    if not (args.ai_toolkit / "run.py").is_file() or is_simulator(args.ai_toolkit):
        raise SmokeFailed(f"AI_TOOLKIT_DIR={args.ai_toolkit} is not a checkout of the real AI Toolkit")
    model = args.model or workdir / "model"
    if args.model is None:
        build_model(args.base_model, model)
    captioner = args.captioner or (workdir / "captioner" if args.uncaptioned else None)
    if args.uncaptioned and args.captioner is None:
        build_model(CAPTIONER_MODEL, workdir / "captioner")
    side = LocalSide(images=smoke_images(args.images, args.image_size), resume=args.resume_proof)
    started = time.monotonic()
    faults = (
        [f"kill_worker_after_step={args.kill_after or args.save_every + 10}"] if args.resume_proof else []
    )
    env = worker_env(args, model, workdir, captioner)
    with serving(side), stand_in(workdir, env, faults) as (url, key, logs):
        document = job_input(side, args)
        status = run_job(url, key, document, args.timeout)
        try:
            figures = verify(status, side, args.steps, args.base_model)
            figures.update(verify_captions(status, document))
            if args.save_every or args.sample_every:
                figures.update(verify_artifacts(status, side, document))
            if args.resume_proof:
                figures.update(verify_resume(status, side, document))
        except SmokeFailed:
            for log in sorted(logs.glob("*.log")):
                print(f"--- {log.name} (last 60 lines)", file=sys.stderr)
                print("\n".join(log.read_text(errors="replace").splitlines()[-60:]), file=sys.stderr)
            raise
    figures["job_s"] = round(time.monotonic() - started, 1)
    if args.save_lora:
        args.save_lora.mkdir(parents=True, exist_ok=True)
        for name, data in side.uploads.items():
            if name.startswith("smoke_lora"):
                (args.save_lora / name).write_bytes(data)
    return figures


def smoke_every_model(
    args: argparse.Namespace,
    workdir: Path,
    one: Callable[[argparse.Namespace, Path], dict[str, Any]] | None = None,
) -> tuple[dict[str, dict[str, Any]], str | None]:
    """The smoke of every base model the worker trains (`BaseModel.SUPPORTED`), one after another, their tiny
    models built first in one process; stops at the first that fails. Returns each passed model's figures and
    the one that failed with why, if any."""
    one = one or smoke
    models_dir = workdir / "models"
    if one is smoke:
        build_model("all", models_dir)
    passed: dict[str, dict[str, Any]] = {}
    for model in BaseModel.SUPPORTED:
        model_args = argparse.Namespace(**{**vars(args), "base_model": model, "model": models_dir / model})
        if args.save_lora:
            model_args.save_lora = args.save_lora / model
        (workdir / model).mkdir(parents=True, exist_ok=True)
        try:
            passed[model] = one(model_args, workdir / model)
        except (SmokeFailed, subprocess.CalledProcessError, requests.RequestException) as exc:
            return passed, f"{model}: {exc}"
        print(f"smoke passed for {model}: {json.dumps(passed[model])}", flush=True)
    return passed, None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--ai-toolkit", type=Path, default=Path(os.environ.get("AI_TOOLKIT_DIR", "/app/ai-toolkit"))
    )
    parser.add_argument(
        "--base-model",
        choices=[*sorted(MODEL_ENV), "all"],
        default="flux-dev",
        help="all: every base model the worker trains, one after another (what the image's build runs)",
    )
    parser.add_argument("--model", type=Path, default=None, help="a tiny model folder already built")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--uncaptioned", type=int, default=1, help="images sent without a caption (0: none)")
    parser.add_argument(
        "--captioner", type=Path, default=None, help="a captioner folder (default: a tiny one built here)"
    )
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--preset", choices=["24gb", "80gb"], default="80gb")
    parser.add_argument("--save-every", type=int, default=0, help="checkpoint every N steps (0: none)")
    parser.add_argument("--sample-every", type=int, default=0, help="sample every N steps (0: none)")
    parser.add_argument(
        "--resume-proof",
        action="store_true",
        help="kill the worker after --kill-after steps and prove the re-run resumes",
    )
    parser.add_argument("--kill-after", type=int, default=0, help="default: save_every + 10")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--save-lora", type=Path, default=None, help="write the uploaded LoRA file(s) here")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="keep everything here (default: a temp dir)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.ai_toolkit = args.ai_toolkit.resolve()
    if args.resume_proof and not 0 < args.save_every < args.steps:
        print("SMOKE FAILED: --resume-proof needs --save-every below --steps", file=sys.stderr)
        return 2
    if args.base_model == "all" and args.model is not None:
        print("SMOKE FAILED: --model names one model's folder; --base-model all builds each", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="worker-smoke-") as scratch:
        workdir = args.workdir or Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        if args.base_model == "all":
            return _report_every_model(*smoke_every_model(args, workdir))
        try:
            figures = smoke(args, workdir)
        except (SmokeFailed, subprocess.CalledProcessError, requests.RequestException) as exc:
            print(f"SMOKE FAILED: {exc}", file=sys.stderr)
            return 1
    per_step = figures["train_s"] / max(1, figures["steps"])
    print(f"SMOKE PASSED: {figures['steps']} steps of real AI Toolkit {figures['trainer_version']} on a tiny "
          f"{args.base_model} in {figures['train_s']:.1f} s of training ({per_step:.2f} s/step), "
          f"{figures['job_s']:.1f} s for the whole job; LoRA {figures['lora_bytes']} bytes, "
          f"{figures['tensors']} transformer lora_A/B tensors; {figures['progress_callbacks']} progress "
          f"callbacks; {figures['captions']} image(s) captioned by {figures['captioner']} in "
          f"{figures['caption_s']:.1f} s")  # fmt: skip
    print(json.dumps(figures))
    return 0


def _report_every_model(passed: dict[str, dict[str, Any]], failed: str | None) -> int:
    for model, figures in passed.items():
        print(f"  {model}: {figures['steps']} steps in {figures['train_s']:.1f} s of training, "
              f"{figures['job_s']:.1f} s for the whole job; {figures['tensors']} LoRA tensors")  # fmt: skip
    if failed is not None:
        print(f"SMOKE FAILED for {failed}", file=sys.stderr)
        return 1
    print(f"SMOKE PASSED for every base model: {', '.join(passed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
