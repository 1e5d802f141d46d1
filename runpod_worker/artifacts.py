"""What AI Toolkit writes while it trains (samples, checkpoints, the loss log), uploaded as it appears.

Everything here follows AI Toolkit at the pinned commit 27a03a91 (paths are in its repository):

- Samples: `<save_root>/samples/<milliseconds>__<step:09d>_<index>.<ext>`, where save_root is
  `<training_folder>/<name>` (jobs/process/BaseTrainProcess.py:45; BaseSDTrainProcess.py:286, :304-309,
  toolkit/config_modules.py:1229-1236; the index is unpadded, as the sampler calls
  `save_image_atomic(img, i)` with max_count 0, toolkit/models/base_model.py:711). Each image is written
  into `samples/.tmp` and moved into place with os.replace (config_modules.py:1254-1275), so a file in
  `samples/` is always complete: the folder is polled.
- Checkpoints: `save()` writes `<save_root>/<name>_<step:09d>.safetensors`, prints
  `Saved checkpoint to <path>` (BaseSDTrainProcess.py:518-545, :699), then overwrites
  `<save_root>/optimizer.pt` and prints `Saved optimizer to <path>` or `Could not save optimizer`
  (:702-714), then prunes the oldest checkpoints beyond `max_step_saves_to_keep` (:716, :418-493). The
  printed lines are the signal that a file is complete. The checkpoint is hard-linked aside at once (it
  may be pruned before its upload ends; a link keeps its bytes), optimizer.pt is copied aside at once:
  torch.save rewrites the same file in place at the next save, so a link would change under the upload.
- Loss: with `logging.use_ui_logger`, every logged step goes to `<save_root>/loss_log.db`
  (toolkit/logging_aitk.py:338-342): table `metrics(step, key, value_real, value_text)`, keys
  `loss/loss` (BaseSDTrainProcess.py:2756-2761, the loss_dict of extensions_built_in/sd_trainer/
  SDTrainer.py:2311) and `val/loss` when a validation config is set (BaseSDTrainProcess.py:1740). It is
  written in WAL mode and flushed every 0.25 s (logging_aitk.py:90, :124), and read here read-only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from runpod_worker.contract import (
    CALLBACK_FIELD_CHECKPOINTS,
    CALLBACK_FIELD_LOSS,
    CALLBACK_FIELD_SAMPLES,
    LOSS_POINTS_PER_CALLBACK,
    CheckpointArtifact,
    JobInput,
    SampleArtifact,
)
from runpod_worker.errors import JobFailed
from runpod_worker.upload import UploadResult, upload_file

log = logging.getLogger(__name__)

SAMPLE_FILE = re.compile(r"^(\d+)__(\d{9})_(\d+)\.(jpg|jpeg|png|webp)$")
LOSS_KEY = "loss/loss"
VAL_LOSS_KEY = "val/loss"
# How long the end of a run waits for checkpoint and sample uploads still under way.
DRAIN_TIMEOUT_S = float(os.environ.get("WORKER_ARTIFACT_DRAIN_S", 900.0))

Uploader = Callable[..., UploadResult]


def downsample(points: list[tuple[int, float]], limit: int = LOSS_POINTS_PER_CALLBACK) -> list[list[float]]:
    """At most `limit` points: consecutive runs of steps averaged, each at its run's last step."""
    if len(points) <= limit:
        return [[step, round(value, 6)] for step, value in points]
    size = -(-len(points) // limit)  # ceiling: never more than `limit` buckets
    result = []
    for start in range(0, len(points), size):
        bucket = points[start : start + size]
        result.append([bucket[-1][0], round(sum(v for _, v in bucket) / len(bucket), 6)])
    return result


def read_loss(db_path: Path, after_step: int) -> dict[str, list[tuple[int, float]]]:
    """`loss/loss` and `val/loss` of the steps after `after_step`; empty while the file does not exist yet."""
    if not db_path.is_file():
        return {}
    try:
        con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=2.0)
    except sqlite3.Error:
        return {}
    try:
        rows = con.execute(
            "SELECT key, step, value_real FROM metrics WHERE key IN (?, ?) AND step > ? "
            "AND value_real IS NOT NULL ORDER BY step",
            (LOSS_KEY, VAL_LOSS_KEY, after_step),
        ).fetchall()
    except sqlite3.Error:  # the schema is not there yet, or the file is busy: next time
        return {}
    finally:
        con.close()
    series: dict[str, list[tuple[int, float]]] = {}
    for key, step, value in rows:
        if value == value and abs(value) != float("inf"):  # nan/inf are not JSON
            series.setdefault(key, []).append((int(step), float(value)))
    return series


@dataclass
class _PendingCheckpoint:
    step: int
    name: str
    stashed: Path
    optimizer: Path | None = None


@dataclass
class Report:
    """What one progress callback carries beyond the progress itself, to acknowledge if it is delivered."""

    fields: dict[str, Any] = field(default_factory=dict)
    checkpoints: list[CheckpointArtifact] = field(default_factory=list)
    samples: list[SampleArtifact] = field(default_factory=list)
    loss_to_step: int | None = None

    @property
    def empty(self) -> bool:
        return not self.fields


class ArtifactCollector:
    """Finds samples and checkpoints as AI Toolkit writes them, uploads those the job has a target for
    (the existing streaming PUT with its timeouts and retries), and keeps what is not yet reported."""

    def __init__(
        self,
        spec: JobInput,
        save_root: Path,
        stash: Path,
        *,
        start_step: int = 0,
        uploader: Uploader = upload_file,
    ) -> None:
        self._spec = spec
        self._name = spec.output.lora_name
        self.save_root = save_root
        self._stash = stash
        self._uploader = uploader
        self._checkpoint_line = re.compile(
            rf"Saved checkpoint to (.*[/\\]{re.escape(self._name)}_(\d{{9}})\.safetensors)\s*$"
        )
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._seen_samples: set[str] = set()
        self._pending_checkpoint: _PendingCheckpoint | None = None
        self.checkpoints: list[CheckpointArtifact] = []
        self.samples: list[SampleArtifact] = []
        self.failed_uploads = 0
        self._unreported_checkpoints: list[CheckpointArtifact] = []
        self._unreported_samples: list[SampleArtifact] = []
        self._loss_acked = start_step
        self._lock = threading.Lock()  # the lists below are touched by upload threads and the event loop
        self._worker: asyncio.Task[None] | None = None

    # ----------------------------------------------------------------- finding

    def on_line(self, line: str) -> None:
        """Reads the trainer's own announcements of a finished checkpoint and optimizer state."""
        match = self._checkpoint_line.search(line)
        if match:
            self._flush_checkpoint()  # a previous one whose optimizer line never came
            path, step = Path(match.group(1)), int(match.group(2))
            stashed = self._stash_file(path, path.name, link=True)
            if stashed is not None:
                self._pending_checkpoint = _PendingCheckpoint(step, path.name, stashed)
            return
        pending = self._pending_checkpoint
        if pending is None:
            return
        if "Saved optimizer to " in line:
            path = Path(line.split("Saved optimizer to ", 1)[1].strip())
            pending.optimizer = self._stash_file(path, f"optimizer_{pending.step:09d}.pt", link=False)
            self._flush_checkpoint()
        elif "Could not save optimizer" in line:
            self._flush_checkpoint()

    def _stash_file(self, path: Path, name: str, *, link: bool) -> Path | None:
        self._stash.mkdir(parents=True, exist_ok=True)
        target = self._stash / name
        with contextlib.suppress(FileNotFoundError):
            target.unlink()
        try:
            if not link:
                raise OSError("copy")
            os.link(path, target)  # instant, and the bytes stay when AI Toolkit prunes the file
        except OSError:
            try:
                shutil.copyfile(path, target)
            except OSError as exc:
                log.warning("could not keep %s for upload: %s", path.name, type(exc).__name__)
                return None
        return target

    def _flush_checkpoint(self) -> None:
        pending, self._pending_checkpoint = self._pending_checkpoint, None
        if pending is None:
            return
        target = self._spec.output.checkpoint_for(pending.step)
        if target is None:
            log.info("no upload target for checkpoint %s: kept on the worker only", pending.name)
            return
        self._queue.put_nowait(("checkpoint", pending, target))

    def scan_samples(self) -> None:
        folder = self.save_root / "samples"
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            return
        for name in names:
            match = SAMPLE_FILE.match(name)
            if match is None or name in self._seen_samples:
                continue
            self._seen_samples.add(name)
            step, index = int(match.group(2)), int(match.group(3))
            target = self._spec.output.sample_for(step, index)
            if target is None:
                log.info("no upload target for sample %s", name)
                continue
            self._queue.put_nowait(("sample", folder / name, target, step, index))

    # ----------------------------------------------------------------- uploading

    def start(self) -> None:
        self._worker = asyncio.create_task(self._upload_loop())

    async def _upload_loop(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                if item[0] == "checkpoint":
                    await asyncio.to_thread(self._upload_checkpoint, item[1], item[2])
                else:
                    await asyncio.to_thread(self._upload_sample, *item[1:])
            except JobFailed as failure:
                # A lost sample or checkpoint must not fail the training it documents.
                self.failed_uploads += 1
                log.warning("upload failed: %s", failure.message)
            except Exception as exc:  # same: report and carry on
                self.failed_uploads += 1
                log.warning("upload failed: %s", type(exc).__name__)
            finally:
                self._queue.task_done()

    def _upload_checkpoint(self, pending: _PendingCheckpoint, target: Any) -> None:
        what = f"checkpoint {pending.name}"
        uploaded = self._uploader(pending.stashed, target.upload_url, what=what)
        optimizer = None
        if pending.optimizer is not None:
            optimizer = self._uploader(
                pending.optimizer, target.optimizer_upload_url, what=f"optimizer state of {pending.name}"
            )
        artifact = CheckpointArtifact(
            step=pending.step,
            name=pending.name,
            bytes=uploaded.bytes,
            sha256=uploaded.sha256,
            optimizer_bytes=optimizer.bytes if optimizer else None,
            optimizer_sha256=optimizer.sha256 if optimizer else None,
        )
        for path in (pending.stashed, pending.optimizer):
            if path is not None:
                with contextlib.suppress(OSError):
                    path.unlink()
        with self._lock:
            self.checkpoints.append(artifact)
            self._unreported_checkpoints.append(artifact)
        log.info("uploaded %s (%s bytes)", pending.name, uploaded.bytes)

    def _upload_sample(self, path: Path, target: Any, step: int, index: int) -> None:
        uploaded = self._uploader(path, target.upload_url, what=f"sample {path.name}")
        artifact = SampleArtifact(
            step=step, prompt_index=index, filename=path.name, bytes=uploaded.bytes, sha256=uploaded.sha256
        )
        with self._lock:
            self.samples.append(artifact)
            self._unreported_samples.append(artifact)

    async def finish(self, timeout: float = DRAIN_TIMEOUT_S) -> None:
        """After the trainer has exited: the last samples and checkpoint, and every upload finished."""
        self.scan_samples()
        self._flush_checkpoint()
        try:
            await asyncio.wait_for(self._queue.join(), timeout=timeout)
        except TimeoutError:
            log.warning("gave up waiting for %d uploads after %.0f s", self._queue.qsize(), timeout)
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker

    # ----------------------------------------------------------------- reporting

    @property
    def has_news(self) -> bool:
        """A sample or checkpoint not yet reported: worth a callback of its own, now."""
        return bool(self._unreported_samples or self._unreported_checkpoints)

    def report(self) -> Report:
        """What the next progress callback carries (call from a worker thread: it reads the loss log)."""
        with self._lock:
            report = Report(
                checkpoints=list(self._unreported_checkpoints), samples=list(self._unreported_samples)
            )
        if report.checkpoints:
            report.fields[CALLBACK_FIELD_CHECKPOINTS] = [_asdict(a) for a in report.checkpoints]
        if report.samples:
            report.fields[CALLBACK_FIELD_SAMPLES] = [_asdict(a) for a in report.samples]
        series = read_loss(self.save_root / "loss_log.db", self._loss_acked)
        if series:
            report.loss_to_step = max(points[-1][0] for points in series.values())
            report.fields[CALLBACK_FIELD_LOSS] = {
                "loss": downsample(series.get(LOSS_KEY, [])),
                "val_loss": downsample(series.get(VAL_LOSS_KEY, [])),
            }
        return report

    def acknowledge(self, report: Report) -> None:
        """The backend answered HTTP 200 to a callback carrying `report`: those items are delivered."""
        sent_checkpoints, sent_samples = set(map(id, report.checkpoints)), set(map(id, report.samples))
        with self._lock:
            self._unreported_checkpoints = [
                a for a in self._unreported_checkpoints if id(a) not in sent_checkpoints
            ]
            self._unreported_samples = [a for a in self._unreported_samples if id(a) not in sent_samples]
        if report.loss_to_step is not None:
            self._loss_acked = max(self._loss_acked, report.loss_to_step)


def _asdict(artifact: CheckpointArtifact | SampleArtifact) -> dict[str, Any]:
    return asdict(artifact)
