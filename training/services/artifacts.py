"""What a progress callback carries beyond progress: checkpoints, samples and the loss series, recorded as
reported (docs/TRAINING.md, "Samples, checkpoints, loss and resume").

The worker repeats an item until a callback carrying it was answered 200, so every write here is an
upsert: a re-sent callback records nothing twice. Recording touches only the database; reading the files
back from storage is `verification`'s, in a task queued after commit (a checkpoint is hundreds of MB, and
the worker waits at most 5 s for an answer).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction

from runpod_worker.contract import (
    CALLBACK_FIELD_CHECKPOINTS,
    CALLBACK_FIELD_LOSS,
    CALLBACK_FIELD_RESUMED_FROM_STEP,
    CALLBACK_FIELD_SAMPLES,
    LOSS_POINTS_PER_CALLBACK,
    MAX_SAMPLE_UPLOADS,
    CheckpointArtifact,
    ContractError,
    SampleArtifact,
    TrainingParams,
    checkpoint_steps,
    sample_steps,
)
from training.models import Checkpoint, LossSeries, Sample, TrainingRun
from training.run_files import checkpoint_file, optimizer_file, sample_file
from training.services import queue

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# Points a callback may carry per series: the worker sends at most LOSS_POINTS_PER_CALLBACK.
MAX_LOSS_POINTS = 10 * LOSS_POINTS_PER_CALLBACK
Point = list[float]


@dataclass(frozen=True)
class ArtifactReport:
    """The additive fields of one progress callback (runpod_worker/contract.py)."""

    checkpoints: list[CheckpointArtifact] = field(default_factory=list)
    samples: list[SampleArtifact] = field(default_factory=list)
    loss: dict[str, list[Point]] = field(default_factory=dict)
    resumed_from_step: int | None = None

    @property
    def empty(self) -> bool:
        return not (self.checkpoints or self.samples or self.loss or self.resumed_from_step is not None)


def artifact_report_parse(body: dict[str, Any]) -> ArtifactReport:
    """The callback's checkpoints, samples and loss; ContractError names the first thing that is wrong."""
    resumed = body.get(CALLBACK_FIELD_RESUMED_FROM_STEP)
    if resumed is not None and (isinstance(resumed, bool) or not isinstance(resumed, int) or resumed < 0):
        raise ContractError(CALLBACK_FIELD_RESUMED_FROM_STEP, "must be a whole number of steps")
    return ArtifactReport(
        checkpoints=[_checked(CheckpointArtifact.from_dict, item, CALLBACK_FIELD_CHECKPOINTS)
                     for item in _items(body, CALLBACK_FIELD_CHECKPOINTS, 200)],
        samples=[_checked(SampleArtifact.from_dict, item, CALLBACK_FIELD_SAMPLES)
                 for item in _items(body, CALLBACK_FIELD_SAMPLES, MAX_SAMPLE_UPLOADS)],
        loss=_loss(body.get(CALLBACK_FIELD_LOSS)),
        resumed_from_step=resumed,
    )  # fmt: skip


def _items(body: dict[str, Any], key: str, limit: int) -> list[Any]:
    value = body.get(key) or []
    if not isinstance(value, list) or len(value) > limit:
        raise ContractError(key, f"must be a list of at most {limit} entries")
    return value


def _checked(parse: Any, item: Any, path: str) -> Any:
    try:
        artifact = parse(item)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ContractError(path, f"has an entry that is not a report ({type(exc).__name__})") from exc
    digests = [artifact.sha256, getattr(artifact, "optimizer_sha256", None) or artifact.sha256]
    if artifact.step < 0 or artifact.bytes < 0 or not all(_SHA256.match(d) for d in digests):
        raise ContractError(path, "has an entry with a negative number or a malformed sha256")
    return artifact


def _loss(value: Any) -> dict[str, list[Point]]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ContractError(CALLBACK_FIELD_LOSS, "must be an object of series")
    series = {}
    for key in ("loss", "val_loss"):
        points = value.get(key) or []
        if not isinstance(points, list) or len(points) > MAX_LOSS_POINTS:
            raise ContractError(f"{CALLBACK_FIELD_LOSS}.{key}", f"must be at most {MAX_LOSS_POINTS} points")
        series[key] = [_point(point, f"{CALLBACK_FIELD_LOSS}.{key}") for point in points]
    return {key: points for key, points in series.items() if points}


def _point(point: Any, path: str) -> Point:
    ok = isinstance(point, list) and len(point) == 2 and all(isinstance(v, int | float) for v in point)
    if not ok or isinstance(point[0], bool) or point[0] < 0 or not math.isfinite(point[1]):
        raise ContractError(path, "must hold [step, value] pairs of numbers")
    return [int(point[0]), float(point[1])]


def artifact_report_record(*, run: TrainingRun, report: ArtifactReport, delivery_id: str) -> int:
    """Records what the run's holder reported — checkpoints and samples as unverified rows, the loss merged
    into its series — and queues their verification after commit; returns how many rows are new. Items the
    job has no upload target for are ignored."""
    params = TrainingParams.from_dict(run.params)
    with transaction.atomic():
        if report.loss or report.resumed_from_step is not None:
            loss_series_merge(run=run, report=report, delivery_id=delivery_id)
        created = _checkpoints_record(run, report.checkpoints, set(checkpoint_steps(params)))
        created += _samples_record(run, report.samples, params)
        if created:
            queue.enqueue_on_commit(queue.VERIFY_ARTIFACTS, run.pk)
    return created


def _checkpoints_record(run: TrainingRun, reported: list[CheckpointArtifact], steps: set[int]) -> int:
    created = 0
    for item in reported:
        if item.step not in steps:
            continue
        values = {
            "name": item.name[:255],
            "file": checkpoint_file(run, item.step),
            "bytes": item.bytes,
            "sha256": item.sha256,
            "optimizer_file": optimizer_file(run, item.step) if item.optimizer_sha256 else "",
            "optimizer_bytes": item.optimizer_bytes if item.optimizer_sha256 else None,
            "optimizer_sha256": item.optimizer_sha256 or "",
        }
        created += _upsert(
            Checkpoint.objects.filter(run=run, step=item.step), values, run=run, step=item.step
        )
    return created


def _samples_record(run: TrainingRun, reported: list[SampleArtifact], params: TrainingParams) -> int:
    steps, prompts = set(sample_steps(params)), params.sample_prompts
    created = 0
    for item in reported:
        if item.step not in steps or item.prompt_index >= len(prompts):
            continue
        values = {
            "prompt": prompts[item.prompt_index],
            "image": sample_file(run, item.step, item.prompt_index),
            "bytes": item.bytes,
            "sha256": item.sha256,
        }
        rows = Sample.objects.filter(run=run, step=item.step, prompt_index=item.prompt_index)
        created += _upsert(rows, values, run=run, step=item.step, prompt_index=item.prompt_index)
    return created


def _upsert(rows: Any, values: dict[str, Any], **key: Any) -> int:
    """1 when the row is new, or was reported again with other bytes (a resumed delivery rendered the same
    step again over the same name): it is then verified anew. 0 for a repeat of what is recorded."""
    row = rows.select_for_update().first()
    if row is None:
        _, created = rows.model.objects.get_or_create(**key, defaults=values)
        return int(created)
    if row.sha256 == values["sha256"] and row.bytes == values["bytes"]:
        return 0
    rows.update(**values, verified_at=None, problem="", announced_at=None)
    return 1


def loss_series_merge(*, run: TrainingRun, report: ArtifactReport, delivery_id: str) -> LossSeries:
    """Merges the callback's points into the run's series, one point per step, in step order. The first
    callback of a delivery that resumed drops the points after its start step first (as AI Toolkit's
    UILogger prunes its own log on resume, toolkit/logging_aitk.py:158-162 at 27a03a91); its later
    callbacks, which repeat `resumed_from_step`, keep what it has sent since."""
    series, _ = LossSeries.objects.select_for_update().get_or_create(run=run)
    resumed = report.resumed_from_step
    cut = resumed is not None and (series.resumed_delivery_id, series.resumed_from_step) != (
        delivery_id,
        resumed,
    )
    for key in ("loss", "val_loss"):
        points = [p for p in getattr(series, key) if not (cut and p[0] > resumed)]
        setattr(series, key, _merged(points, report.loss.get(key, [])))
    if cut:
        series.resumed_delivery_id, series.resumed_from_step = delivery_id, resumed
    series.save()
    return series


def _merged(points: list[Point], new: list[Point]) -> list[Point]:
    by_step = {int(step): value for step, value in points}
    by_step.update({int(step): round(value, 6) for step, value in new})
    return [[step, by_step[step]] for step in sorted(by_step)]
