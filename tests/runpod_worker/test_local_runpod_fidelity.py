"""The stand-in behaves as RunPod's docs, SDK and issues say RunPod does (each test names its source).

A scripted worker plays the SDK's side of the protocol, so every order of events is exact.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.grouping import in_one_process
from tests.support.local_runpod import LocalRunPod, ScriptedWorker

pytestmark = [pytest.mark.integration, in_one_process(__name__)]

NO_FAULTS = {
    "webhook_on_cancel": False,
    "timeout_status": "TIMED_OUT",
    "queued_expiry": "404",
    "status_retries": False,
    "progress_delay_s": 0.0,
    "rerun_after_result": 0,
    "rerun_result": "ignored",
    "garble_run_answer": 0,
    "idle_days": 0,
}


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRunPod]:
    with LocalRunPod(
        workdir=tmp_path_factory.mktemp("local-runpod-fidelity"), workers=0, worker_key="worker-key"
    ) as runpod:
        yield runpod


@pytest.fixture
def runpod(stand_in: LocalRunPod) -> Iterator[LocalRunPod]:
    yield stand_in
    stand_in.set_faults(**NO_FAULTS)
    stand_in.set_endpoint_max_workers(3)
    for job_id, job in stand_in.state()["jobs"].items():  # no test inherits another's queue
        if job["status"] in {"IN_QUEUE", "IN_PROGRESS"}:
            stand_in.cancel(job_id)


@pytest.fixture
def worker(runpod: LocalRunPod, request: pytest.FixtureRequest) -> ScriptedWorker:
    return runpod.scripted_worker(f"worker-{request.node.name[:40]}")


@pytest.fixture
def receiver() -> Iterator[list[dict[str, Any]]]:
    """A webhook receiver answering 200; the list holds every body it got."""
    bodies: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    bodies.append({"url": f"http://127.0.0.1:{server.server_address[1]}/hook"})
    yield bodies
    server.shutdown()
    server.server_close()


def hook_url(receiver: list[dict[str, Any]]) -> str:
    return str(receiver[0]["url"])


def webhooks(receiver: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return receiver[1:]


def wait(predicate: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError("condition not met")


def started(runpod: LocalRunPod, worker: ScriptedWorker, **run: Any) -> str:
    job_id = runpod.run({"n": 1}, **run)
    worker.take_until(job_id)
    return job_id


# ------------------------------------------------------------------------------------------- webhooks


def test_the_webhook_body_is_the_cloud_one_without_a_worker_id(
    runpod: LocalRunPod, worker: ScriptedWorker, receiver: list[dict[str, Any]]
) -> None:
    # runpod-python#409: the cloud sends delayTime, executionTime, id, input, output, status, webhook.
    job_id = started(runpod, worker, webhook=hook_url(receiver))
    worker.finish(job_id, output={"ok": True})

    [body] = wait(lambda: webhooks(receiver))
    assert set(body) == {"delayTime", "executionTime", "id", "input", "output", "status", "webhook"}
    assert (body["id"], body["status"], body["input"]) == (job_id, "COMPLETED", {"n": 1})


def test_a_failed_job_sends_its_webhook_with_the_error(
    runpod: LocalRunPod, worker: ScriptedWorker, receiver: list[dict[str, Any]]
) -> None:
    # runpod-python#410 and PR #585: "In production, RunPod sends a webhook with status FAILED".
    job_id = started(runpod, worker, webhook=hook_url(receiver))
    worker.finish(job_id, error="boom")

    [body] = wait(lambda: webhooks(receiver))
    assert (body["status"], body["error"]) == ("FAILED", "boom")
    assert "output" not in body


def test_a_cancelled_job_sends_no_webhook_unless_switched_on(
    runpod: LocalRunPod, receiver: list[dict[str, Any]]
) -> None:
    # No source says RunPod notifies a cancel: the webhook is "on job complete, fail, or timeout"
    # (docs history, 2023), so by default none; `webhook_on_cancel` covers the other possibility.
    silent = runpod.run({"n": 1}, webhook=hook_url(receiver))
    runpod.cancel(silent)
    runpod.set_faults(webhook_on_cancel=True)
    noisy = runpod.run({"n": 2}, webhook=hook_url(receiver))
    runpod.cancel(noisy)

    [body] = wait(lambda: webhooks(receiver))
    time.sleep(0.3)
    assert [b["id"] for b in webhooks(receiver)] == [noisy]
    assert body["status"] == "CANCELLED"


# ------------------------------------------------------------------------------------------- timeouts


def test_a_job_past_its_execution_timeout_is_timed_out_without_an_error(
    runpod: LocalRunPod, worker: ScriptedWorker, receiver: list[dict[str, Any]]
) -> None:
    # docs serverless/endpoints/job-states.mdx:20 names TIMED_OUT; no source shows an `error` with it.
    job_id = started(runpod, worker, webhook=hook_url(receiver), policy={"executionTimeout": 500})

    final = runpod.wait_for(job_id, timeout=10)

    assert final["status"] == "TIMED_OUT"
    assert "error" not in final and final["executionTime"] >= 500
    [body] = wait(lambda: webhooks(receiver))
    assert body["status"] == "TIMED_OUT"


def test_a_timed_out_job_can_read_failed_instead(runpod: LocalRunPod, worker: ScriptedWorker) -> None:
    # The v1 OpenAPI (api-reference/openapi.json:3415): past the execution timeout "the worker is stopped
    # and the request is marked as failed".
    runpod.set_faults(timeout_status="FAILED")
    job_id = started(runpod, worker, policy={"executionTimeout": 500})

    final = runpod.wait_for(job_id, timeout=10)

    assert final["status"] == "FAILED" and "error" not in final


def test_a_job_whose_ttl_passes_in_the_queue_is_gone(runpod: LocalRunPod) -> None:
    # docs serverless/endpoints/send-requests.mdx:126-130: at TTL the job is deleted, status checks 404.
    runpod.set_endpoint_max_workers(0)
    job_id = runpod.run({"n": 1}, policy={"ttl": 500})

    wait(lambda: runpod.status(job_id) is None)


def test_a_job_whose_ttl_passes_in_the_queue_can_read_timed_out_instead(
    runpod: LocalRunPod, receiver: list[dict[str, Any]]
) -> None:
    # docs serverless/endpoints/job-states.mdx:20: TIMED_OUT = "expired before it was picked up".
    runpod.set_faults(queued_expiry="TIMED_OUT")
    runpod.set_endpoint_max_workers(0)
    job_id = runpod.run({"n": 1}, policy={"ttl": 500}, webhook=hook_url(receiver))

    final = runpod.wait_for(job_id, timeout=10)

    assert final["status"] == "TIMED_OUT"
    assert not {"error", "executionTime", "workerId"} & set(final)
    assert wait(lambda: webhooks(receiver))[0]["status"] == "TIMED_OUT"


# ------------------------------------------------------------------------------------- status fields


def test_execution_time_is_reported_and_grows_while_the_job_runs(
    runpod: LocalRunPod, worker: ScriptedWorker
) -> None:
    # runpod-python#105 shows `executionTime` beside `status: IN_PROGRESS`: a running total, not the final.
    job_id = started(runpod, worker)
    first = runpod.status(job_id)
    time.sleep(0.3)
    second = runpod.status(job_id)
    worker.finish(job_id, output={"ok": True})

    assert first is not None and second is not None
    assert first["status"] == second["status"] == "IN_PROGRESS"
    assert second["executionTime"] >= first["executionTime"] + 250


def test_retries_appear_in_status_only_when_switched_on(runpod: LocalRunPod) -> None:
    # No RunPod source documents a `retries` key in /status; the switch lets the client prove it copes.
    plain = runpod.status(runpod.run({"n": 1}))
    runpod.set_faults(status_retries=True)
    counted = runpod.status(runpod.run({"n": 2}))

    assert plain is not None and "retries" not in plain
    assert counted is not None and counted["retries"] == 0


# ----------------------------------------------------------------------------- progress after result


def test_a_progress_post_landing_after_the_result_leaves_the_job_in_progress_for_good(
    runpod: LocalRunPod, worker: ScriptedWorker
) -> None:
    # runpod-python#250: a finished job read IN_PROGRESS, its output the last progress text, for good.
    runpod.set_faults(progress_delay_s=0.5)
    job_id = started(runpod, worker)
    late = threading.Thread(target=worker.progress, args=(job_id, {"step": 9}))
    late.start()
    time.sleep(0.1)
    worker.finish(job_id, output={"ok": True})
    completed = runpod.status(job_id)
    late.join()

    assert completed is not None and completed["status"] == "COMPLETED"
    reopened = runpod.status(job_id)
    assert reopened is not None
    assert (reopened["status"], reopened["output"]) == ("IN_PROGRESS", {"step": 9})
    assert reopened["executionTime"] == completed["executionTime"]


# -------------------------------------------------------------------------------- re-run after result


def test_a_finished_job_is_handed_out_again_and_keeps_its_first_result(
    runpod: LocalRunPod, worker: ScriptedWorker
) -> None:
    # runpod-python#402: "After the job finishes and posts the results, it ... triggers another
    # execution of the same request". What /status says meanwhile is not reported: by default the first
    # result stays and the re-run's is ignored.
    runpod.set_faults(rerun_after_result=1)
    job_id = started(runpod, worker)
    worker.finish(job_id, output={"run": 1})

    again = worker.take_until(job_id)
    during = runpod.status(job_id)
    worker.finish(job_id, error="second delivery stopped")

    assert again["input"] == {"n": 1}
    assert during is not None and (during["status"], during["output"]) == ("COMPLETED", {"run": 1})
    final = runpod.status(job_id)
    assert final is not None and (final["status"], final["output"]) == ("COMPLETED", {"run": 1})
    assert runpod.state()["jobs"][job_id]["ignored_results"][-1]["error"] == "second delivery stopped"


def test_a_rerun_can_replace_the_first_result(runpod: LocalRunPod, worker: ScriptedWorker) -> None:
    runpod.set_faults(rerun_after_result=1, rerun_result="replaces")
    job_id = started(runpod, worker)
    worker.finish(job_id, output={"run": 1})

    worker.take_until(job_id)
    during = runpod.status(job_id)
    worker.finish(job_id, error="second delivery stopped")

    assert during is not None and during["status"] == "IN_PROGRESS"
    final = runpod.status(job_id)
    assert final is not None and (final["status"], final["error"]) == ("FAILED", "second delivery stopped")


# ---------------------------------------------------------------------------------- a garbled answer


def test_a_garbled_run_answer_is_a_2xx_whose_body_is_not_json_for_a_job_that_exists(
    runpod: LocalRunPod,
) -> None:
    runpod.set_faults(garble_run_answer=1)
    before = set(runpod.state()["jobs"])

    response = requests.post(
        f"{runpod.api_url}/run",
        json={"input": {"n": 1}},
        headers={"Authorization": f"Bearer {runpod.api_key}"},
        timeout=10,
    )

    assert response.status_code == 200
    with pytest.raises(ValueError):
        response.json()
    assert len(set(runpod.state()["jobs"]) - before) == 1


# -------------------------------------------------------------------------------- workers and scaling


def test_an_endpoint_with_max_workers_zero_keeps_jobs_queued(
    runpod: LocalRunPod, worker: ScriptedWorker
) -> None:
    # docs serverless/endpoints/endpoint-configurations.mdx:80-88: an endpoint idle for 7 days is set to max
    # workers 0 and stays there; jobs then wait in the queue until their TTL.
    runpod.set_faults(idle_days=7)
    job_id = runpod.run({"n": 1})

    assert worker.take() is None
    assert runpod.endpoint()["workers"]["max"] == 0
    status = runpod.status(job_id)
    assert status is not None and status["status"] == "IN_QUEUE"
    runpod.set_endpoint_max_workers(1)
    assert worker.take_until(job_id)["id"] == job_id


def test_three_idle_days_lower_max_workers_to_two(runpod: LocalRunPod) -> None:
    runpod.set_faults(idle_days=3)

    assert runpod.endpoint()["workers"]["max"] == 2


def test_health_reports_every_worker_state_runpod_lists(tmp_path: Path) -> None:
    # The /health example of RunPod's SDK docs (runpod/docs sdks/*/endpoints.mdx, removed in f5cdf4b4)
    # lists workers idle, initializing, ready, running and throttled; today's page shows idle and running.
    with LocalRunPod(workdir=tmp_path, workers=1, faults={"throttled_workers": "1"}) as runpod:
        first = wait(lambda: runpod.health()["workers"] if sum(runpod.health()["workers"].values()) else None)
        throttled = runpod.health()["workers"]
        runpod.set_faults(throttled_workers=0)
        ready = wait(lambda: runpod.health()["workers"]["ready"] == 1 and runpod.health()["workers"])

    assert set(first) == {"idle", "initializing", "ready", "running", "throttled"}
    assert throttled["throttled"] == 1 and throttled["idle"] == throttled["running"] == 0
    assert (ready["idle"], ready["ready"], ready["throttled"]) == (1, 1, 0)


def test_a_new_worker_is_initializing_until_it_first_asks_for_a_job(tmp_path: Path) -> None:
    with LocalRunPod(workdir=tmp_path, workers=1) as runpod:
        seen = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (seen and seen[-1]["ready"] == 1):
            workers = runpod.health()["workers"]
            if sum(workers.values()):
                seen.append(workers)
            time.sleep(0.05)

    assert seen[0]["initializing"] == 1 and seen[0]["ready"] == 0
    assert seen[-1]["ready"] == 1 and seen[-1]["initializing"] == 0
