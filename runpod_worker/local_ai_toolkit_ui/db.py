"""The UI's SQLite database, `<toolkit root>/aitk_db.db`, with the tables `prisma db push` makes.

The tables are those of `ui/prisma/schema.prisma` at 27a03a91 (`Settings`, `Queue`, `Job`), written
here as the SQL that `prisma db push` generated for them when the real UI was built on this
project's development machine. DateTime columns hold Unix milliseconds, as Prisma's SQLite engine
stores them; rows come back as Prisma serialises them to JSON (ISO times with milliseconds and `Z`,
booleans as true/false), field by field in the schema's order.
"""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS "Settings" (
    "id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    "key" TEXT NOT NULL,
    "value" TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS "Queue" (
    "id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    "gpu_ids" TEXT NOT NULL,
    "is_running" BOOLEAN NOT NULL DEFAULT false
);
CREATE TABLE IF NOT EXISTS "Job" (
    "id" TEXT NOT NULL PRIMARY KEY,
    "name" TEXT NOT NULL,
    "gpu_ids" TEXT NOT NULL,
    "job_config" TEXT NOT NULL,
    "created_at" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" DATETIME NOT NULL,
    "status" TEXT NOT NULL DEFAULT 'stopped',
    "stop" BOOLEAN NOT NULL DEFAULT false,
    "return_to_queue" BOOLEAN NOT NULL DEFAULT false,
    "step" INTEGER NOT NULL DEFAULT 0,
    "total_steps" INTEGER,
    "info" TEXT NOT NULL DEFAULT '',
    "speed_string" TEXT NOT NULL DEFAULT '',
    "queue_position" INTEGER NOT NULL DEFAULT 0,
    "pid" INTEGER,
    "job_type" TEXT NOT NULL DEFAULT 'train',
    "job_ref" TEXT,
    "save_now" BOOLEAN NOT NULL DEFAULT false,
    "sample_now" BOOLEAN NOT NULL DEFAULT false
);
CREATE UNIQUE INDEX IF NOT EXISTS "Settings_key_key" ON "Settings"("key");
CREATE UNIQUE INDEX IF NOT EXISTS "Queue_gpu_ids_key" ON "Queue"("gpu_ids");
CREATE INDEX IF NOT EXISTS "Queue_gpu_ids_idx" ON "Queue"("gpu_ids");
CREATE UNIQUE INDEX IF NOT EXISTS "Job_name_key" ON "Job"("name");
CREATE INDEX IF NOT EXISTS "Job_status_idx" ON "Job"("status");
CREATE INDEX IF NOT EXISTS "Job_gpu_ids_idx" ON "Job"("gpu_ids");
CREATE INDEX IF NOT EXISTS "Job_job_type_idx" ON "Job"("job_type");
CREATE INDEX IF NOT EXISTS "Job_job_ref_idx" ON "Job"("job_ref");
"""

JOB_FIELDS = (
    "id",
    "name",
    "gpu_ids",
    "job_config",
    "created_at",
    "updated_at",
    "status",
    "stop",
    "return_to_queue",
    "step",
    "total_steps",
    "info",
    "speed_string",
    "queue_position",
    "pid",
    "job_type",
    "job_ref",
    "save_now",
    "sample_now",
)
JOB_BOOLEANS = frozenset({"stop", "return_to_queue", "save_now", "sample_now"})
JOB_TIMES = frozenset({"created_at", "updated_at"})


def create(path: Path) -> None:
    """A fresh database with empty tables, as the image's build-time `npm run update_db` leaves it."""
    conn = connect(path)
    try:
        conn.executescript(SCHEMA)
        # The cron worker switches the database to WAL before its first loop (`ui/cron/worker.ts:10-38`).
        conn.execute("PRAGMA journal_mode = WAL;")
    finally:
        conn.close()


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    return conn


def now_ms() -> int:
    return int(time.time() * 1000)


def iso(ms: Any) -> str | None:
    if ms is None:
        return None
    return (
        datetime.fromtimestamp(int(ms) / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        + f"{int(ms) % 1000:03d}Z"
    )


def job_json(row: sqlite3.Row | None) -> dict[str, Any] | None:
    if row is None:
        return None
    body: dict[str, Any] = {}
    for name in JOB_FIELDS:
        value = row[name]
        if name in JOB_BOOLEANS:
            value = bool(value)
        elif name in JOB_TIMES:
            value = iso(value)
        body[name] = value
    return body


def queue_json(row: sqlite3.Row) -> dict[str, Any]:
    return {"id": row["id"], "gpu_ids": row["gpu_ids"], "is_running": bool(row["is_running"])}


def setting(conn: sqlite3.Connection, key: str) -> str:
    row = conn.execute('SELECT value FROM "Settings" WHERE key = ?', (key,)).fetchone()
    return str(row["value"]) if row is not None and row["value"] else ""


def update_job(conn: sqlite3.Connection, job_id: str, **fields: Any) -> int:
    """A Prisma `job.update`: the named fields and `updated_at`, which `@updatedAt` sets on every
    Prisma write (`schema.prisma:29`) and never on the trainer's raw SQL."""
    fields["updated_at"] = now_ms()
    assignments = ", ".join(f'"{name}" = ?' for name in fields)
    cursor = conn.execute(f'UPDATE "Job" SET {assignments} WHERE id = ?', (*fields.values(), job_id))  # noqa: S608
    return cursor.rowcount
