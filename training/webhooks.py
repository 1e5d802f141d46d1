"""RunPod's webhook and the GPU worker's callbacks: authenticate by the run's token, answer fast.

RunPod signs nothing, so the webhook body is only a hint: it makes the run due and queues a poll, and
only `/status` read with our API key changes the run. Unknown runs and wrong tokens get the same 404.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from runpod_worker.contract import (
    CALLBACK_AUTH_SCHEME,
    CALLBACK_EVENT_FINISHED,
    CALLBACK_EVENT_PROGRESS,
    CALLBACK_EVENT_STARTED,
    CALLBACK_FIELD_CLAIM_WAIT_S,
    CALLBACK_FIELD_DELIVERY_ID,
    CALLBACK_FIELD_OUTPUT,
    ContractError,
    JobOutput,
    Progress,
)
from training import services
from training.models import TrainingRun
from training.tokens import run_token_matches

logger = logging.getLogger(__name__)


def _not_found() -> JsonResponse:
    return JsonResponse({"error": "not found"}, status=404)


def _bad_request(message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=400)


def _authenticated_run(run_id: uuid.UUID, token: str) -> TrainingRun | None:
    run = TrainingRun.objects.filter(pk=run_id).first()
    # Derive and compare even for an unknown run, so timing does not tell the two cases apart.
    matches = run_token_matches(run_id, token)
    return run if run is not None and matches else None


def _json_object(request: HttpRequest) -> dict[str, Any] | None:
    try:
        body = json.loads(request.body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return body if isinstance(body, dict) else None


@csrf_exempt
@require_POST
def runpod_webhook(request: HttpRequest, run_id: uuid.UUID, token: str) -> JsonResponse:
    """RunPod says a job ended. Queue a poll of `/status`; the body itself changes nothing."""
    run = _authenticated_run(run_id, token)
    if run is None:
        return _not_found()
    body = _json_object(request)
    if body is None:
        return _bad_request("The body must be a JSON object.")
    services.training_run_note_webhook(run=run, job_id=str(body.get("id") or ""))
    # 200 for duplicates, strays and final runs alike, so RunPod stops retrying.
    return JsonResponse({"received": True})


@csrf_exempt
@require_POST
def worker_callback(request: HttpRequest, run_id: uuid.UUID) -> JsonResponse:
    """The worker reports "started", "progress" or "finished" and hears "continue", "wait" or "stop"."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    run = _authenticated_run(run_id, token.strip()) if scheme == CALLBACK_AUTH_SCHEME else None
    if run is None:
        return _not_found()
    body = _json_object(request)
    if body is None:
        return _bad_request("The body must be a JSON object.")
    job_id, event = body.get("job_id"), body.get("event")
    if not isinstance(job_id, str) or not job_id:
        return _bad_request("job_id is required.")
    # Optional: workers from before delivery ids send none and are answered as before.
    delivery_id = body.get(CALLBACK_FIELD_DELIVERY_ID) or ""
    if not isinstance(delivery_id, str) or len(delivery_id) > 64:
        return _bad_request(f"{CALLBACK_FIELD_DELIVERY_ID} must be a string of at most 64 characters.")
    if event == CALLBACK_EVENT_STARTED:
        claim_wait_s = body.get(CALLBACK_FIELD_CLAIM_WAIT_S) or 0
        if isinstance(claim_wait_s, bool) or not isinstance(claim_wait_s, int | float) or claim_wait_s < 0:
            return _bad_request(f"{CALLBACK_FIELD_CLAIM_WAIT_S} must be a number of seconds.")
        answer = services.training_run_worker_started(
            run=run, job_id=job_id, delivery_id=delivery_id, claim_wait_s=min(float(claim_wait_s), 1e6)
        )
    elif event == CALLBACK_EVENT_PROGRESS:
        ignored = {"event", "job_id", CALLBACK_FIELD_DELIVERY_ID}
        fields = {key: value for key, value in body.items() if key not in ignored}
        try:
            progress = Progress.from_dict(fields)
            report = services.artifact_report_parse(fields)
        except (ContractError, TypeError, ValueError) as exc:
            return _bad_request(f"The progress report is invalid: {exc}.")
        answer = services.training_run_worker_progress(
            run=run, job_id=job_id, progress=progress, delivery_id=delivery_id, report=report
        )
    elif event == CALLBACK_EVENT_FINISHED:
        try:
            output = JobOutput.from_dict(body.get(CALLBACK_FIELD_OUTPUT))
        except ContractError as exc:
            return _bad_request(f"The output is invalid: {exc}.")
        answer = services.training_run_worker_finished(
            run=run, job_id=job_id, delivery_id=delivery_id, output=output
        )
    else:
        return _bad_request(
            f"Unknown event; expected {CALLBACK_EVENT_STARTED!r}, {CALLBACK_EVENT_PROGRESS!r} or "
            f"{CALLBACK_EVENT_FINISHED!r}."
        )
    return JsonResponse(answer.as_dict())
