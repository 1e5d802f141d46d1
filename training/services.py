"""The only code that writes training runs: start, submit, status, worker callbacks, cancel, retry, fail.

Every status change goes through `_transition` on a row locked with `select_for_update`, so a webhook,
a poll and a worker callback arriving together change a run once; each change writes a TrainingEvent in
the same transaction and, after commit, sends `training_run_status_changed` (the event is its outbox: a
lost announcement is made by the sweep). Network calls (RunPod,
storage) happen outside transactions: commit, call, then record the result in a second short one.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial
from pathlib import PurePosixPath
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.urls import reverse
from django.utils import timezone

from characters.models import Character
from runpod_worker.contract import (
    CALLBACK_ACTION_CONTINUE,
    CALLBACK_ACTION_STOP,
    CALLBACK_ACTION_WAIT,
    CALLBACK_FIELD_CODE,
    Callback,
    ContractError,
    ErrorCode,
    ImageSpec,
    JobInput,
    JobOutput,
    OutputTarget,
    Progress,
    Stage,
    TrainingParams,
    parse_error,
)
from studio.errors import ApplicationError, Conflict, NotFound
from studio.models import User
from studio.sweeps import lock_overdue
from studio.transfer import download_url, upload_url
from training import pricing
from training.artifacts import (
    LoraInvalid,
    StorageUnavailable,
    StoredFile,
    lora_discard,
    lora_keep,
    lora_tidy,
    lora_upload_name,
    stored_file_digest,
    stored_lora_digest,
)
from training.models import StrayJob, TrainingEvent, TrainingRun
from training.presets import PRESETS
from training.providers import TrainingProvider, get_provider
from training.runpod import (
    DEFAULT_MAX_ATTEMPTS,
    MAX_RETRY_AFTER_SECONDS,
    RunPodError,
    RunPodJob,
    RunPodJobNotFound,
    RunPodSubmitUncertain,
    RunPodUnavailable,
)
from training.selectors import user_reserved_spend, user_spend_this_month
from training.signals import training_run_status_changed
from training.tokens import run_token, token_hash

logger = logging.getLogger(__name__)

Status = TrainingRun.Status
RunId = uuid.UUID | str
Source = TrainingEvent.Source

# Forward-only: a run may skip a step (a webhook can report COMPLETED for a run still "queued" here) but
# never go back, and the three final states never change.
_RANK = {
    Status.PENDING: 0,
    Status.QUEUED: 1,
    Status.TRAINING: 2,
    Status.COMPLETED: 3,
    Status.FAILED: 3,
    Status.CANCELLED: 3,
}

# RunPod job status -> run status. RUNNING is documented but never returned (runpod/docs#511).
RUNPOD_STATUS_MAP = {
    "IN_QUEUE": Status.QUEUED,
    "IN_PROGRESS": Status.TRAINING,
    "RUNNING": Status.TRAINING,
    "COMPLETED": Status.COMPLETED,
    "FAILED": Status.FAILED,
    "TIMED_OUT": Status.FAILED,
    "CANCELLED": Status.CANCELLED,
}

FINAL_JOB_STATUSES = frozenset({"COMPLETED", "FAILED", "TIMED_OUT", "CANCELLED"})

# How soon the sweep looks at a run again, growing while nothing changes (see docs/TRAINING.md).
QUEUED_POLL = (timedelta(seconds=15), timedelta(minutes=5))
TRAINING_POLL = (timedelta(seconds=30), timedelta(minutes=5))
# While the worker calls back, it proves the job is alive: the poll only has to catch a silent death.
TRAINING_POLL_WITH_CALLBACKS = timedelta(minutes=10)
# Beyond RunPod's own limits, before the sweep gives up on a run that never reported back.
DEADLINE_MARGIN = timedelta(minutes=5)
# RunPod keeps a /run job's result for 30 minutes after the job ends; then /status answers 404.
RUNPOD_RESULT_RETENTION = timedelta(minutes=30)
# A run completed by the worker's "finished" callback: how soon the sweep reads RunPod's final status for
# its cost (the job ends seconds after the callback), growing while RunPod has not ended the job.
COST_POLL = (timedelta(seconds=15), timedelta(minutes=5))
# The first interval and the cap of each status's poll backoff.
_BACKOFF = {
    Status.QUEUED.value: QUEUED_POLL,
    Status.TRAINING.value: TRAINING_POLL,
    Status.COMPLETED.value: COST_POLL,
}


def transition_allowed(from_status: str, to_status: str) -> bool:
    if from_status in TrainingRun.FINAL_STATUSES:
        return False
    return _RANK[Status(to_status)] > _RANK[Status(from_status)]


# ============================================================================================ start


def training_run_start(
    *,
    character: Character,
    requested_by: User,
    params: dict[str, Any] | None = None,
    preset: str | None = None,
    source: str,
) -> TrainingRun:
    """Creates a pending run with its dataset frozen, and enqueues its submission after commit."""
    _check_may_train(character, requested_by)
    validated = training_params_validate(params=params, preset=preset)
    manifest = _manifest(character)
    return _run_create(
        character=character,
        requested_by=requested_by,
        params=validated,
        manifest=manifest,
        trigger_word=character.trigger_word,
        source=source,
        detail={"preset": preset} if preset else {},
    )


def training_params_validate(*, params: dict[str, Any] | None, preset: str | None) -> dict[str, Any]:
    """Preset defaults overlaid with `params`, validated by the worker's own schema."""
    if preset is not None and preset not in PRESETS:
        names = ", ".join(PRESETS)
        raise ApplicationError(
            f"There is no preset called {preset!r}. Choose one of: {names}.",
            code="invalid_params",
            fields={"preset": [f"Choose one of: {names}."]},
        )
    if params is not None and not isinstance(params, dict):
        raise ApplicationError("Training parameters must be a JSON object.", code="invalid_params")
    merged = {**(PRESETS[preset] if preset else {}), **(params or {})}
    try:
        return asdict(TrainingParams.from_dict(merged))
    except ContractError as exc:
        field = exc.field.removeprefix("params.")
        raise ApplicationError(
            f"The training parameter {field} {exc.message}.",
            code="invalid_params",
            fields={field: [exc.message]},
        ) from exc


def training_run_retry(*, run: TrainingRun, requested_by: User, source: str) -> TrainingRun:
    """Creates a new pending run from a finished run's frozen dataset and parameters."""
    if not run.is_final:
        raise Conflict("This run is still in progress: wait for it to finish or cancel it first.")
    character = run.character
    _check_may_train(character, requested_by)
    current = set(character.images.values_list("sha256", flat=True))
    missing = [item for item in run.manifest if item["sha256"] not in current]
    if missing:
        raise ApplicationError(
            f"{len(missing)} of that run's images have since been deleted, so it cannot be repeated "
            "exactly. Start a new run with the character's current images instead.",
            code="images_changed",
        )
    return _run_create(
        character=character,
        requested_by=requested_by,
        params=run.params,
        manifest=run.manifest,
        trigger_word=run.trigger_word,
        source=source,
        detail={"retry_of": str(run.id)},
    )


def training_run_autostart(*, character_id: uuid.UUID) -> TrainingRun | None:
    """Starts a character's first run once auto-train is on and the sheet has enough images.

    Uploads arriving together each call this; the owner and character row locks make them queue up,
    and every caller after the first sees the run and does nothing.
    """
    character = Character.objects.select_related("owner").filter(pk=character_id).first()
    if character is None or not character.auto_train:
        return None
    try:
        with transaction.atomic():
            _lock_owner_and_character(character)
            if TrainingRun.objects.filter(character=character).exists():
                return None
            if character.images.count() < settings.TRAINING_MIN_IMAGES:
                return None
            return training_run_start(character=character, requested_by=character.owner, source=Source.SYSTEM)
    except ApplicationError as exc:
        # Nobody is waiting on a page for this answer; the character page shows why nothing trains.
        logger.info("auto-train did not start for character %s: %s", character_id, exc.message)
        return None


def _check_may_train(character: Character, user: User) -> None:
    if character.owner_id != user.pk and not user.is_staff:
        raise NotFound("This character does not exist.")


def _manifest(character: Character) -> list[dict[str, Any]]:
    images = list(character.images.order_by("created_at", "id"))
    minimum = settings.TRAINING_MIN_IMAGES
    if len(images) < minimum:
        raise ApplicationError(
            f"Training needs at least {minimum} reference images and this character has {len(images)}. "
            f"Add {minimum - len(images)} more, then start training again.",
            code="not_enough_images",
        )
    if len(images) > settings.TRAINING_MAX_IMAGES:
        raise ApplicationError(
            f"Training takes at most {settings.TRAINING_MAX_IMAGES} images and this character has "
            f"{len(images)}. Delete some, then start training again.",
            code="too_many_images",
        )
    return [
        {
            # Content-addressed file names are unique per character, as the worker requires.
            "name": PurePosixPath(image.file.name or "").name,
            # What the owner calls the photo: messages about it use this name, not the stored one.
            "original_name": image.original_filename,
            "sha256": image.sha256,
            "storage_name": image.file.name,
            "caption": image.caption or None,
            "bytes": image.bytes,
        }
        for image in images
    ]


def _run_create(
    *,
    character: Character,
    requested_by: User,
    params: dict[str, Any],
    manifest: list[dict[str, Any]],
    trigger_word: str,
    source: str,
    detail: dict[str, Any],
) -> TrainingRun:
    estimate = pricing.estimate_cost(steps=int(params["steps"]))
    run_id = uuid.uuid4()
    with transaction.atomic():
        owner = _lock_owner_and_character(character)
        if TrainingRun.objects.filter(character=character, status__in=TrainingRun.ACTIVE_STATUSES).exists():
            raise _already_training()
        _check_budget(owner, estimate)
        try:
            with transaction.atomic():
                run = TrainingRun.objects.create(
                    id=run_id,
                    character=character,
                    requested_by=requested_by,
                    params=params,
                    manifest=manifest,
                    trigger_word=trigger_word,
                    estimated_cost_usd=estimate,
                    token_hash=token_hash(run_token(run_id)),
                    # If the enqueue below is lost, the sweep submits the run at this time.
                    next_poll_at=timezone.now() + _pending_recheck(),
                )
        except IntegrityError as exc:
            # The partial unique index is the last word when two starts race past the check above.
            raise _already_training() from exc
        _event(run, "", Status.PENDING, source, detail)
        transaction.on_commit(partial(_enqueue, "submit_training_run", run.pk))
    return run


def _lock_owner_and_character(character: Character) -> User:
    # Always owner first, then character, so that concurrent starts never deadlock; the owner lock
    # also serialises budget checks across the user's characters.
    owner = User.objects.select_for_update().get(pk=character.owner_id)
    Character.objects.select_for_update().filter(pk=character.pk).values_list("pk", flat=True).first()
    return owner


def _already_training() -> Conflict:
    return Conflict(
        "This character already has a training run in progress. Wait for it to finish or cancel it.",
        code="run_active",
    )


def _check_budget(owner: User, estimate: Decimal) -> None:
    budget = owner.monthly_gpu_budget_usd
    if budget is None:
        return
    committed = user_spend_this_month(owner) + user_reserved_spend(owner)
    if committed + estimate > budget:
        raise ApplicationError(
            f"This run would cost about ${estimate:.2f}, and ${committed:.2f} of the ${budget:.2f} monthly "
            "GPU budget is already spent or held by runs in progress. Choose fewer steps or the fast "
            "preset, wait for next month, or ask staff to raise the budget.",
            code="budget_exceeded",
        )


# ============================================================================================ submit


def training_run_submit(*, run: TrainingRun, provider: TrainingProvider | None = None) -> TrainingRun:
    """Sends a pending run to RunPod at most once per attempt and records its job id (pending -> queued).

    The attempt is written down before `/run` is called. If the call's outcome is unknown (a timeout
    or 5xx after the request left), the mark stays: the job, if it exists, claims the run when its
    worker starts; only after TRAINING_SUBMIT_UNCERTAIN_GRACE_SECONDS does the sweep submit again.
    """
    marked = _submit_attempt_mark(run.pk)
    if marked is None:
        return TrainingRun.objects.get(pk=run.pk)
    provider = provider or get_provider()
    try:
        job = provider.submit(
            job_input=training_job_input(marked), webhook=_webhook_url(marked), policy=_job_policy()
        )
    except RunPodSubmitUncertain:
        logger.warning("run %s: the outcome of /run is unknown; waiting for a worker to claim it", run.pk)
        raise
    except RunPodUnavailable:
        # RunPod certainly made no job (no connection opened, or 429 on every try): the call does not
        # count against the attempts that bound duplicate jobs, and the sweep tries again at the next
        # recheck, for as long as TRAINING_SUBMIT_GIVE_UP_SECONDS allows.
        # Only this attempt's mark is undone: a later attempt (whose /run may have made a job) keeps its own.
        TrainingRun.objects.filter(
            pk=run.pk,
            status=Status.PENDING,
            runpod_job_id="",
            attempts__gt=0,
            submit_attempted_at=marked.submit_attempted_at,
        ).update(
            submit_attempted_at=None,
            attempts=F("attempts") - 1,
            next_poll_at=timezone.now() + _pending_recheck(),
        )
        raise
    except (RunPodError, ContractError):
        # Refused for good: the caller fails the run.
        TrainingRun.objects.filter(pk=run.pk, runpod_job_id="").update(submit_attempted_at=None)
        raise
    return _submission_record(run.pk, job, provider)


def training_run_submit_retry_scheduled(*, run_id: RunId, countdown: float) -> None:
    """Records that the submission task retries a pending run in `countdown` seconds, so the sweep's recheck
    comes only after that retry: the two never send one run together, and an outage's calls stay bounded."""
    TrainingRun.objects.filter(pk=run_id, status=Status.PENDING, runpod_job_id="").update(
        next_poll_at=timezone.now() + timedelta(seconds=countdown) + _pending_recheck()
    )


def _submit_attempt_mark(run_id: RunId) -> TrainingRun | None:
    """The run, marked as being submitted now; None when there is nothing to submit (yet)."""
    now = timezone.now()
    grace = timedelta(seconds=settings.TRAINING_SUBMIT_UNCERTAIN_GRACE_SECONDS)
    with transaction.atomic():
        run = _locked(run_id)
        if run.status != Status.PENDING or run.runpod_job_id:
            return None
        if run.submit_attempted_at is not None and now - run.submit_attempted_at < grace:
            return None
        gave_up = _submit_gave_up(run, now)
        if gave_up:
            _fail_locked(run, code="submit_failed", message=gave_up, source=Source.SYSTEM)
            return None
        run.attempts += 1
        run.submit_attempted_at = now
        # Should this process die during the call, the sweep comes back after the grace period.
        run.next_poll_at = now + grace
        run.save(update_fields=["attempts", "submit_attempted_at", "next_poll_at", "updated_at"])
    return run


def _submit_gave_up(run: TrainingRun, now: datetime) -> str:
    """Why a pending run is not sent again ("" while it may be): too many calls that may each have made a
    job, or RunPod unreachable for longer than anyone would wait for a run to start."""
    if run.attempts >= settings.TRAINING_SUBMIT_MAX_ATTEMPTS:
        return (
            f"The run could not be sent to RunPod after {run.attempts} attempts. RunPod may be down or "
            "rate-limiting; retry the run in a few minutes."
        )
    waited = now - run.created_at
    if waited >= timedelta(seconds=settings.TRAINING_SUBMIT_GIVE_UP_SECONDS):
        if run.attempts:
            # An earlier /run went unanswered: RunPod may have made a job, which a stray-job cancel stops.
            return (
                f"RunPod would not take the run for {_duration(waited)} (unreachable or rate-limiting), so "
                "it was given up. Retry the run once RunPod answers again (status.runpod.io)."
            )
        return (
            f"RunPod would not take the run for {_duration(waited)} (unreachable or rate-limiting), so it "
            "was never sent and nothing was billed. Retry the run once RunPod answers again "
            "(status.runpod.io)."
        )
    return ""


def _duration(delta: timedelta) -> str:
    minutes = round(delta.total_seconds() / 60)
    if minutes < 120:
        return f"{minutes} minutes"
    return f"{minutes // 60} hours"


def _submission_record(run_id: RunId, job: RunPodJob, provider: TrainingProvider) -> TrainingRun:
    with transaction.atomic():
        run = _locked(run_id)
        if run.runpod_job_id == job.id:
            return run
        if run.status != Status.PENDING or run.runpod_job_id:
            # Cancelled meanwhile, or an earlier job of this run claimed it: this job must not train.
            why = "its run was claimed by another job" if run.runpod_job_id else f"its run was {run.status}"
            stray_job_record(job_id=job.id, run_id=run.pk, reason=f"/run answered after {why}")
            return run
        now = timezone.now()
        run.runpod_job_id = job.id
        run.submitted_at = now
        run.submit_attempted_at = None
        _transition(run, Status.QUEUED, source=Source.SYSTEM, detail={"job_id": job.id})
        run.next_poll_at = now + QUEUED_POLL[0]
        run.save()
    return run


def training_job_input(run: TrainingRun) -> dict[str, Any]:
    """The worker's job input: presigned image URLs, the LoRA upload target, the callback, params."""
    ttl = settings.TRAINING_JOB_TTL_SECONDS  # URLs must outlive the time the job may wait in the queue
    spec = JobInput(
        run_id=str(run.id),
        trigger_word=run.trigger_word,
        images=[
            ImageSpec(
                url=download_url(item["storage_name"], ttl),
                sha256=item["sha256"],
                filename=item["name"],
                caption=item.get("caption"),
            )
            for item in run.manifest
        ],
        output=OutputTarget(
            lora_name=f"{run.trigger_word}_{run.id.hex[:8]}",
            lora_upload_url=upload_url(lora_upload_name(run), ttl),
        ),
        params=TrainingParams.from_dict(run.params),
        base_model=run.base_model,
        callback=Callback(url=_absolute("training:worker-callback", run.id), token=run_token(run.id)),
    )
    document = spec.to_dict()
    JobInput.from_dict(document)  # the worker would refuse it; better to know before paying for a GPU
    return document


def _webhook_url(run: TrainingRun) -> str:
    return _absolute("training:runpod-webhook", run.id, run_token(run.id))


def _absolute(name: str, *args: Any) -> str:
    return settings.PUBLIC_BASE_URL + reverse(name, args=args)


def _job_policy() -> dict[str, int]:
    return {
        "executionTimeout": settings.TRAINING_EXECUTION_TIMEOUT_SECONDS * 1000,
        "ttl": settings.TRAINING_JOB_TTL_SECONDS * 1000,
    }


# ============================================================================================ status


def training_run_apply_status(*, run_id: RunId, job: RunPodJob, source: str) -> TrainingRun:
    """Moves a run forward to what its RunPod job reports; COMPLETED only once the LoRA is verified."""
    run = TrainingRun.objects.select_related("character").get(pk=run_id)
    target = RUNPOD_STATUS_MAP.get(job.status)
    if target is None:
        return run
    if job.id != run.runpod_job_id:
        logger.warning("run %s: ignoring status of job %s, not the run's job", run_id, job.id)
        return run
    if run.is_final:
        return _cost_record(run, job)
    if target == Status.COMPLETED:
        return _complete(run, job, source)
    error = parse_error(job.error) if target == Status.FAILED else None
    if error is not None and error.code == ErrorCode.CLAIMED_ELSEWHERE:
        # A duplicate delivery's result (runpod-python#402) reached RunPod before the holder's, and RunPod
        # kept it: it says nothing about the run.
        logger.warning(
            "run %s: job %s ended with a duplicate delivery's result (%s)", run.pk, job.id, error.message
        )
        return _job_result_unusable(run, CLAIMED_ELSEWHERE, job=job, source=source)
    with transaction.atomic():
        run = _locked(run_id)
        if run.is_final:
            return run  # another webhook, poll or callback ended it while we were reading
        _record_job(run, job)
        if error is not None:
            if job.status == "TIMED_OUT" and error.code == "unknown":
                message = "The run hit RunPod's time limit before it finished. Retry with fewer steps."
                _fail_locked(run, code="timed_out", message=message, source=source)
            else:
                _fail_locked(run, code=error.code, message=error.message, source=source)
        elif transition_allowed(run.status, target):
            _transition(run, target, source=source, detail={"job_status": job.status})
        run.save()
    return run


@dataclass(frozen=True)
class LostReport:
    """Why RunPod's result cannot tell how a run ended, and what the run says when storage cannot either."""

    code: str
    why: str  # for the completion event and the log
    message: str  # the failure the user reads, before what storage held and what to do
    # With no LoRA stored: keep polling until the run's deadline rather than fail (RunPod still has the
    # job, so the holder may yet report), instead of failing at once (RunPod forgot the job).
    wait_for_deadline: bool = False


JOB_LOST = LostReport(
    code="job_lost",
    why="RunPod no longer knows the job and the worker's report was lost",
    message="RunPod no longer knows this run's job (results are kept only 30 minutes after a job ends)",
)
CLAIMED_ELSEWHERE = LostReport(
    wait_for_deadline=True,
    code="worker_lost",
    why="RunPod kept a duplicate delivery's result and the worker's report was lost",
    message=(
        "RunPod kept only the result of a duplicate worker that never trained (the job was handed out "
        "twice), and the worker that trained this run stopped reporting"
    ),
)


def _job_result_unusable(
    run: TrainingRun, lost: LostReport, *, job: RunPodJob | None, source: str
) -> TrainingRun:
    """Waits while the run's holder still calls back (its "finished" callback may yet come); once it is
    silent past the liveness window, the LoRA in storage decides: complete with it, or fail."""
    now = timezone.now()
    with transaction.atomic():
        run = _locked(run.pk)
        if run.is_final:
            return run
        if job is not None:
            _record_job(run, job)
        run.save()
    # The sweep polls on (every few seconds once the holder reported its last step or its upload), so a
    # holder gone silent is noticed within one poll interval of its liveness window running out.
    if run.worker_seen_at is not None and now - run.worker_seen_at < _liveness():
        logger.info("run %s: %s, but its holder called back lately: waiting for it", run.pk, lost.why)
        return run
    return _lora_recover(run, lost, source=source)


def _lora_recover(run: TrainingRun, lost: LostReport, *, source: str) -> TrainingRun:
    """Completes a run whose worker's report was lost with its own copy of the uploaded LoRA, if that is a
    complete safetensors file; otherwise fails the run. A refused upload stays for staff to inspect."""
    try:
        kept, stored = _lora_keep_read(run, stored_lora_digest)  # copies and streams: outside any transaction
    except LoraInvalid as exc:
        message = (
            f"{lost.message}, and the LoRA file in storage is incomplete or damaged ({exc}), so it was not "
            "accepted; it is kept for staff to inspect. Retry the run."
        )
        return training_run_fail(run_id=run.pk, code=lost.code, message=message, source=source)
    if stored is None:
        if lost.wait_for_deadline:
            # The holder may only look silent (our own outage answered its callbacks 503): with no LoRA to
            # go by, the run keeps polling, and its deadline ends it if the holder never reports again.
            logger.info("run %s: %s and no LoRA is stored yet; waiting for the holder", run.pk, lost.why)
            return run
        message = (
            f"{lost.message}, and no LoRA from it arrived in storage, so its outcome is lost. Retry the run."
        )
        return training_run_fail(run_id=run.pk, code=lost.code, message=message, source=source)
    with transaction.atomic():
        run = _locked(run.pk)
        completed = not run.is_final
        if completed:
            logger.warning("run %s: %s; completing it from the LoRA in storage", run.pk, lost.why)
            run.lora_name = kept
            run.lora_bytes = stored.bytes
            run.lora_sha256 = stored.sha256
            run.progress_eta_seconds = 0
            detail = {"job_id": run.runpod_job_id, "lora": kept, "recovered_from_storage": lost.why}
            _transition(run, Status.COMPLETED, source=source, detail=detail)
            run.save()
    _lora_settle(run, kept, kept_by_run=completed)
    return run


def _complete(run: TrainingRun, job: RunPodJob, source: str) -> TrainingRun:
    try:
        output = JobOutput.from_dict(job.output)
    except ContractError:
        return training_run_fail(
            run_id=run.pk,
            code="bad_output",
            message="The worker finished but its result could not be read. Retry the run.",
            source=source,
        )
    kept, problem = _lora_keep_verified(run, output)
    if problem:
        return training_run_fail(run_id=run.pk, code="lora_unverified", message=problem, source=source)
    with transaction.atomic():
        run = _locked(run.pk)
        completed = transition_allowed(run.status, Status.COMPLETED)
        if completed:
            _record_job(run, job)
            _complete_locked(run, output, lora_name=kept, source=source, detail={"job_id": job.id})
    _lora_settle(run, kept, kept_by_run=completed)
    return run


def _lora_keep_verified(run: TrainingRun, output: JobOutput) -> tuple[str, str]:
    """The name of the run's own copy of the uploaded LoRA, and why it is not the file `output` reports
    ("" when it is, and then no copy is left). Copies and streams the file: call it outside any transaction.

    The copy is what is verified, so a job uploading to the same link afterwards changes nothing kept.
    """
    kept, stored = _lora_keep_read(run, stored_file_digest)
    problem = _lora_problem(stored, output)
    if problem and kept:
        lora_discard(kept)
        return "", problem
    return kept, problem


def _lora_keep_read(
    run: TrainingRun, read: Callable[[str], StoredFile | None]
) -> tuple[str, StoredFile | None]:
    """The run's own copy of its uploaded LoRA ("" when nothing was uploaded) and `read` of that copy; a copy
    whose reading raises (storage failing, a damaged file) is removed, so a retry starts from a new one."""
    kept = lora_keep(run)
    if kept is None:
        return "", None
    try:
        return kept, read(kept)
    except (StorageUnavailable, LoraInvalid):
        lora_discard(kept)
        raise


def _lora_settle(run: TrainingRun, kept: str, *, kept_by_run: bool) -> None:
    """After the completing transaction: once the run keeps its copy, the upload and any copy left by a
    completion cut short go; a copy the run did not keep (another path completed it first) goes."""
    if kept_by_run:
        lora_tidy(run, kept)
    else:
        lora_discard(kept)


def _complete_locked(
    run: TrainingRun, output: JobOutput, *, lora_name: str, source: str, detail: dict[str, Any]
) -> None:
    """Completes a run locked by the caller with its verified copy of the LoRA; saves it."""
    run.lora_name = lora_name
    run.lora_bytes = output.lora.bytes
    run.lora_sha256 = output.lora.sha256
    run.gpu_type = output.gpu.name
    run.progress_step = max(run.progress_step, output.steps)
    run.progress_total = max(run.progress_total, output.steps)
    run.progress_eta_seconds = 0
    _transition(run, Status.COMPLETED, source=source, detail={**detail, "lora": lora_name})
    if _cost_pending(run):
        # The sweep reads RunPod's final status for the cost, should its webhook be lost.
        run.next_poll_at = timezone.now() + COST_POLL[0]
    run.save()


def _cost_pending(run: TrainingRun) -> bool:
    """Completed from the worker's "finished" callback, and RunPod's final status of the job not read yet."""
    seen = (run.last_provider_payload or {}).get("status")
    return (
        run.status == Status.COMPLETED
        and run.execution_ms is None
        and bool(run.runpod_job_id)
        and seen not in FINAL_JOB_STATUSES
    )


def _cost_record(run: TrainingRun, job: RunPodJob) -> TrainingRun:
    """RunPod's final status of a run the "finished" callback completed: its execution time gives the cost
    (read once; a status without one leaves the cost empty)."""
    if not _cost_pending(run) or job.status not in FINAL_JOB_STATUSES:
        return run
    with transaction.atomic():
        run = _locked(run.pk)
        if not _cost_pending(run):
            return run
        _record_job(run, job)
        run.cost_usd = _cost(run)
        run.next_poll_at = None
        run.save(
            update_fields=[
                "last_provider_payload",
                "delay_ms",
                "execution_ms",
                "cost_usd",
                "next_poll_at",
                "updated_at",
            ]
        )
    return run


def _lora_problem(stored: Any, output: JobOutput) -> str:
    if stored is None:
        return "The worker reported a trained LoRA, but no file arrived in storage. Retry the run."
    if stored.bytes != output.lora.bytes or stored.sha256 != output.lora.sha256:
        return (
            "The LoRA in storage is not the file the worker made (its size or checksum differs), so it "
            "was not accepted. Retry the run."
        )
    return ""


def _record_job(run: TrainingRun, job: RunPodJob) -> None:
    """Copies what RunPod says about the job onto the locked run (progress only ever moves forward)."""
    # Webhook copies echo the job input, which holds the callback token: never keep those keys.
    run.last_provider_payload = {k: v for k, v in job.raw.items() if k not in {"input", "webhook"}}
    if job.delay_ms is not None:
        run.delay_ms = job.delay_ms
    if job.execution_ms is not None:
        run.execution_ms = job.execution_ms
    if job.status == "IN_PROGRESS" and isinstance(job.output, dict):
        # A progress document we cannot read is no reason to stop reading the status.
        with contextlib.suppress(ContractError, TypeError, ValueError):
            _progress_apply(run, Progress.from_dict(job.output))


def _progress_apply(run: TrainingRun, progress: Progress) -> None:
    if progress.step < run.progress_step:
        return  # a late delivery from before: progress never goes back
    run.progress_step = progress.step
    run.progress_total = progress.total_steps or run.progress_total
    if progress.loss is not None:
        run.progress_loss = progress.loss
    if progress.eta_s is not None:
        run.progress_eta_seconds = max(0, int(progress.eta_s))


# ============================================================================================ worker


@dataclass(frozen=True)
class WorkerAnswer:
    """The reply to a worker callback, as contract.py defines it."""

    action: str
    reason: str = ""
    retry_after_s: float | None = None
    code: str = ""

    def as_dict(self) -> dict[str, Any]:
        answer: dict[str, Any] = {"action": self.action}
        if self.reason:
            answer["reason"] = self.reason
        if self.code:
            answer[CALLBACK_FIELD_CODE] = self.code
        if self.retry_after_s is not None:
            answer["retry_after_s"] = self.retry_after_s
        return answer


CONTINUE = WorkerAnswer(CALLBACK_ACTION_CONTINUE)
# A contender re-asks a little after the holder's liveness window has run out, not on its very edge.
CLAIM_RETRY_MARGIN_S = 0.5


def training_run_worker_started(
    *, run: TrainingRun, job_id: str, delivery_id: str = "", claim_wait_s: float = 0.0
) -> WorkerAnswer:
    """A worker began the run's job: the first job to start claims the run (-> training); others stop.

    Within the run's job, the delivery (one handler invocation) that holds the claim keeps it while it
    calls back; another delivery is told to wait until the holder has been silent for the liveness
    window — RunPod re-running the job after losing its worker — and then takes the claim over. One that
    has waited a whole window while the holder kept calling back is a duplicate hand-out, and stops.
    """
    now = timezone.now()
    with transaction.atomic():
        run = _locked(run.pk)
        refusal = _worker_refusal(run, job_id)
        if refusal is not None:
            return refusal
        if delivery_id:
            contention = _claim_contention(run, delivery_id, claim_wait_s, now)
            if contention is not None:
                return contention
        elif run.started_at and run.worker_seen_at and now - run.worker_seen_at < _lease():
            # A worker without delivery ids: the same job handed to a second worker while the first still
            # reports (runpod-python#402).
            return _claimed_elsewhere("another worker is already running this job")
        _claim(run, job_id)
        if delivery_id and run.worker_delivery_id != delivery_id:
            if run.worker_delivery_id:
                logger.info(
                    "run %s: delivery %s of job %s takes over from %s, silent since %s",
                    run.pk, delivery_id, job_id, run.worker_delivery_id, run.worker_seen_at,
                )  # fmt: skip
            run.worker_delivery_id = delivery_id
        run.worker_seen_at = now
        if transition_allowed(run.status, Status.TRAINING):
            _transition(run, Status.TRAINING, source=Source.WORKER, detail={"job_id": job_id})
        run.next_poll_at = now + TRAINING_POLL_WITH_CALLBACKS
        run.save()
    return CONTINUE


def training_run_worker_progress(
    *, run: TrainingRun, job_id: str, progress: Progress, delivery_id: str = ""
) -> WorkerAnswer:
    """Records the worker's progress (never backwards) and tells it whether to go on."""
    now = timezone.now()
    with transaction.atomic():
        run = _locked(run.pk)
        refusal = _worker_refusal(run, job_id)
        if refusal is not None:
            return refusal
        if delivery_id and run.worker_delivery_id and run.worker_delivery_id != delivery_id:
            # It went silent for longer than the liveness window and another delivery took the run over.
            return _claimed_elsewhere("the run was claimed by another worker")
        _claim(run, job_id)
        if delivery_id:
            run.worker_delivery_id = delivery_id
        _progress_apply(run, progress)
        run.worker_seen_at = now
        run.next_poll_at = now + _poll_after_progress(progress)
        if transition_allowed(run.status, Status.TRAINING):
            _transition(run, Status.TRAINING, source=Source.WORKER, detail={"job_id": job_id})
        run.save()
    return CONTINUE


def training_run_worker_finished(
    *, run: TrainingRun, job_id: str, delivery_id: str, output: JobOutput
) -> WorkerAnswer:
    """The delivery holding the run uploaded its LoRA: verify it in storage and complete the run.

    This does not wait for RunPod's result, which may be a duplicate delivery's `claimed_elsewhere`
    failure (runpod-python#402). Only the holder is heard; RunPod's webhook and `/status` remain the path
    when this callback is lost. The cost comes later, from RunPod's execution time (`_cost_record`).
    """
    with transaction.atomic():
        locked = _locked(run.pk)
        refusal = _worker_refusal(locked, job_id) or _not_holder(locked, delivery_id)
        if refusal is not None:
            return refusal
    try:
        kept, problem = _lora_keep_verified(locked, output)  # copies and streams the file: no transaction
    except StorageUnavailable:
        # Another path may have completed the run meanwhile and removed the upload being copied.
        with transaction.atomic():
            refusal = _worker_refusal(_locked(run.pk), job_id)
        if refusal is None:
            raise
        return refusal
    completed = False
    with transaction.atomic():
        locked = _locked(run.pk)
        refusal = _worker_refusal(locked, job_id) or _not_holder(locked, delivery_id)
        if refusal is None and problem:
            # Not the run's end: RunPod's own result is read soon and decides (lora_unverified if it agrees).
            logger.warning("run %s: delivery %s finished, but %s", locked.pk, delivery_id, problem)
            locked.next_poll_at = timezone.now()
            locked.save(update_fields=["next_poll_at", "updated_at"])
            transaction.on_commit(partial(_enqueue, "poll_training_run", locked.pk))
        elif refusal is None:
            _complete_locked(locked, output, lora_name=kept, source=Source.WORKER, detail={"job_id": job_id})
            completed = True
    if kept:
        _lora_settle(locked, kept, kept_by_run=completed)
    return refusal or CONTINUE


def _not_holder(run: TrainingRun, delivery_id: str) -> WorkerAnswer | None:
    if delivery_id and run.worker_delivery_id == delivery_id:
        return None
    return _claimed_elsewhere("another delivery of this job holds the run")


def _claimed_elsewhere(reason: str) -> WorkerAnswer:
    return WorkerAnswer(CALLBACK_ACTION_STOP, reason, code=ErrorCode.CLAIMED_ELSEWHERE)


def _worker_refusal(run: TrainingRun, job_id: str) -> WorkerAnswer | None:
    if run.is_final:
        if job_id and job_id != run.runpod_job_id:
            # A job whose /run answer was lost, starting after its run ended.
            stray_job_record(
                job_id=job_id, run_id=run.pk, reason=f"it called back after its run {run.status}"
            )
        return WorkerAnswer(CALLBACK_ACTION_STOP, f"the run is already {run.status}")
    if run.runpod_job_id and run.runpod_job_id != job_id:
        # A job from an earlier submission whose answer was lost: the run has its job, stop this one.
        stray_job_record(
            job_id=job_id, run_id=run.pk, reason="it called back after another job claimed its run"
        )
        return _claimed_elsewhere("another job is already training this run")
    return None


def _claim_contention(
    run: TrainingRun, delivery_id: str, claim_wait_s: float, now: datetime
) -> WorkerAnswer | None:
    """None when `delivery_id` may hold the run: it already does, nobody does, or the holder went silent."""
    if run.worker_delivery_id == delivery_id or not run.started_at or run.worker_seen_at is None:
        return None
    window = _liveness()
    holder_quiet_for = now - run.worker_seen_at
    if holder_quiet_for >= window:
        return None  # RunPod lost the holder's worker and runs the job again: let it carry on
    if claim_wait_s >= window.total_seconds():
        # The holder called back after this delivery first asked: it is alive, and this is the same job
        # handed out twice (runpod-python#402).
        return _claimed_elsewhere("another worker is already running this job")
    retry_after = (window - holder_quiet_for).total_seconds() + CLAIM_RETRY_MARGIN_S
    return WorkerAnswer(
        CALLBACK_ACTION_WAIT, "another worker of this job called back lately", round(retry_after, 3)
    )


def _claim(run: TrainingRun, job_id: str) -> None:
    if not run.runpod_job_id:
        logger.info("run %s: claimed by job %s after an unanswered submission", run.pk, job_id)
        run.runpod_job_id = job_id
        run.submitted_at = run.submitted_at or timezone.now()
        run.submit_attempted_at = None


def _finishing(run: TrainingRun, now: datetime) -> bool:
    """The worker, heard from lately, said it was at its last step or due to finish about now."""
    if run.status != Status.TRAINING or run.worker_seen_at is None or now - run.worker_seen_at > _lease():
        return False  # a silent worker gets the normal backoff, not a poll every few seconds
    if run.progress_total and run.progress_step >= run.progress_total:
        return True
    eta = run.progress_eta_seconds
    return eta is not None and now + _finishing_poll() >= run.worker_seen_at + timedelta(seconds=eta)


def _finishing_poll() -> timedelta:
    return timedelta(seconds=settings.TRAINING_FINISHING_POLL_SECONDS)


def _lease() -> timedelta:
    return timedelta(seconds=settings.TRAINING_WORKER_LEASE_SECONDS)


def _pending_recheck() -> timedelta:
    return timedelta(seconds=settings.TRAINING_PENDING_RECHECK_SECONDS)


def _liveness() -> timedelta:
    return timedelta(seconds=settings.TRAINING_WORKER_LIVENESS_SECONDS)


def _poll_after_progress(progress: Progress) -> timedelta:
    if progress.stage == Stage.UPLOADING or (progress.total_steps and progress.step >= progress.total_steps):
        return _finishing_poll()
    if progress.eta_s is not None:
        return min(TRAINING_POLL_WITH_CALLBACKS, timedelta(seconds=progress.eta_s) + _finishing_poll())
    return TRAINING_POLL_WITH_CALLBACKS


def training_run_note_webhook(*, run: TrainingRun, job_id: str) -> bool:
    """A webhook arrived for the run: claim the job if the run had none, and queue a poll after commit.

    The body is unsigned and never trusted; the caller polls `/status` before anything changes.
    Returns False when there is nothing to poll (the run is final, or the job is not the run's).
    """
    with transaction.atomic():
        run = _locked(run.pk)
        if run.is_final:
            if job_id and job_id == run.runpod_job_id and _cost_pending(run):
                # Completed from the worker's "finished" callback: RunPod's final status has the cost.
                transaction.on_commit(partial(_enqueue, "poll_training_run", run.pk))
                return True
            return False
        if job_id and not run.runpod_job_id:
            # Only our submission put this run's token in a webhook URL, so the job is this run's.
            _claim(run, job_id)
        elif job_id and job_id != run.runpod_job_id:
            return False
        run.next_poll_at = timezone.now()
        run.save(update_fields=["runpod_job_id", "submitted_at", "submit_attempted_at", "next_poll_at"])
        transaction.on_commit(partial(_enqueue, "poll_training_run", run.pk))
    return True


# ============================================================================================ poll


def training_run_poll(*, run_id: RunId, source: str = Source.POLL) -> TrainingRun:
    """Asks RunPod for the run's job status and applies it; ends runs RunPod forgot or that ran too long."""
    run = TrainingRun.objects.get(pk=run_id)
    if not run.runpod_job_id or (run.is_final and not _cost_pending(run)):
        return run
    if run.is_final:
        return _cost_poll(run, source)
    if _past_deadline(run):
        return training_run_fail(
            run_id=run.pk,
            code="timed_out",
            message=(
                "The run went past its time limit without finishing, so it was stopped. "
                "Retry it; if it happens again, choose fewer steps."
            ),
            source=Source.SYSTEM,
            stop_job=True,
        )
    provider = get_provider()
    try:
        job = provider.status(run.runpod_job_id)
    except RunPodJobNotFound:
        return _job_result_unusable(run, JOB_LOST, job=None, source=source)
    return training_run_apply_status(run_id=run.pk, job=job, source=source)


def _cost_poll(run: TrainingRun, source: str) -> TrainingRun:
    """Reads RunPod's final status of a run the "finished" callback completed, for its execution time."""
    try:
        job = get_provider().status(run.runpod_job_id)
    except RunPodJobNotFound:
        _cost_give_up(run.pk, "RunPod no longer knows its job")
        return run
    except RunPodError:
        return run  # the sweep asks again at next_poll_at, while RunPod still keeps the result
    return training_run_apply_status(run_id=run.pk, job=job, source=source)


def _cost_give_up(run_id: RunId, reason: str) -> None:
    TrainingRun.objects.filter(pk=run_id, status=Status.COMPLETED, execution_ms__isnull=True).update(
        next_poll_at=None
    )
    logger.warning("run %s: completed, but its cost stays empty: %s", run_id, reason)


def _past_deadline(run: TrainingRun) -> bool:
    now = timezone.now()
    if run.started_at is not None:
        limit = run.started_at + timedelta(seconds=settings.TRAINING_EXECUTION_TIMEOUT_SECONDS)
    else:
        limit = (run.submitted_at or run.created_at) + timedelta(seconds=settings.TRAINING_JOB_TTL_SECONDS)
    return now > limit + DEADLINE_MARGIN


def training_runs_claim_due(
    *, now: datetime | None = None, batch_size: int | None = None
) -> list[tuple[uuid.UUID, str]]:
    """Takes a bounded batch of due runs — active ones, and completed ones whose cost RunPod has yet to
    give — and pushes their next poll back; a cost RunPod no longer keeps is given up.

    Rows are locked with SKIP LOCKED, so two sweeps running at once never take the same run, and the
    work is two queries whatever the number of runs.
    """
    now = timezone.now() if now is None else now
    limit = batch_size or settings.TRAINING_SWEEP_BATCH_SIZE
    cost_pending = Q(status=Status.COMPLETED, execution_ms__isnull=True)
    with transaction.atomic():
        runs = list(
            TrainingRun.objects.select_for_update(skip_locked=True)
            .filter(Q(status__in=TrainingRun.ACTIVE_STATUSES) | cost_pending, next_poll_at__lte=now)
            .order_by("next_poll_at")
            .only(
                "id",
                "status",
                "polls_since_change",
                "worker_seen_at",
                "next_poll_at",
                "finished_at",
                "progress_step",
                "progress_total",
                "progress_eta_seconds",
            )[:limit]
        )
        for run in runs:
            run.next_poll_at = _next_poll(run, now)
            run.polls_since_change += 1
        TrainingRun.objects.bulk_update(runs, ["next_poll_at", "polls_since_change"])
    for run in runs:
        if run.next_poll_at is None:
            logger.warning(
                "run %s: completed, but its cost stays empty: RunPod's final status was not read within "
                "the %s it keeps a result", run.pk, RUNPOD_RESULT_RETENTION,
            )  # fmt: skip
    return [(run.pk, run.status) for run in runs if run.next_poll_at is not None]


def _next_poll(run: TrainingRun, now: datetime) -> datetime | None:
    if run.status != Status.COMPLETED:
        return now + _poll_delay(run, now)
    expires = (run.finished_at or now) + RUNPOD_RESULT_RETENTION
    if now > expires:
        return None  # RunPod has deleted the result: the cost can no longer be read, and is never made up
    return min(now + _poll_delay(run, now), expires)


def _poll_delay(run: TrainingRun, now: datetime) -> timedelta:
    if run.status == Status.PENDING:
        return _pending_recheck()
    if _finishing(run, now):
        return _finishing_poll()  # the result is seconds away, not minutes
    first, cap = _BACKOFF[run.status]
    if run.status == Status.TRAINING and run.worker_seen_at and now - run.worker_seen_at < _lease():
        cap = TRAINING_POLL_WITH_CALLBACKS
    return min(cap, first * 2 ** min(run.polls_since_change, 10))


# ============================================================================================ end


def training_run_cancel(*, run: TrainingRun, source: str) -> TrainingRun:
    """Asks RunPod to stop the run's job, then ends the run as cancelled."""
    run.refresh_from_db()
    if run.is_final:
        raise Conflict(f"This run has already {_ended(run.status)}; there is nothing to cancel.")
    detail: dict[str, Any] = {}
    if run.runpod_job_id:
        detail = {"job_id": run.runpod_job_id, "runpod": _runpod_cancel(run.runpod_job_id)}
    with transaction.atomic():
        locked = _locked(run.pk)
        if locked.is_final:
            return locked
        if locked.runpod_job_id and locked.runpod_job_id != run.runpod_job_id:
            # Its worker claimed the run while we were talking to RunPod.
            reason = "it claimed its run while the run was being cancelled"
            stray_job_record(job_id=locked.runpod_job_id, run_id=locked.pk, reason=reason)
        elif detail.get("runpod") == "unreachable":
            # A worker that cannot reach us either would never hear "stop": RunPod is asked again later.
            reason = "its run was cancelled while RunPod could not be reached"
            stray_job_record(job_id=locked.runpod_job_id, run_id=locked.pk, reason=reason)
        _transition(locked, Status.CANCELLED, source=source, detail=detail)
        locked.save()
    return locked


def _runpod_cancel(job_id: str) -> str:
    try:
        get_provider().cancel(job_id)
    except RunPodJobNotFound:
        return "gone"
    except RunPodError as exc:
        # The run still ends here: the worker's next callback is answered "stop" and it stops itself.
        logger.warning("RunPod cancel of job %s failed: %s", job_id, exc.message)
        return "unreachable"
    return "cancelled"


def _ended(status: str) -> str:
    return {"completed": "completed", "failed": "failed", "cancelled": "been cancelled"}[status]


def training_run_fail(
    *, run_id: RunId, code: str, message: str, source: str, stop_job: bool = False
) -> TrainingRun:
    """Ends an active run as failed with a message the user can act on; a final run is left as it is."""
    with transaction.atomic():
        run = _locked(run_id)
        if run.is_final:
            return run
        _fail_locked(run, code=code, message=message, source=source)
        run.save()
    if stop_job and run.runpod_job_id:
        _runpod_cancel(run.runpod_job_id)
    return run


# ============================================================================================ stray jobs

# How soon the cancel of a stray job is sent again after RunPod failed to take it, doubling per attempt.
STRAY_CANCEL_RETRY = (timedelta(seconds=15), timedelta(minutes=10))


def stray_job_record(*, job_id: str, run_id: RunId | None, reason: str) -> None:
    """Writes down, in the caller's transaction, that RunPod job `job_id` must be cancelled, and queues the
    cancel after commit; a job already written down is left as it is."""
    _, created = StrayJob.objects.get_or_create(
        runpod_job_id=job_id,
        defaults={"run_id": run_id, "reason": reason[:200], "next_attempt_at": timezone.now()},
    )
    if created:
        logger.info("job %s of run %s is stray (%s): cancelling it", job_id, run_id, reason)
        transaction.on_commit(partial(_enqueue, "cancel_runpod_job", job_id))


@dataclass(frozen=True)
class StrayCancelOutcome:
    attempt: int  # 0 when nothing was sent
    retry_in: float | None = None  # seconds until the next attempt, when RunPod could not be reached


def runpod_job_cancel(*, job_id: str) -> StrayCancelOutcome:
    """Asks RunPod to stop a stray job whose cancel is due, and records it cancelled, gone (404), or due
    again after a backoff; a job RunPod can no longer be running is given up.

    The attempt is claimed first with a conditional update that takes only a due, pending row and makes
    it due again only after the client's longest call: duplicate tasks never send two cancels at once,
    and an attempt whose worker died is sent again by the sweep.
    """
    stray = StrayJob.objects.filter(runpod_job_id=job_id).first()
    if stray is None or stray.status != StrayJob.Status.PENDING:
        return StrayCancelOutcome(attempt=0)
    now = timezone.now()
    if _stray_expired(stray, now):
        _strays_give_up([stray], now)
        return StrayCancelOutcome(attempt=0)
    claimed = StrayJob.objects.filter(
        pk=stray.pk, status=StrayJob.Status.PENDING, attempts=stray.attempts, next_attempt_at__lte=now
    ).update(attempts=F("attempts") + 1, next_attempt_at=now + _stray_cancel_lease())
    if not claimed:
        return StrayCancelOutcome(attempt=0)
    attempt = stray.attempts + 1
    try:
        get_provider().cancel(job_id)
    except RunPodJobNotFound:
        _stray_end(stray, attempt, StrayJob.Status.GONE)
    except RunPodError as exc:
        delay = _stray_retry_delay(attempt)
        _stray_retry_later(stray, attempt, delay, exc.message)
        # Only an outage is worth a retry from the task; a refusal (a wrong API key) waits for the sweep.
        return StrayCancelOutcome(
            attempt, delay.total_seconds() if isinstance(exc, RunPodUnavailable) else None
        )
    else:
        _stray_end(stray, attempt, StrayJob.Status.CANCELLED)
    return StrayCancelOutcome(attempt)


def stray_jobs_claim_due(*, now: datetime | None = None, batch_size: int | None = None) -> list[str]:
    """Takes a bounded batch of stray jobs whose cancel is overdue by more than a sweep interval — its
    task was lost, or RunPod stayed unreachable through the task's retries — makes each due now and
    returns their job ids; a job RunPod can no longer be running is given up instead.

    Rows are locked with SKIP LOCKED, so two sweeps running at once never take the same job, and the
    work is at most three queries whatever the number of jobs.
    """
    now = timezone.now() if now is None else now
    limit = batch_size or settings.TRAINING_SWEEP_BATCH_SIZE
    overdue_since = now - timedelta(seconds=settings.TRAINING_SWEEP_INTERVAL_SECONDS)
    with transaction.atomic():
        pending = StrayJob.objects.filter(status=StrayJob.Status.PENDING).only(
            "id", "runpod_job_id", "run_id", "created_at", "attempts", "last_error"
        )
        strays = list(lock_overdue(pending, overdue_since=overdue_since, limit=limit))
        expired = [stray for stray in strays if _stray_expired(stray, now)]
        due = [stray for stray in strays if not _stray_expired(stray, now)]
        if due:
            StrayJob.objects.filter(pk__in=[stray.pk for stray in due]).update(next_attempt_at=now)
        _strays_give_up(expired, now)
    return [stray.runpod_job_id for stray in due]


def _stray_expired(stray: StrayJob, now: datetime) -> bool:
    """RunPod can no longer be running the job: it was made before the row, and no job outlives its
    time to live and execution timeout together."""
    lifetime = settings.TRAINING_JOB_TTL_SECONDS + settings.TRAINING_EXECUTION_TIMEOUT_SECONDS
    return now > stray.created_at + timedelta(seconds=lifetime) + DEADLINE_MARGIN


def _strays_give_up(strays: list[StrayJob], now: datetime) -> None:
    if not strays:
        return
    StrayJob.objects.filter(pk__in=[stray.pk for stray in strays], status=StrayJob.Status.PENDING).update(
        status=StrayJob.Status.GIVEN_UP, next_attempt_at=None, ended_at=now
    )
    for stray in strays:
        logger.error(
            "stray job %s of run %s: RunPod never took its cancel in %d attempt(s) (last error: %s); it can "
            "no longer be running, so the cancel is given up. Check its GPU time in the RunPod console.",
            stray.runpod_job_id, stray.run_id, stray.attempts, stray.last_error or "none",
        )  # fmt: skip


def _stray_end(stray: StrayJob, attempt: int, status: str) -> None:
    # Only the latest claim records: an attempt that outlived its lease lost the row to another.
    StrayJob.objects.filter(pk=stray.pk, status=StrayJob.Status.PENDING, attempts=attempt).update(
        status=status, next_attempt_at=None, ended_at=timezone.now(), last_error=""
    )
    logger.info("stray job %s: %s by RunPod (attempt %d)", stray.runpod_job_id, status, attempt)


def _stray_retry_later(stray: StrayJob, attempt: int, delay: timedelta, error: str) -> None:
    StrayJob.objects.filter(pk=stray.pk, status=StrayJob.Status.PENDING, attempts=attempt).update(
        next_attempt_at=timezone.now() + delay, last_error=error
    )
    logger.warning(
        "stray job %s: RunPod did not take its cancel (attempt %d: %s); trying again in %s",
        stray.runpod_job_id, attempt, error, delay,
    )  # fmt: skip


def _stray_retry_delay(attempt: int) -> timedelta:
    first, cap = STRAY_CANCEL_RETRY
    return min(cap, first * 2 ** min(attempt - 1, 10))


def _stray_cancel_lease() -> timedelta:
    """How long a claimed cancel holds its row: the client's longest call (every try timing out on its
    connect and read, and the longest wait between tries), past which the attempt is taken for dead."""
    tries = DEFAULT_MAX_ATTEMPTS
    return timedelta(seconds=tries * (2 * settings.RUNPOD_TIMEOUT_SECONDS + MAX_RETRY_AFTER_SECONDS))


# ============================================================================================ core


def _locked(run_id: RunId) -> TrainingRun:
    return TrainingRun.objects.select_for_update().select_related("character").get(pk=run_id)


def _fail_locked(run: TrainingRun, *, code: str, message: str, source: str) -> None:
    message = in_the_owners_names(run, message)
    run.error_code = code[:32]
    run.error_message = message
    _transition(run, Status.FAILED, source=source, detail={"error_code": code, "message": message})
    run.save()


def in_the_owners_names(run: TrainingRun, message: str) -> str:
    """The worker names photos by the stored, content-addressed names it was given; the owner knows them
    by the names they uploaded, which the manifest keeps (runs started before it did keep the stored ones)."""
    for item in run.manifest:
        original = item.get("original_name")
        if original and item["name"] in message:
            message = message.replace(item["name"], original)
    return message


def _transition(run: TrainingRun, to_status: str, *, source: str, detail: dict[str, Any]) -> None:
    """Sets the new status on a row locked by the caller, writes its event, announces it after commit.

    The caller saves the row in the same transaction.
    """
    from_status = run.status
    if not transition_allowed(from_status, to_status):
        raise Conflict(f"A run cannot go from {from_status} to {to_status}.", code="invalid_transition")
    now = timezone.now()
    run.status = to_status
    run.polls_since_change = 0
    if to_status == Status.TRAINING and run.started_at is None:
        run.started_at = now
    if to_status in TrainingRun.FINAL_STATUSES:
        run.finished_at = now
        run.next_poll_at = None
        run.cost_usd = _cost(run)
    _event(run, from_status, to_status, source, detail)


def _cost(run: TrainingRun) -> Decimal | None:
    if run.execution_ms is None:
        return None
    return pricing.actual_cost(execution_ms=run.execution_ms, gpu_name=run.gpu_type)


def _event(run: TrainingRun, from_status: str, to_status: str, source: str, detail: dict[str, Any]) -> None:
    event = TrainingEvent.objects.create(
        run=run,
        from_status=from_status,
        to_status=to_status,
        source=source,
        detail=detail,
        announce_due_at=timezone.now() + ANNOUNCE_RETRY[0],
    )

    def announce() -> None:  # named: Django's robust on_commit logs a failure by the callback's name
        _announce(event)

    # robust: an error announcing (the sweep's to repair) must not fail the request whose change committed.
    transaction.on_commit(announce, robust=True)


# A change is announced right after its commit. One still unannounced a minute later was lost with its
# process, and the sweep announces it; an announcement a receiver failed is tried again after a delay
# doubling per failure up to an hour, and given up after ANNOUNCE_MAX_ATTEMPTS failures (about 7 hours).
ANNOUNCE_RETRY = (timedelta(minutes=1), timedelta(hours=1))
ANNOUNCE_MAX_ATTEMPTS = 12


def _announce(event: TrainingEvent) -> bool:
    """Sends `training_run_status_changed` for one change and marks it announced once every receiver ran;
    after a receiver failed it is due again later (receivers are idempotent)."""
    results = training_run_status_changed.send_robust(
        sender=TrainingRun,
        run_id=event.run_id,
        from_status=event.from_status,
        to_status=event.to_status,
        changed_at=event.created_at,
    )
    failed = [(receiver, result) for receiver, result in results if isinstance(result, Exception)]
    for receiver, error in failed:
        logger.error("training_run_status_changed receiver %r failed", receiver, exc_info=error)
    unannounced = TrainingEvent.objects.filter(pk=event.pk, announced_at__isnull=True)
    now = timezone.now()
    if not failed:
        unannounced.update(announced_at=now)
        return True
    attempts = event.announce_attempts + 1
    first, cap = ANNOUNCE_RETRY
    unannounced.update(
        announce_attempts=attempts, announce_due_at=now + min(cap, first * 2 ** (attempts - 1))
    )
    return False


def training_events_announce_overdue(*, now: datetime | None = None, batch_size: int | None = None) -> int:
    """Announces a bounded batch of status changes due to be announced again — lost with their process,
    or a receiver failed — earliest due first, and returns how many it announced. A failed one is pushed
    back, so it never holds up the rest. Two sweeps at once may announce one change twice, which receivers
    absorb."""
    now = timezone.now() if now is None else now
    limit = batch_size or settings.TRAINING_SWEEP_BATCH_SIZE
    overdue = (
        TrainingEvent.objects.filter(announced_at__isnull=True, announce_due_at__lte=now)
        .order_by("announce_due_at")
        .only("id", "run_id", "from_status", "to_status", "created_at", "announce_attempts")[:limit]
    )
    announced = 0
    for event in overdue:
        if event.announce_attempts >= ANNOUNCE_MAX_ATTEMPTS:
            logger.error(
                "run %s: its change to %s could not be announced (%d failed attempts); given up",
                event.run_id, event.to_status, event.announce_attempts,
            )  # fmt: skip
            TrainingEvent.objects.filter(pk=event.pk).update(announced_at=now)
        elif _announce(event):
            announced += 1
    return announced


def _enqueue(task_name: str, argument: Any) -> None:
    """Queues a task after commit; a broker outage must not fail the request that changed the run."""
    from training import tasks  # tasks call services: import late to keep the dependency one-way

    try:
        getattr(tasks, task_name).delay(str(argument))
    except Exception:  # any broker error: the sweep is the fallback
        logger.exception("could not queue %s(%s); the sweep will pick the run up", task_name, argument)
