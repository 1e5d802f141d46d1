"""The stand-in's fault answers leave a kept-alive connection usable for the client's next request."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.local_runpod import LocalRunPod

pytestmark = pytest.mark.integration


@pytest.fixture
def runpod(tmp_path: Path) -> Iterator[LocalRunPod]:
    # No worker: these tests only talk to the public API.
    with LocalRunPod(workdir=tmp_path, workers=0) as stand_in:
        yield stand_in


def _one_connection(runpod: LocalRunPod) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {runpod.api_key}"
    return session


@pytest.mark.parametrize("fault", ["rate_429", "rate_5xx"])
def test_a_refused_post_with_a_body_leaves_the_connection_in_step(runpod: LocalRunPod, fault: str) -> None:
    session = _one_connection(runpod)
    runpod.set_faults(**{fault: 1.0})
    body = {"input": {"padding": "x" * 20_000}}  # larger than one read, so leftovers would show

    refused = session.post(f"{runpod.api_url}/run", json=body, timeout=10)
    runpod.set_faults(**{fault: 0.0})
    health = session.get(f"{runpod.api_url}/health", timeout=10)
    accepted = session.post(f"{runpod.api_url}/run", json=body, timeout=10)

    assert refused.status_code == (429 if fault == "rate_429" else 500)
    assert health.status_code == 200, health.text
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["status"] == "IN_QUEUE"
    session.close()


def test_a_post_refused_for_its_key_leaves_the_connection_in_step(runpod: LocalRunPod) -> None:
    session = _one_connection(runpod)

    refused = session.post(
        f"{runpod.api_url}/run",
        json={"input": {"a": 1}},
        headers={"Authorization": "Bearer wrong"},
        timeout=10,
    )
    health = session.get(f"{runpod.api_url}/health", timeout=10)

    assert refused.status_code == 401
    assert health.status_code == 200, health.text
    session.close()


def test_state_counts_public_calls_and_times_each_job(runpod: LocalRunPod) -> None:
    runpod.set_faults(rate_429=1.0)
    with pytest.raises(requests.HTTPError):
        runpod.run({"a": 1})
    runpod.set_faults(rate_429=0.0)
    job_id = runpod.run({"a": 1})
    runpod.status(job_id)
    runpod.cancel(job_id)

    state = runpod.state()

    assert state["api_calls"] == {"run": 2, "status": 1, "cancel": 1}
    job = state["jobs"][job_id]
    assert job["status"] == "CANCELLED"
    assert job["created_ms"] <= job["finished_ms"]
    assert job["started_ms"] is None
