"""API for training runs: start (202, idempotent, rate-limited), list, read, cancel, retry, and
a short-lived download link for a run's LoRA.

Status codes clients rely on: 202 when a run is accepted (it trains asynchronously), 404 for a
run or character that is not yours, 409 `run_active` for a second run on a character, 402
`budget_exceeded` when the monthly GPU budget cannot cover the run's estimate.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from characters.selectors import character_get_for
from runpod_worker.contract import ALLOWED_RESOLUTIONS, MAX_SAMPLE_PROMPTS, PARAM_DEFAULTS
from studio.api import ErrorSerializer, page_query_parameters, paginated_response, paginated_schema
from studio.api_idempotency import (
    HEADER as IDEMPOTENCY_HEADER,
)
from studio.api_idempotency import (
    idempotency_key_from,
    idempotent_create,
    request_fingerprint,
)
from studio.api_rate_limit import AcceptedRequestThrottle, record_accepted
from studio.errors import ApplicationError, Conflict
from studio.transfer import download_url
from training import services
from training.artifacts import lora_download_name
from training.base_models import BASE_MODELS
from training.models import TrainingEvent, TrainingRun
from training.presets import PRESETS
from training.selectors import run_has_lora, training_run_get_for, training_run_list_for
from training.serializers import TrainingRunSerializer, low_noise_summary

LORA_URL_TTL = timedelta(minutes=15)
# The monthly budget is a payment matter, so its refusal is a 402, not a generic 400.
BUDGET_EXCEEDED_STATUS = status.HTTP_402_PAYMENT_REQUIRED


# --- Representation -----------------------------------------------------------------------


# The run document (TrainingRunSerializer) is training/serializers.py's: the API, webhooks and the run page's
# JSON share it.


class LoraDownloadSerializer(serializers.Serializer):
    url = serializers.URLField(
        help_text="Download link; valid until `expires_at`. Ask again for a fresh one."
    )
    expires_at = serializers.DateTimeField()
    filename = serializers.CharField()
    bytes = serializers.IntegerField(allow_null=True)
    sha256 = serializers.CharField(help_text="Check the downloaded file against this.")
    low_noise = serializers.DictField(
        allow_null=True,
        help_text="wan22 only: the low-noise expert's file (`url`, `filename`, `bytes`, `sha256`); "
        "the fields above are then the high-noise file. Load each into its own expert. Null for one-file "
        "models.",
    )


# --- Training parameters, as the schema documents them ---------------------------------------


def _defaults(name: str) -> str:
    """ "Defaults: fast 600, balanced 1500, quality 3000; without a preset 1500." """
    by_preset = ", ".join(
        f"{preset} {values.get(name, PARAM_DEFAULTS[name])}" for preset, values in PRESETS.items()
    )
    return f"Defaults: {by_preset}; without a preset {PARAM_DEFAULTS[name]}."


class TrainingParamsSchema(serializers.Serializer):
    """The training parameters by name, type and range (runpod_worker/contract.py, `TrainingParams.from_dict`,
    which validates them); every one is optional, and given ones override the preset's."""

    steps = serializers.IntegerField(
        min_value=100, max_value=6000, required=False, help_text=_defaults("steps")
    )
    rank = serializers.IntegerField(
        min_value=4, max_value=128, required=False, help_text=f"LoRA rank. {_defaults('rank')}"
    )
    alpha = serializers.FloatField(
        max_value=1024.0, required=False, allow_null=True, help_text="Above 0. Null or absent: the rank."
    )
    learning_rate = serializers.FloatField(
        min_value=1e-6, max_value=1e-2, required=False, help_text=_defaults("learning_rate")
    )
    resolutions = serializers.ListField(
        child=serializers.ChoiceField(choices=list(ALLOWED_RESOLUTIONS)),
        min_length=1,
        max_length=len(ALLOWED_RESOLUTIONS),
        required=False,
        help_text=f"Sizes to train at, each once. {_defaults('resolutions')}",
    )
    batch_size = serializers.IntegerField(min_value=1, max_value=8, required=False, help_text="Default 1.")
    seed = serializers.IntegerField(
        min_value=0, max_value=2**32 - 1, required=False, allow_null=True, help_text="Null: a random seed."
    )
    caption_dropout = serializers.FloatField(
        min_value=0.0,
        max_value=0.5,
        required=False,
        help_text=f"Default {PARAM_DEFAULTS['caption_dropout']}.",
    )
    save_every = serializers.IntegerField(
        min_value=50,
        required=False,
        help_text=f"Steps between checkpoints. Default {PARAM_DEFAULTS['save_every']}.",
    )
    sample_prompts = serializers.ListField(
        child=serializers.CharField(max_length=1000),
        max_length=MAX_SAMPLE_PROMPTS,
        required=False,
        help_text="Prompts to render samples of while training, with `[trigger]` where the character's "
        "trigger word goes (a prompt without it gets `[trigger], ` in front). Default: a portrait, a "
        "three-quarter view, a full-body shot and a different setting; [] renders none.",
    )
    sample_every = serializers.IntegerField(
        min_value=0, required=False, help_text="Steps between samples; 0 renders none. Default: save_every."
    )
    sample_seed = serializers.IntegerField(
        min_value=0,
        max_value=2**32 - 1,
        required=False,
        allow_null=True,
        help_text="The seed of every sample, so columns compare. Null: the run's seed, or 42.",
    )
    auto_caption = serializers.BooleanField(
        required=False,
        help_text="Caption the photos that have no caption with a vision model before training, the trigger "
        "word first; the captions are kept on the photos (`caption_auto`). False trains them on the trigger "
        "word alone. Default true.",
    )

    class Meta:
        ref_name = "TrainingParams"


@extend_schema_field(TrainingParamsSchema)
class TrainingParamsField(serializers.DictField):
    """A JSON object, checked by `training_params_validate` (the worker's own rules and messages, with error
    code `invalid_params`); the schema shows it typed."""


# --- Rate limit ---------------------------------------------------------------------------


class TrainingRunStartThrottle(AcceptedRequestThrottle):
    """Per-user limit on runs started (`training_run_start` in DEFAULT_THROTTLE_RATES): only accepted starts
    and retries count, since only they spend GPU money; refused and replayed requests do not."""

    counts = "accepted run starts (new runs and retries)"


def _api_status(error: ApplicationError) -> ApplicationError:
    if error.code == "budget_exceeded":
        error.http_status = BUDGET_EXCEEDED_STATUS
    return error


IDEMPOTENCY_PARAMETER = OpenApiParameter(
    IDEMPOTENCY_HEADER,
    str,
    location=OpenApiParameter.HEADER,
    description="Any unique string (a UUID is best). Repeating a request with the same key returns "
    "the run the first request created instead of starting another; keys are kept 24 hours.",
)
_START_ERRORS = {402: ErrorSerializer, 409: ErrorSerializer, 422: ErrorSerializer, 429: ErrorSerializer}


# --- Views --------------------------------------------------------------------------------


class TrainingRunStartApi(APIView):
    throttle_classes = [TrainingRunStartThrottle]
    throttle_scope = "training_run_start"

    class InputSerializer(serializers.Serializer):
        preset = serializers.ChoiceField(
            choices=sorted(PRESETS), required=False, allow_null=True, help_text="Named defaults."
        )
        base_model = serializers.ChoiceField(
            choices=list(BASE_MODELS),
            required=False,
            allow_null=True,
            help_text="The base model to train on; default: the character's `base_model`. "
            + "; ".join(f"{key}: {info.good_for}" for key, info in BASE_MODELS.items()),
        )
        params = TrainingParamsField(
            required=False,
            allow_null=True,
            help_text="Training parameters; those given override the preset's.",
        )
        provider = serializers.ChoiceField(
            choices=TrainingRun.Provider.choices,
            required=False,
            help_text="Where the run trains: `serverless` (default), or `pod` (a persistent pod's AI "
            "Toolkit) for staff and the accounts staff enabled pods for (else 400 `pod_not_allowed`; 400 "
            "`no_pod` when no pod takes runs).",
        )

        class Meta:
            ref_name = "TrainingRunStartInput"

    @extend_schema(
        operation_id="runs_start",
        request=InputSerializer,
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={202: TrainingRunSerializer, **_START_ERRORS},
        tags=["runs"],
        description="Starts training a LoRA for the character. 202: the run is accepted and trains "
        "asynchronously; poll `urls.get` or register a webhook.",
    )
    def post(self, request: Request, character_id: uuid.UUID) -> Response:
        user: Any = request.user
        character = character_get_for(user, character_id)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        key = idempotency_key_from(request)
        try:
            run, replayed = idempotent_create(
                user=user,
                scope="training_run_start",
                key=key,
                fingerprint=request_fingerprint(str(character.pk), serializer.validated_data),
                create=lambda: services.training_run_start(
                    character=character,
                    requested_by=user,
                    source=TrainingEvent.Source.API,
                    **serializer.validated_data,
                ),
                load=lambda run_id: training_run_get_for(user, run_id),
            )
        except ApplicationError as error:
            raise _api_status(error) from error
        if not replayed:
            record_accepted(request, self)
        return _accepted(run, request, replayed=replayed)


class TrainingRunListApi(APIView):
    class FilterSerializer(serializers.Serializer):
        status = serializers.ChoiceField(choices=TrainingRun.Status.choices, required=False)
        character = serializers.UUIDField(required=False, help_text="Only this character's runs.")

        class Meta:
            ref_name = "TrainingRunFilter"

    @extend_schema(
        operation_id="runs_list",
        parameters=[FilterSerializer, *page_query_parameters()],
        responses=paginated_schema(TrainingRunSerializer),
        tags=["runs"],
    )
    def get(self, request: Request) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        runs = training_run_list_for(request.user, status=filters.validated_data.get("status"))  # type: ignore[arg-type]
        if "character" in filters.validated_data:
            runs = runs.filter(character_id=filters.validated_data["character"])
        return paginated_response(
            queryset=runs, serializer_class=TrainingRunSerializer, request=request, view=self
        )


class TrainingRunDetailApi(APIView):
    @extend_schema(operation_id="runs_read", responses=TrainingRunSerializer, tags=["runs"])
    def get(self, request: Request, run_id: uuid.UUID) -> Response:
        run = training_run_get_for(request.user, run_id)  # type: ignore[arg-type]
        return Response(TrainingRunSerializer(run, context={"request": request}).data)


class TrainingRunCancelApi(APIView):
    @extend_schema(
        operation_id="runs_cancel",
        request=None,
        responses={200: TrainingRunSerializer, 409: ErrorSerializer},
        tags=["runs"],
        description="Stops the run's GPU job and ends the run as cancelled. 409 when it already ended.",
    )
    def post(self, request: Request, run_id: uuid.UUID) -> Response:
        run = training_run_get_for(request.user, run_id)  # type: ignore[arg-type]
        run = services.training_run_cancel(run=run, source=TrainingEvent.Source.API)
        return Response(TrainingRunSerializer(run, context={"request": request}).data)


class TrainingRunRetryApi(APIView):
    throttle_classes = [TrainingRunStartThrottle]
    throttle_scope = "training_run_start"

    @extend_schema(
        operation_id="runs_retry",
        request=None,
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={202: TrainingRunSerializer, **_START_ERRORS},
        tags=["runs"],
        description="Starts a new run with a finished run's images and parameters.",
    )
    def post(self, request: Request, run_id: uuid.UUID) -> Response:
        user: Any = request.user
        previous = training_run_get_for(user, run_id)
        try:
            run, replayed = idempotent_create(
                user=user,
                scope="training_run_retry",
                key=idempotency_key_from(request),
                fingerprint=request_fingerprint(str(previous.pk)),
                create=lambda: services.training_run_retry(
                    run=previous, requested_by=user, source=TrainingEvent.Source.API
                ),
                load=lambda new_id: training_run_get_for(user, new_id),
            )
        except ApplicationError as error:
            raise _api_status(error) from error
        if not replayed:
            record_accepted(request, self)
        return _accepted(run, request, replayed=replayed)


class TrainingRunLoraApi(APIView):
    @extend_schema(
        operation_id="runs_lora_read",
        responses={200: LoraDownloadSerializer, 409: ErrorSerializer},
        tags=["runs"],
        description="A short-lived download link for the run's LoRA. 409 `lora_not_ready` until the "
        "run has completed.",
    )
    def get(self, request: Request, run_id: uuid.UUID) -> Response:
        run = training_run_get_for(request.user, run_id)  # type: ignore[arg-type]
        if not run_has_lora(run):
            raise Conflict(
                f"This run is {run.status}; its LoRA can be downloaded once the run has completed.",
                code="lora_not_ready",
            )
        data = {
            "url": download_url(run.lora_name, ttl=int(LORA_URL_TTL.total_seconds())),
            "expires_at": timezone.now() + LORA_URL_TTL,
            "filename": lora_download_name(run),
            "bytes": run.lora_bytes,
            "sha256": run.lora_sha256,
            "low_noise": _low_noise_download(run),
        }
        return Response(LoraDownloadSerializer(data).data)


def _low_noise_download(run: TrainingRun) -> dict[str, Any] | None:
    summary = low_noise_summary(run)
    if summary is None:
        return None
    return {"url": download_url(run.lora_low_noise_name, ttl=int(LORA_URL_TTL.total_seconds())), **summary}


def _accepted(run: TrainingRun, request: Request, *, replayed: bool) -> Response:
    data = TrainingRunSerializer(run, context={"request": request}).data
    response = Response(data, status=status.HTTP_202_ACCEPTED)
    response["Location"] = data["urls"]["get"]
    if replayed:
        response["Idempotent-Replayed"] = "true"
    return response
