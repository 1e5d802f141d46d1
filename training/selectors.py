"""Reads of training runs: per-user listings, the current LoRA, spend and estimates."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.db.models import Case, DecimalField, F, OuterRef, Q, QuerySet, Subquery, Sum, Value, When
from django.db.models.expressions import CombinedExpression
from django.db.models.functions import Coalesce
from django.utils import timezone

from characters.models import Character
from runpod_worker.contract import BaseModel
from studio.errors import NotFound
from studio.models import User
from training import pricing
from training.models import (
    Checkpoint,
    DeletedRunSpend,
    LossSeries,
    Pod,
    RunPodEndpointStatus,
    Sample,
    TrainingRun,
)

ZERO = Decimal("0")
MONEY = DecimalField(max_digits=12, decimal_places=4)


def current_lora_runs(character: Character | OuterRef) -> QuerySet[TrainingRun]:
    """The character's runs that have a LoRA, the current one first: the LoRA most recently made — a run
    completing, or its owner choosing one of a run's checkpoints ("use this checkpoint", which also gives a
    cancelled or failed run a LoRA) — is the current one (derived, never stored). `character` may be an
    `OuterRef` to annotate many at once."""
    with_lora = Q(status=TrainingRun.Status.COMPLETED) | Q(lora_chosen_at__isnull=False)
    return TrainingRun.objects.filter(with_lora, character=character).order_by(
        Coalesce("lora_chosen_at", "finished_at").desc(nulls_last=True), "-created_at"
    )


def run_has_lora(run: TrainingRun) -> bool:
    """A completed run, or an ended one whose owner chose one of its checkpoints."""
    return run.is_final and bool(run.lora_name)


def character_current_lora(character: Character) -> TrainingRun | None:
    """The run whose LoRA is the character's current one, or None before any run completed."""
    return current_lora_runs(character).first()


def current_lora_run_id(character_ref: OuterRef) -> Subquery:
    """`character_current_lora`'s run id as a subquery, for annotating many characters in one query
    (`character_ref` is `OuterRef("pk")` on characters, `OuterRef("character_id")` on runs)."""
    return Subquery(current_lora_runs(character_ref).values("pk")[:1])


def training_run_cost_pending(run: TrainingRun) -> bool:
    """The run has ended and its cost is still to be read from RunPod's final status of its job."""
    return run.is_final and run.cost_state == TrainingRun.CostState.PENDING


def training_runs_to_poll() -> QuerySet[TrainingRun]:
    """Runs whose job RunPod's `/status` still has something to tell: active runs, and ended runs whose
    cost is pending (an active run's cost is pending too, until it ends)."""
    return TrainingRun.objects.filter(cost_state=TrainingRun.CostState.PENDING)


def month_start(now: datetime | None = None) -> datetime:
    now = timezone.now() if now is None else now
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def run_spend(prefix: str = "") -> Coalesce:
    """What a run counts against its owner's budget: RunPod's cost of its execution plus the estimate of what
    RunPod bills beyond it (the worker's start-up and idle time); or, when RunPod's execution time was never
    read (a lost webhook, a result RunPod forgot, a run recovered from storage) but the run did start on a
    GPU, its estimate (which includes both), since RunPod billed it all the same; nothing for a run that
    never started. `prefix` reaches the run through a relation (`"characters__training_runs__"`)."""
    started = When(**{f"{prefix}started_at__isnull": False}, then=F(f"{prefix}estimated_cost_usd"))
    outside = Coalesce(F(f"{prefix}startup_idle_cost_usd"), Value(ZERO), output_field=MONEY)
    return Coalesce(F(f"{prefix}cost_usd") + outside, Case(started, default=Value(ZERO)), output_field=MONEY)


@dataclass(frozen=True)
class RunCharge:
    """What a run counts against its owner's budget, as `run_spend` sums it: RunPod's cost (`exact`) plus
    the estimate of the worker's start-up and idle time (`startup_idle`), the estimate for a run that
    reached a GPU but whose cost RunPod has not reported, or None (never started)."""

    amount: Decimal | None
    exact: bool
    startup_idle: Decimal | None = None


def training_run_charge(run: TrainingRun) -> RunCharge:
    if run.cost_usd is not None:
        outside = run.startup_idle_cost_usd
        return RunCharge(amount=run.cost_usd + (outside or ZERO), exact=True, startup_idle=outside)
    if run.started_at is not None or not run.is_final:
        return RunCharge(amount=run.estimated_cost_usd, exact=False)
    return RunCharge(amount=None, exact=False)


def training_run_cost_so_far(run: TrainingRun, *, now: datetime | None = None) -> Decimal:
    """GPU money an active run has used until `now`: its time on a GPU at the GPU's per-second price."""
    if run.started_at is None:
        return Decimal("0")
    seconds = Decimal(max(0.0, ((now or timezone.now()) - run.started_at).total_seconds()))
    gpu = pricing.gpu_type_for(run.gpu_type) if run.gpu_type else settings.TRAINING_GPU_TYPE
    return (seconds * pricing.price_per_second(gpu)).quantize(pricing.CENTS)


def spend_this_month(*, owner: User | None = None, now: datetime | None = None) -> Decimal:
    """GPU money spent this calendar month (UTC) by `owner`'s runs (everyone's by default), each counted as
    `run_spend` counts it, and by runs deleted since (`DeletedRunSpend`: a delete never gives money back).
    The one definition of "spend this month": the budget, the budget panel and the admin dashboard all
    read it.

    Failed and cancelled runs count too: RunPod bills the GPU time whatever the outcome.
    """
    start = month_start(now)
    runs = TrainingRun.objects.filter(finished_at__gte=start)
    deleted = DeletedRunSpend.objects.filter(finished_at__gte=start)
    if owner is not None:
        runs, deleted = runs.filter(character__owner=owner), deleted.filter(owner=owner)
    live = runs.aggregate(total=Sum(run_spend()))["total"] or Decimal("0")
    return live + (deleted.aggregate(total=Sum("amount_usd"))["total"] or Decimal("0"))


def user_spend_this_month(user: User, *, now: datetime | None = None) -> Decimal:
    """GPU money spent by runs of the user's characters this calendar month (UTC), deleted ones included."""
    return spend_this_month(owner=user, now=now)


def user_spend_this_month_annotation(*, now: datetime | None = None) -> CombinedExpression:
    """`user_spend_this_month` as an annotation on users, for a whole page of users in one query."""
    start = month_start(now)
    this_month = Q(characters__training_runs__finished_at__gte=start)
    live = Coalesce(Sum(run_spend("characters__training_runs__"), filter=this_month), Value(ZERO))
    deleted = (
        DeletedRunSpend.objects.filter(owner=OuterRef("pk"), finished_at__gte=start)
        .values("owner")
        .annotate(total=Sum("amount_usd"))
        .values("total")
    )
    return live + Coalesce(Subquery(deleted, output_field=MONEY), Value(ZERO))


def user_reserved_spend(user: User) -> Decimal:
    """The estimated cost of the user's runs still in progress: money the budget must hold back."""
    total = TrainingRun.objects.filter(
        character__owner=user, status__in=TrainingRun.ACTIVE_STATUSES
    ).aggregate(total=Sum("estimated_cost_usd"))["total"]
    return total or Decimal("0")


def training_run_list_for(
    user: User, *, character: Character | None = None, status: str | None = None
) -> QuerySet[TrainingRun]:
    """The user's own runs, newest first; nobody sees another user's runs."""
    runs = TrainingRun.objects.filter(character__owner=user).select_related("character")
    if character is not None:
        runs = runs.filter(character=character)
    if status:
        runs = runs.filter(status=status)
    return runs.order_by("-created_at")


def training_run_get_for(user: User, run_id: uuid.UUID | str) -> TrainingRun:
    """One of the user's runs, or NotFound: another user's run looks exactly like a missing one."""
    try:
        run_uuid = uuid.UUID(str(run_id))
    except ValueError as exc:
        raise NotFound("This training run does not exist.") from exc
    run = training_run_list_for(user).filter(pk=run_uuid).first()
    if run is None:
        raise NotFound("This training run does not exist.")
    return run


def training_cost_estimate(
    *, steps: int, gpu_type: str | None = None, base_model: str = BaseModel.DEFAULT
) -> Decimal:
    """The USD a run of `steps` steps is expected to cost on `gpu_type` (default: the endpoint's GPU)."""
    return pricing.estimate_cost(steps=steps, gpu_type=gpu_type, base_model=base_model)


def runpod_endpoint_status() -> RunPodEndpointStatus | None:
    """What the studio last found about RUNPOD_ENDPOINT_ID (`training.services.endpoint`), if anything."""
    return RunPodEndpointStatus.objects.filter(endpoint_id=settings.RUNPOD_ENDPOINT_ID).first()


def training_run_endpoint_notice(run: TrainingRun) -> str | None:
    """What a run's owner is told while the endpoint itself holds the run up (staff see the cause and the
    fix on the dashboard): waiting for a worker RunPod does not allow, or progress RunPod cannot show."""
    if run.is_final or run.provider == TrainingRun.Provider.POD:  # a pod run never meets the endpoint
        return None
    status = runpod_endpoint_status()
    problem = status.problem if status is not None else ""
    waiting = run.status in (TrainingRun.Status.PENDING, TrainingRun.Status.QUEUED)
    if problem == RunPodEndpointStatus.Problem.SCALED_TO_ZERO and waiting:
        return (
            "RunPod allows the studio no GPU worker right now (it turns an endpoint down after a quiet "
            "week), so this run waits in the queue. Staff have been told; it starts as soon as a worker is "
            "allowed again. If none is within "
            f"{settings.TRAINING_JOB_TTL_SECONDS // 3600} hours of the start, RunPod drops the run unbilled."
        )
    if problem == RunPodEndpointStatus.Problem.NOT_FOUND:
        return (
            "The studio cannot reach its RunPod endpoint right now (a setting staff have been told to fix), "
            "so this run's progress may not update. It is not failed meanwhile."
        )
    return None


def training_run_samples(run: TrainingRun) -> QuerySet[Sample]:
    """The run's verified samples, newest step first, then in prompt order (the gallery's order)."""
    return run.samples.filter(verified_at__isnull=False).order_by("-step", "prompt_index")


def training_run_checkpoints(run: TrainingRun) -> QuerySet[Checkpoint]:
    """The run's verified checkpoints in step order, its final LoRA last; pruned ones included (marked)."""
    return run.checkpoints.filter(verified_at__isnull=False).select_related("run").order_by("step")


def training_run_loss(run: TrainingRun) -> LossSeries | None:
    return LossSeries.objects.filter(run=run).first()


def pod_uptime_seconds(pod: Pod, now: datetime | None = None) -> int:
    """The pod's running time: its ended spans and the one under way."""
    now = now or timezone.now()
    current = (now - pod.running_since).total_seconds() if pod.running_since else 0
    return int(pod.uptime_seconds + max(0.0, current))


def pod_cost_usd(pod: Pod, now: datetime | None = None) -> Decimal:
    """What RunPod has billed for the pod's running time: hours x its hourly price (idle hours included)."""
    hours = Decimal(pod_uptime_seconds(pod, now)) / Decimal(3600)
    return (hours * pod.hourly_price_usd).quantize(Decimal("0.0001"))
