"""The RunPod client against the local stand-in's faithful answers: what it raises is what the product
acts on (a job that may exist, an endpoint RunPod does not know)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.local_runpod import LocalRunPod
from training.runpod import RunPodClient, RunPodEndpointNotFound, RunPodJobNotFound, RunPodSubmitUncertain

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def runpod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRunPod]:
    with LocalRunPod(workdir=tmp_path_factory.mktemp("client-on-stand-in"), workers=0) as stand_in:
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
