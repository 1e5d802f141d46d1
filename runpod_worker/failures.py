"""Classifies a failed AI Toolkit run from its output tail: what happened, and what the user should do.

Judged from real output (tests/runpod_worker/fixtures/ai_toolkit/, captured from run.py at 27a03a91):

- A model the Hub refuses: diffusers re-raises huggingface_hub's error as a plain `OSError ... is not a
  valid model identifier`, and that is what run.py's `Error running job:` line shows; the real cause
  (`GatedRepoError`, `RepositoryNotFoundError`, "Invalid credentials in Authorization header", a refused
  connection) is earlier in the same traceback chain, so the whole final failure is searched.
- Out of GPU memory: AI Toolkit skips a batch that runs out of memory and prints a banner
  (jobs/process/BaseSDTrainProcess.py:2643, "# OOM during training step, skipping batch N/3 #"); only the
  fourth in a row fails the run (:2636, "OOM during training step 3 times in a row, aborting training").
  A banner from a recovered OOM may still be in the tail when something else kills the run later, so
  memory is judged from the last failure alone: from run.py's last `Error running job:` line on.
"""

from __future__ import annotations

import re

from runpod_worker.contract import ErrorCode
from runpod_worker.errors import JobFailed

HUB = "https://huggingface.co"
# PyTorch's allocator message (c10/cuda/CUDACachingAllocator.cpp: "CUDA out of memory. Tried to allocate"),
# the exception type it raises (torch.OutOfMemoryError) and AI Toolkit's own give-up message.
_OOM_MARKERS = ("CUDA out of memory", "OutOfMemoryError", "OOM during training step 3 times in a row")
_GATED = ("GatedRepoError", "Cannot access gated repo")
_REFUSED_CREDENTIALS = "Invalid credentials in Authorization header"
_NOT_FOUND = ("RepositoryNotFoundError", "Repository Not Found for url")
# A refused or dropped connection: huggingface_hub 1.23.0 retries it (utils/_http.py http_backoff) on an
# httpx client it has already closed, so what surfaces is httpx's "client has been closed" (captured in
# hub_unreachable.txt); the others are what a timeout or an offline cache miss raise.
_UNREACHABLE = (
    "Cannot send a request, as the client has been closed",
    "ConnectError",
    "ConnectTimeout",
    "ReadTimeout",
    "LocalEntryNotFoundError",
)
_FAILURE_START = re.compile(r"^(Error running job:|Traceback \(most recent call last\):)")


def last_failure(tail: list[str]) -> list[str]:
    """The lines of the run's final failure: from run.py's last `Error running job:` line, or when the
    process died without printing one, from its last traceback; the whole tail when there is neither."""
    starts = [i for i, line in enumerate(tail) if line.startswith("Error running job:")]
    if not starts:
        starts = [i for i, line in enumerate(tail) if _FAILURE_START.match(line)]
    return tail[starts[-1] :] if starts else list(tail)


def classify_failure(returncode: int | None, tail: list[str], *, model: str | None = None) -> JobFailed:
    failure = last_failure(tail)
    text = "\n".join(failure)
    access = _model_access(text, model)
    if access is not None:
        return JobFailed(ErrorCode.MODEL_ACCESS, access, tail)
    if "no images found in" in text:  # toolkit/data_loader.py: every image failed to open
        return JobFailed(
            ErrorCode.BAD_INPUT,
            "The trainer could open none of the images. Replace them with valid JPEG, PNG or WebP files "
            "and start a new run.",
            tail,
        )
    if any(marker in text for marker in _OOM_MARKERS):
        return JobFailed(
            ErrorCode.OUT_OF_MEMORY,
            "The GPU ran out of memory. Lower the batch size or drop the 1024 resolution, "
            'or train on an 80 GB GPU (gpu_preset "80gb").',
            tail,
        )
    if returncode is not None and returncode < 0 and not any(_FAILURE_START.match(line) for line in failure):
        return JobFailed(
            ErrorCode.TRAINER_FAILED,
            f"The trainer was killed by signal {-returncode} without an error of its own, which is what "
            "the system's out-of-memory killer does. Retry the run on a worker with more system memory.",
            tail,
        )
    return JobFailed(
        ErrorCode.TRAINER_FAILED,
        f"The trainer stopped with exit code {returncode}{_reason(failure, tail)}. Retry the run; "
        "if it fails again, check the images and parameters against the log below.",
        tail,
    )


def _model_access(text: str, model: str | None) -> str | None:
    repo = _repo_in(text) or model or "the base model"
    page = f"{HUB}/{repo}" if "/" in repo else HUB
    if _REFUSED_CREDENTIALS in text:
        return (
            f"The Hugging Face Hub refused the worker's HF_TOKEN while downloading {repo}: the token is "
            "invalid or revoked. Set a valid read token as HF_TOKEN on the RunPod endpoint, then retry."
        )
    if any(marker in text for marker in _GATED):
        return (
            f"{repo} is a gated model and the Hugging Face Hub refused access: set HF_TOKEN on the RunPod "
            f"endpoint to a read token of an account that has accepted the model's licence at {page}, "
            "then retry."
        )
    if any(marker in text for marker in _NOT_FOUND):
        return (
            f"The Hugging Face Hub has no model {repo} that the worker's HF_TOKEN can see. Check the model "
            f"name (FLUX_DEV_PATH / FLUX_SCHNELL_PATH), and for a private or gated model set HF_TOKEN to a "
            f"token with access ({page}), then retry."
        )
    if any(marker in text for marker in _UNREACHABLE) and "huggingface_hub" in text:
        return (
            f"The worker could not reach the Hugging Face Hub to download {repo}. Retry the run; to stop "
            "depending on the Hub at cold start, use RunPod's cached model or a baked-in copy "
            "(runpod_worker/README.md, 'Where the weights come from')."
        )
    return None


def _repo_in(text: str) -> str | None:
    match = re.search(r"/([\w.-]+/[\w.-]+)/resolve/", text)
    return match.group(1) if match else None


def _reason(failure: list[str], tail: list[str]) -> str:
    lines = failure or tail
    reason = next((line.strip() for line in reversed(lines) if line.startswith("Error running job:")), "")
    if not reason:
        errors = (line.strip() for line in reversed(lines) if re.match(r"^[\w.]*(Error|Exception)\b", line))
        reason = next(errors, "")
    return f" ({reason})" if reason else ""
