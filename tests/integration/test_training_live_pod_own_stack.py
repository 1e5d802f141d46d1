"""Pod mode on a live stack of the test's own: a pod stopped on RunPod (the local RunPod's REST v2) is
started for a run and stopped again once idle, by the beat's pod check, whose interval the Celery worker
reads at start-up."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from tests.integration.conftest import Stack, wait_for
from tests.integration.pod_live import (
    POD_WORKER_ENV,
    character_ready_to_train,
    explain,
    final,
    outputs_deleted,
    start,
)
from tests.support.local_ai_toolkit_ui import LocalAIToolkitUI
from training import providers
from training.models import Pod
from training.selectors import pod_cost_usd

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_a_stopped_pod_is_started_for_a_run_and_stopped_again_after_its_idle_time(
    alice: Any, stack_factory: Any, ui: LocalAIToolkitUI, pod: Pod
) -> None:
    # The pod lives on the local RunPod's REST v2 (`POST /v2/pods`, `POST /v2/pods/{id}/action`), stopped
    # (EXITED); beat's pod check runs every half second and stops a pod idle for three seconds.
    stack: Stack = stack_factory(
        worker_env={
            **POD_WORKER_ENV,
            "TRAINING_POD_CHECK_SECONDS": "0.5",
            "TRAINING_POD_IDLE_STOP_MINUTES": "0.05",
        }
    )
    rest = providers.runpod_rest()
    remote = rest.create_pod({"name": "live-pod", "image": "ostris/aitoolkit:latest", "gpu": {"id": "L4"}})
    rest.pod_action(remote["id"], "stop")
    Pod.objects.filter(pk=pod.pk).update(runpod_pod_id=remote["id"], state=Pod.State.STOPPED)

    run = final(start(character_ready_to_train(alice)))

    assert run.status == "completed", explain(stack, ui) + run.error_message
    assert rest.get_pod(remote["id"])["status"] == "RUNNING"  # started for the run, not yet idle long
    outputs_deleted(run)
    pod = wait_for(
        lambda: Pod.objects.filter(pk=pod.pk, state=Pod.State.STOPPED).first(), what="the idle pod to stop"
    )
    assert rest.get_pod(remote["id"])["status"] == "EXITED", explain(stack, ui)
    # Its running time, from RunPod saying RUNNING to the stop, is the pod's cost; the run paid its share.
    assert pod.running_since is None and pod.uptime_seconds >= 1
    assert run.cost_state == "settled" and Decimal(0) < run.cost_usd <= pod_cost_usd(pod)
