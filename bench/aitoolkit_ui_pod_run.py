"""One pod-mode training run end to end through the studio's own services against an AI Toolkit web UI,
printing what it checked.

    .venv/bin/python bench/aitoolkit_ui_pod_run.py --url http://127.0.0.1:8675 --token "$AI_TOOLKIT_AUTH" \
        [--model-path /models/tiny-flux] [--override '{"sample": {"sample_steps": 8}}'] \
        [--gpu-preset 80gb] [--report real.json]
    .venv/bin/python bench/aitoolkit_ui_pod_run.py --compare real.json standin.json

Against the real UI (AI Toolkit's `ui/` built from the pinned commit, with its real trainer; docs/TRAINING.md,
"The proof against the real UI") or the stand-in (`python -m runpod_worker.local_ai_toolkit_ui --root DIR
--port 8676 --token T`). `bench/aitoolkit_ui_proof.py` proves the HTTP client route by route; this proves the
provider path above it: `training_run_start(..., provider="pod")`, the submission task, the sweep's polls,
`pod_outputs` bringing samples, checkpoints and loss into storage, verification, completion, the cost, and
the deletion of the run's outputs from the pod.

What it does: a user allowed pods, a character (not a person: no face check) with `--images` photos of 512
px and their captions uploaded through `reference_images_upload`, a Pod registered with the URL and token by
`pod_register` (as `manage.py pod_register` does: a UI the studio neither starts nor stops), then
`training_run_start(provider="pod")` with 100 steps (the contract's least), a save and a sample every 50,
rank 4, one sample prompt. It then does what the Celery worker and beat would: every `--beat-seconds` it
calls `sweep_training_runs()` and `check_pods()`; tasks they queue (the submission, the polls, verification,
likeness, the outputs' deletion) run at once in this process. It stops when the run has ended and its
outputs are deleted from the pod, and checks the statuses (pending → queued → training → completed, from the
run's events), the progress, the loss points, the samples and checkpoints verified in storage with their
thumbnails, the LoRA verified against storage, the cost settled, and the job, its files and its dataset gone
from the pod. Each check prints OK or FAIL; the exit code is the number of failures. `--report F` writes the
figures (times, statuses, counts, the job's stages as the polls read them) as JSON; `--compare A B` prints
two reports side by side and exits with the number of figures that must be the same on any UI (`SAME`) and
are not. `--cancel-at STEP` cancels the run (`training_run_cancel`, the run page's Cancel) once a poll saw
that step, and checks the run `cancelled` with what it made before the stop (the step-50 checkpoint and
sample, the loss so far) and the pod cleared.

The studio here is its embedded default in a temporary folder: SQLite, media on local files, Celery tasks
run eagerly (`CELERY_TASK_ALWAYS_EAGER`), a local-memory cache. The environment's DATABASE_URL, REDIS_URL and
bucket are overridden, so no database, broker or bucket of a developer is touched; the folder is deleted at
the end unless `--keep`.

On a machine without a GPU the real trainer needs what `aitoolkit_ui_proof.py` gives it: `--model-path`
(a tiny random-weight FLUX.1-dev folder, `python -m runpod_worker.tiny_models flux-dev DIR`, instead of the
Hub id a pod downloads), `--gpu-preset 80gb` (no quantisation, AdamW: what TRAINING_POD_GPU_PRESET sets for
a large card) and `--override` (JSON merged into `config.process[0]`, e.g. a smaller sample). These are the
only changes to the run's config, made by wrapping `pod_job_config` where `pod_runs` calls it.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STEPS, SAVE_EVERY = 100, 50
PROMPTS = ["[trigger] portrait"]


def studio_environment(folder: Path, *, images: int, poll_seconds: float, gpu_preset: str) -> None:
    """The embedded default in `folder`, whatever the shell's environment says (settings read it once)."""
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "studio.settings",
            "STUDIO_VAR_DIR": str(folder),
            "DATABASE_URL": f"sqlite:///{folder / 'studio.sqlite3'}",
            "MEDIA_ROOT": str(folder / "media"),
            # Empty, not unset: a `.env` beside the project fills only variables that are missing.
            "REDIS_URL": "",
            "AWS_STORAGE_BUCKET_NAME": "",
            "CELERY_TASK_ALWAYS_EAGER": "true",
            "TRAINING_MIN_IMAGES": str(images),
            "TRAINING_POD_POLL_SECONDS": str(poll_seconds),
            "TRAINING_POD_GPU_PRESET": gpu_preset,
        }
    )
    os.environ.pop("CELERY_BROKER_URL", None)  # Celery prefers it to every setting


def _merge(target: dict[str, Any], changes: dict[str, Any]) -> None:
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value


def config_overrides(model_path: str | None, override: dict[str, Any]) -> None:
    """Wraps the config a pod run's job gets with the CPU changes (the pod's module calls it by name)."""
    from training.services import pod_runs

    made: Callable[..., dict[str, Any]] = pod_runs.pod_job_config

    def changed(*args: Any, **kwargs: Any) -> dict[str, Any]:
        config = made(*args, **kwargs)
        process = config["config"]["process"][0]
        if model_path:
            process["model"]["name_or_path"] = model_path
        _merge(process, override)
        return config

    pod_runs.pod_job_config = changed  # type: ignore[assignment]


class PodRun:
    """The run, the pod's client and what was seen of both; `check` prints and counts."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.failures = 0
        self.figures: dict[str, Any] = {"url": args.url}
        self.started = time.monotonic()
        self.seen: list[tuple[float, str, int]] = []  # (seconds, status, step) as the loop saw them
        self.job_seen: list[tuple[float, str, str]] = []  # (seconds, job status, stage) as the polls read it
        self.etas: list[int] = []  # the run's ETA while training, as the speed string gave it
        self.speeds: list[str] = []
        self.pod_files: set[str] = set()  # every job file or sample path the pod listed
        self.cancelled = False

    def check(self, ok: bool, what: str) -> bool:
        print(f"{'OK  ' if ok else 'FAIL'} {what}", flush=True)
        self.failures += 0 if ok else 1
        return ok

    def at(self) -> float:
        return round(time.monotonic() - self.started, 1)

    # ------------------------------------------------------------------------------------------ set-up

    def character(self) -> Any:
        from django.core.files.uploadedfile import SimpleUploadedFile

        from characters.services import (
            character_consent_record,
            character_create,
            reference_image_update_caption,
            reference_images_upload,
        )
        from studio.models import User

        owner = User.objects.create_user(username="pod-bench", email="pod-bench@example.com")
        owner.pod_training_allowed = True
        owner.save()
        character = character_create(owner=owner, name="Pod bench", trigger_word="ohwx", is_person=False)
        character_consent_record(character=character, given_by=owner, basis="self")
        uploads = [
            SimpleUploadedFile(f"photo-{i}.jpg", _jpeg(i), content_type="image/jpeg")
            for i in range(self.args.images)
        ]
        report = reference_images_upload(character=character, uploads=uploads)
        for index, image in enumerate(character.images.order_by("created_at")):
            reference_image_update_caption(image=image, caption=f"[trigger] photo {index}")
        self.check(
            len(report.added) == self.args.images and not report.rejected,
            f"character with {len(report.added)} photos and captions"
            f" ({[r.reason for r in report.rejected]} refused)",
        )
        return character

    def pod(self) -> Any:
        from decimal import Decimal

        from training.services import pod_register

        # As `manage.py pod_register` does: a UI the studio neither starts nor stops.
        return pod_register(
            name="bench-pod", ui_url=self.args.url, token=self.args.token, hourly_price_usd=Decimal("0.69")
        )

    def start(self, character: Any) -> Any:
        from training.services import training_run_start

        params = {
            "steps": STEPS,
            "save_every": SAVE_EVERY,
            "rank": 4,
            "sample_prompts": PROMPTS,
            "sample_every": SAVE_EVERY,
        }
        # The submission task is queued on commit and runs here, eagerly: the job is made on the pod.
        run = training_run_start(
            character=character, requested_by=character.owner, params=params, provider="pod", source="user"
        )
        run.refresh_from_db()
        return run

    # ------------------------------------------------------------------------------------------- drive

    def drive(self, run: Any) -> Any:
        """What beat does (the sweep, the pod check), until the run ended and its outputs left the pod."""
        from training.tasks import check_pods, sweep_training_runs

        deadline = time.monotonic() + self.args.timeout
        sweeps = polls = 0
        while time.monotonic() < deadline:
            run.refresh_from_db()
            self._observe(run)
            if run.is_final and run.pod_outputs_deleted_at is not None:
                break
            if self.args.cancel_at and not self.cancelled and run.progress_step >= self.args.cancel_at:
                run = self._cancel(run)
            polls += sweep_training_runs()
            check_pods()
            sweeps += 1
            time.sleep(self.args.beat_seconds)
        run.refresh_from_db()
        self._observe(run)
        self.figures.update(sweeps=sweeps, runs_claimed_by_the_sweep=polls)
        return run

    def _cancel(self, run: Any) -> Any:
        """What the run page's Cancel does: `training_run_cancel`, which stops the job on the pod."""
        from training.services import training_run_cancel

        self.cancelled = True
        self.figures["cancelled_at_step"] = run.progress_step
        run = training_run_cancel(run=run, source="user")
        outcome = run.events.filter(to_status="cancelled").values_list("detail", flat=True).first() or {}
        self.figures["cancel_outcome"] = outcome.get("pod")
        print(f"     {self.at():7.1f} s  cancelled at step {run.progress_step}: job {outcome.get('pod')}")
        return run

    def _observe(self, run: Any) -> None:
        if not self.seen or self.seen[-1][1:] != (run.status, run.progress_step):
            self.seen.append((self.at(), run.status, run.progress_step))
            print(f"     {self.at():7.1f} s  {run.status:<10} step {run.progress_step}/{run.progress_total}")
        job = run.last_provider_payload or {}
        stage = (str(job.get("status", "")), re.sub(r"\d+/\d+", "i/N", str(job.get("info", ""))))
        if job and (not self.job_seen or self.job_seen[-1][1:] != stage):
            self.job_seen.append((self.at(), *stage))
        if run.status == "training" and run.progress_eta_seconds is not None:
            self.etas.append(run.progress_eta_seconds)
        if job.get("speed_string") and job["speed_string"] not in self.speeds:
            self.speeds.append(job["speed_string"])
        if run.runpod_job_id and run.pod_outputs_deleted_at is None:
            self._list_pod_files(run)

    def _list_pod_files(self, run: Any) -> None:
        from training.aitoolkit import AIToolkitError
        from training.providers import pod_client

        client = pod_client(run.pod)
        try:
            self.pod_files.update(f.path for f in client.job_files(run.runpod_job_id))
            self.pod_files.update(client.job_samples(run.runpod_job_id))
        except AIToolkitError:
            pass  # a job just deleted, or not made yet: the next look sees it

    # ------------------------------------------------------------------------------------------ checks

    def verify(self, run: Any) -> None:
        end = "cancelled" if self.args.cancel_at else "completed"
        self.check(run.status == end, f"run ended {run.status} {run.error_message!r}")
        statuses = [
            e.to_status for e in run.events.order_by("created_at", "id") if e.from_status != e.to_status
        ]
        self.figures["statuses"] = statuses
        self.check(statuses == ["pending", "queued", "training", end], f"status events: {statuses}")
        self._times(run)
        reached = (
            self.args.cancel_at <= run.progress_step < STEPS
            if self.args.cancel_at
            else run.progress_step == STEPS
        )
        self.check(
            reached and run.progress_total == STEPS, f"progress {run.progress_step}/{run.progress_total}"
        )
        steps_seen = sorted({step for _, status, step in self.seen if status == "training"})
        self.figures["steps_seen_training"] = len(steps_seen)
        self.check(len(steps_seen) >= 2, f"progress moved while training: {len(steps_seen)} steps seen")
        stages = [f"{status}: {info}" for _, status, info in self.job_seen]
        self.figures["job_stages"] = stages
        print(f"     the job as the polls read it: {stages}")
        self.figures["speed_strings"] = self.speeds[:3] + self.speeds[-3:]
        self.check(
            bool(self.etas) and max(self.etas) > 0,
            f"an ETA while training, from the speed string: {self.etas[:1]}…{self.etas[-1:]} s"
            f" ({self.speeds[:1]}…{self.speeds[-1:]})",
        )
        self._loss(run)
        self._checkpoints(run)
        self._samples(run)
        if self.args.cancel_at:
            self.check(run.lora_name == "", "a cancelled run has no LoRA")
        else:
            self._lora(run)
        self.check(
            run.cost_state == "settled" and run.cost_usd is not None,
            f"cost {run.cost_state}: {run.cost_usd} USD at the pod's 0.69 USD/h",
        )
        self.figures["cost_usd"] = str(run.cost_usd)
        self._pod_cleared(run)

    def _times(self, run: Any) -> None:
        events = {e.to_status: e.created_at for e in run.events.all() if e.from_status != e.to_status}
        created = run.created_at
        times = {status: round((when - created).total_seconds(), 1) for status, when in events.items()}
        if run.pod_outputs_deleted_at is not None:
            times["outputs_deleted"] = round((run.pod_outputs_deleted_at - created).total_seconds(), 1)
        self.figures["seconds_after_start"] = times
        print(f"     seconds after the start: {times}")

    def _loss(self, run: Any) -> None:
        from training.models import LossSeries

        series = LossSeries.objects.filter(run=run).first()
        steps = [int(point[0]) for point in series.loss] if series else []
        self.figures["loss_points"] = len(steps)
        # The last step is never logged; a cancelled run's points end where the trainer stopped.
        last = steps[-1] if self.args.cancel_at and steps else STEPS - 1
        self.check(
            steps == list(range(1, last + 1)) and last >= (self.args.cancel_at or STEPS) - 1,
            f"loss: {len(steps)} points, steps {steps[:1]}…{steps[-1:]} (AI Toolkit logs none at the first)",
        )

    def _checkpoints(self, run: Any) -> None:
        from django.core.files.storage import default_storage

        rows = list(run.checkpoints.order_by("step"))
        found = [(c.step, c.final, c.verified_at is not None) for c in rows]
        self.figures["checkpoints"] = [[c.step, c.final] for c in rows]
        self.figures["checkpoint_bytes"] = [c.bytes for c in rows]
        wanted = [(SAVE_EVERY, False, True)] + ([] if self.args.cancel_at else [(STEPS, True, True)])
        self.check(found == wanted, f"checkpoints: {found}")
        stored = all(default_storage.size(c.file) == c.bytes for c in rows)
        self.check(stored, "each checkpoint is in storage at its verified size")

    def _samples(self, run: Any) -> None:
        from django.core.files.storage import default_storage

        rows = list(run.samples.order_by("step", "prompt_index"))
        found = [(s.step, s.prompt_index, s.verified_at is not None, bool(s.thumbnail)) for s in rows]
        self.figures["samples"] = [[s.step, s.prompt_index] for s in rows]
        # The simulated trainer renders 384 px whatever the config asks (simulated_ai_toolkit/samples.py).
        self.figures["sample_sizes"] = [[s.width, s.height, s.bytes] for s in rows]
        wanted = [(SAVE_EVERY, 0, True, True)] + ([] if self.args.cancel_at else [(STEPS, 0, True, True)])
        self.check(found == wanted, f"samples: {found}")
        stored = all(default_storage.size(s.image.name) == s.bytes for s in rows)
        self.check(stored, "each sample is in storage at its verified size")

    def _lora(self, run: Any) -> None:
        import hashlib

        from django.core.files.storage import default_storage

        with default_storage.open(run.lora_name, "rb") as handle:
            data = handle.read()
        self.figures["lora_bytes"] = len(data)
        self.check(
            len(data) == run.lora_bytes and hashlib.sha256(data).hexdigest() == run.lora_sha256,
            f"LoRA {run.lora_name}: {len(data)} bytes, its size and sha256 as recorded",
        )

    def _pod_cleared(self, run: Any) -> None:
        import requests

        from training.aitoolkit import AIToolkitNotFound
        from training.pod_config import pod_dataset_name
        from training.providers import pod_client

        if not self.check(
            run.pod_outputs_deleted_at is not None, "the run's outputs are deleted from the pod"
        ):
            return
        client = pod_client(run.pod)
        self.check(all(job.id != run.runpod_job_id for job in client.jobs()), "its job is no longer listed")
        try:
            client.dataset_images(pod_dataset_name(run))
            self.check(False, "its dataset is deleted")
        except AIToolkitNotFound:
            self.check(True, "its dataset is deleted (listImages 404)")
        codes = sorted({requests.get(client.file_url(p), timeout=10).status_code for p in self.pod_files})
        self.figures["pod_files"] = sorted(_file_kind(run, path) for path in self.pod_files)
        self.check(
            codes == [404], f"the {len(self.pod_files)} files the pod listed for the job now answer {codes}"
        )


def _file_kind(run: Any, path: str) -> str:
    """A file's name on the pod with the run's job name and a sample's time masked, to compare two runs."""
    from training.pod_config import pod_job_name

    name = path.rsplit("/", 1)[-1].replace(pod_job_name(run), "<job>")
    return re.sub(r"^\d+__", "<ms>__", name)


def _jpeg(index: int) -> bytes:
    """A 512 px photo unlike the others (the studio refuses a duplicate)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (512, 512), (40 + index * 50 % 200, 90, 160))
    draw = ImageDraw.Draw(image)
    draw.ellipse((60 + index * 30, 80, 300 + index * 30, 420), fill=(220, 180 - index * 20, 140))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


# What two runs of this script, one per UI, must share; the rest (times, sizes, speeds) is the machine's.
SAME = ("failures", "statuses", "loss_points", "checkpoints", "samples", "pod_files")


def compare(first: Path, second: Path) -> int:
    """Prints two reports side by side; returns how many of the SAME figures differ."""
    a, b = json.loads(first.read_text()), json.loads(second.read_text())
    # A cancelled run's loss ends where its trainer happened to be when the stop reached it.
    same = tuple(k for k in SAME if k != "loss_points" or "cancelled_at_step" not in a)
    differences = 0
    for key in sorted(set(a) | set(b), key=lambda k: (k not in same, k)):
        left, right = a.get(key), b.get(key)
        label = "same" if left == right else ("DIFF" if key in same else "differs")
        differences += label == "DIFF"
        print(f"{label:<8}{key}")
        print(f"        {first.name}: {json.dumps(left)}\n        {second.name}: {json.dumps(right)}")
    return differences


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url")
    parser.add_argument("--token", default="")
    parser.add_argument("--model-path", default=None, help="model.name_or_path (a local diffusers folder)")
    parser.add_argument("--override", default="{}", help="JSON merged into config.process[0]")
    parser.add_argument("--gpu-preset", default="24gb", help="TRAINING_POD_GPU_PRESET: 24gb or 80gb")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--beat-seconds", type=float, default=1.0, help="how often the sweep runs")
    parser.add_argument("--poll-seconds", type=float, default=2.0, help="TRAINING_POD_POLL_SECONDS")
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--report", type=Path, help="write the figures here as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the studio's temporary folder")
    parser.add_argument("--compare", nargs=2, type=Path, help="two reports: print them side by side")
    parser.add_argument(
        "--cancel-at",
        type=int,
        default=0,
        help=f"cancel the run once a poll saw this step ({SAVE_EVERY + 1}-{STEPS - 1})",
    )
    args = parser.parse_args()
    if args.compare:
        return compare(*args.compare)
    if not args.url:
        parser.error("--url is required")
    if args.cancel_at and not SAVE_EVERY < args.cancel_at < STEPS:
        parser.error(
            f"--cancel-at must be after the first save and before the end ({SAVE_EVERY + 1}-{STEPS - 1})"
        )

    folder = Path(tempfile.mkdtemp(prefix="pod-run-bench-"))
    studio_environment(folder, images=args.images, poll_seconds=args.poll_seconds, gpu_preset=args.gpu_preset)
    import django

    django.setup()
    for noisy in ("celery", "training.tasks"):  # a line per eager task and per sweep hides the checks
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    config_overrides(args.model_path, json.loads(args.override))
    bench = PodRun(args)
    try:
        pod = bench.pod()
        run = bench.start(bench.character())
        bench.check(run.pod_id == pod.pk and run.provider == "pod", f"run {run.pk} started on pod {pod.name}")
        bench.verify(bench.drive(run))
    except Exception as exc:  # a bench reports what broke
        bench.check(False, f"stopped by {type(exc).__name__}: {exc}")
    finally:
        if args.keep:
            print(f"studio folder kept: {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    bench.figures.update(seconds=bench.at(), failures=bench.failures, seen=bench.seen)
    print(f"{bench.failures} failure(s) in {bench.at():.0f} s against {args.url}")
    if args.report:
        args.report.write_text(json.dumps(bench.figures, indent=2) + "\n", encoding="utf-8")
    return bench.failures


if __name__ == "__main__":
    sys.exit(main())
