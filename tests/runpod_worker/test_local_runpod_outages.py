"""The stand-in's outage switches: RunPod unreachable, slow answers, and a /run whose answer is lost."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.local_runpod import LocalRunPod

pytestmark = pytest.mark.integration


@pytest.fixture
def runpod(tmp_path: Path) -> Iterator[LocalRunPod]:
    with LocalRunPod(workdir=tmp_path, workers=0) as stand_in:
        yield stand_in


def _post_run(runpod: LocalRunPod, *, timeout: float = 10) -> requests.Response:
    return requests.post(
        f"{runpod.api_url}/run",
        json={"input": {"a": 1}},
        headers={"Authorization": f"Bearer {runpod.api_key}"},
        timeout=timeout,
    )


def test_public_down_drops_every_public_connection_unanswered_and_creates_nothing(
    runpod: LocalRunPod,
) -> None:
    runpod.set_faults(public_down=True)

    with pytest.raises(requests.ConnectionError):
        _post_run(runpod)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{runpod.api_url}/health", timeout=10)

    assert runpod.state()["jobs"] == {}  # the control side still answers; no job was made
    runpod.set_faults(public_down=False)
    assert _post_run(runpod).status_code == 200


def test_a_slow_run_creates_its_job_though_the_client_gave_up(runpod: LocalRunPod) -> None:
    runpod.set_faults(slow_rate=1.0, slow_s=1.5)

    with pytest.raises(requests.Timeout):
        _post_run(runpod, timeout=0.5)

    runpod.set_faults(slow_rate=0.0)
    jobs = runpod.state()["jobs"]
    assert len(jobs) == 1  # the call happened: the caller cannot tell


def test_a_lost_run_answer_is_a_500_for_a_job_that_exists(runpod: LocalRunPod) -> None:
    runpod.set_faults(lose_run_answer=1)

    lost = _post_run(runpod)
    answered = _post_run(runpod)

    assert lost.status_code == 500
    assert answered.status_code == 200
    jobs = runpod.state()["jobs"]
    assert len(jobs) == 2 and answered.json()["id"] in jobs
    assert runpod.state()["faults"]["lose_run_answer"] == 0
