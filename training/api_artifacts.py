"""What a run makes while it trains, as resources of the run in `/api/v1/`: its samples, checkpoints and
loss series, and "use this checkpoint" (the character's LoRA becomes that checkpoint)."""

from __future__ import annotations

import uuid

from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from studio.api import ErrorSerializer
from training import services
from training.models import LossSeries, TrainingEvent
from training.selectors import (
    training_run_checkpoints,
    training_run_get_for,
    training_run_loss,
    training_run_samples,
)
from training.serializers import (
    CheckpointSerializer,
    LossSeriesSerializer,
    SampleSerializer,
    TrainingRunSerializer,
)


class TrainingRunSampleListApi(APIView):
    @extend_schema(
        operation_id="runs_samples_list",
        responses=SampleSerializer(many=True),
        tags=["runs"],
        description="The run's sample images, newest step first and in prompt order within a step: one "
        "per sample prompt at each sample step, listed once verified in storage. Links expire in 15 "
        "minutes; read the list again for new ones.",
    )
    def get(self, request: Request, run_id: uuid.UUID) -> Response:
        run = training_run_get_for(request.user, run_id)  # type: ignore[arg-type]
        samples = training_run_samples(run)
        return Response(SampleSerializer(samples, many=True, context={"request": request}).data)


class TrainingRunCheckpointListApi(APIView):
    @extend_schema(
        operation_id="runs_checkpoints_list",
        responses=CheckpointSerializer(many=True),
        tags=["runs"],
        description="The LoRAs the trainer saved while the run trained, in step order, each verified in "
        "storage; a completed run's final LoRA is listed last (`final`). A cancelled or failed run keeps "
        "the ones it made. `pruned` ones had their file deleted by the storage cap.",
    )
    def get(self, request: Request, run_id: uuid.UUID) -> Response:
        run = training_run_get_for(request.user, run_id)  # type: ignore[arg-type]
        checkpoints = training_run_checkpoints(run)
        return Response(CheckpointSerializer(checkpoints, many=True, context={"request": request}).data)


class TrainingRunLossApi(APIView):
    @extend_schema(operation_id="runs_loss_read", responses=LossSeriesSerializer, tags=["runs"])
    def get(self, request: Request, run_id: uuid.UUID) -> Response:
        run = training_run_get_for(request.user, run_id)  # type: ignore[arg-type]
        series = training_run_loss(run)
        return Response(LossSeriesSerializer(series or LossSeries(run=run)).data)


class TrainingRunCheckpointUseApi(APIView):
    @extend_schema(
        operation_id="runs_checkpoints_use",
        request=None,
        responses={
            200: TrainingRunSerializer,
            404: ErrorSerializer,
            409: ErrorSerializer,
            503: ErrorSerializer,
        },
        tags=["runs"],
        description="Makes the run's checkpoint at `step` (or its final LoRA, at the run's last step) the "
        "run's LoRA and the character's current one, recorded in the run's events. 409 `run_active` while "
        "the run trains, `checkpoint_changed`/`checkpoint_missing` when its file is no longer the verified "
        "one; "
        "503 `storage_unavailable` when storage cannot be read (nothing changed); 404 for a step with no "
        "verified, unpruned checkpoint.",
    )
    def post(self, request: Request, run_id: uuid.UUID, step: int) -> Response:
        run = training_run_get_for(request.user, run_id)  # type: ignore[arg-type]
        run = services.training_run_lora_choose(run=run, step=step, source=TrainingEvent.Source.API)
        return Response(TrainingRunSerializer(run, context={"request": request}).data)
