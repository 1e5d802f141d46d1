"""Starting a run: check who may train and what the budget holds, freeze the dataset and parameters,
create the pending run and queue its submission after commit."""

from __future__ import annotations

import logging
import uuid
from dataclasses import asdict
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from characters.models import Character
from characters.selectors import IdentityCheck, character_face_crop_files, character_identity_check
from runpod_worker.contract import PARAM_DEFAULTS, ContractError, TrainingParams
from studio.errors import ApplicationError, Conflict, NotFound
from studio.models import User
from training import gpu_pools, pricing, time_limits
from training.base_models import BASE_MODELS
from training.budget import Budget, budget_advice
from training.dataset import face_crop_items, photo_item, run_changed_face_crops
from training.models import Pod, TrainingRun
from training.preflight import face_check_pending, training_run_missing_images
from training.presets import DEFAULT_SAMPLE_PROMPTS, PRESETS, TRIGGER
from training.selectors import user_reserved_spend, user_spend_this_month
from training.services import queue
from training.services.schedule import pending_recheck
from training.services.transitions import Source, Status, event_write

logger = logging.getLogger("training.services")


def training_run_start(
    *,
    character: Character,
    requested_by: User,
    params: dict[str, Any] | None = None,
    preset: str | None = None,
    base_model: str | None = None,
    provider: str = TrainingRun.Provider.SERVERLESS,
    source: str,
) -> TrainingRun:
    """Creates a pending run with its dataset frozen, and enqueues its submission after commit. The base
    model is `base_model`, else the character's; `provider` is where it trains (serverless or a pod)."""
    _check_may_train(character, requested_by)
    provider = provider_validate(provider, requested_by)
    identity = _check_identity(character)
    validated = training_params_validate(params=params, preset=preset)
    model = base_model_validate(base_model or character.base_model)
    photos = _manifest(character)
    crops = face_crop_items(character, photos=len(photos))
    return _run_create(
        character=character,
        requested_by=requested_by,
        params=validated,
        manifest=photos + crops,
        trigger_word=character.trigger_word,
        base_model=model,
        provider=provider,
        source=source,
        detail={
            **({"preset": preset} if preset else {}),
            **_identity_detail(identity),
            **_crops_detail(character, len(crops)),
        },
    )


def provider_validate(provider: str, requested_by: User) -> str:
    """`provider`, if it is one; a pod run only for staff and the users staff allowed pods, and only when
    a pod takes runs."""
    if provider not in TrainingRun.Provider.values:
        names = ", ".join(TrainingRun.Provider.values)
        raise ApplicationError(
            f"There is no provider called {provider!r}. Choose one of: {names}.",
            code="invalid_params",
            fields={"provider": [f"Choose one of: {names}."]},
        )
    if provider == TrainingRun.Provider.POD and not requested_by.may_train_on_pods:
        message = "Pod mode is not enabled for your account. Train serverless, or ask staff to enable it."
        raise ApplicationError(message, code="pod_not_allowed", fields={"provider": [message]})
    if provider == TrainingRun.Provider.POD and not Pod.objects.filter(accepts_runs=True).exists():
        message = "No pod takes runs just now. Train serverless, or ask staff to register a pod."
        raise ApplicationError(message, code="no_pod", fields={"provider": [message]})
    return provider


def base_model_validate(base_model: str) -> str:
    """`base_model`, if it is one and a GPU pool of the endpoint fits it."""
    if base_model not in BASE_MODELS:
        names = ", ".join(BASE_MODELS)
        raise ApplicationError(
            f"There is no base model called {base_model!r}. Choose one of: {names}.",
            code="invalid_params",
            fields={"base_model": [f"Choose one of: {names}."]},
        )
    if refusal := gpu_pools.pool_refusal(base_model):
        raise ApplicationError(refusal, code="no_gpu_pool_fits", fields={"base_model": [refusal]})
    return base_model


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
    merged = _with_sample_defaults({**(PRESETS[preset] if preset else {}), **(params or {})})
    try:
        return asdict(TrainingParams.from_dict(merged))
    except ContractError as exc:
        field = exc.field.removeprefix("params.")
        raise ApplicationError(
            f"The training parameter {field} {exc.message}.",
            code="invalid_params",
            fields={field: [exc.message]},
        ) from exc


def _with_sample_defaults(params: dict[str, Any]) -> dict[str, Any]:
    """The preset's sample prompts unless given (an empty list renders none), each saying `[trigger]` (one
    that does not gets it in front: a sample must show the character), and samples at each save unless
    an interval is given."""
    prompts = params.get("sample_prompts", DEFAULT_SAMPLE_PROMPTS)
    if isinstance(prompts, list):
        prompts = [_with_trigger(prompt) for prompt in prompts]
    every = params.get("sample_every", params.get("save_every", PARAM_DEFAULTS["save_every"]))
    return {**params, "sample_prompts": prompts, "sample_every": every}


def _with_trigger(prompt: Any) -> Any:
    if not isinstance(prompt, str) or not prompt.strip() or TRIGGER in prompt:
        return prompt  # the contract refuses what is not a prompt, with its own message
    return f"{TRIGGER}, {prompt.strip()}"


def training_run_retry(*, run: TrainingRun, requested_by: User, source: str) -> TrainingRun:
    """Creates a new pending run from a finished run's frozen dataset and parameters."""
    if not run.is_final:
        raise Conflict("This run is still in progress: wait for it to finish or cancel it first.")
    character = run.character
    _check_may_train(character, requested_by)
    _check_identity(character)
    missing = training_run_missing_images(run)
    if missing:
        raise ApplicationError(
            f"{missing} of that run's images have since been deleted, so it cannot be repeated "
            "exactly. Start a new run with the character's current images instead.",
            code="images_changed",
        )
    if run_changed_face_crops(run):
        raise ApplicationError(
            "That run's face crops have changed since (face crops turned off, or the photos checked "
            "again), so it cannot be repeated exactly. Start a new run with the character's current "
            "images instead.",
            code="images_changed",
        )
    return _run_create(
        character=character,
        requested_by=requested_by,
        params=run.params,
        manifest=run.manifest,
        trigger_word=run.trigger_word,
        base_model=base_model_validate(run.base_model),
        provider=provider_validate(run.provider, requested_by),
        source=source,
        detail={"retry_of": str(run.id)},
    )


def training_run_autostart(*, character_id: uuid.UUID) -> TrainingRun | None:
    """Starts a character's first run once auto-train is on, the sheet has enough images and the face
    check has seen them all (a person's photos: its refusal and its face crops need it; the end of the
    check calls this again).

    Uploads arriving together each call this; the owner and character row locks make them queue up,
    and every caller after the first sees the run and does nothing.
    """
    character = Character.objects.select_related("owner").filter(pk=character_id).first()
    if character is None or not character.auto_train:
        return None
    if face_check_pending(character):
        logger.info("auto-train of character %s waits for the face check of its photos", character_id)
        return None
    try:
        with transaction.atomic():
            _lock_owner_and_character(character)
            if TrainingRun.objects.filter(character=character).exists():
                return None
            if character.images.count() < settings.TRAINING_MIN_IMAGES:
                return None
            return training_run_start(
                character=character,
                requested_by=character.owner,
                provider=character.training_provider,  # the character's default
                source=Source.SYSTEM,
            )
    except ApplicationError as exc:
        # Nobody is waiting on a page for this answer; the character page shows why nothing trains.
        logger.info("auto-train did not start for character %s: %s", character_id, exc.message)
        return None


def _check_may_train(character: Character, user: User) -> None:
    if character.owner_id != user.pk and not user.is_staff:
        raise NotFound("This character does not exist.")


def _check_identity(character: Character) -> IdentityCheck:
    """The face check's verdict on the character's photos; refused when most photos of a person show no
    face (a character marked not a person never is)."""
    identity = character_identity_check(character)
    if identity.refusal:
        raise ApplicationError(identity.refusal, code="identity_refused")
    return identity


def _crops_detail(character: Character, used: int) -> dict[str, Any]:
    """How many face crops the run trains on beside the photos, and how many did not fit in the job."""
    if not used:
        return {}
    left_out = len(character_face_crop_files(character)) - used
    return {"face_crops": used, **({"face_crops_left_out": left_out} if left_out > 0 else {})}


def _identity_detail(identity: IdentityCheck) -> dict[str, Any]:
    """What the start's event keeps of the face check: its score and the codes of its warnings, if any."""
    if identity.score is None and not identity.warnings:
        return {}
    return {
        "identity_score": identity.score,
        "identity_warnings": [warning["code"] for warning in identity.warnings],
    }


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
    return [photo_item(image) for image in images]


def _run_create(
    *,
    character: Character,
    requested_by: User,
    params: dict[str, Any],
    manifest: list[dict[str, Any]],
    trigger_word: str,
    base_model: str,
    source: str,
    detail: dict[str, Any],
    provider: str = TrainingRun.Provider.SERVERLESS,
) -> TrainingRun:
    steps = int(params["steps"])
    time_limit = _time_limit(steps, base_model)
    estimate = pricing.estimate_cost(steps=steps, base_model=base_model)
    run_id = uuid.uuid4()
    with transaction.atomic():
        owner = _lock_owner_and_character(character)
        if TrainingRun.objects.filter(character=character, status__in=TrainingRun.ACTIVE_STATUSES).exists():
            raise _already_training()
        _check_budget(owner, estimate, preset=detail.get("preset"), steps=steps, base_model=base_model)
        try:
            with transaction.atomic():
                run = TrainingRun.objects.create(
                    id=run_id,
                    character=character,
                    requested_by=requested_by,
                    params=params,
                    manifest=manifest,
                    trigger_word=trigger_word,
                    base_model=base_model,
                    provider=provider,
                    estimated_cost_usd=estimate,
                    execution_timeout_s=time_limit,
                    # If the enqueue below is lost, the sweep submits the run at this time.
                    submit_due_at=timezone.now() + pending_recheck(),
                )
        except IntegrityError as exc:
            # The partial unique index is the last word when two starts race past the check above.
            raise _already_training() from exc
        event_write(run, "", Status.PENDING, source, detail)
        queue.enqueue_on_commit(queue.SUBMIT, run.pk)
    return run


def _time_limit(steps: int, base_model: str) -> int:
    """The run's executionTimeout on RunPod; refused when the run cannot fit the longest a run may take."""
    refusal = time_limits.time_limit_refusal(steps=steps, base_model=base_model)
    if refusal:
        raise ApplicationError(refusal, code="run_too_long", fields={"steps": [refusal]})
    return time_limits.run_time_limit(steps=steps, base_model=base_model).seconds


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


def _check_budget(owner: User, estimate: Decimal, *, preset: str | None, steps: int, base_model: str) -> None:
    limit = owner.monthly_gpu_budget_usd
    if limit is None:
        return
    budget = Budget(
        limit=limit,
        spent=user_spend_this_month(owner),
        reserved=user_reserved_spend(owner),
        estimate=estimate,
        base_model=base_model,
    )
    if not budget.enough:
        committed = budget.spent + budget.reserved
        raise ApplicationError(
            f"This run would cost about ${estimate:.2f}, and ${committed:.2f} of the ${limit:.2f} monthly "
            "GPU budget is already spent or held by runs in progress. "
            + budget_advice(budget=budget, preset=preset, steps=steps),
            code="budget_exceeded",
        )
