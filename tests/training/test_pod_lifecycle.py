"""A pod on RunPod is started when a pod run waits for it, marked running once RunPod and its UI say so,
and stopped after its idle time, its running time counted for its cost."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from studio.errors import ApplicationError
from tests.runpod_worker.ui_pod import TOKEN, UIPod
from tests.training.conftest import make_run
from training.models import Pod, TrainingRun
from training.pod_secrets import pod_token, pod_token_set
from training.runpod_rest import RunPodRestRejected, RunPodRestUnavailable
from training.selectors import pod_cost_usd
from training.services import (
    pod_lifecycle,
    pod_register,
    pod_start,
    pods_check,
    training_run_start,
    training_run_submit,
)
from training.services.pod_outputs import OUTPUTS_RETRY_WINDOW, pod_runs_outputs_overdue
from training.services.pod_runs import PodNotRunning
from training.tasks import delete_pod_outputs

pytestmark = pytest.mark.django_db


@dataclass
class FakeRest:
    """Where RunPod's REST v2 stands: pod actions recorded, the pod's status scripted."""

    status: str = "EXITED"
    actions: list[tuple[str, str]] = field(default_factory=list)
    created: list[dict[str, Any]] = field(default_factory=list)
    errors: list[Exception] = field(default_factory=list)

    def pod_action(self, pod_id: str, action: str) -> dict[str, Any]:
        self.actions.append((pod_id, action))
        if self.errors:
            raise self.errors.pop(0)
        return {"id": pod_id, "desiredStatus": self.status}

    def create_pod(self, body: dict[str, Any]) -> dict[str, Any]:
        self.created.append(body)
        return {"id": "newpod1", "name": body["name"], "desiredStatus": "RUNNING", "cost": 0.69}

    def get_pod(self, pod_id: str) -> dict[str, Any]:
        return {"id": pod_id, "desiredStatus": self.status}


@pytest.fixture
def rest(monkeypatch: pytest.MonkeyPatch) -> FakeRest:
    fake = FakeRest()
    monkeypatch.setattr("training.providers.runpod_rest", lambda: fake)
    return fake


def make_pod(url: str = "http://127.0.0.1:9", **fields: Any) -> Pod:
    fields = {"runpod_pod_id": "abc123", **fields}
    pod = Pod(name="pod-a", ui_url=url, hourly_price_usd=Decimal("1.20"), **fields)
    pod_token_set(pod, TOKEN)
    pod.save()
    return pod


def pod_run_start(character: Any) -> TrainingRun:
    """A pod run of the character, its owner allowed pods."""
    character.owner.pod_training_allowed = True
    character.owner.save()
    return training_run_start(
        character=character,
        requested_by=character.owner,
        params={"steps": 100},
        provider="pod",
        source="user",
    )


def test_a_pod_run_waiting_for_a_stopped_pod_gets_it_started_and_waits(
    character: Any, rest: FakeRest
) -> None:
    pod = make_pod(state=Pod.State.STOPPED)
    run = pod_run_start(character)

    with pytest.raises(PodNotRunning):  # the submission task tries again later
        training_run_submit(run=run)

    run.refresh_from_db()
    pod.refresh_from_db()
    assert rest.actions == [("abc123", "start")]
    assert (pod.state, run.status, run.pod, run.attempts) == (Pod.State.STARTING, "pending", pod, 0)


def test_a_start_runpod_refuses_puts_the_pod_back_to_stopped(rest: FakeRest) -> None:
    pod = make_pod(state=Pod.State.STOPPED)
    rest.errors.append(RunPodRestUnavailable("down"))

    with pytest.raises(RunPodRestUnavailable):
        pod_start(pod=pod)

    pod.refresh_from_db()
    assert pod.state == Pod.State.STOPPED


def test_a_starting_pod_is_running_once_runpod_says_so_and_its_ui_answers(
    rest: FakeRest, ui_pod: UIPod
) -> None:
    pod = make_pod(url=ui_pod.url, state=Pod.State.STARTING)
    rest.status = "RUNNING"

    pods_check()

    pod.refresh_from_db()
    assert pod.state == Pod.State.RUNNING and pod.running_since is not None


def test_a_pod_idle_past_its_idle_time_is_stopped_and_its_hours_counted(
    rest: FakeRest, settings: Any
) -> None:
    settings.TRAINING_POD_IDLE_STOP_MINUTES = 30
    now = timezone.now()
    pod = make_pod(
        state=Pod.State.RUNNING,
        running_since=now - timedelta(hours=2),
        last_busy_at=now - timedelta(minutes=31),
    )

    pods_check(now=now)

    pod.refresh_from_db()
    assert rest.actions == [("abc123", "stop")]
    assert (pod.state, pod.running_since, pod.uptime_seconds) == (Pod.State.STOPPED, None, 7200)
    assert pod_cost_usd(pod, now) == Decimal("2.4000")


def test_a_pod_with_a_run_on_it_is_not_stopped(character: Any, rest: FakeRest) -> None:
    now = timezone.now()
    pod = make_pod(
        state=Pod.State.RUNNING, running_since=now - timedelta(hours=2), last_busy_at=now - timedelta(hours=2)
    )
    make_run(character, TrainingRun.Status.TRAINING, provider="pod", pod=pod)

    pods_check(now=now)

    pod.refresh_from_db()
    assert rest.actions == [] and pod.state == Pod.State.RUNNING and pod.last_busy_at == now


def test_a_pod_runpod_already_stopped_is_stopped_here_too(rest: FakeRest) -> None:
    now = timezone.now()
    pod = make_pod(
        state=Pod.State.RUNNING, running_since=now - timedelta(hours=1), last_busy_at=now - timedelta(hours=1)
    )
    rest.errors.append(RunPodRestRejected("not valid for its status", status_code=409))

    pods_check(now=now)

    pod.refresh_from_db()
    assert pod.state == Pod.State.STOPPED and pod.uptime_seconds == 3600


def test_a_pod_not_on_runpod_is_never_stopped(rest: FakeRest) -> None:
    now = timezone.now()
    make_pod(runpod_pod_id="", state=Pod.State.RUNNING, last_busy_at=now - timedelta(days=1))

    pods_check(now=now)

    assert rest.actions == []


def test_staff_create_a_pod_from_a_template_with_a_fresh_token(rest: FakeRest) -> None:
    call_command("pod_create", "pod-new", "--template", "aitk-template", "--gpu", "NVIDIA GeForce RTX 4090")

    [body] = rest.created
    pod = Pod.objects.get(name="pod-new")
    assert body["templateId"] == "aitk-template" and body["gpu"] == {
        "id": "NVIDIA GeForce RTX 4090",
        "count": 1,
    }
    assert body["ports"] == ["8675/http"]
    assert pod_token(pod) == body["env"]["AI_TOOLKIT_AUTH"] and len(pod_token(pod)) >= 40
    assert (pod.runpod_pod_id, pod.ui_url, pod.state) == (
        "newpod1",
        "https://newpod1-8675.proxy.runpod.net",
        Pod.State.STARTING,
    )
    assert pod.hourly_price_usd == Decimal("0.69")  # RunPod's `cost` of the pod


def test_a_ui_registered_again_under_its_name_is_the_same_pod_at_its_new_address() -> None:
    first = pod_register(
        name="local-ui", ui_url="http://127.0.0.1:8676", token="one", hourly_price_usd=Decimal(0)
    )

    again = pod_register(
        name="local-ui", ui_url="http://127.0.0.1:9000", token="two", hourly_price_usd=Decimal(0)
    )

    pod = Pod.objects.get(name="local-ui")
    assert again.pk == first.pk and Pod.objects.count() == 1
    assert (pod.ui_url, pod_token(pod)) == ("http://127.0.0.1:9000", "two")
    assert (pod.runpod_pod_id, pod.state) == ("", Pod.State.RUNNING)


@pytest.mark.django_db(transaction=True)
def test_two_first_registrations_of_one_name_at_once_make_one_pod_at_the_later_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("two registrations at once need two transactions at once: Postgres (make test finds it)")
    # The other registration makes the pod between this one's look for it and its save.
    token_set, raced = pod_lifecycle.pod_token_set, threading.Event()

    def the_other_registers_first(pod: Pod, token: str) -> None:
        if not raced.is_set():
            raced.set()
            other = threading.Thread(target=_register_elsewhere, args=("http://127.0.0.1:9000", "two"))
            other.start()
            other.join(30)
        token_set(pod, token)

    monkeypatch.setattr(pod_lifecycle, "pod_token_set", the_other_registers_first)

    pod = pod_register(
        name="local-ui", ui_url="http://127.0.0.1:8676", token="one", hourly_price_usd=Decimal(0)
    )

    assert raced.is_set() and Pod.objects.count() == 1
    stored = Pod.objects.get(name="local-ui")
    assert stored.pk == pod.pk
    assert (stored.ui_url, pod_token(stored)) == ("http://127.0.0.1:8676", "one")


def _register_elsewhere(ui_url: str, token: str) -> None:
    try:
        pod_register(name="local-ui", ui_url=ui_url, token=token, hourly_price_usd=Decimal(0))
    finally:
        connection.close()


def test_registering_a_ui_again_keeps_what_staff_changed_on_its_pod() -> None:
    pod = pod_register(
        name="local-ui", ui_url="http://127.0.0.1:8676", token="one", hourly_price_usd=Decimal(0)
    )
    Pod.objects.filter(pk=pod.pk).update(accepts_runs=False, hourly_price_usd=Decimal("0.50"))

    pod_register(name="local-ui", ui_url="http://127.0.0.1:8676", token="one", hourly_price_usd=Decimal(0))

    pod.refresh_from_db()
    assert (pod.accepts_runs, pod.hourly_price_usd) == (False, Decimal("0.50"))


def test_staff_register_a_ui_of_their_own_with_its_token_read_from_a_file(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("aitk-token\n")

    call_command("pod_register", "my-ui", "--url", "http://10.0.0.5:8675", "--token-file", str(token_file))

    pod = Pod.objects.get(name="my-ui")
    assert (pod.ui_url, pod_token(pod), pod.runpod_pod_id) == ("http://10.0.0.5:8675", "aitk-token", "")


def test_registering_with_an_empty_token_file_is_refused_and_registers_nothing(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("")

    with pytest.raises(CommandError, match="is empty"):
        call_command(
            "pod_register", "my-ui", "--url", "http://10.0.0.5:8675", "--token-file", str(token_file)
        )

    assert not Pod.objects.exists()


def test_a_runpod_pods_name_is_not_taken_over_by_a_registration() -> None:
    managed = Pod.objects.create(
        name="studio-4090",
        runpod_pod_id="pod_abc123",
        ui_url="https://x.example",
        hourly_price_usd=Decimal(1),
    )

    with pytest.raises(ApplicationError, match="RunPod pod pod_abc123, which the studio starts and stops"):
        pod_register(
            name="studio-4090", ui_url="http://10.0.0.5:8675", token="t", hourly_price_usd=Decimal(0)
        )

    managed.refresh_from_db()
    assert managed.ui_url == "https://x.example"


@pytest.mark.parametrize(
    ("url", "price", "says"),
    [
        ("not a url", "0", "Enter a valid URL."),
        ("http://10.0.0.5:8675", "NaN", "zero or more, not NaN"),
        ("http://10.0.0.5:8675", "Infinity", "zero or more, not Infinity"),
        ("http://10.0.0.5:8675", "-1", "zero or more, not -1"),
    ],
)
def test_a_registration_with_a_bad_url_or_price_is_refused_and_registers_nothing(
    tmp_path: Path, url: str, price: str, says: str
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("aitk-token\n")

    with pytest.raises(CommandError, match=re.escape(says)):
        call_command("pod_register", "my-ui", "--url", url, "--token-file", str(token_file), "--price", price)

    assert not Pod.objects.filter(name="my-ui").exists()


@pytest.mark.parametrize(("waited_hours", "given_up"), [(2, False), (25, True)])
def test_a_pod_run_waiting_for_its_pod_is_held_to_the_pods_waiting_limit_not_runpods_submission_one(
    character: Any, rest: FakeRest, settings: Any, waited_hours: int, given_up: bool
) -> None:
    # RunPod may not start a stopped pod for hours (its GPU taken by someone else); the run stays pending
    # meanwhile, and the submission's one-hour give-up for an unreachable RunPod is not the rule for it.
    settings.TRAINING_SUBMIT_GIVE_UP_SECONDS = 3600
    settings.TRAINING_POD_QUEUE_TIMEOUT_SECONDS = 24 * 3600
    make_pod(state=Pod.State.STARTING)
    run = pod_run_start(character)
    TrainingRun.objects.filter(pk=run.pk).update(created_at=timezone.now() - timedelta(hours=waited_hours))
    run.refresh_from_db()

    if given_up:
        training_run_submit(run=run)
    else:
        with pytest.raises(PodNotRunning):
            training_run_submit(run=run)

    run.refresh_from_db()
    if given_up:
        assert (run.status, run.error_code) == ("failed", "submit_failed")
        assert run.error_message.startswith("Pod pod-a could not take the run for 25 h")
        assert "nothing was charged" in run.error_message and run.cost_usd is None
    else:
        assert (run.status, run.error_code) == ("pending", "")


def test_the_sweep_queues_an_overdue_pod_outputs_deletion_once_per_retry_window_not_every_sweep(
    character: Any, settings: Any
) -> None:
    # While the pod does not answer, each queued deletion retries on its own for minutes: a sweep every
    # 15 s that queued another copy each time would pile them up against the pod.
    pod = make_pod(runpod_pod_id="", state=Pod.State.RUNNING)
    ended = timezone.now() - timedelta(minutes=5)
    run = make_run(
        character, TrainingRun.Status.COMPLETED, provider=TrainingRun.Provider.POD, pod=pod, finished_at=ended
    )
    now = timezone.now()

    first = pod_runs_outputs_overdue(now=now)
    again = pod_runs_outputs_overdue(now=now + timedelta(seconds=15))
    later = pod_runs_outputs_overdue(now=now + OUTPUTS_RETRY_WINDOW + timedelta(seconds=1))

    assert (first, again, later) == ([run.pk], [], [run.pk])


def test_a_pods_unreadable_token_ends_the_deletion_task_with_an_error_instead_of_retrying(
    character: Any, caplog: pytest.LogCaptureFixture
) -> None:
    pod = Pod.objects.create(name="pod-a", ui_url="http://127.0.0.1:9", hourly_price_usd=Decimal(1))
    run = make_run(
        character,
        TrainingRun.Status.COMPLETED,
        provider=TrainingRun.Provider.POD,
        pod=pod,
        runpod_job_id="job-1",
        finished_at=timezone.now(),
    )

    result = delete_pod_outputs.apply(args=[str(run.pk)])

    assert result.successful() and result.result is None
    assert "enter the pod's token in the admin" in caplog.text
    run.refresh_from_db()
    assert run.pod_outputs_deleted_at is None
