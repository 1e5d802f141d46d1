from __future__ import annotations

import pytest
import requests
import responses

from training.runpod_rest import (
    RunPodRestClient,
    RunPodRestNotFound,
    RunPodRestRejected,
    RunPodRestUnavailable,
    RunPodRestUncertain,
)

BASE = "https://api.runpod.test/v2"
PROBLEM = {
    "title": "Unprocessable Entity",
    "status": 422,
    "detail": "Request validation failed.",
    "errors": ["$.workers.max: minimum: got -1, want 0"],
}


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def client(sleeps: list[float]) -> RunPodRestClient:
    return RunPodRestClient(
        api_base=BASE, api_key="secret-key", timeout_seconds=3.0, max_attempts=3, sleep=sleeps.append
    )


@responses.activate
def test_a_list_comes_unwrapped_and_the_key_goes_as_a_bearer_token(client: RunPodRestClient) -> None:
    responses.get(f"{BASE}/serverless", json={"endpoints": [{"id": "e1", "name": "lora-training"}]})

    endpoints = client.list_endpoints()

    assert endpoints == [{"id": "e1", "name": "lora-training"}]
    assert responses.calls[0].request.headers["Authorization"] == "Bearer secret-key"


@responses.activate
def test_a_read_is_retried_after_a_429_honouring_retry_after(
    client: RunPodRestClient, sleeps: list[float]
) -> None:
    responses.get(f"{BASE}/serverless/e1", status=429, headers={"Retry-After": "2"})
    responses.get(f"{BASE}/serverless/e1", json={"id": "e1"})

    assert client.get_endpoint("e1") == {"id": "e1"}
    assert sleeps == [2.0]


@responses.activate
def test_a_patch_is_retried_after_a_5xx_because_repeating_it_changes_nothing_more(
    client: RunPodRestClient,
) -> None:
    responses.patch(f"{BASE}/serverless/e1", status=503)
    responses.patch(f"{BASE}/serverless/e1", json={"id": "e1", "workers": {"max": 3}})

    assert client.update_endpoint("e1", {"workers": {"max": 3}})["workers"] == {"max": 3}


@responses.activate
def test_a_create_answered_5xx_is_uncertain_and_not_repeated(client: RunPodRestClient) -> None:
    responses.post(f"{BASE}/templates", status=502)

    with pytest.raises(RunPodRestUncertain, match="may have done it"):
        client.create_template({"name": "t", "image": "i", "env": {"HF_TOKEN": "hf_secret"}})

    assert len(responses.calls) == 1


@responses.activate
def test_a_create_that_never_connected_is_repeated(client: RunPodRestClient) -> None:
    responses.post(f"{BASE}/templates", body=requests.ConnectTimeout("no route"))
    responses.post(f"{BASE}/templates", json={"id": "t1"}, status=201)

    assert client.create_template({"name": "t", "image": "i"}) == {"id": "t1"}


@responses.activate
def test_a_read_timing_out_every_time_is_unavailable(client: RunPodRestClient) -> None:
    responses.get(f"{BASE}/templates", body=requests.ReadTimeout("slow"))

    with pytest.raises(RunPodRestUnavailable, match="did not answer GET /v2/templates"):
        client.list_templates()

    assert len(responses.calls) == 3


@responses.activate
def test_a_422_carries_runpods_validation_errors_and_never_the_body_sent(client: RunPodRestClient) -> None:
    responses.post(f"{BASE}/serverless", status=422, json=PROBLEM, content_type="application/problem+json")

    with pytest.raises(RunPodRestRejected) as caught:
        client.create_endpoint({"name": "e", "env": {"HF_TOKEN": "hf_secret"}, "workers": {"max": -1}})

    assert caught.value.status_code == 422
    assert caught.value.errors == ["$.workers.max: minimum: got -1, want 0"]
    assert "Request validation failed" in caught.value.message and "$.workers.max" in caught.value.message
    assert "hf_secret" not in caught.value.message


@responses.activate
def test_an_unknown_id_is_not_found(client: RunPodRestClient) -> None:
    responses.get(
        f"{BASE}/serverless/nope",
        status=404,
        json={"title": "Not Found", "status": 404, "detail": "endpoint not found"},
    )

    with pytest.raises(RunPodRestNotFound, match="endpoint not found"):
        client.get_endpoint("nope")


@responses.activate
def test_a_refused_key_says_which_setting_to_check(client: RunPodRestClient) -> None:
    responses.get(
        f"{BASE}/templates", status=401, json={"title": "Unauthorized", "status": 401, "detail": "x"}
    )

    with pytest.raises(RunPodRestRejected, match="Check RUNPOD_API_KEY"):
        client.list_templates()


@responses.activate
def test_terminating_a_pod_answers_no_body(client: RunPodRestClient) -> None:
    responses.post(f"{BASE}/pods/p1/action", status=204)

    assert client.pod_action("p1", "terminate") is None
