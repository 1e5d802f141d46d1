"""The UI's cron worker: every second, start the next queued job of each running queue.

Follows `ui/cron/worker.ts` (1 s interval, one loop at a time), `ui/cron/actions/processQueue.ts` and
`ui/cron/actions/startJob.ts` at 27a03a91, line by line where a behaviour is visible through the API.
It launches `<run.py> <job folder>/.job_config.json` the way startJob.ts launches AI Toolkit's run.py;
with the stand-in's defaults that run.py is the simulated trainer's.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from runpod_worker.local_ai_toolkit_ui import db

log = logging.getLogger("local_ai_toolkit_ui")

INTERVAL_S = 1.0  # `ui/cron/worker.ts:45`
# What the stand-in launches unless told otherwise: the simulated trainer, in run.py's place.
SIMULATED_RUN_PY = Path(__file__).resolve().parent.parent / "simulated_ai_toolkit" / "run.py"


@dataclass
class Trainer:
    """One launched trainer process and whether its exit will still be seen (the watcher is alive)."""

    job_id: str
    process: subprocess.Popen[bytes]
    log_path: Path
    watched: bool = True


@dataclass
class Paths:
    root: Path  # TOOLKIT_ROOT: the database lives here, run.py runs here (`ui/cron/paths.ts:4`)
    run_py: Path
    python: str = sys.executable

    @property
    def db(self) -> Path:
        return self.root / "aitk_db.db"

    def training_folder(self, conn: sqlite3.Connection) -> Path:
        # The TRAINING_FOLDER setting, else <root>/output (`ui/cron/paths.ts:5,16-28`).
        value = db.setting(conn, "TRAINING_FOLDER")
        return Path(value).resolve() if value else self.root / "output"

    def datasets_folder(self, conn: sqlite3.Connection) -> Path:
        value = db.setting(conn, "DATASETS_FOLDER")
        return Path(value).resolve() if value else self.root / "datasets"

    def data_root(self, conn: sqlite3.Connection) -> Path:
        value = db.setting(conn, "DATA_ROOT")
        return Path(value).resolve() if value else self.root / "data"


@dataclass
class Cron:
    paths: Paths
    trainers: dict[str, Trainer] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Jobs whose trainer dies unseen at its first step: the fault "stuck running after a crash".
    stick_next: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="aitk-cron", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(INTERVAL_S):
            try:
                self.process_queue()
            except Exception:  # the worker logs and carries on (`ui/cron/worker.ts:22-27`)
                log.exception("error in cron worker loop")

    def process_queue(self) -> None:
        """`processQueue.ts:6-71`."""
        conn = db.connect(self.paths.db)
        try:
            for queue in conn.execute('SELECT * FROM "Queue" ORDER BY id ASC').fetchall():
                if not queue["is_running"]:
                    # A stopped queue asks its running jobs to return to the queue (`processQueue.ts:11-31`).
                    for job in conn.execute(
                        'SELECT id FROM "Job" WHERE status = ? AND gpu_ids = ?', ("running", queue["gpu_ids"])
                    ).fetchall():
                        db.update_job(conn, job["id"], return_to_queue=True, info="Stopping job...")
                    continue
                busy = conn.execute(
                    "SELECT id FROM \"Job\" WHERE status IN ('running', 'stopping') AND gpu_ids = ? LIMIT 1",
                    (queue["gpu_ids"],),
                ).fetchone()
                if busy is not None:
                    continue  # one job at a time per gpu_ids (`processQueue.ts:34-44`)
                nxt = conn.execute(
                    'SELECT * FROM "Job" WHERE status = ? AND gpu_ids = ?'
                    " ORDER BY queue_position ASC LIMIT 1",
                    ("queued", queue["gpu_ids"]),
                ).fetchone()
                if nxt is not None:
                    self.start_job(conn, nxt)
                else:
                    # No more jobs: the queue stops itself (`processQueue.ts:58-66`).
                    conn.execute('UPDATE "Queue" SET is_running = 0 WHERE id = ?', (queue["id"],))
        finally:
            conn.close()

    def start_job(self, conn: sqlite3.Connection, job: sqlite3.Row) -> None:
        """`startJob.ts:397-417`, then `startAndWatchJob` (`:178-395`)."""
        row = job
        job_id = str(row["id"])
        db.update_job(
            conn, job_id, status="running", stop=False, return_to_queue=False, info="Starting job..."
        )
        folder = self.paths.training_folder(conn) / row["name"]
        folder.mkdir(parents=True, exist_ok=True)
        log_path = folder / "log.txt"
        _rotate_log(folder, log_path)
        config = json.loads(row["job_config"])
        config["config"]["process"][0]["sqlite_db_path"] = str(self.paths.db)  # `startJob.ts:217-222`
        config_path = folder / ".job_config.json"
        config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")
        if not self.paths.run_py.exists():
            db.update_job(conn, job_id, status="error", info="Error launching job: run.py not found")
            return
        env = {
            **os.environ,
            "AITK_JOB_ID": job_id,
            "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
            "CUDA_VISIBLE_DEVICES": str(row["gpu_ids"]),
            "IS_AI_TOOLKIT_UI": "1",
            "PYTHONUNBUFFERED": "1",
        }  # `startJob.ts:239-260`
        hf_token = db.setting(conn, "HF_TOKEN")
        if hf_token.strip():
            env["HF_TOKEN"] = hf_token
        with log_path.open("ab") as log_file:
            # Detached (its own session) with stdout and stderr to log.txt, cwd the toolkit root (`:296-304`).
            process = subprocess.Popen(
                [self.paths.python, str(self.paths.run_py), str(config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                cwd=self.paths.root,
                env=env,
                start_new_session=True,
            )
        trainer = Trainer(job_id=job_id, process=process, log_path=log_path)
        with self.lock:
            self.trainers[job_id] = trainer
            if self.stick_next > 0:
                self.stick_next -= 1
                threading.Thread(target=self._die_unseen, args=(trainer,), daemon=True).start()
        db.update_job(conn, job_id, pid=process.pid)
        (folder / "pid.txt").write_text(str(process.pid), encoding="utf-8")
        threading.Thread(
            target=self._watch, args=(trainer,), name=f"aitk-watch-{job_id}", daemon=True
        ).start()

    def _watch(self, trainer: Trainer) -> None:
        """The exit listener (`startJob.ts:336-351`): a non-zero exit of a job still `running` is an error."""
        code = trainer.process.wait()
        with self.lock:
            if self.trainers.get(trainer.job_id) is trainer:
                del self.trainers[trainer.job_id]
            if not trainer.watched or code == 0:
                return
        result = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        message = f"Job process terminated with {result}."
        with trainer.log_path.open("a", encoding="utf-8") as handle:
            handle.write(f"\n{message}\n")
        conn = db.connect(self.paths.db)
        try:
            conn.execute(
                'UPDATE "Job" SET status = ?, info = ?, pid = NULL, updated_at = ?'
                " WHERE id = ? AND status = ?",
                ("error", message, db.now_ms(), trainer.job_id, "running"),
            )
        finally:
            conn.close()

    def _die_unseen(self, trainer: Trainer) -> None:
        """Fault: the trainer dies (SIGKILL, as the kernel's OOM killer does) at its first step while the
        worker that would have seen its exit is gone, so the row stays `running` with a dead pid: the
        case the UI's "mark stopped" exists for (ostris/ai-toolkit issue #681, `mark_stopped/route.ts`)."""
        conn = db.connect(self.paths.db)
        try:
            while trainer.process.poll() is None:
                row = conn.execute('SELECT step FROM "Job" WHERE id = ?', (trainer.job_id,)).fetchone()
                if row is not None and int(row["step"] or 0) >= 1:
                    self.kill(trainer.job_id, seen=False)
                    return
                self._stop.wait(0.05)
        finally:
            conn.close()

    def kill(self, job_id: str, *, seen: bool) -> bool:
        """SIGKILLs a job's trainer; `seen=False` leaves its row as it was (nobody hears the exit)."""
        with self.lock:
            trainer = self.trainers.get(job_id)
            if trainer is None:
                return False
            trainer.watched = seen
        _kill_group(trainer.process)
        return True

    def kill_all(self) -> None:
        """Every trainer dies unseen: the pod's processes are gone (a restart)."""
        with self.lock:
            trainers = list(self.trainers.values())
            for trainer in trainers:
                trainer.watched = False
        for trainer in trainers:
            _kill_group(trainer.process)

    def signal(self, pid: int, signum: int) -> None:
        """`process.kill(pid, 'SIGINT')` from the stop route: raises ProcessLookupError for a dead pid."""
        with self.lock:
            ours = next((t for t in self.trainers.values() if t.process.pid == pid), None)
        if ours is None:
            raise ProcessLookupError(pid)
        os.kill(pid, signum)


def _rotate_log(folder: Path, log_path: Path) -> None:
    """An earlier log moves to `logs/<n>_log.txt`, the lowest free n (`startJob.ts:197-215`)."""
    if not log_path.exists():
        return
    logs = folder / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    num = 0
    while (logs / f"{num}_log.txt").exists():
        num += 1
    log_path.rename(logs / f"{num}_log.txt")


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
