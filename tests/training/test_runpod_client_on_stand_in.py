"""The RunPod client against the local stand-in's faithful answers: what it raises or reads is what the
product acts on (a job that may exist, an endpoint RunPod does not know, a job stopped for time)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.local_runpod import LocalRunPod
from tests.training.conftest import make_run
from training.runpod import RunPodClient, RunPodEndpointNotFound, RunPodJobNotFound, RunPodSubmitUncertain
from training.services import training_run_apply_status

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def runpod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRunPod]:
    workdir = tmp_path_factory.mktemp("client-on-stand-in")
    with LocalRunPod(workdir=workdir, workers=0, worker_key="worker-key") as stand_in:
        yield stand_in


def client_for(runpod: LocalRunPod, endpoint_id: str | None = None) -> RunPodClient:
    return RunPodClient(
        api_base=f"{runpod.base_url}/v2",
        endpoint_id=endpoint_id or runpod.endpoint_id,
        api_key=runpod.api_key,
        timeout_seconds=5.0,
        max_attempts=2,
        sleep=lambda _seconds: None,
    )


def test_a_garbled_run_answer_is_uncertain_and_the_job_it_made_exists(runpod: LocalRunPod) -> None:
    runpod.set_faults(garble_run_answer=1)
    before = set(runpod.state()["jobs"])

    with pytest.raises(RunPodSubmitUncertain):
        client_for(runpod).submit(job_input={"n": 1}, webhook=None, policy={})

    assert len(set(runpod.state()["jobs"]) - before) == 1  # never submitted again: one job


def test_a_wrong_endpoint_id_is_told_apart_from_a_lost_job_by_health(runpod: LocalRunPod) -> None:
    wrong = client_for(runpod, endpoint_id="re-created-elsewhere")
    right = client_for(runpod)

    with pytest.raises(RunPodJobNotFound):
        wrong.status("some-job-u1")
    with pytest.raises(RunPodEndpointNotFound):
        wrong.health()
    with pytest.raises(RunPodJobNotFound):
        right.status("some-job-u1")
    assert right.health().workers["idle"] == 0  # the endpoint exists: that job is the one gone


@pytest.mark.django_db
@pytest.mark.parametrize("reads", ["TIMED_OUT", "FAILED"])
def test_a_job_stopped_for_time_fails_its_run_as_timed_out_whichever_way_runpod_reads_it(
    runpod: LocalRunPod, character: Any, reads: str
) -> None:
    # Past its execution timeout a job reads TIMED_OUT (docs serverless/endpoints/job-states.mdx:20) or, as
    # the v1 OpenAPI says, is "marked as failed" (api-reference/openapi.json:3415); no `error` either way.
    runpod.set_faults(timeout_status=reads)
    job_id = runpod.run({"n": 1}, policy={"executionTimeout": 1000})
    runpod.scripted_worker(f"worker-{reads}").take_until(job_id)
    runpod.wait_for(job_id, timeout=15)
    run = make_run(character, "training", runpod_job_id=job_id, execution_timeout_s=1)

    try:
        job = client_for(runpod).status(job_id)
        training_run_apply_status(run_id=run.pk, job=job, source="poll")
    finally:
        runpod.reset()

    run.refresh_from_db()
    assert (job.status, job.error, run.status, run.error_code) == (reads, None, "failed", "timed_out")
    assert run.error_message.startswith("The run reached its time limit on RunPod (1 min)")
