"""What AI Toolkit's `diffusion_trainer` writes for the web UI, written by the simulated trainer.

Two files, both read by the UI (ostris/ai-toolkit at 27a03a91):

- the UI's own SQLite database (`config.process[0].sqlite_db_path`, which the UI's cron worker adds,
  `ui/cron/actions/startJob.ts:219`): the Job row's `status`, `info`, `step` and `speed_string`,
  as `extensions_built_in/sd_trainer/DiffusionTrainer.py` writes them, and its `stop` and
  `return_to_queue` flags read after every step;
- `<training_folder>/<name>/loss_log.db` when `logging.use_ui_logger` is set, with the schema and
  rows of `toolkit/logging_aitk.py` (`UILogger`), which `GET /api/jobs/<id>/loss` reads.

The real trainer writes the row only when it is a `diffusion_trainer`, the database file exists and
`AITK_JOB_ID` is set (`DiffusionTrainer.py:20-31`); otherwise (the serverless worker's `sd_trainer`
config) every method here does nothing. Not simulated: the `save_now` and `sample_now` flags
(`DiffusionTrainer.py:177-238`), which the studio never sets.

`run.py` calls the module-level `hook` at the points where the real trainer runs its hooks.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any

# The statuses Flux loading reports through `print_and_status_update`
# (`toolkit/stable_diffusion_model.py:650-849`), in order; the quantising ones only with `quantize`.
FLUX_LOADING = (
    "Loading Flux model",
    "Loading transformer",
    "Quantizing transformer",
    "Loading VAE",
    "Loading T5",
    "Quantizing T5",
    "Loading CLIP",
    "Making pipe",
    "Preparing Model",
)
# UILogger flushes its buffer every 0.25 s or 256 metrics (`toolkit/logging_aitk.py:90-91`).
FLUSH_EVERY_S = 0.25
FLUSH_EVERY_N = 256


class JobRow:
    """The trainer's writes to the UI's Job row (`DiffusionTrainer.py:112-135,240-296`)."""

    def __init__(self, db_path: str, job_id: str) -> None:
        self.db_path = db_path
        self.job_id = job_id

    def _connect(self) -> sqlite3.Connection:
        # A new autocommit connection per operation, 30 s busy timeout (`DiffusionTrainer.py:112-116`).
        conn = sqlite3.connect(self.db_path, timeout=30.0)
        conn.isolation_level = None
        return conn

    def _retry(self, operation: Any) -> Any:
        # Retried 3 times after "database is locked", 2 s, 4 s, 8 s apart (`DiffusionTrainer.py:118-135`).
        for attempt in range(4):
            try:
                return operation()
            except sqlite3.OperationalError as exc:
                if "database is locked" not in str(exc) or attempt == 3:
                    raise
                time.sleep(2.0 * 2**attempt)
        return None

    def _write(self, sql: str, params: tuple[Any, ...]) -> None:
        def write() -> None:
            conn = self._connect()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.execute(sql, params)
                finally:
                    conn.execute("COMMIT")
            finally:
                conn.close()

        self._retry(write)

    def status(self, status: str, info: str | None = None) -> None:
        if info is None:
            self._write("UPDATE Job SET status = ? WHERE id = ?", (status, self.job_id))
        else:
            self._write("UPDATE Job SET status = ?, info = ? WHERE id = ?", (status, info, self.job_id))

    def key(self, key: str, value: Any) -> None:
        # Every value goes in as a string (`DiffusionTrainer.py:250-258`); SQLite's INTEGER affinity
        # turns a numeric string back into a number for `step`.
        self._write(f"UPDATE Job SET {key} = ? WHERE id = ?", (str(value), self.job_id))  # noqa: S608

    def flag(self, column: str) -> bool:
        def read() -> bool:
            conn = self._connect()
            try:
                row = conn.execute(f"SELECT {column} FROM Job WHERE id = ?", (self.job_id,)).fetchone()  # noqa: S608
            finally:
                conn.close()
            return False if row is None else row[0] == 1

        return bool(self._retry(read))


class LossLog:
    """`UILogger` (`toolkit/logging_aitk.py:86-325`): steps, metric_keys and metrics in `loss_log.db`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._con: sqlite3.Connection | None = None
        self._pending: dict[int, dict[str, float]] = {}
        self._pending_count = 0
        self._first_commit_done = False
        self._last_flush = time.time()

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None)
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "temp_store=MEMORY", "foreign_keys=ON"):
            con.execute(f"PRAGMA {pragma};")
        con.execute("PRAGMA busy_timeout=30000;")
        con.execute("BEGIN;")
        con.execute("CREATE TABLE IF NOT EXISTS steps (step INTEGER PRIMARY KEY, wall_time REAL NOT NULL);")
        con.execute(
            "CREATE TABLE IF NOT EXISTS metric_keys (key TEXT PRIMARY KEY, first_seen_step INTEGER,"
            " last_seen_step INTEGER);"
        )
        con.execute(
            "CREATE TABLE IF NOT EXISTS metrics (step INTEGER NOT NULL, key TEXT NOT NULL, value_real REAL,"
            " value_text TEXT, PRIMARY KEY (step, key),"
            " FOREIGN KEY (step) REFERENCES steps(step) ON DELETE CASCADE);"
        )
        con.execute("CREATE INDEX IF NOT EXISTS idx_metrics_key_step ON metrics (key, step);")
        con.execute("COMMIT;")
        self._con = con

    def commit(self, step: int, values: dict[str, float]) -> None:
        if self._con is None:
            self.start()
        if not self._first_commit_done:
            self._prune_after(step)  # a resumed run drops the rows it is about to write again
            self._first_commit_done = True
        self._pending[step] = {**values, "__wall_time__": time.time()}
        self._pending_count += len(values)
        if self._pending_count >= FLUSH_EVERY_N or time.time() - self._last_flush >= FLUSH_EVERY_S:
            self.flush()

    def _prune_after(self, step: int) -> None:
        assert self._con is not None
        self._con.execute("BEGIN;")
        self._con.execute("DELETE FROM steps WHERE step > ?;", (step,))
        self._con.execute(
            "DELETE FROM metric_keys"
            " WHERE NOT EXISTS (SELECT 1 FROM metrics WHERE metrics.key = metric_keys.key);"
        )
        self._con.execute(
            "UPDATE metric_keys SET last_seen_step = (SELECT MAX(step) FROM metrics WHERE metrics.key ="
            " metric_keys.key) WHERE last_seen_step > ?;",
            (step,),
        )
        self._con.execute("COMMIT;")

    def flush(self) -> None:
        if self._con is None or not self._pending:
            return
        con = self._con
        con.execute("BEGIN;")
        for step, values in sorted(self._pending.items()):
            wall_time = values.pop("__wall_time__")
            con.execute(
                "INSERT INTO steps(step, wall_time) VALUES(?, ?) ON CONFLICT(step) DO UPDATE SET"
                " wall_time=excluded.wall_time;",
                (step, wall_time),
            )
            for key, value in values.items():
                con.execute(
                    "INSERT INTO metric_keys(key, first_seen_step, last_seen_step) VALUES(?, ?, ?)"
                    " ON CONFLICT(key) DO UPDATE SET"
                    " first_seen_step=MIN(metric_keys.first_seen_step, excluded.first_seen_step),"
                    " last_seen_step=MAX(metric_keys.last_seen_step, excluded.last_seen_step);",
                    (key, step, step),
                )
                con.execute(
                    "INSERT INTO metrics(step, key, value_real, value_text) VALUES(?, ?, ?, NULL)"
                    " ON CONFLICT(step, key) DO UPDATE SET"
                    " value_real=excluded.value_real, value_text=excluded.value_text;",
                    (step, key, float(value)),
                )
        con.execute("COMMIT;")
        self._pending.clear()
        self._pending_count = 0
        self._last_flush = time.time()

    def finish(self) -> None:
        if self._con is not None:
            self.flush()
            self._con.close()
            self._con = None


class Off:
    """A trainer the UI does not follow: `sd_trainer`, or no database, or no AITK_JOB_ID."""

    def model_loading(self, *, quantize: bool) -> None: ...
    def dataset_loading(self) -> None: ...
    def training(self, *, start_step: int) -> None: ...
    def step_end(self, step: int, *, loss: float, lr: float) -> None: ...
    def saving(self, step: int) -> None: ...
    def sampling(self, done: int, total: int) -> None: ...
    def back_to_training(self) -> None: ...
    def done(self) -> None: ...
    def on_error(self, exc: BaseException) -> None: ...


class UIProgress(Off):
    """`DiffusionTrainer`'s hooks for a run the UI started."""

    def __init__(
        self, row: JobRow, loss_log: LossLog | None, *, log_every: int | None, perf_every: int
    ) -> None:
        self.row = row
        self.loss_log = loss_log
        self.log_every = log_every
        self.perf_every = perf_every
        self.last_save_step = 0
        self.is_stopping = False
        self._start_step = 0
        self._train_started = time.monotonic()
        row.status("running", "Starting")  # `DiffusionTrainer.py:40`

    def _maybe_stop(self) -> None:
        # `DiffusionTrainer.py:163-175`: the stop flag ends the job as stopped, return_to_queue as queued.
        if self.row.flag("stop"):
            self.row.status("stopped", "Job stopped")
            self.is_stopping = True
            raise Exception("Job stopped")
        if self.row.flag("return_to_queue"):
            self.row.status("queued", "Job queued")
            self.is_stopping = True
            raise Exception("Job returning to queue")

    def model_loading(self, *, quantize: bool) -> None:
        self._maybe_stop()
        self.row.status("running", "Loading model")  # `hook_before_model_load`, `DiffusionTrainer.py:379-383`
        for status in FLUX_LOADING:
            if quantize or not status.startswith("Quantizing"):
                self.row.status("running", status)

    def dataset_loading(self) -> None:
        self._maybe_stop()
        self.row.status("running", "Loading dataset")  # `DiffusionTrainer.py:385-389`

    def training(self, *, start_step: int) -> None:
        # `hook_before_train_loop` (`DiffusionTrainer.py:391-397`): the step it starts from, then "Training".
        self._maybe_stop()
        self._start_step = start_step
        self.last_save_step = start_step
        self.row.key("step", start_step)
        self.row.status("running", "Training")
        self._train_started = time.monotonic()

    def step_end(self, step: int, *, loss: float, lr: float) -> None:
        """After step `step` (1-based: the steps done), as `BaseSDTrainProcess.py:2740-2800`, then
        `end_step_hook`."""
        index = step - 1  # the trainer's step_num while the step ran
        if self.loss_log is not None and index != self._start_step:
            logs = self.log_every is None or (self.log_every and index % self.log_every == 0)
            if logs:
                self.loss_log.commit(index, {"learning_rate": lr, "loss/loss": loss})
        if self.perf_every > 0 and index != self._start_step and index % self.perf_every == 0:
            self._write_speed(step)
        self.row.key("step", step)  # `update_step`, `DiffusionTrainer.py:264-267,371-377`
        self._maybe_stop()

    def _write_speed(self, step: int) -> None:
        # The timer hook writes the bar's rate (`DiffusionTrainer.py:339-349`).
        elapsed = time.monotonic() - self._train_started
        rate = (step - self._start_step) / elapsed if elapsed > 0 else 0.0
        if rate >= 1:
            self.row.key("speed_string", f"{rate:.2f} iter/sec")
        elif rate > 0:
            self.row.key("speed_string", f"{1 / rate:.2f} sec/iter")

    def saving(self, step: int) -> None:
        self._maybe_stop()
        self.row.status("running", "Saving model")  # `DiffusionTrainer.py:423-428`
        self.last_save_step = step

    def sampling(self, done: int, total: int) -> None:
        # "Generating images - 0/N" before the first image, then i/N after each
        # (`DiffusionTrainer.py:408-418`).
        self._maybe_stop()
        self.row.status("running", f"Generating images - {done}/{total}")

    def back_to_training(self) -> None:
        self._maybe_stop()
        self.row.status("running", "Training")

    def done(self) -> None:
        if self.loss_log is not None:
            self.loss_log.finish()
        self.row.status("completed", "Training completed")  # `DiffusionTrainer.py:363-369`

    def on_error(self, exc: BaseException) -> None:
        """`DiffusionTrainer.on_error` (`:316-337`): SIGINT is a stop, anything else an error unless the
        trainer was already stopping; either way `step` goes back to the last save."""
        if self.loss_log is not None:
            self.loss_log.finish()
        if isinstance(exc, KeyboardInterrupt):
            self.is_stopping = True
            self.row.status("stopped", "Job stopped")
        elif not self.is_stopping:
            self.row.status("error", str(exc))
        self.row.key("step", self.last_save_step)


hook: Off = Off()


def start(process: dict[str, Any], job_folder: Path) -> Off:
    """Sets and returns the module's `hook` for this process config (`DiffusionTrainer.py:18-40`)."""
    global hook
    db_path = str(process.get("sqlite_db_path", "./aitk_db.db"))
    job_id = (os.environ.get("AITK_JOB_ID") or "").strip() or None
    if process.get("type") != "diffusion_trainer" or not os.path.exists(db_path) or job_id is None:
        hook = Off()
        return hook
    print(f"Using SQLite database at {db_path}")
    print(f'Job ID: "{job_id}"')
    logging = process.get("logging") or {}
    # LoggingConfig.log_every defaults to 100 (`toolkit/config_modules.py:37`); None logs every step.
    log_every = logging.get("log_every", 100)
    # loss_log.db is written by run.py's loop for every trainer type, as BaseSDTrainProcess's own logger
    # (`create_logger`, BaseSDTrainProcess.py:130) is: not by these UI hooks.
    hook = UIProgress(
        JobRow(db_path, job_id),
        None,
        log_every=log_every,
        perf_every=int(process.get("performance_log_every") or 0),
    )
    return hook
