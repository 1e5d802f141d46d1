"""Lays a run's last checkpoint and optimizer state where AI Toolkit resumes from.

AI Toolkit at the pinned commit 27a03a91 resumes by itself when its save folder already holds a save
(jobs/process/BaseSDTrainProcess.py):

- `get_latest_save_path` (:823-865) globs `<save_root>/<name>*.safetensors`, `<name>*.pt` and `<name>*`,
  drops names with `_LoRA`, `_refiner`, `_t2i`, `_cn`, and takes the newest by **ctime**; the network
  loads it (:2048-2054, "#### IMPORTANT RESUMING FROM ... ####").
- `load_training_state_from_metadata` (:867-889) reads `training_info.step` (and `epoch`) from the
  file's safetensors metadata (JSON-decoded, toolkit/metadata.py:71-88) and starts the loop there
  ("Found step N in metadata, starting from there") - unless `train.start_step` is set (:884), which
  the worker never sets.
- `<save_root>/optimizer.pt`, if present, is loaded into the optimizer (:2189-2214), unless the network
  changed shape.
- The step in a checkpoint's metadata is the 0-based loop step it was saved at, so the loop runs that
  step again (:2533, `range(start_step_num, steps)`); it saves and samples nothing at its start step
  (:2706) and renders no step-0 sample (:2479, `step_num <= 1`). The UI logger prunes logged steps after
  the start step on its first commit (toolkit/logging_aitk.py:158-162).

Known failures: resume "starts all over again" (ostris/ai-toolkit#688, for FLUX.2 Klein; a comment on #48
reports the same) or at an older checkpoint (#329). From the source, the causes are the newest-by-ctime
rule picking whatever save was touched last, and a file without `training_info` (or a set `start_step`)
leaving the step at 0. So the worker puts exactly one save in an otherwise empty save folder
(<training_folder>/<name>/<name>_<step:09d>.safetensors, with optimizer.pt beside it), checks its
sha256 and that its metadata says the expected step, and the run's output names the step it resumed from.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import time
from pathlib import Path

import requests

from runpod_worker.contract import ErrorCode, ResumeSpec
from runpod_worker.errors import JobFailed
from runpod_worker.trainer import safetensors_metadata, steps_from_metadata

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 120.0
CHUNK = 1024 * 1024
TRANSIENT_STATUSES = {408, 425, 429, 500, 502, 503, 504}


class _Transient(Exception):
    pass


def checkpoint_name(name: str, step: int) -> str:
    """AI Toolkit's checkpoint file name (BaseSDTrainProcess.py:518-523)."""
    return f"{name}_{step:09d}.safetensors"


def lay_out_resume(resume: ResumeSpec, save_root: Path, name: str) -> Path:
    """Downloads and verifies the checkpoint and optimizer state into `save_root`, which must hold no
    other save; returns the checkpoint's path. Raises JobFailed(download_failed / bad_input)."""
    save_root.mkdir(parents=True, exist_ok=True)
    others = [p.name for p in save_root.iterdir() if p.name.startswith(name)]
    if others:
        raise JobFailed(ErrorCode.UNKNOWN, f"The save folder already holds {others}; cannot resume safely.")
    checkpoint = save_root / checkpoint_name(name, resume.step)
    _download(resume.checkpoint_url, checkpoint, resume.checkpoint_sha256, "the checkpoint to resume from")
    step = steps_from_metadata(safetensors_metadata(checkpoint))
    if step != resume.step:
        checkpoint.unlink()
        raise JobFailed(
            ErrorCode.BAD_INPUT,
            f"The checkpoint to resume from says step {step} in its metadata, not {resume.step}; "
            "AI Toolkit would restart from there. Start the run again without resuming.",
        )
    if resume.optimizer_url is not None and resume.optimizer_sha256 is not None:
        _download(resume.optimizer_url, save_root / "optimizer.pt", resume.optimizer_sha256,
                  "the optimizer state to resume with")  # fmt: skip
    else:
        log.warning("resuming at step %d without optimizer state: the optimizer starts afresh", resume.step)
    log.info("resuming %s at step %d", name, resume.step)
    return checkpoint


def _download(url: str, dest: Path, sha256: str, what: str, *, attempts: int | None = None) -> None:
    attempts = attempts or int(os.environ.get("WORKER_DOWNLOAD_ATTEMPTS", 4))
    backoff_s = float(os.environ.get("WORKER_DOWNLOAD_BACKOFF_S", 0.5))
    last_error = ""
    with requests.Session() as session:
        for attempt in range(1, attempts + 1):
            try:
                _download_once(session, url, dest, sha256, what)
                return
            except _Transient as exc:
                last_error = str(exc)
                if attempt < attempts:
                    time.sleep(backoff_s * 2 ** (attempt - 1) * (0.5 + random.random()))
    dest.unlink(missing_ok=True)
    raise JobFailed(
        ErrorCode.DOWNLOAD_FAILED,
        f"Could not download {what} after {attempts} attempts ({last_error}); retry the run.",
    )


def _download_once(session: requests.Session, url: str, dest: Path, sha256: str, what: str) -> None:
    digest = hashlib.sha256()
    tmp = dest.with_name(dest.name + ".part")
    try:
        with session.get(url, stream=True, timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S)) as response:
            if response.status_code in TRANSIENT_STATUSES:
                raise _Transient(f"HTTP {response.status_code}")
            if response.status_code != 200:
                raise JobFailed(
                    ErrorCode.DOWNLOAD_FAILED,
                    f"Storage refused the download of {what} (HTTP {response.status_code}); the link may "
                    "have expired. Retry the run.",
                )
            with open(tmp, "wb") as handle:
                for chunk in response.iter_content(CHUNK):
                    digest.update(chunk)
                    handle.write(chunk)
    except requests.RequestException as exc:
        tmp.unlink(missing_ok=True)
        raise _Transient(type(exc).__name__) from exc  # the text may hold the signed URL
    if digest.hexdigest() != sha256:
        tmp.unlink(missing_ok=True)
        raise _Transient(f"{what} does not match its sha256")
    tmp.replace(dest)  # a fresh file: the newest ctime in the folder, as get_latest_save_path wants
