"""The seam between the training services and whatever runs the GPU job.

The first provider is the RunPod serverless endpoint running `runpod_worker/` (`RunPodClient`).
The interface stays as small as that provider needs.
"""

from __future__ import annotations

from typing import Any, Protocol

from training.runpod import RunPodClient, RunPodHealth, RunPodJob


class TrainingProvider(Protocol):
    def submit(
        self, *, job_input: dict[str, Any], webhook: str | None, policy: dict[str, Any]
    ) -> RunPodJob: ...

    def status(self, job_id: str) -> RunPodJob: ...

    def cancel(self, job_id: str) -> RunPodJob: ...

    def health(self) -> RunPodHealth: ...


def get_provider() -> TrainingProvider:
    """A provider built from the current settings (cheap; tests swap settings between calls)."""
    return RunPodClient.from_settings()
