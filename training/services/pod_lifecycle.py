"""A pod's life on RunPod (REST v2, `POST /v2/pods/{id}/action` with `start` or `stop`, runpod/docs
api-reference-v2/openapi.json `podAction`): started when a pod run waits for it, marked running once
RunPod says RUNNING and its UI answers, stopped after its idle time so nobody pays for an idle GPU, and its
running time counted for its cost (`selectors.pod_cost_usd`).

Each change of state is claimed by a conditional update before RunPod is called, so two checks (or a
check and a submission) never send the same action twice; a call that fails puts the state back.
A pod without a RunPod id (a UI elsewhere, registered by `pod_register`) is never started or stopped.
"""

from __future__ import annotations

import functools
import logging
import secrets
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from studio.errors import ApplicationError
from training import providers
from training.aitoolkit import AIToolkitError
from training.models import Pod, TrainingRun
from training.pod_secrets import pod_token_set
from training.runpod_rest import RunPodRestError, RunPodRestRejected

logger = logging.getLogger("training.services")

State = Pod.State
# RunPod's pod status once its container runs (openapi.json `Pod.desiredStatus`/`status`).
RUNPOD_RUNNING = "RUNNING"


# The port AI Toolkit's UI listens on (`ui/package.json` start script, `docker/Dockerfile` EXPOSE 8675), and
# RunPod's HTTP proxy address of a pod's port.
UI_PORT = 8675


def pod_create(
    *,
    name: str,
    template_id: str,
    gpu_type_id: str,
    hourly_price_usd: Decimal | None = None,
    gpu_ids: str = "0",
) -> Pod:
    """Creates a pod from a template through RunPod's REST v2 (`POST /v2/pods`, openapi.json
    `CreatePodRequest`: the template's settings, its env merged with ours) with a new random UI token as its
    AI_TOOLKIT_AUTH and the UI's port on RunPod's HTTP proxy, and registers it (starting; the pods' check
    marks it running). The price is the one RunPod answers (`cost`, USD per hour) unless given. Raises
    RunPodRestError; a create whose answer was lost (RunPodRestUncertain) may have made a pod: look in
    RunPod's console before trying again."""
    token = secrets.token_urlsafe(32)
    body = {
        "name": name,
        "templateId": template_id,
        "gpu": {"id": gpu_type_id, "count": 1},
        "env": {"AI_TOOLKIT_AUTH": token},
        "ports": [f"{UI_PORT}/http"],
    }
    created = providers.runpod_rest().create_pod(body)
    pod_id = str(created["id"])
    price = hourly_price_usd if hourly_price_usd is not None else Decimal(str(created.get("cost") or 0))
    now = timezone.now()
    pod = Pod(
        name=name,
        runpod_pod_id=pod_id,
        ui_url=f"https://{pod_id}-{UI_PORT}.proxy.runpod.net",
        gpu_ids=gpu_ids,
        hourly_price_usd=price,
        state=State.STARTING,
        state_changed_at=now,
    )
    pod_token_set(pod, token)
    pod.save()
    logger.info("pod %s: created on RunPod as %s from template %s", name, pod_id, template_id)
    return pod


def pod_register(*, name: str, ui_url: str, token: str, hourly_price_usd: Decimal, gpu_ids: str = "0") -> Pod:
    """Registers the UI at `ui_url` as a running pod the studio neither starts nor stops (no RunPod id), or
    points the pod of that name at it and its token again, the rest as staff left it: a second call makes
    no second pod. For a UI already up elsewhere (the demo's stand-in); staff use the admin or pod_create.
    Raises ApplicationError for a bad URL or price, or a name that is a pod on RunPod (the studio starts
    and stops that one: pointing it elsewhere would leave it billing unseen)."""
    if not hourly_price_usd.is_finite() or hourly_price_usd < 0:
        raise ApplicationError(
            f"A pod's price is USD per hour, zero or more, not {hourly_price_usd}.", code="invalid_price"
        )
    register = functools.partial(
        _pod_registered,
        name=name,
        ui_url=ui_url,
        token=token,
        hourly_price_usd=hourly_price_usd,
        gpu_ids=gpu_ids,
    )
    try:
        pod = register()
    except IntegrityError:
        # Another registration of the name made the pod since this one looked: this one points it here.
        pod = register()
    logger.info("pod %s: registered at %s", name, ui_url)
    return pod


def _pod_registered(*, name: str, ui_url: str, token: str, hourly_price_usd: Decimal, gpu_ids: str) -> Pod:
    with transaction.atomic():
        pod = Pod.objects.select_for_update().filter(name=name).first()
        if pod is not None and pod.runpod_pod_id:
            raise ApplicationError(
                f"Pod {name} is RunPod pod {pod.runpod_pod_id}, which the studio starts and stops; register "
                "the UI under another name.",
                code="pod_on_runpod",
            )
        if pod is None:
            # As the admin registers one: running, with no running span, since nobody starts or stops it.
            pod = Pod(name=name, gpu_ids=gpu_ids, hourly_price_usd=hourly_price_usd, state=State.RUNNING)
        pod.ui_url = ui_url
        pod_token_set(pod, token)
        try:
            pod.full_clean(exclude=["token_encrypted"], validate_unique=False)
        except ValidationError as exc:
            raise ApplicationError(
                " ".join(message for messages in exc.message_dict.values() for message in messages),
                code="invalid_pod",
            ) from exc
        pod.save()
    return pod


def pod_start(*, pod: Pod) -> Pod:
    """Asks RunPod to start a stopped pod a run waits for (stopped -> starting); the pods' check marks it
    running. Raises RunPodRestError when RunPod could not be asked (the state is put back)."""
    now = timezone.now()
    if not pod.runpod_pod_id or not _claim(pod, State.STOPPED, State.STARTING, now):
        return Pod.objects.get(pk=pod.pk)
    try:
        providers.runpod_rest().pod_action(pod.runpod_pod_id, "start")
    except RunPodRestRejected as exc:
        if exc.status_code != 409:  # 409: not startable from its status, i.e. already on its way up
            _claim(pod, State.STARTING, State.STOPPED, now)
            raise
    except RunPodRestError:
        _claim(pod, State.STARTING, State.STOPPED, now)
        raise
    logger.info("pod %s: asked RunPod to start it for a waiting run", pod.name)
    return Pod.objects.get(pk=pod.pk)


def pods_check(*, now: datetime | None = None) -> list[str]:
    """Beat: each RunPod pod's busy time noted, a starting pod marked running once it is, an idle one
    stopped. Returns what changed, one line per pod."""
    now = now or timezone.now()
    changes = []
    for pod in Pod.objects.exclude(runpod_pod_id=""):
        try:
            change = _pod_check(pod, now)
        except (RunPodRestError, AIToolkitError) as exc:
            logger.warning("pod %s: check failed (%s); the next check tries again", pod.name, exc)
            change = ""
        if change:
            changes.append(f"{pod.name}: {change}")
    return changes


def _pod_check(pod: Pod, now: datetime) -> str:
    if pod_busy(pod):
        Pod.objects.filter(pk=pod.pk).update(last_busy_at=now)
        pod.last_busy_at = now
    if pod.state == State.STARTING:
        return _running_yet(pod, now)
    if pod.state == State.RUNNING and _idle_past_limit(pod, now):
        return _stop(pod, now)
    return ""


def pod_busy(pod: Pod) -> bool:
    """A run is on the pod, waits for it, or left outputs there still to delete."""
    waiting = Q(status__in=TrainingRun.ACTIVE_STATUSES)
    leftovers = Q(status__in=TrainingRun.FINAL_STATUSES, pod_outputs_deleted_at__isnull=True)
    return pod.runs.filter(waiting | (leftovers & ~Q(runpod_job_id=""))).exists()


def _running_yet(pod: Pod, now: datetime) -> str:
    remote = providers.runpod_rest().get_pod(pod.runpod_pod_id)
    if str(remote.get("desiredStatus") or remote.get("status") or "").upper() != RUNPOD_RUNNING:
        return ""
    providers.pod_client(pod).check()  # the UI answers with our token: raises until it does
    changed = Pod.objects.filter(pk=pod.pk, state=State.STARTING).update(
        state=State.RUNNING, state_changed_at=now, running_since=now, last_busy_at=now
    )
    return "running" if changed else ""


def _idle_past_limit(pod: Pod, now: datetime) -> bool:
    minutes = pod.idle_stop_minutes or settings.TRAINING_POD_IDLE_STOP_MINUTES
    idle_since = pod.last_busy_at or pod.running_since or pod.state_changed_at or pod.created_at
    return not pod_busy(pod) and now - idle_since >= timedelta(minutes=minutes)


def _stop(pod: Pod, now: datetime) -> str:
    if not _claim(pod, State.RUNNING, State.STOPPING, now):
        return ""
    try:
        providers.runpod_rest().pod_action(pod.runpod_pod_id, "stop")
    except RunPodRestRejected as exc:
        if exc.status_code != 409:  # 409: RunPod has it stopped already
            _claim(pod, State.STOPPING, State.RUNNING, now)
            raise
    except RunPodRestError:
        _claim(pod, State.STOPPING, State.RUNNING, now)
        raise
    ran = (now - pod.running_since).total_seconds() if pod.running_since else 0.0
    Pod.objects.filter(pk=pod.pk, state=State.STOPPING).update(
        state=State.STOPPED,
        state_changed_at=now,
        running_since=None,
        uptime_seconds=pod.uptime_seconds + int(ran),
    )
    logger.info("pod %s: stopped after its idle time", pod.name)
    return "stopped (idle)"


def _claim(pod: Pod, from_state: str, to_state: str, now: datetime) -> bool:
    return bool(Pod.objects.filter(pk=pod.pk, state=from_state).update(state=to_state, state_changed_at=now))
