"""The run token is derived from the run id under SECRET_KEY and never stored: rotating the key stops the
tokens of runs in flight, and a run submitted again after the rotation carries a token that is heard."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.test import Client
from django.utils import timezone

from tests.training.conftest import FakeProvider
from training.models import TrainingRun
from training.runpod import RunPodSubmitUncertain
from training.services import training_run_start, training_run_submit
from training.tokens import run_token, run_token_matches

pytestmark = pytest.mark.django_db

OLD_KEY = "old-secret-key-" + "o" * 40
NEW_KEY = "new-secret-key-" + "n" * 40


def sent_token(provider: FakeProvider) -> str:
    return str(provider.submitted[-1]["input"]["callback"]["token"])


def started(client: Client, run: TrainingRun, token: str, job_id: str) -> Any:
    return client.post(
        f"/hooks/worker/{run.pk}",
        data=json.dumps({"event": "started", "job_id": job_id, "delivery_id": "delivery-1"}),
        content_type="application/json",
        headers={"Authorization": f"Bearer {token}"},
    )


def webhook(client: Client, run: TrainingRun, token: str) -> Any:
    return client.post(
        f"/hooks/runpod/{run.pk}/{token}", data=json.dumps({"id": "job-1"}), content_type="application/json"
    )


def test_rotating_secret_key_stops_the_old_token_and_a_resubmission_carries_one_that_is_heard(
    character: Any, provider: FakeProvider, settings: Any, client: Client
) -> None:
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = OLD_KEY, []
    run = training_run_start(character=character, requested_by=character.owner, source="user")
    # /run went unanswered: a job may exist with the old token, and the run stays pending.
    provider.submit_errors.append(RunPodSubmitUncertain("read timed out"))
    with pytest.raises(RunPodSubmitUncertain):
        training_run_submit(run=run)
    old_token = sent_token(provider)
    assert old_token == run_token(run.pk)

    settings.SECRET_KEY = NEW_KEY  # rotated, the old key not kept as a fallback
    assert webhook(client, run, old_token).status_code == 404
    assert started(client, run, old_token, "job-1").status_code == 404

    # The sweep submits the run again once the unanswered attempt's grace period has passed.
    grace = timedelta(seconds=settings.TRAINING_SUBMIT_UNCERTAIN_GRACE_SECONDS + 1)
    with time_machine.travel(timezone.now() + grace, tick=False):
        resubmitted = training_run_submit(run=run)
    new_token = sent_token(provider)

    assert resubmitted.status == "queued" and len(provider.submitted) == 2
    assert new_token != old_token and new_token == run_token(run.pk)
    assert provider.submitted[-1]["webhook"].endswith(f"/hooks/runpod/{run.pk}/{new_token}")
    heard = started(client, run, new_token, resubmitted.runpod_job_id)
    assert (heard.status_code, heard.json()) == (200, {"action": "continue"})
    run.refresh_from_db()
    assert run.status == "training"
    assert started(client, run, old_token, resubmitted.runpod_job_id).status_code == 404


def test_a_key_kept_in_secret_key_fallbacks_still_accepts_the_tokens_it_made(
    character: Any, settings: Any
) -> None:
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = OLD_KEY, []
    run = training_run_start(character=character, requested_by=character.owner, source="user")
    old_token = run_token(run.pk)

    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = NEW_KEY, [OLD_KEY]
    assert run_token_matches(run.pk, old_token)
    assert run_token_matches(run.pk, run_token(run.pk))

    settings.SECRET_KEY_FALLBACKS = []
    assert not run_token_matches(run.pk, old_token)


def test_a_token_is_its_own_runs_only(character: Any) -> None:
    run = training_run_start(character=character, requested_by=character.owner, source="user")

    assert not run_token_matches(run.pk, run_token(uuid.uuid4()))
    assert not run_token_matches(run.pk, "")
    assert not run_token_matches(run.pk, "é" * 64)
