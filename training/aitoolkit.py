"""The one client for AI Toolkit's web UI API, as it runs on a persistent RunPod Pod (port 8675).

    client = AIToolkitClient(base_url="https://<pod>-8675.proxy.runpod.net", token=AI_TOOLKIT_AUTH)
    folder = client.dataset_upload_all(dataset, files)           # photos and their .txt captions
    job = client.job_create(name=name, job_config=ui_job_config(config, ...))
    client.job_start(job)                                       # the job AND its GPU queue
    job = client.job_get(job.id)                                # status, step, info, speed_string

Facts from ostris/ai-toolkit at 27a03a91, `ui/` (cited beside each use): every route sits behind
`Authorization: Bearer <AI_TOOLKIT_AUTH>` except `/api/files/` and `/api/img/`, which are public
(`src/middleware.ts:6,20-22`), so a job's files are deleted from the pod once they are kept elsewhere.
Most state changes are GETs (`src/app/api/jobs/[jobID]/*/route.ts`).

Errors: `AIToolkitUnavailable` is transient (timeout, connection error, 429, 5xx: try again later);
`AIToolkitUncertain` is a transient failure of a call that must not be repeated blindly (creating,
starting or stopping a job: read the job back first); `AIToolkitRejected` is permanent (4xx), with
`AIToolkitUnauthorized` (401), `AIToolkitNotFound` (404) and `AIToolkitNameTaken` (409) beside it;
`AIToolkitFileInvalid` means a downloaded LoRA is not the complete file the pod listed.
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
import struct
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

import requests
from urllib3.exceptions import NewConnectionError

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
DEFAULT_MAX_ATTEMPTS = 4
DOWNLOAD_CHUNK = 1024 * 1024
# A Flux LoRA's safetensors header is a few hundred KB; anything far larger is not a LoRA.
MAX_HEADER_BYTES = 16 * 1024 * 1024
# The loss key AI Toolkit logs for a LoRA (`jobs/process/BaseSDTrainProcess.py:2757`, `loss/<key>` of
# loss_dict); the route's own default key, `loss`, names no series (`jobs/[jobID]/loss/route.ts:50`).
LOSS_KEY = "loss/loss"

# Job.status values (`ui/src/types.ts:355`; default "stopped", `ui/prisma/schema.prisma:31`).
QUEUED, RUNNING, STOPPING, STOPPED, COMPLETED, ERROR = (
    "queued",
    "running",
    "stopping",
    "stopped",
    "completed",
    "error",
)
ACTIVE_STATUSES = frozenset({QUEUED, RUNNING, STOPPING})


class AIToolkitError(Exception):
    """Something went wrong talking to a pod's AI Toolkit UI; `status_code` is the HTTP status if any."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code


class AIToolkitUnavailable(AIToolkitError):
    """Transient: a timeout, a connection error, 429 or 5xx. The same call may succeed later."""


class AIToolkitUncertain(AIToolkitUnavailable):
    """A call that changes a job failed after it may have reached the UI: read the job before repeating."""


class AIToolkitRejected(AIToolkitError):
    """Permanent: the UI refused the request. Repeating it will not help."""


class AIToolkitUnauthorized(AIToolkitRejected):
    """401: the pod's AI_TOOLKIT_AUTH is not the token we hold."""


class AIToolkitNotFound(AIToolkitRejected):
    """404: no such job (a wrong id, or a pod that restarted with a fresh database) or file."""


class AIToolkitNameTaken(AIToolkitRejected):
    """409: a job with this name exists on the pod (`ui/src/app/api/jobs/route.ts:111-114`)."""


class AIToolkitFileInvalid(AIToolkitRejected):
    """A downloaded file is not the complete, well-formed file the pod listed."""


@dataclass(frozen=True)
class AIToolkitJob:
    """A row of the UI's Job table (`ui/prisma/schema.prisma:24-50`) as the routes return it."""

    id: str
    name: str
    status: str
    step: int
    total_steps: int | None
    info: str
    speed_string: str
    gpu_ids: str
    stop: bool
    return_to_queue: bool
    pid: int | None
    queue_position: int
    job_config: dict[str, Any] = field(repr=False)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> AIToolkitJob:
        try:
            job_config = json.loads(payload.get("job_config") or "{}")
        except ValueError:
            job_config = {}
        return cls(
            id=str(payload["id"]),
            name=str(payload["name"]),
            status=str(payload.get("status") or ""),
            step=int(payload.get("step") or 0),
            total_steps=_optional_int(payload.get("total_steps")),
            info=str(payload.get("info") or ""),
            speed_string=str(payload.get("speed_string") or ""),
            gpu_ids=str(payload.get("gpu_ids") or ""),
            stop=bool(payload.get("stop")),
            return_to_queue=bool(payload.get("return_to_queue")),
            pid=_optional_int(payload.get("pid")),
            queue_position=int(payload.get("queue_position") or 0),
            job_config=job_config if isinstance(job_config, dict) else {},
            raw=payload,
        )

    @property
    def steps_total(self) -> int:
        """Python never writes `total_steps`; the UI shows the config's (`ui/src/utils/jobs.ts:125-131`)."""
        if self.total_steps is not None:
            return self.total_steps
        try:
            return int(self.job_config["config"]["process"][0]["train"]["steps"])
        except (KeyError, IndexError, TypeError, ValueError):
            return 0

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES


@dataclass(frozen=True)
class AIToolkitSettings:
    training_folder: str
    datasets_folder: str


@dataclass(frozen=True)
class DatasetListing:
    """`POST /api/datasets/listImages`: the dataset's absolute folder and its images' sub-paths."""

    root: str
    images: list[str]

    @property
    def folder(self) -> str:
        # `root` carries the OS separator on the end (`listImages/route.ts:35`); the trainer wants the folder.
        return self.root.rstrip("/\\")


@dataclass(frozen=True)
class JobFile:
    path: str
    size: int

    @property
    def name(self) -> str:
        return PurePosixPath(self.path).name


@dataclass(frozen=True)
class LossPoint:
    step: int
    wall_time: float
    value: float | None


@dataclass(frozen=True)
class LossSeries:
    key: str
    keys: list[str]
    points: list[LossPoint]


@dataclass(frozen=True)
class LogChunk:
    text: str
    offset: int
    reset: bool


@dataclass(frozen=True)
class QueueState:
    gpu_ids: str
    is_running: bool


@dataclass(frozen=True)
class DownloadedFile:
    path: Path
    size: int
    sha256: str


def _optional_int(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def ui_job_config(
    config: dict[str, Any], *, name: str, training_folder: str, dataset_folder: str
) -> dict[str, Any]:
    """The studio's AI Toolkit config, made into one the UI can run and follow.

    - `type: diffusion_trainer`: only that trainer writes status, step and info to the UI's database
      (`extensions_built_in/sd_trainer/DiffusionTrainer.py:17-47`); `sd_trainer` never does.
    - `config.name == name`: the routes find a job's folder as `<TRAINING_FOLDER>/<job.name>`
      (`ui/cron/actions/startJob.ts:186`), the trainer writes to `<training_folder>/<config.name>`.
    - `training_folder` is the UI's TRAINING_FOLDER setting, as the UI's own form sets it
      (`ui/src/app/jobs/new/page.tsx:147`), so the file routes can see the outputs.
    - `logging.use_ui_logger` writes `loss_log.db`, which the loss route reads
      (`toolkit/logging_aitk.py:338-342`).
    - `performance_log_every > 0` runs the timer hook that writes `speed_string`
      (`DiffusionTrainer.py:339-361`); 10 is the UI's default (`ui/src/app/jobs/new/jobConfig.ts:48`).
    """
    result = copy.deepcopy(config)
    result["config"]["name"] = name
    process = result["config"]["process"][0]
    process["type"] = "diffusion_trainer"
    process["training_folder"] = training_folder
    process["performance_log_every"] = max(int(process.get("performance_log_every") or 0), 10)
    process.setdefault("logging", {})
    process["logging"]["use_ui_logger"] = True
    process["logging"].setdefault("log_every", 1)
    for dataset in process["datasets"]:
        dataset["folder_path"] = dataset_folder
    return result


def safetensors_check(path: Path) -> None:
    """Raises AIToolkitFileInvalid unless `path` is a whole safetensors file: a JSON header whose
    tensors' data ends exactly at the end of the file."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise AIToolkitFileInvalid(f"{path.name} is too short to be a safetensors file.")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > min(MAX_HEADER_BYTES, size - 8):
            raise AIToolkitFileInvalid(f"{path.name} has no valid safetensors header.")
        try:
            header = json.loads(handle.read(header_len))
        except ValueError as exc:
            raise AIToolkitFileInvalid(f"{path.name} has a safetensors header that is not JSON.") from exc
    if not isinstance(header, dict):
        raise AIToolkitFileInvalid(f"{path.name} has a safetensors header that is not an object.")
    ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    if not ends or max(ends) != size - 8 - header_len:
        raise AIToolkitFileInvalid(f"{path.name} is not a complete safetensors file (truncated or padded).")


class AIToolkitClient:
    """A session with the pod's Bearer token, a timeout on every call and bounded, jittered retries."""

    def __init__(
        self,
        *,
        base_url: str,
        token: str,
        timeout_seconds: float = 30.0,
        transfer_timeout_seconds: float = 300.0,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        backoff_seconds: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_seconds = timeout_seconds
        self.transfer_timeout_seconds = transfer_timeout_seconds
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self._sleep = sleep
        self.session = requests.Session()
        # The UI reads the token from `Authorization: Bearer <token>` (`ui/src/middleware.ts:17`).
        self.session.headers.update({"Authorization": f"Bearer {token}", "Accept": "application/json"})
        self.calls = 0

    def close(self) -> None:
        self.session.close()

    # ---------------------------------------------------------------------------------- pod-wide reads

    def check(self) -> None:
        """GET /api/auth answers only when the token is accepted (`ui/src/app/api/auth/route.ts`)."""
        self._json("GET", "/api/auth")

    def settings(self) -> AIToolkitSettings:
        """The folders the UI resolves (`ui/src/app/api/settings/route.ts:6-32`, defaults filled in)."""
        payload = self._json("GET", "/api/settings")
        return AIToolkitSettings(
            training_folder=str(payload["TRAINING_FOLDER"]), datasets_folder=str(payload["DATASETS_FOLDER"])
        )

    def queues(self) -> list[QueueState]:
        payload = self._json("GET", "/api/queue")
        return [
            QueueState(gpu_ids=str(q["gpu_ids"]), is_running=bool(q["is_running"]))
            for q in payload.get("queues") or []
        ]

    # ------------------------------------------------------------------------------------- datasets

    def dataset_create(self, name: str) -> str:
        """Makes the dataset folder; returns its name as the UI made it: lower-cased, runs of other
        characters as `_` (`datasets/create/route.tsx:11`).

        The list route runs first because it creates the datasets root when missing
        (`datasets/list/route.ts:9-14`), while create makes only the last folder (`mkdirSync`, not
        recursive, `create/route.tsx:17-19`): on a fresh pod, whose image has no `datasets/` folder,
        create alone answers 500 until someone opens the UI's Datasets page.
        """
        self._request("GET", "/api/datasets/list")
        payload = self._json("POST", "/api/datasets/create", json={"name": name})
        return str(payload["name"])

    def dataset_upload(self, dataset: str, *, filename: str, content: bytes) -> str:
        """Writes one file into the dataset (overwriting one of the same name, so a retry is harmless);
        returns the name the UI stored it under (`[^a-zA-Z0-9.-]` → `_`, `datasets/upload/route.ts:34`).
        One file per request, as the UI's own upload dialog sends them (`AddImagesModal.tsx:117-122`)."""
        payload = self._json(
            "POST",
            "/api/datasets/upload",
            data={"datasetName": dataset},
            files={"files": (filename, content, "application/octet-stream")},
            timeout=self.transfer_timeout_seconds,
        )
        stored = [str(name) for name in payload.get("files") or []]
        if len(stored) != 1:
            raise AIToolkitUnavailable(f"The UI did not confirm the upload of {filename}.")
        return stored[0]

    def dataset_upload_all(self, dataset: str, files: Iterable[tuple[str, bytes]]) -> DatasetListing:
        """Uploads every file (photos and `<stem>.txt` captions) and checks each landed under its own name."""
        for filename, content in files:
            stored = self.dataset_upload(dataset, filename=filename, content=content)
            if stored != filename:
                raise AIToolkitRejected(
                    f"The UI stored {filename} as {stored}; use names of letters, digits, '.' and '-' only."
                )
        return self.dataset_images(dataset)

    def dataset_images(self, dataset: str) -> DatasetListing:
        payload = self._json("POST", "/api/datasets/listImages", json={"datasetName": dataset})
        return DatasetListing(root=str(payload["root"]), images=[str(p) for p in payload.get("images") or []])

    def dataset_delete(self, dataset: str) -> None:
        """Removes the dataset folder; an absent one is no error (`datasets/delete/route.tsx:13-16`)."""
        self._json("POST", "/api/datasets/delete", json={"name": dataset})

    # ----------------------------------------------------------------------------------------- jobs

    def job_create(self, *, name: str, job_config: dict[str, Any], gpu_ids: str = "0") -> AIToolkitJob:
        """POST /api/jobs without an id: a new row, status `stopped`. A duplicate name answers 409
        (AIToolkitNameTaken); a lost answer raises AIToolkitUncertain: look the name up with `job_find`."""
        payload = self._json(
            "POST",
            "/api/jobs",
            json={"name": name, "gpu_ids": gpu_ids, "job_config": job_config},
            repeatable=False,
        )
        return AIToolkitJob.from_payload(payload)

    def job_get(self, job_id: str) -> AIToolkitJob:
        # An unknown id answers 200 with `null` (`ui/src/app/api/jobs/route.ts:14-18`).
        try:
            payload = self._request("GET", "/api/jobs", params={"id": job_id}).json()
        except ValueError as exc:
            raise AIToolkitUnavailable(
                "The UI answered GET /api/jobs?id= with a body that is not JSON."
            ) from exc
        if payload is None:
            raise AIToolkitNotFound(f"The pod has no job {job_id}.", status_code=200)
        if not isinstance(payload, dict):
            raise AIToolkitUnavailable("The UI answered GET /api/jobs?id= with JSON that is not a job.")
        return AIToolkitJob.from_payload(payload)

    def jobs(self) -> list[AIToolkitJob]:
        payload = self._json("GET", "/api/jobs")
        return [AIToolkitJob.from_payload(job) for job in payload.get("jobs") or []]

    def job_find(self, name: str) -> AIToolkitJob | None:
        """The job of that name, if the pod has one (names are unique, `schema.prisma:26`)."""
        return next((job for job in self.jobs() if job.name == name), None)

    def job_start(self, job: AIToolkitJob) -> None:
        """Queues the job, then starts its GPU queue, as the UI's Start button does
        (`ui/src/components/JobActionBar.tsx:112-115`): `/start` alone leaves the queue stopped and the
        job waits for ever (`jobs/[jobID]/start/route.ts:35-43` creates the queue with is_running false).

        `/start` is not repeated blindly: it sets `queued` whatever the job's state
        (`start/route.ts:45-53`), so a repeat after the cron worker started the job would re-queue a
        running one.
        """
        self._json("GET", f"/api/jobs/{quote(job.id, safe='')}/start", repeatable=False)
        self.queue_start(job.gpu_ids)

    def queue_start(self, gpu_ids: str) -> None:
        # Creates the queue running if missing (`queue/[queueID]/start/route.ts:11-16`); repeatable.
        self._json("GET", f"/api/queue/{quote(gpu_ids, safe='')}/start")

    def job_stop(self, job_id: str) -> None:
        """Sets `stop` and sends SIGINT to the trainer (`jobs/[jobID]/stop/route.ts:57-90`). Not repeated
        blindly: a second SIGINT during the trainer's graceful stop breaks its cleanup
        (`DiffusionTrainer.py:68-71`)."""
        self._json("GET", f"/api/jobs/{quote(job_id, safe='')}/stop", repeatable=False)

    def job_mark_stopped(self, job_id: str) -> None:
        """Forces `stopped` and clears the pid, for a job left `running` by a trainer that died without
        telling the UI (`jobs/[jobID]/mark_stopped/route.ts:12-20`). Idempotent."""
        self._json("GET", f"/api/jobs/{quote(job_id, safe='')}/mark_stopped")

    def job_delete(self, job_id: str) -> bool:
        """Removes `<TRAINING_FOLDER>/<name>` and the row (`jobs/[jobID]/delete/route.ts:18-26`).
        False when the pod no longer has the job (already deleted)."""
        try:
            self._json("GET", f"/api/jobs/{quote(job_id, safe='')}/delete")
        except AIToolkitNotFound:
            return False
        return True

    def job_files(self, job_id: str) -> list[JobFile]:
        """Every `*.safetensors` in the job folder, sorted, then `optimizer.pt` (`files/route.ts:27-58`)."""
        payload = self._json("GET", f"/api/jobs/{quote(job_id, safe='')}/files")
        return [JobFile(path=str(f["path"]), size=int(f["size"])) for f in payload.get("files") or []]

    def job_samples(self, job_id: str) -> list[str]:
        """Absolute paths of the sample media, sorted (`jobs/[jobID]/samples/route.ts:31-40`)."""
        payload = self._json("GET", f"/api/jobs/{quote(job_id, safe='')}/samples")
        return [str(path) for path in payload.get("samples") or []]

    def job_loss(
        self, job_id: str, *, key: str = LOSS_KEY, since_step: int | None = None, limit: int = 2000
    ) -> LossSeries:
        """Points after `since_step` (`jobs/[jobID]/loss/route.ts:50-84`; `limit` is capped at 20 000)."""
        params: dict[str, Any] = {"key": key, "limit": limit}
        if since_step is not None:
            params["since_step"] = since_step
        payload = self._json("GET", f"/api/jobs/{quote(job_id, safe='')}/loss", params=params)
        points = [
            LossPoint(
                step=int(p["step"]),
                wall_time=float(p["wall_time"]),
                value=None if p.get("value") is None else float(p["value"]),
            )
            for p in payload.get("points") or []
        ]
        return LossSeries(
            key=str(payload.get("key") or key), keys=list(payload.get("keys") or []), points=points
        )

    def job_log(self, job_id: str, *, offset: int | None = None) -> LogChunk:
        """`log.txt` from `offset` on, or its last 5 MB without one (`jobs/[jobID]/log/route.ts:34-72`)."""
        params = {} if offset is None else {"offset": offset}
        payload = self._json("GET", f"/api/jobs/{quote(job_id, safe='')}/log", params=params)
        return LogChunk(
            text=str(payload.get("log") or ""),
            offset=int(payload.get("offset") or 0),
            reset=bool(payload.get("reset")),
        )

    # ---------------------------------------------------------------------------------------- files

    def file_url(self, path: str) -> str:
        """`/api/files/<folder>/<file>`, each part percent-encoded, as the UI emits it
        (`cron/fileServer.ts:251-261`)."""
        posix = PurePosixPath(path)
        return f"{self.base_url}/api/files/{quote(str(posix.parent), safe='')}/{quote(posix.name, safe='')}"

    def file_download(self, path: str, dest: Path, *, expected_size: int | None = None) -> DownloadedFile:
        """Streams a file under the datasets or training folder to `dest`, resuming with a Range request
        after a broken transfer (`cron/fileServer.ts:343-361`); checks the byte count and hashes it."""
        partial = dest.with_name(dest.name + ".part")
        partial.unlink(missing_ok=True)
        for attempt in range(1, self.max_attempts + 1):
            try:
                total = self._download_into(path, partial)
                break
            except (
                requests.Timeout,
                requests.ConnectionError,
                requests.exceptions.ChunkedEncodingError,  # the connection broke mid-body
                AIToolkitUnavailable,
            ) as exc:
                if attempt == self.max_attempts:
                    partial.unlink(missing_ok=True)
                    raise AIToolkitUnavailable(
                        f"The pod did not deliver {PurePosixPath(path).name} after {attempt} attempts "
                        f"({type(exc).__name__})."
                    ) from exc
                self._sleep(self._backoff(attempt))
        size = partial.stat().st_size
        expected = [n for n in (total, expected_size) if n is not None]
        if any(size != n for n in expected):
            partial.unlink(missing_ok=True)
            raise AIToolkitFileInvalid(
                f"{PurePosixPath(path).name}: received {size} bytes, the pod announced {expected}."
            )
        partial.replace(dest)
        return DownloadedFile(path=dest, size=size, sha256=_sha256(dest))

    def lora_download(self, job: AIToolkitJob, dest: Path) -> DownloadedFile:
        """The job's final `<name>.safetensors` (never a `<name>_000000250` checkpoint), downloaded whole
        and checked to be a complete safetensors file."""
        final = next((f for f in self.job_files(job.id) if f.name == f"{job.name}.safetensors"), None)
        if final is None:
            raise AIToolkitNotFound(f"The pod lists no {job.name}.safetensors for job {job.id}.")
        downloaded = self.file_download(final.path, dest, expected_size=final.size)
        try:
            safetensors_check(dest)
        except AIToolkitFileInvalid:
            dest.unlink(missing_ok=True)
            raise
        return downloaded

    def file_delete(self, path: str) -> bool:
        """Deletes one file under the datasets or training folder (`files/delete/route.ts:12-51`); False
        if it was already gone."""
        try:
            self._json("POST", "/api/files/delete", json={"filePath": path})
        except AIToolkitNotFound:
            return False
        return True

    # ------------------------------------------------------------------------------------ internals

    def _download_into(self, path: str, partial: Path) -> int | None:
        """Appends the missing bytes of `path` to `partial`; returns the file's full size if announced."""
        have = partial.stat().st_size if partial.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        self.calls += 1
        with self.session.get(
            self.file_url(path), headers=headers, stream=True, timeout=self.transfer_timeout_seconds
        ) as response:
            if response.status_code not in (200, 206):
                self._raise_for(response, f"GET {PurePosixPath(path).name}", repeatable=True, last=True)
            if response.status_code == 200:
                have = 0  # the server ignored the range: start over
            total = _total_size(response, have)
            with partial.open("ab" if have else "wb") as out:
                for chunk in response.iter_content(DOWNLOAD_CHUNK):
                    out.write(chunk)
        return total

    def _json(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        data: dict[str, Any] | None = None,
        files: dict[str, Any] | None = None,
        timeout: float | None = None,
        repeatable: bool = True,
    ) -> dict[str, Any]:
        response = self._request(
            method,
            path,
            params=params,
            json=json,
            data=data,
            files=files,
            timeout=timeout,
            repeatable=repeatable,
        )
        try:
            payload = response.json()
        except ValueError as exc:
            raise AIToolkitUnavailable(
                f"The UI answered {method} {path} with a body that is not JSON."
            ) from exc
        if not isinstance(payload, dict):
            raise AIToolkitUnavailable(f"The UI answered {method} {path} with JSON that is not an object.")
        return payload

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        data: dict[str, Any] | None = None,
        files: dict[str, Any] | None = None,
        timeout: float | None = None,
        repeatable: bool = True,
    ) -> requests.Response:
        operation = f"{method} {path}"
        for attempt in range(1, self.max_attempts + 1):
            last = attempt == self.max_attempts
            try:
                self.calls += 1
                response = self.session.request(
                    method,
                    self.base_url + path,
                    params=params,
                    json=json,
                    data=data,
                    files=files,
                    timeout=timeout or self.timeout_seconds,
                )
            except (requests.Timeout, requests.ConnectionError) as exc:
                self._on_connection_error(exc, operation, repeatable=repeatable, last=last)
                response = None
            if response is not None:
                if 200 <= response.status_code < 300:
                    return response
                self._raise_for(response, operation, repeatable=repeatable, last=last)
            self._sleep(self._backoff(attempt))
        raise AssertionError("unreachable: the last attempt always returns or raises")

    def _on_connection_error(
        self, exc: requests.RequestException, operation: str, *, repeatable: bool, last: bool
    ) -> None:
        if _never_connected(exc):
            # The pod cannot have seen the request (refused, unresolvable, timed out connecting): a pod
            # that is stopped or restarting looks like this. Safe to repeat any call.
            if last:
                raise AIToolkitUnavailable(
                    f"The pod's UI did not accept a connection for {operation}."
                ) from exc
            return
        if not repeatable:
            raise AIToolkitUncertain(
                f"The pod's UI did not answer {operation} ({type(exc).__name__});"
                " read the job before retrying."
            ) from exc
        if last:
            raise AIToolkitUnavailable(
                f"The pod's UI did not answer {operation} after {self.max_attempts} attempts"
                f" ({type(exc).__name__})."
            ) from exc

    def _raise_for(
        self, response: requests.Response, operation: str, *, repeatable: bool, last: bool
    ) -> None:
        """Raises the error a non-2xx answer means, or returns to let a transient one be tried again."""
        code = response.status_code
        detail = _detail(response)
        if code in RETRY_STATUSES:
            if code != 429 and not repeatable:
                raise AIToolkitUncertain(
                    f"The pod's UI answered {operation} with HTTP {code}{detail};"
                    " read the job before retrying.",
                    status_code=code,
                )
            if last:
                raise AIToolkitUnavailable(
                    f"The pod's UI answered {operation} with HTTP {code}{detail} on every attempt;"
                    " try again later.",
                    status_code=code,
                )
            response.close()
            return
        error = {401: AIToolkitUnauthorized, 404: AIToolkitNotFound, 409: AIToolkitNameTaken}.get(
            code, AIToolkitRejected
        )
        if code == 401:
            raise error(
                "The pod's UI refused the token (HTTP 401). Check the pod's AI_TOOLKIT_AUTH.",
                status_code=code,
            )
        raise error(f"The pod's UI refused {operation} (HTTP {code}){detail}.", status_code=code)

    def _backoff(self, attempt: int) -> float:
        # Full jitter, so several studio workers polling one pod never retry in lockstep.
        return random.uniform(0, self.backoff_seconds * 2 ** (attempt - 1))


def _never_connected(exc: requests.RequestException) -> bool:
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, NewConnectionError)


def _detail(response: requests.Response) -> str:
    """The UI's own words: `{"error": …}` from the routes, plain text from the file server."""
    try:
        payload = response.json()
    except ValueError:
        text = response.text.strip()[:200]
        return f": {text}" if text else ""
    if isinstance(payload, dict) and payload.get("error"):
        return f": {payload['error']}"
    return ""


def _total_size(response: requests.Response, have: int) -> int | None:
    """The whole file's size from Content-Range or Content-Length; None when the server sent neither."""
    content_range = response.headers.get("Content-Range", "")
    if response.status_code == 206 and "/" in content_range:
        return int(content_range.rsplit("/", 1)[1])
    length = response.headers.get("Content-Length")
    return have + int(length) if length is not None else None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in _chunks(handle):
            digest.update(chunk)
    return digest.hexdigest()


def _chunks(handle: Any) -> Iterator[bytes]:
    while chunk := handle.read(DOWNLOAD_CHUNK):
        yield chunk
