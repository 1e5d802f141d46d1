"""Fixtures for the training suites: a character ready to train, a fake provider, eager Celery."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.utils import timezone
from safetensors.numpy import save

from characters.faces.photo import VERSION as ANALYSER_VERSION
from characters.models import Character, DatasetReport
from studio.celery import app
from tests.characters.factories import CharacterFactory, ReferenceImageFactory
from tests.runpod_worker.ui_pod import ui_pod  # noqa: F401  (the AI Toolkit UI stand-in, for pod runs)
from tests.training.factories import TrainingRunFactory
from training.artifacts import lora_upload_name
from training.models import TrainingRun
from training.runpod import RunPodError, RunPodHealth, RunPodJob


@dataclass
class FakeProvider:
    """Stands where RunPod stands for service tests: records calls, answers from a script."""

    statuses: dict[str, RunPodJob] = field(default_factory=dict)
    submit_errors: list[RunPodError] = field(default_factory=list)
    status_errors: list[RunPodError] = field(default_factory=list)
    submitted: list[dict[str, Any]] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    cancel_errors: list[RunPodError] = field(default_factory=list)
    status_calls: list[str] = field(default_factory=list)
    health_errors: list[RunPodError] = field(default_factory=list)
    health_calls: int = 0

    def submit(self, *, job_input: dict[str, Any], webhook: str | None, policy: dict[str, Any]) -> RunPodJob:
        self.submitted.append({"input": job_input, "webhook": webhook, "policy": policy})
        if self.submit_errors:
            raise self.submit_errors.pop(0)
        return RunPodJob(id=f"job-{len(self.submitted)}", status="IN_QUEUE")

    def status(self, job_id: str) -> RunPodJob:
        self.status_calls.append(job_id)
        if self.status_errors:
            raise self.status_errors.pop(0)
        return self.statuses[job_id]

    def cancel(self, job_id: str) -> RunPodJob:
        self.cancelled.append(job_id)
        if self.cancel_errors:
            raise self.cancel_errors.pop(0)
        return RunPodJob(id=job_id, status="CANCELLED")

    def health(self) -> RunPodHealth:
        self.health_calls += 1
        if self.health_errors:
            raise self.health_errors.pop(0)
        return RunPodHealth(jobs={}, workers={})


@pytest.fixture
def provider(monkeypatch: pytest.MonkeyPatch) -> FakeProvider:
    fake = FakeProvider()
    # The one seam: every caller asks `training.providers.get_provider()` at call time.
    monkeypatch.setattr("training.providers.get_provider", lambda: fake)
    return fake


@pytest.fixture(autouse=True)
def eager_celery() -> Iterator[None]:
    """Tasks run in-process when queued; the live-stack suite runs a real worker instead."""
    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True
    yield
    app.conf.task_always_eager = False


@pytest.fixture
def character(alice: Any, settings: Any) -> Any:
    """Alice's character with exactly the minimum number of reference images."""
    settings.TRAINING_MIN_IMAGES = 3
    character = CharacterFactory(owner=alice, name="Anna", trigger_word="ohwx_anna")
    ReferenceImageFactory.create_batch(3, character=character)
    return character


def face_checked(character: Any) -> Any:
    """The face check has seen the character's photos and found nothing wrong (a current, clean report), as
    auto-train waits for it; the stand-in images of the factories hold no face to check."""
    DatasetReport.objects.update_or_create(
        character=character,
        defaults={
            "dataset_as_of": Character.objects.values_list("dataset_changed_at", flat=True).get(
                pk=character.pk
            ),
            "computed_at": timezone.now(),
            "analyser": ANALYSER_VERSION,
            "score": 100,
            "photo_count": character.images.count(),
        },
    )
    return character


def make_run(character: Any, status: str = TrainingRun.Status.QUEUED, **fields: Any) -> TrainingRun:
    defaults: dict[str, Any] = {"runpod_job_id": f"job-{status}"} if status != "pending" else {}
    return TrainingRunFactory(character=character, status=status, **{**defaults, **fields})


def lora_bytes() -> bytes:
    """A small LoRA as the trainer writes it: safetensors, fp16 tensors, string metadata."""
    tensors = {
        "transformer.single_transformer_blocks.0.proj_out.lora_A.weight": numpy.ones((4, 64), numpy.float16),
        "transformer.single_transformer_blocks.0.proj_out.lora_B.weight": numpy.ones((64, 4), numpy.float16),
    }
    return save(tensors, metadata={"training_info": json.dumps({"step": 1000, "epoch": 0})})


def assert_keeps_its_own_lora(run: TrainingRun, content: bytes) -> None:
    """The completed run keeps its own copy of the uploaded LoRA, under a name no upload link writes, and
    the upload itself is gone."""
    own = rf"characters/{run.character_id}/loras/{run.pk}-[0-9a-f]{{8}}\.safetensors"
    assert re.fullmatch(own, run.lora_name), run.lora_name
    with default_storage.open(run.lora_name, "rb") as handle:
        assert handle.read() == content
    assert not default_storage.exists(lora_upload_name(run))


HOLDER = "delivery-holder"


def held_run(character: Any) -> TrainingRun:
    """A run training on job-1, held by the delivery HOLDER, which called back just now."""
    return make_run(
        character,
        status="training",
        runpod_job_id="job-1",
        worker_delivery_id=HOLDER,
        started_at=timezone.now(),
        worker_seen_at=timezone.now(),
    )


def store_lora(run: TrainingRun, content: bytes = b"safetensors bytes") -> dict[str, Any]:
    """Puts a LoRA where the run's worker uploads it; returns the worker's output document for it."""
    default_storage.save(lora_upload_name(run), ContentFile(content))
    return {
        "lora": {
            "name": "lora.safetensors",
            "bytes": len(content),
            "sha256": hashlib.sha256(content).hexdigest(),
        },
        "steps": 1000,
        "trainer_version": "ai-toolkit test",
        "gpu": {"name": "NVIDIA A100-SXM4-80GB", "memory_gb": 80.0},
        "timings": {"download_s": 1.0, "train_s": 100.0, "upload_s": 1.0},
    }
