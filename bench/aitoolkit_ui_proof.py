"""Drives an AI Toolkit web UI through `AIToolkitClient` end to end, printing what it checked.

    .venv/bin/python bench/aitoolkit_ui_proof.py --url http://127.0.0.1:8675 --token "$AI_TOOLKIT_AUTH" \
        --transcript real.json [--override '{"device": "cpu"}'] [--model-path /models/tiny-flux]
    .venv/bin/python bench/aitoolkit_ui_proof.py --compare real.json standin.json

Against the real UI (AI Toolkit's `ui/` built from the pinned commit, with a real trainer) or the
stand-in (`python -m runpod_worker.local_ai_toolkit_ui`): token check, a dataset of photos and
captions, a job built from the studio's own AI Toolkit config (`runpod_worker/config.py`) made
UI-ready, a duplicate name (409), job start and queue start, progress polled to the end, loss
series, samples, checkpoints, the final LoRA downloaded and verified, the public file route
without a token, a stopped job and `mark_stopped`, and finally every output deleted from the pod.
Each check prints OK or FAIL; the exit code is the number of failures.

`--transcript` writes, route by route, the status code and the JSON shape of each answer (keys
and value types) plus the status/info sequence a job went through; `--compare` prints where two
transcripts differ. `--record DIR` keeps every JSON answer as a fixture (the toolkit root
replaced by `/app/ai-toolkit`, where the official image keeps it).
"""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import requests
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runpod_worker.config import build_config
from runpod_worker.contract import GpuPreset, JobInput
from training.aitoolkit import (
    AIToolkitClient,
    AIToolkitJob,
    AIToolkitNameTaken,
    AIToolkitNotFound,
    AIToolkitUnauthorized,
    AIToolkitUnavailable,
    safetensors_check,
    ui_job_config,
)

FINAL = {"completed", "error", "stopped"}
IDS = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class Proof:
    def __init__(self, client: AIToolkitClient, args: argparse.Namespace) -> None:
        self.client = client
        self.args = args
        self.failures = 0
        self.transcript: dict[str, Any] = {"routes": {}, "timeline": {}}
        self.root = ""
        client.session.hooks["response"].append(self._observe)

    # ------------------------------------------------------------------------------------ reporting

    def check(self, ok: bool, what: str) -> bool:
        print(f"{'OK  ' if ok else 'FAIL'} {what}", flush=True)
        self.failures += 0 if ok else 1
        return ok

    def _observe(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        path = requests.utils.urlparse(response.url).path
        route = f"{response.request.method} {_template(path)}"
        entry: dict[str, Any] = {
            "status": response.status_code,
            "type": response.headers.get("Content-Type", ""),
        }
        if "json" in entry["type"]:
            try:
                payload = response.json()
            except ValueError:
                payload = None
            entry["shape"] = _shape(payload)
            if self.args.record:
                query = requests.utils.urlparse(response.url).query
                extra = "_".join(f"{k}_{v}" for k, v in parse_qsl(query) if k != "id")
                self._record(f"{route} {extra}", response.status_code, payload)
        self.transcript["routes"].setdefault(route, {})[str(response.status_code)] = entry

    def _record(self, route: str, status: int, payload: Any) -> None:
        folder = Path(self.args.record)
        folder.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^a-z0-9]+", "_", route.lower()).strip("_") + f"_{status}"
        if isinstance(payload, dict) and "job_config" in payload:
            name += f"_{payload['status']}"  # one fixture per state a job was seen in
        name += ".json"
        text = json.dumps(payload, indent=2)
        if self.root:
            text = text.replace(self.root.rstrip("/"), "/app/ai-toolkit")
        (folder / name).write_text(text + "\n", encoding="utf-8")

    # ---------------------------------------------------------------------------------------- steps

    def run(self) -> int:
        dataset, job = None, None
        try:
            self.auth()
            settings = self.client.settings()
            self.root = str(Path(settings.training_folder).parent)
            self.check(bool(settings.training_folder and settings.datasets_folder), f"settings: {settings}")
            dataset = self.dataset()
            job = self.create(dataset)
            self.train(job)
            self.outputs(job)
            self.stop_case()
            self.unknown_job()
        except Exception as exc:  # a proof reports what broke and still cleans the pod up
            self.check(False, f"stopped by {type(exc).__name__}: {exc}")
        if job is not None and dataset is not None:
            self.cleanup(job, dataset)
        return self.failures

    def auth(self) -> None:
        bare = AIToolkitClient(base_url=self.args.url, token="wrong-token", max_attempts=1)
        bare.session.hooks["response"].append(self._observe)
        try:
            bare.check()
            self.check(False, "a wrong token is refused with 401")
        except AIToolkitUnauthorized:
            self.check(True, "a wrong token is refused with 401")
        self.client.check()
        self.check(True, "the token is accepted (GET /api/auth)")

    def dataset(self) -> str:
        name = self.client.dataset_create(f"Proof Set {uuid.uuid4().hex[:6]}")
        self.check(re.fullmatch(r"proof_set_[0-9a-f]{6}", name) is not None, f"dataset created as {name}")
        files = []
        for index in range(self.args.images):
            files.append((f"img{index:02d}.jpg", _jpeg(index, self.args.resolution)))
            files.append((f"img{index:02d}.txt", f"a photo of ohwx person, view {index}"))
        listing = self.client.dataset_upload_all(
            name, [(n, c if isinstance(c, bytes) else c.encode()) for n, c in files]
        )
        self.check(
            listing.images == [f"img{i:02d}.jpg" for i in range(self.args.images)],
            f"{self.args.images} photos and captions uploaded;"
            f" listImages sees {len(listing.images)} under {listing.folder}",
        )
        self.dataset_folder = listing.folder
        return name

    def create(self, dataset: str) -> AIToolkitJob:
        settings = self.client.settings()
        name = f"proof_{uuid.uuid4().hex[:8]}"
        config = self._config(name, settings.training_folder)
        job = self.client.job_create(name=name, job_config=config)
        self.check(job.status == "stopped" and job.name == name, f"job {name} created: status {job.status}")
        try:
            self.client.job_create(name=name, job_config=config)
            self.check(False, "a second job of the same name is refused (409)")
        except AIToolkitNameTaken as exc:
            self.check(True, f"a second job of the same name is refused: {exc.message}")
        return job

    def _config(self, name: str, training_folder: str, *, steps: int | None = None) -> dict[str, Any]:
        job_input = JobInput.from_dict(
            {
                "contract_version": 1,
                "run_id": str(uuid.uuid4()),
                "trigger_word": "ohwx",
                "base_model": "flux-dev",
                "gpu_preset": None,
                "params": {
                    "rank": 4,
                    "resolutions": [self.args.resolution],
                    "sample_prompts": ["a photo of ohwx person"] if self.args.sample_every else [],
                    "sample_every": 100,
                    "seed": 42,
                },
                "images": [
                    {
                        "url": "https://unused.example/x.jpg",
                        "sha256": "a" * 64,
                        "filename": "x.jpg",
                        "caption": None,
                    }
                ],
                "output": {"lora_name": name, "lora_upload_url": "https://unused.example/x.safetensors"},
                "callback": None,
            }
        )
        config = build_config(
            job_input,
            preset=GpuPreset.HIGH_VRAM_80GB,
            dataset_dir=Path(self.dataset_folder),
            training_folder=Path(training_folder),
            model_path=self.args.model_path,
        )
        config = ui_job_config(
            config, name=name, training_folder=training_folder, dataset_folder=self.dataset_folder
        )
        process = config["config"]["process"][0]
        # A short run (the contract asks for at least 100 steps, saves every 50 or more): set after building.
        process["train"]["steps"] = steps or self.args.steps
        process["save"]["save_every"] = self.args.save_every
        process["sample"]["sample_every"] = self.args.sample_every or process["train"]["steps"]
        _merge(process, json.loads(self.args.override))
        return config

    def train(self, job: AIToolkitJob) -> None:
        self.client.job_start(job)
        queues = {q.gpu_ids: q.is_running for q in self.client.queues()}
        self.check(
            queues.get(job.gpu_ids) is not None, f"job started and its queue {job.gpu_ids} exists: {queues}"
        )
        timeline, seen_running, speed = self._follow(job, self.args.timeout)
        self.transcript["timeline"]["train"] = timeline
        final = self.client.job_get(job.id)
        self.check(seen_running, "the job was seen running")
        self.check(final.status == "completed", f"job ended {final.status}: {final.info!r}")
        self.check(
            final.step == self.args.steps,
            f"step {final.step} of {final.steps_total} (total_steps {final.total_steps})",
        )
        self.check(bool(speed), f"speed_string seen: {speed!r}")
        statuses = [s for s, _ in timeline]
        self.check(statuses[0] in ("queued", "running"), f"status/info sequence: {timeline}")

    def _follow(self, job: AIToolkitJob, timeout: float) -> tuple[list[tuple[str, str]], bool, str]:
        timeline: list[tuple[str, str]] = []
        seen_running, speed = False, ""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            current = self.client.job_get(job.id)
            pair = (current.status, re.sub(r"\d+/\d+", "i/N", current.info))
            if not timeline or timeline[-1] != pair:
                timeline.append(pair)
            seen_running |= current.status == "running"
            speed = current.speed_string or speed
            if current.status in FINAL and seen_running:
                break
            time.sleep(0.25)
        return timeline, seen_running, speed

    def outputs(self, job: AIToolkitJob) -> None:
        files = self.client.job_files(job.id)
        names = [f.name for f in files]
        self.check(f"{job.name}.safetensors" in names, f"files: {names}")
        checkpoints = [
            f for f in files if f.name.startswith(f"{job.name}_") and f.name.endswith(".safetensors")
        ]
        self.check(bool(checkpoints), f"{len(checkpoints)} checkpoint(s) listed")
        samples = self.client.job_samples(job.id)
        self.check(bool(samples) == bool(self.args.sample_every), f"{len(samples)} sample(s) listed")
        loss = self.client.job_loss(job.id)
        self.check(bool(loss.points), f"loss series {loss.key}: {len(loss.points)} points, keys {loss.keys}")
        self.transcript["timeline"]["loss_steps"] = [p.step for p in loss.points][:5]
        default = self.client.job_loss(job.id, key="loss")
        self.check(not default.points, "the route's default key `loss` names no series")
        log = self.client.job_log(job.id)
        self.check(log.reset and log.offset > 0, f"log: {log.offset} bytes")
        with tempfile.TemporaryDirectory() as tmp:
            lora = self.client.lora_download(job, Path(tmp) / "lora.safetensors")
            self.check(
                lora.size > 0, f"LoRA downloaded and verified: {lora.size} bytes, sha256 {lora.sha256[:16]}…"
            )
            checkpoint = self.client.file_download(checkpoints[0].path, Path(tmp) / "ckpt.safetensors")
            safetensors_check(checkpoint.path)
            self.check(checkpoint.size == checkpoints[0].size, f"checkpoint {checkpoints[0].name} downloaded")
            if samples:
                sample = self.client.file_download(samples[0], Path(tmp) / "sample")
                self.check(
                    sample.size > 0, f"sample {Path(samples[0]).name} downloaded ({sample.size} bytes)"
                )
        url = self.client.file_url(next(f.path for f in files if f.name == f"{job.name}.safetensors"))
        public = requests.get(url, timeout=30)
        self.check(
            public.status_code == 200,
            f"the LoRA downloads WITHOUT a token from /api/files/: {public.status_code}",
        )
        outside = requests.get(self.client.file_url("/etc/hostname"), timeout=10)
        self.check(outside.status_code == 403, f"a file outside the roots is refused: {outside.status_code}")

    def stop_case(self) -> None:
        settings = self.client.settings()
        name = f"proof_stop_{uuid.uuid4().hex[:6]}"
        job = self.client.job_create(
            name=name, job_config=self._config(name, settings.training_folder, steps=self.args.stop_steps)
        )
        self.client.job_start(job)
        deadline = time.monotonic() + self.args.timeout
        while time.monotonic() < deadline:
            current = self.client.job_get(job.id)
            if current.status == "running" and current.step >= 1:
                break
            time.sleep(0.2)
        self.client.job_stop(job.id)
        after = self.client.job_get(job.id)
        self.check(
            after.status == "stopped" and after.stop, f"stop: {after.status} {after.info!r} stop={after.stop}"
        )
        time.sleep(3)
        settled = self.client.job_get(job.id)
        self.transcript["timeline"]["stop"] = [settled.status, settled.info]
        self.check(
            settled.status == "stopped",
            f"after the trainer exits: {settled.status} {settled.info!r} step {settled.step}",
        )
        self.client.job_mark_stopped(job.id)
        marked = self.client.job_get(job.id)
        self.check(
            marked.status == "stopped" and marked.pid is None,
            f"mark_stopped: {marked.status}, pid {marked.pid}",
        )
        self.check(self.client.job_delete(job.id), "the stopped job and its folder are deleted")

    def unknown_job(self) -> None:
        try:
            self.client.job_get("00000000-0000-0000-0000-000000000000")
            self.check(False, "an unknown job id is not found")
        except AIToolkitNotFound:
            self.check(True, "an unknown job id answers null: not found")
        single = AIToolkitClient(base_url=self.args.url, token=self.args.token, max_attempts=1)
        try:
            single.job_mark_stopped("00000000-0000-0000-0000-000000000000")
            self.check(False, "mark_stopped of an unknown id fails")
        except AIToolkitUnavailable as exc:
            self.check(exc.status_code == 500, f"mark_stopped of an unknown id: HTTP {exc.status_code}")
        self.check(
            not single.job_delete("00000000-0000-0000-0000-000000000000"), "delete of an unknown id: 404"
        )

    def cleanup(self, job: AIToolkitJob, dataset: str) -> None:
        files = self.client.job_files(job.id)
        self.check(self.client.job_delete(job.id), f"job {job.name} deleted")
        gone = [requests.get(self.client.file_url(f.path), timeout=10).status_code for f in files]
        self.check(all(code == 404 for code in gone), f"its files now answer {sorted(set(gone))}")
        self.check(all(j.id != job.id for j in self.client.jobs()), "the job is no longer listed")
        self.client.dataset_delete(dataset)
        try:
            self.client.dataset_images(dataset)
            self.check(False, "the dataset is deleted")
        except AIToolkitNotFound:
            self.check(True, "the dataset is deleted (listImages 404)")


def _jpeg(index: int, size: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (index * 40 % 256, 90, 160)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _merge(target: dict[str, Any], changes: dict[str, Any]) -> None:
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value


def _template(path: str) -> str:
    path = IDS.sub("{id}", path)
    path = re.sub(r"^/api/(files|img)/.*", r"/api/\1/{path}", path)
    return re.sub(r"^/api/queue/[^/]+/", "/api/queue/{gpu_ids}/", path)


def _shape(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    return type(value).__name__


def _compatible(left: Any, right: Any) -> bool:
    """Same keys in the same order and the same types, where a null or an empty list matches anything
    (a job's pid or a run's samples depend on timing, not on the route)."""
    if left in ("NoneType", []) or right in ("NoneType", []):
        return True
    if isinstance(left, dict) and isinstance(right, dict):
        return list(left) == list(right) and all(_compatible(left[k], right[k]) for k in left)
    if isinstance(left, list) and isinstance(right, list):
        return _compatible(left[0], right[0])
    return bool(left == right)


def compare(first: Path, second: Path) -> int:
    a, b = json.loads(first.read_text()), json.loads(second.read_text())
    differences = 0
    for route in sorted(set(a["routes"]) | set(b["routes"])):
        left, right = a["routes"].get(route), b["routes"].get(route)
        same = left is not None and right is not None and _compatible(left, right)
        differences += 0 if same else 1
        print(f"{'same' if same else 'DIFF'} {route}")
        if not same:
            print(f"     {first.name}: {json.dumps(left)}\n     {second.name}: {json.dumps(right)}")
    for key in sorted(set(a["timeline"]) | set(b["timeline"])):
        print(
            f"timeline {key}:\n     {first.name}: {a['timeline'].get(key)}"
            f"\n     {second.name}: {b['timeline'].get(key)}"
        )
    return differences


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url")
    parser.add_argument("--token", default="")
    parser.add_argument("--transcript", type=Path)
    parser.add_argument("--record", type=Path)
    parser.add_argument("--compare", nargs=2, type=Path)
    parser.add_argument("--model-path", default=None, help="model.name_or_path (a local diffusers folder)")
    parser.add_argument("--override", default="{}", help="JSON merged into config.process[0]")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--stop-steps", type=int, default=2000)
    parser.add_argument("--save-every", type=int, default=10)
    parser.add_argument("--sample-every", type=int, default=10)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args()
    if args.compare:
        return compare(*args.compare)
    client = AIToolkitClient(base_url=args.url, token=args.token, timeout_seconds=30.0)
    proof = Proof(client, args)
    started = time.monotonic()
    failures = proof.run()
    print(f"{failures} failure(s) in {time.monotonic() - started:.0f} s against {args.url}")
    if args.transcript:
        args.transcript.write_text(json.dumps(proof.transcript, indent=2) + "\n", encoding="utf-8")
    return failures


if __name__ == "__main__":
    sys.exit(main())
