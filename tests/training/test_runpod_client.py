from __future__ import annotations

import pytest
import requests
import responses

from tests.support.ports import free_port
from tests.training.payloads import runpod_payload
from training.runpod import (
    RunPodClient,
    RunPodEndpointNotFound,
    RunPodJobNotFound,
    RunPodRejected,
    RunPodSubmitUncertain,
    RunPodUnavailable,
)

BASE = "https://api.runpod.test/v2"
ENDPOINT = f"{BASE}/endpoint-1"
JOB_ID = "6f2b1c9e-3a4d-4b8e-9c1f-2d3e4f5a6b7c-u1"


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def client(sleeps: list[float]) -> RunPodClient:
    return RunPodClient(
        api_base=BASE,
        endpoint_id="endpoint-1",
        api_key="secret-key",
        timeout_seconds=3.0,
        max_attempts=3,
        sleep=sleeps.append,
    )


def submit(client: RunPodClient) -> object:
    return client.submit(job_input={"run_id": "x"}, webhook="https://studio/hook", policy={"ttl": 1000})


@responses.activate
def test_status_reads_a_job_into_a_typed_result(client: RunPodClient) -> None:
    responses.get(f"{ENDPOINT}/status/{JOB_ID}", json=runpod_payload("status_in_progress"))

    job = client.status(JOB_ID)

    assert (job.id, job.status, job.delay_ms, job.execution_ms) == (JOB_ID, "IN_PROGRESS", 8213, 61532)
    assert job.worker_id == "oqk7ao1uomckye"
    assert job.output["step"] == 420


@responses.activate
def test_every_call_sends_the_key_as_a_bearer_token(client: RunPodClient) -> None:
    responses.get(f"{ENDPOINT}/health", json=runpod_payload("health"))

    health = client.health()

    assert responses.calls[0].request.headers["Authorization"] == "Bearer secret-key"
    assert health.workers == {"idle": 0, "running": 1}


@responses.activate
def test_submit_sends_input_webhook_and_policy(client: RunPodClient) -> None:
    responses.post(
        f"{ENDPOINT}/run",
        json=runpod_payload("run_in_queue"),
        match=[
            responses.matchers.json_params_matcher(
                {"input": {"run_id": "x"}, "webhook": "https://studio/hook", "policy": {"ttl": 1000}}
            )
        ],
    )

    job = submit(client)

    assert job.id == JOB_ID and job.status == "IN_QUEUE"  # type: ignore[attr-defined]


@responses.activate
def test_a_429_then_success_is_retried_after_a_backoff(client: RunPodClient, sleeps: list[float]) -> None:
    responses.get(f"{ENDPOINT}/status/{JOB_ID}", status=429, json={"error": "Too Many Requests"})
    responses.get(f"{ENDPOINT}/status/{JOB_ID}", json=runpod_payload("status_in_progress"))

    job = client.status(JOB_ID)

    assert job.status == "IN_PROGRESS"
    assert len(responses.calls) == 2
    assert len(sleeps) == 1


@responses.activate
def test_a_429_on_run_is_retried_because_runpod_refused_it_before_queueing(client: RunPodClient) -> None:
    responses.post(f"{ENDPOINT}/run", status=429, json={"error": "Too Many Requests"})
    responses.post(f"{ENDPOINT}/run", json=runpod_payload("run_in_queue"))

    job = submit(client)

    assert job.id == JOB_ID  # type: ignore[attr-defined]
    assert len(responses.calls) == 2


@responses.activate
def test_retry_after_is_honoured_up_to_a_cap(client: RunPodClient, sleeps: list[float]) -> None:
    responses.get(f"{ENDPOINT}/status/{JOB_ID}", status=429, headers={"Retry-After": "2"})
    responses.get(f"{ENDPOINT}/status/{JOB_ID}", status=429, headers={"Retry-After": "3600"})
    responses.get(f"{ENDPOINT}/status/{JOB_ID}", json=runpod_payload("status_in_progress"))

    client.status(JOB_ID)

    assert sleeps == [2.0, 10.0]


@responses.activate
def test_5xx_until_retries_run_out_is_unavailable(client: RunPodClient) -> None:
    responses.get(f"{ENDPOINT}/status/{JOB_ID}", status=503)

    with pytest.raises(RunPodUnavailable, match="HTTP 503 on every attempt") as caught:
        client.status(JOB_ID)

    assert len(responses.calls) == 3
    assert caught.value.status_code == 503


@responses.activate
def test_a_5xx_on_run_is_not_repeated_because_a_job_may_exist(client: RunPodClient) -> None:
    responses.post(f"{ENDPOINT}/run", status=500)

    with pytest.raises(RunPodSubmitUncertain, match="a job may exist"):
        submit(client)

    assert len(responses.calls) == 1


@responses.activate
def test_a_read_timeout_on_status_is_retried_then_unavailable(client: RunPodClient) -> None:
    responses.get(f"{ENDPOINT}/status/{JOB_ID}", body=requests.ReadTimeout("slow"))

    with pytest.raises(RunPodUnavailable, match="did not answer GET status after 3 attempts"):
        client.status(JOB_ID)

    assert len(responses.calls) == 3


@responses.activate
def test_a_read_timeout_on_run_is_uncertain_and_not_repeated(client: RunPodClient) -> None:
    responses.post(f"{ENDPOINT}/run", body=requests.ReadTimeout("slow"))

    with pytest.raises(RunPodSubmitUncertain):
        submit(client)

    assert len(responses.calls) == 1


@responses.activate
def test_a_connect_timeout_on_run_is_repeated_because_nothing_was_sent(client: RunPodClient) -> None:
    responses.post(f"{ENDPOINT}/run", body=requests.ConnectTimeout("no route"))
    responses.post(f"{ENDPOINT}/run", json=runpod_payload("run_in_queue"))

    job = submit(client)

    assert job.id == JOB_ID  # type: ignore[attr-defined]


def test_a_refused_connection_on_run_is_repeated_and_then_unavailable_not_uncertain(
    sleeps: list[float],
) -> None:
    closed = RunPodClient(
        api_base=f"http://127.0.0.1:{free_port()}/v2",  # nothing listens there
        endpoint_id="endpoint-1",
        api_key="secret-key",
        timeout_seconds=3.0,
        max_attempts=3,
        sleep=sleeps.append,
    )

    with pytest.raises(RunPodUnavailable, match="connection refused") as caught:
        submit(closed)

    assert not isinstance(caught.value, RunPodSubmitUncertain)  # RunPod cannot have made a job
    assert closed.calls == 3


@responses.activate
def test_a_connection_dropped_after_sending_run_is_uncertain(client: RunPodClient) -> None:
    responses.post(f"{ENDPOINT}/run", body=requests.ConnectionError("Remote end closed connection"))

    with pytest.raises(RunPodSubmitUncertain):
        submit(client)

    assert len(responses.calls) == 1


@responses.activate
def test_a_401_is_permanent_and_says_to_check_the_key(client: RunPodClient) -> None:
    responses.get(f"{ENDPOINT}/status/{JOB_ID}", status=401, json=runpod_payload("error_401"))

    with pytest.raises(RunPodRejected, match="Check RUNPOD_API_KEY") as caught:
        client.status(JOB_ID)

    assert len(responses.calls) == 1
    assert "secret-key" not in caught.value.message


@responses.activate
def test_a_400_is_permanent_and_carries_runpods_reason(client: RunPodClient) -> None:
    responses.post(f"{ENDPOINT}/run", status=400, json=runpod_payload("error_400"))

    with pytest.raises(RunPodRejected, match=r"HTTP 400\): 'input' is required"):
        submit(client)

    assert len(responses.calls) == 1


@responses.activate
def test_an_unknown_job_is_not_found(client: RunPodClient) -> None:
    responses.get(f"{ENDPOINT}/status/{JOB_ID}", status=404, json=runpod_payload("error_404"))

    with pytest.raises(RunPodJobNotFound, match="may have expired"):
        client.status(JOB_ID)

    assert len(responses.calls) == 1


@responses.activate
def test_cancel_is_retried_like_a_read(client: RunPodClient) -> None:
    responses.post(f"{ENDPOINT}/cancel/{JOB_ID}", status=502)
    responses.post(f"{ENDPOINT}/cancel/{JOB_ID}", json=runpod_payload("cancel"))

    job = client.cancel(JOB_ID)

    assert job.status == "CANCELLED"


@responses.activate
def test_a_body_that_is_not_json_is_transient(client: RunPodClient) -> None:
    responses.get(f"{ENDPOINT}/status/{JOB_ID}", body="<html>gateway</html>")

    with pytest.raises(RunPodUnavailable, match="not JSON"):
        client.status(JOB_ID)


@responses.activate
def test_a_2xx_run_answer_whose_body_is_not_json_is_uncertain_because_the_job_may_exist(
    client: RunPodClient,
) -> None:
    # A 2xx means RunPod took the request; a gateway page or a cut body only hides the job's id.
    responses.post(f"{ENDPOINT}/run", body="<html><body>502 Bad Gateway</body></html>", status=200)

    with pytest.raises(RunPodSubmitUncertain, match="a job may exist"):
        submit(client)

    assert len(responses.calls) == 1


@responses.activate
def test_a_2xx_run_answer_without_a_job_id_is_uncertain(client: RunPodClient) -> None:
    responses.post(f"{ENDPOINT}/run", json={"status": "IN_QUEUE"})

    with pytest.raises(RunPodSubmitUncertain, match="a job may exist"):
        submit(client)


@responses.activate
def test_a_404_on_health_means_runpod_does_not_know_the_endpoint(client: RunPodClient) -> None:
    # RunPod answers 404 for a wrong endpoint id as for an expired job (docs send-requests.mdx:215);
    # only /health, which names no job, tells the two apart.
    responses.get(f"{ENDPOINT}/health", status=404, json={"error": "not found"})

    with pytest.raises(RunPodEndpointNotFound, match="RUNPOD_ENDPOINT_ID") as caught:
        client.health()

    assert not isinstance(caught.value, RunPodJobNotFound)
    assert len(responses.calls) == 1


@responses.activate
def test_a_status_with_keys_runpod_may_add_reads_as_usual(client: RunPodClient) -> None:
    responses.get(
        f"{ENDPOINT}/status/{JOB_ID}",
        json=runpod_payload("status_in_progress", retries=1, someNewField={"x": 1}),
    )

    job = client.status(JOB_ID)

    assert (job.status, job.execution_ms) == ("IN_PROGRESS", 61532)
