"""A run's cost as a state of its own (`TrainingRun.cost_state`): pending while RunPod's execution time of
the job is still to be read, settled once it was read (or can no longer be). Read through
`training.selectors.training_run_cost_pending`."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from training import pricing
from training.models import TrainingRun
from training.services.schedule import COST_POLL

Status = TrainingRun.Status
CostState = TrainingRun.CostState

# RunPod job statuses after which RunPod reports nothing new about the job (and its execution time is known).
FINAL_JOB_STATUSES = frozenset({"COMPLETED", "FAILED", "TIMED_OUT", "CANCELLED"})


def cost_settle_on_end(run: TrainingRun, now: datetime) -> None:
    """At a run's end: its cost from RunPod's execution time, settled; or, for a run that ended before
    RunPod reported its job ended — completed by the worker's "finished" callback, cancelled (RunPod's
    `/cancel` answers only `{id, status}`), failed by the sweep at its deadline — pending, and the sweep's
    poll of RunPod's final status, which carries the time, due soon. A run settled before its end
    (recovered from storage: RunPod's result says nothing more) stays settled."""
    if run.provider == TrainingRun.Provider.POD:
        pod_run_cost_record(run, now)
        run.cost_state = CostState.SETTLED
        run.next_poll_at = None
        return
    cost_record(run)
    if run.cost_state == CostState.PENDING and _final_status_unread(run):
        run.cost_state = CostState.PENDING
        run.next_poll_at = now + COST_POLL[0]
    else:
        run.cost_state = CostState.SETTLED
        run.next_poll_at = None


def cost_settle(run: TrainingRun) -> None:
    """RunPod's final status of the job was read (onto the run): its execution time gives the cost (read
    once; a status without one leaves the cost empty)."""
    cost_record(run)
    run.cost_state = CostState.SETTLED
    run.next_poll_at = None


def cost_record(run: TrainingRun) -> None:
    """RunPod's cost of the run's execution, and the estimate of its worker's start-up and idle time beside
    it (the budget counts both); both empty while the execution time is unknown."""
    run.cost_usd = run_cost(run)
    has_run = run.cost_usd is not None
    run.startup_idle_cost_usd = pricing.startup_idle_cost(gpu_name=run.gpu_type) if has_run else None


def pod_run_cost_record(run: TrainingRun, now: datetime) -> None:
    """A pod run's cost: the pod's hours from when its job started training to its end, at the pod's hourly
    price (known at once: nothing is left to read). The pod's idle hours are not in it; the pods' page shows
    them (docs/TRAINING.md, "Pod mode")."""
    run.startup_idle_cost_usd = None
    if run.started_at is None:  # its job never trained: nothing to charge (the page says "nothing billed")
        run.execution_ms, run.cost_usd = None, None
        return
    seconds = max(0.0, (now - run.started_at).total_seconds())
    price = run.pod.hourly_price_usd if run.pod is not None else None
    run.execution_ms = int(seconds * 1000)
    run.cost_usd = None if price is None else (Decimal(seconds) / 3600 * price).quantize(Decimal("0.0001"))


def run_cost(run: TrainingRun) -> Decimal | None:
    """RunPod's cost of the run's job, from its execution time and GPU; None while the time is unknown."""
    if run.execution_ms is None:
        return None
    return pricing.actual_cost(execution_ms=run.execution_ms, gpu_name=run.gpu_type)


def _final_status_unread(run: TrainingRun) -> bool:
    seen = (run.last_provider_payload or {}).get("status")
    return bool(run.runpod_job_id) and seen not in FINAL_JOB_STATUSES
