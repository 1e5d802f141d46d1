"""The AI Toolkit UI stand-in behaves as the UI's source says (ostris/ai-toolkit 27a03a91, `ui/`),
driven through the studio's own client, with the simulated trainer writing the UI's database."""

from __future__ import annotations

import contextlib
import json
import socket
import sqlite3
import threading
import time
from pathlib import Path

import pytest
import requests

from runpod_worker.local_ai_toolkit_ui import db
from tests.runpod_worker.ui_pod import TOKEN, UIPod
from training.aitoolkit import (
    AIToolkitClient,
    AIToolkitNameTaken,
    AIToolkitNotFound,
    AIToolkitUnauthorized,
    AIToolkitUnavailable,
    AIToolkitUncertain,
)


def control(ui: UIPod, path: str, body: dict[str, object]) -> dict[str, object]:
    response = requests.post(
        f"{ui.url}/_control/{path}", json=body, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    )
    response.raise_for_status()
    result: dict[str, object] = response.json()
    return result


def test_a_started_job_trains_to_completion_writing_its_progress_into_the_uis_database(ui_pod: UIPod) -> None:
    job = ui_pod.create()

    ui_pod.client.job_start(job)
    ui_pod.wait_for(job.id, lambda j: j.status == "completed")

    row = ui_pod.row(job.id)
    assert (row["status"], row["info"], row["step"]) == ("completed", "Training completed", 100)
    assert row["speed_string"].endswith(("iter/sec", "sec/iter"))
    assert row["total_steps"] is None  # Python never writes it; the UI falls back to train.steps


def test_a_job_started_without_its_queue_waits_for_ever(ui_pod: UIPod) -> None:
    job = ui_pod.create()

    ui_pod.client._json("GET", f"/api/jobs/{job.id}/start")
    time.sleep(2.5)  # two cron ticks

    assert ui_pod.row(job.id)["status"] == "queued"
    assert ui_pod.client.queues()[0].is_running is False


def test_one_job_runs_at_a_time_on_a_gpu_queue(ui_pod: UIPod) -> None:
    log_row_changes(ui_pod)
    first, second = ui_pod.create(steps=400), ui_pod.create()

    ui_pod.client.job_start(first)
    ui_pod.client.job_start(second)
    ui_pod.wait_for(second.id, lambda j: j.status == "completed")

    # Read from the row changes, not from polls, which a busy machine can let fall on either side of
    # a short job: the second job left the queue only once the first had completed.
    changes = all_row_changes(ui_pod)
    first_completed = changes.index([first.id, "completed"])
    second_running = changes.index([second.id, "running"])
    assert first_completed < second_running
    assert [first.id, "running"] in changes[:first_completed]


def test_the_queue_stops_itself_once_no_job_is_left(ui_pod: UIPod) -> None:
    job = ui_pod.create()
    ui_pod.client.job_start(job)
    ui_pod.wait_for(job.id, lambda j: j.status == "completed")

    time.sleep(1.5)

    assert [(q.gpu_ids, q.is_running) for q in ui_pod.client.queues()] == [("0", False)]


def test_the_loss_series_is_read_from_the_trainers_loss_log(ui_pod: UIPod) -> None:
    job = ui_pod.create()
    ui_pod.client.job_start(job)
    ui_pod.wait_for(job.id, lambda j: j.status == "completed")

    series = ui_pod.client.job_loss(job.id)

    assert series.keys == ["learning_rate", "loss/loss"]
    assert [p.step for p in series.points] == list(range(1, 100))  # the first step is never logged
    assert all(p.value is not None and p.value > 0 for p in series.points)


def test_a_loss_log_without_its_tables_yet_answers_a_bare_500(ui_pod: UIPod) -> None:
    # A trainer that dies before the UI logger made its tables leaves an empty loss_log.db: the route's
    # query rejects, and with no catch around it (`jobs/[jobID]/loss/route.ts`, try/finally) Next.js
    # answers 500.
    job = ui_pod.create()
    folder = ui_pod.pod.paths.root / "output" / job.name
    folder.mkdir(parents=True)
    sqlite3.connect(str(folder / "loss_log.db")).close()

    answer = requests.get(
        f"{ui_pod.url}/api/jobs/{job.id}/loss", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    )

    assert (answer.status_code, answer.content) == (500, b"")


def test_files_list_the_final_lora_its_checkpoint_and_the_optimizer_state(ui_pod: UIPod) -> None:
    job = ui_pod.create()
    ui_pod.client.job_start(job)
    ui_pod.wait_for(job.id, lambda j: j.status == "completed")

    names = [f.name for f in ui_pod.client.job_files(job.id)]

    assert names == [f"{job.name}.safetensors", f"{job.name}_000000050.safetensors", "optimizer.pt"]
    assert len(ui_pod.client.job_samples(job.id)) == 2


def test_a_duplicate_job_name_is_refused_with_409(ui_pod: UIPod) -> None:
    job = ui_pod.create()

    with pytest.raises(AIToolkitNameTaken):
        ui_pod.client.job_create(name=job.name, job_config=ui_pod.config(job.name))


def test_start_answers_the_job_as_it_was_before_queueing_it(ui_pod: UIPod) -> None:
    job = ui_pod.create()

    answer = ui_pod.client._json("GET", f"/api/jobs/{job.id}/start")

    assert answer["status"] == "stopped"
    assert ui_pod.row(job.id)["status"] == "queued"


def test_stop_interrupts_the_trainer_which_ends_stopped_at_its_last_save(ui_pod: UIPod) -> None:
    job = ui_pod.create(steps=6000)
    ui_pod.client.job_start(job)
    ui_pod.wait_for(job.id, lambda j: j.status == "running" and j.step > 0)

    ui_pod.client.job_stop(job.id)

    time.sleep(1.0)
    row = ui_pod.row(job.id)
    assert (row["status"], row["info"], row["stop"]) == ("stopped", "Job stopped", 1)
    assert row["step"] % 50 == 0  # on_error puts step back to the last save


def test_a_trainer_that_dies_unseen_leaves_its_job_running_until_marked_stopped(ui_pod: UIPod) -> None:
    control(ui_pod, "faults", {"stick_next_job": 1})
    stuck, waiting = ui_pod.create(), ui_pod.create()
    ui_pod.client.job_start(stuck)
    ui_pod.client.job_start(waiting)
    ui_pod.wait_for(stuck.id, lambda j: j.step >= 1)

    time.sleep(2.5)
    assert ui_pod.row(stuck.id)["status"] == "running"
    assert ui_pod.row(waiting.id)["status"] == "queued"  # the queue is blocked behind it

    ui_pod.client.job_mark_stopped(stuck.id)

    assert (ui_pod.row(stuck.id)["status"], ui_pod.row(stuck.id)["pid"]) == ("stopped", None)
    ui_pod.wait_for(waiting.id, lambda j: j.status == "completed")


def test_stop_of_a_job_whose_trainer_is_gone_leaves_its_status_alone(ui_pod: UIPod) -> None:
    control(ui_pod, "faults", {"stick_next_job": 1})
    job = ui_pod.create()
    ui_pod.client.job_start(job)
    ui_pod.wait_for(job.id, lambda j: j.step >= 1)
    time.sleep(0.5)

    ui_pod.client.job_stop(job.id)

    row = ui_pod.row(job.id)
    assert (row["status"], row["info"], row["stop"]) == ("running", "Stopping job...", 1)


def test_a_trainer_killed_while_the_worker_watches_is_an_error_naming_the_signal(ui_pod: UIPod) -> None:
    job = ui_pod.create(steps=6000)
    ui_pod.client.job_start(job)
    ui_pod.wait_for(job.id, lambda j: j.step >= 1)

    control(ui_pod, "crash_trainer", {"job_id": job.id, "seen": True})

    ended = ui_pod.wait_for(job.id, lambda j: j.status != "running")
    assert (ended.status, ended.info, ended.pid) == (
        "error",
        "Job process terminated with signal SIGKILL.",
        None,
    )


def test_a_trainer_exception_is_an_error_with_its_message(
    ui_pod: UIPod, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIMULATED_TRAINER_FAIL", "crash")
    job = ui_pod.create()
    ui_pod.client.job_start(job)

    # `DiffusionTrainer.on_error` (`:330-332`) writes the error status first and the step back to the
    # last save after it, in two writes, so a poll between them sees the error at the failed step.
    ended = ui_pod.wait_for(job.id, lambda j: j.status == "error" and j.step == 0)

    assert ended.info == "simulated crash at step 50"


def test_a_restarted_pod_refuses_connections_then_forgets_every_job(ui_pod: UIPod) -> None:
    job = ui_pod.create(steps=6000)
    ui_pod.client.job_start(job)
    ui_pod.wait_for(job.id, lambda j: j.step >= 1)

    control(ui_pod, "restart_pod", {"down_s": 2.0, "keep_state": False})
    time.sleep(1.0)  # the server stops accepting within its 0.5 s poll
    impatient = AIToolkitClient(base_url=ui_pod.url, token=TOKEN, max_attempts=1)
    with pytest.raises(AIToolkitUnavailable, match="did not accept a connection"):
        impatient.job_get(job.id)

    time.sleep(2.0)
    with pytest.raises(AIToolkitNotFound):
        ui_pod.client.job_get(job.id)
    assert not (ui_pod.pod.paths.root / "output" / job.name).exists()


def test_a_request_in_flight_as_the_pod_restarts_leaves_nothing_in_the_pod_that_comes_back(
    ui_pod: UIPod, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A restart kills the UI's process with every request in it. Here a poll's request is slow to open the
    # database, and opens it only once the restart has begun: what it does must not reach the new pod.
    paths = ui_pod.pod.paths
    opening, connect = threading.Event(), db.connect

    def slow_to_open(path: Path) -> sqlite3.Connection:
        if threading.current_thread().name != "MainThread" and not opening.is_set():
            opening.set()
            deadline = time.monotonic() + 3
            while paths.db.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
        return connect(path)

    monkeypatch.setattr(db, "connect", slow_to_open)
    poll = threading.Thread(target=lambda: _get_quietly(f"{ui_pod.url}/api/jobs"), daemon=True)
    poll.start()
    assert opening.wait(10)

    control(ui_pod, "restart_pod", {"down_s": 0.5, "keep_state": False})
    poll.join(15)
    time.sleep(1.0)  # the server stops accepting within its 0.5 s poll
    _wait_accepting(ui_pod.pod.port)

    assert ui_pod.client.jobs() == []


def _wait_accepting(port: int) -> None:
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, "the pod never came back"
            time.sleep(0.1)


def _get_quietly(url: str) -> None:
    with contextlib.suppress(requests.RequestException):
        requests.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)


def test_a_restarted_pod_that_keeps_its_state_shows_the_job_stuck_running(ui_pod: UIPod) -> None:
    job = ui_pod.create(steps=6000)
    ui_pod.client.job_start(job)
    ui_pod.wait_for(job.id, lambda j: j.step >= 1)

    control(ui_pod, "restart_pod", {"down_s": 0.5, "keep_state": True})
    time.sleep(2.5)

    after = ui_pod.client.job_get(job.id)
    assert after.status == "running"
    assert after.pid is not None and after.pid not in ui_pod.pod.state()["trainers"].values()


def test_a_lost_create_answer_leaves_a_job_the_client_finds_by_name(ui_pod: UIPod) -> None:
    control(ui_pod, "faults", {"lose_create_answer": 1})
    name = "lost_answer"

    with pytest.raises(AIToolkitUncertain):
        ui_pod.client.job_create(name=name, job_config=ui_pod.config(name))

    found = ui_pod.client.job_find(name)
    assert found is not None and found.status == "stopped"
    with pytest.raises(AIToolkitNameTaken):
        ui_pod.client.job_create(name=name, job_config=ui_pod.config(name))


def test_a_slow_answer_times_the_client_out_after_the_work_is_done(ui_pod: UIPod) -> None:
    control(ui_pod, "faults", {"slow_s": 1.5, "slow_rate": 1.0})
    hasty = AIToolkitClient(base_url=ui_pod.url, token=TOKEN, timeout_seconds=0.5, max_attempts=1)
    name = "slow_one"

    with pytest.raises(AIToolkitUncertain):
        hasty.job_create(name=name, job_config=ui_pod.config(name))

    control(ui_pod, "faults", {"slow_s": 0.0})
    assert ui_pod.client.job_find(name) is not None


def test_a_wrong_token_is_refused_on_the_api(ui_pod: UIPod) -> None:
    intruder = AIToolkitClient(base_url=ui_pod.url, token="guess", max_attempts=1)

    with pytest.raises(AIToolkitUnauthorized):
        intruder.jobs()


def test_outputs_download_without_any_token(ui_pod: UIPod) -> None:
    job = ui_pod.create()
    ui_pod.client.job_start(job)
    ui_pod.wait_for(job.id, lambda j: j.status == "completed")
    lora = next(f for f in ui_pod.client.job_files(job.id) if f.name == f"{job.name}.safetensors")

    anonymous = requests.get(ui_pod.client.file_url(lora.path), timeout=10)

    assert anonymous.status_code == 200 and len(anonymous.content) == lora.size


def test_file_delete_needs_no_token_either(ui_pod: UIPod) -> None:
    job = ui_pod.create()
    ui_pod.client.job_start(job)
    ui_pod.wait_for(job.id, lambda j: j.status == "completed")
    lora = next(f for f in ui_pod.client.job_files(job.id) if f.name == f"{job.name}.safetensors")

    anonymous = requests.post(f"{ui_pod.url}/api/files/delete", json={"filePath": lora.path}, timeout=10)

    assert anonymous.json() == {"success": True}
    assert f"{job.name}.safetensors" not in [f.name for f in ui_pod.client.job_files(job.id)]


def test_a_range_request_gets_the_tail_of_a_file(ui_pod: UIPod) -> None:
    job = ui_pod.create()
    ui_pod.client.job_start(job)
    ui_pod.wait_for(job.id, lambda j: j.status == "completed")
    lora = ui_pod.client.job_files(job.id)[0]

    tail = requests.get(ui_pod.client.file_url(lora.path), headers={"Range": "bytes=100-"}, timeout=10)

    assert tail.status_code == 206
    assert tail.headers["Content-Range"] == f"bytes 100-{lora.size - 1}/{lora.size}"


def test_a_file_outside_the_datasets_and_training_folders_is_refused(ui_pod: UIPod) -> None:
    answer = requests.get(ui_pod.client.file_url(str(ui_pod.pod.paths.db)), timeout=10)

    assert (answer.status_code, answer.text) == (403, "Access denied")


def test_dataset_create_fails_on_a_fresh_pod_until_the_datasets_folder_exists(ui_pod: UIPod) -> None:
    ui_pod.client.dataset_delete("photos")
    (ui_pod.pod.paths.root / "datasets").rmdir()

    raw = requests.post(
        f"{ui_pod.url}/api/datasets/create",
        json={"name": "Second Set"},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )

    assert (raw.status_code, raw.json()) == (500, {"error": "Failed to create dataset"})
    assert ui_pod.client.dataset_create("Second Set") == "second_set"  # the client lists first


def test_delete_removes_the_job_folder_and_its_row(ui_pod: UIPod) -> None:
    job = ui_pod.create()
    ui_pod.client.job_start(job)
    ui_pod.wait_for(job.id, lambda j: j.status == "completed")

    assert ui_pod.client.job_delete(job.id) is True

    assert not (ui_pod.pod.paths.root / "output" / job.name).exists()
    assert ui_pod.row(job.id) is None
    assert ui_pod.client.job_delete(job.id) is False


def test_the_job_config_the_trainer_ran_carries_the_uis_database_path(ui_pod: UIPod) -> None:
    job = ui_pod.create()
    ui_pod.client.job_start(job)
    ui_pod.wait_for(job.id, lambda j: j.status == "completed")

    written = json.loads((ui_pod.pod.paths.root / "output" / job.name / ".job_config.json").read_text())

    assert written["config"]["process"][0]["sqlite_db_path"] == str(ui_pod.pod.paths.db)


def test_the_serverless_trainer_type_never_touches_the_uis_database(ui_pod: UIPod) -> None:
    name = "serverless_kind"
    config = ui_pod.config(name)
    config["config"]["process"][0]["type"] = "sd_trainer"
    job = ui_pod.client.job_create(name=name, job_config=config)
    ui_pod.client.job_start(job)

    lora = ui_pod.pod.paths.root / "output" / name / f"{name}.safetensors"
    deadline = time.monotonic() + 30
    while not lora.exists() and time.monotonic() < deadline:
        time.sleep(0.2)

    assert lora.exists()  # it trained to the end
    row = ui_pod.row(job.id)
    assert (row["status"], row["info"], row["step"]) == ("running", "Starting job...", 0)


# ----------------------------------------------------------- the same states as the real trainer

GOLDEN = json.loads((Path(__file__).parent / "golden" / "aitoolkit_ui_status_sequence.json").read_text())


def log_row_changes(ui: UIPod) -> None:
    """The trigger the real UI's database carried when `golden/aitoolkit_ui_status_sequence.json` was
    recorded: one row per change of a job's status, info or step."""
    conn = sqlite3.connect(str(ui.pod.paths.db))
    conn.executescript(
        "CREATE TABLE zz_status_log(n INTEGER PRIMARY KEY AUTOINCREMENT, job TEXT, status TEXT, info TEXT,"
        " step INT);"
        "CREATE TRIGGER zz_log AFTER UPDATE ON Job WHEN NEW.status IS NOT OLD.status"
        " OR NEW.info IS NOT OLD.info OR NEW.step IS NOT OLD.step"
        " BEGIN INSERT INTO zz_status_log(job, status, info, step)"
        " VALUES(NEW.id, NEW.status, NEW.info, NEW.step); END;"
    )
    conn.close()


def row_changes(ui: UIPod, job_id: str) -> list[list[object]]:
    conn = sqlite3.connect(str(ui.pod.paths.db))
    try:
        rows = conn.execute(
            "SELECT status, info, step FROM zz_status_log WHERE job = ? ORDER BY n", (job_id,)
        )
        return [list(row) for row in rows]
    finally:
        conn.close()


def all_row_changes(ui: UIPod) -> list[list[object]]:
    """Every job's status changes, in the order the database saw them."""
    conn = sqlite3.connect(str(ui.pod.paths.db))
    try:
        rows = conn.execute(
            "SELECT job, status FROM zz_status_log WHERE n IN"
            " (SELECT MIN(n) FROM zz_status_log GROUP BY job, status) ORDER BY n"
        )
        return [list(row) for row in rows]
    finally:
        conn.close()


def test_a_run_goes_through_the_same_row_changes_as_under_the_real_trainer(ui_pod: UIPod) -> None:
    log_row_changes(ui_pod)
    name = "as_recorded"
    config = ui_pod.config(name)
    process = config["config"]["process"][0]
    process["train"]["steps"], process["save"]["save_every"], process["sample"]["sample_every"] = 20, 10, 10
    job = ui_pod.client.job_create(name=name, job_config=config)

    ui_pod.client.job_start(job)
    ui_pod.wait_for(job.id, lambda j: j.status == "completed")

    assert row_changes(ui_pod, job.id) == GOLDEN["completed_run"]


def test_a_stop_makes_the_same_row_changes_as_under_the_real_trainer(ui_pod: UIPod) -> None:
    log_row_changes(ui_pod)
    job = ui_pod.create(steps=6000)
    ui_pod.client.job_start(job)
    ui_pod.wait_for(job.id, lambda j: j.status == "running" and j.step >= 1)

    ui_pod.client.job_stop(job.id)
    ui_pod.wait_for(job.id, lambda j: j.step == 0 and j.status == "stopped")

    changes = row_changes(ui_pod, job.id)
    at_stop = changes[-3][2]
    assert changes[-3:] == [
        ["running", "Stopping job...", at_stop],
        ["stopped", "Job stopped", at_stop],
        ["stopped", "Job stopped", 0],
    ]
    assert [row[:2] for row in GOLDEN["stopped_run"][-3:]] == [row[:2] for row in changes[-3:]]
