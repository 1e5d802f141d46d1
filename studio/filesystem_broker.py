"""The embedded default's Celery broker: kombu's file-system transport, made safe under concurrent producers.

kombu's own transport (kombu 5.7.0, `kombu/transport/filesystem.py`) creates a message file under its final
name and only then writes it (`Channel._put`, lines 262-279), while a consumer takes any file with that name
without a lock (`Channel._get`, lines 281-316). A consumer that lists the folder in between reads an empty or
half-written message and raises `JSONDecodeError`, which stops the Celery worker ("Unrecoverable error"):
several "Start training" requests at once were enough (kombu#1551 reports the same error, still open). The
exchange tables behind broadcasts are rewritten in place the same way (`_queue_bind`, lines 230-256).

Here every file appears whole or not at all: a message is written under a name no consumer looks at and
renamed into the queue (a rename within one folder is atomic on POSIX), a consumer claims a message by
renaming it into `processed_folder` (only one consumer's rename can succeed), and exchange tables are
replaced, never rewritten. A file that still cannot be read (a disk filled mid-write before this change) is
set aside in `processed_folder/unreadable/` with an error in the log, rather than stopping the worker.

Celery selects it with `broker_transport = "studio.filesystem_broker:Transport"` (settings.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import tempfile
import uuid
from pathlib import Path
from queue import Empty
from time import monotonic
from typing import Any

from kombu.transport import filesystem
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

logger = logging.getLogger(__name__)

UNREADABLE_FOLDER = "unreadable"


def write_whole(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that a reader sees the old file or the new one, never part of it."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".writing")
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


class Channel(filesystem.Channel):
    def _put(self, queue: Any, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]  # kombu's two bases name it differently
        # kombu's name: milliseconds first, so a sorted listing is roughly the order of sending.
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        write_whole(Path(self.data_folder_out) / name, str_to_bytes(dumps(payload)))

    def _get(self, queue: Any, timeout: Any = None) -> Any:
        wanted = f"{queue}.msg"
        for name in sorted(os.listdir(self.data_folder_in)):
            if name.partition(".")[2] != wanted:
                continue  # another queue's message, or a message still being written (".…writing")
            claimed = self._claim(name)
            if claimed is None:
                continue
            payload = self._read(claimed)
            if payload is not None:
                return payload
        raise Empty()

    def _claim(self, name: str) -> Path | None:
        """Move the message out of the queue; None when another consumer took it first."""
        claimed = Path(self.processed_folder) / name
        try:
            os.rename(Path(self.data_folder_in) / name, claimed)
        except FileNotFoundError:
            return None
        return claimed

    def _read(self, claimed: Path) -> Any:
        data = claimed.read_bytes()
        try:
            payload = loads(bytes_to_str(data))
        except ValueError:
            aside = claimed.parent / UNREADABLE_FOLDER / claimed.name
            aside.parent.mkdir(exist_ok=True)
            os.replace(claimed, aside)
            logger.error("Set aside an unreadable broker message (%d bytes) as %s", len(data), aside)
            return None
        if not self.store_processed:
            claimed.unlink()
        return payload

    def get_table(self, exchange: str) -> list[Any]:
        try:
            table = loads(bytes_to_str(self._exchange_file(exchange).read_bytes()))
        except FileNotFoundError:
            return []
        return [filesystem.exchange_queue_t(*row) for row in table]

    def _queue_bind(self, exchange: str, routing_key: str, pattern: str, queue: str) -> None:
        row = filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
        with self._exchange_lock(exchange):
            rows = self.get_table(exchange)
            if row not in rows:
                self._write_table(exchange, [row, *rows])

    def _delete(
        self, queue: str, exchange: str, routing_key: str, pattern: str, *args: Any, **kwargs: Any
    ) -> None:
        # The virtual channel's bookkeeping, then the table as kombu does (without its in-place rewrite).
        super(filesystem.Channel, self)._delete(queue, exchange, routing_key, pattern, *args, **kwargs)
        row = filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
        with self._exchange_lock(exchange):
            rows = self.get_table(exchange)
            if row in rows:
                self._write_table(exchange, [kept for kept in rows if kept != row])

    def _write_table(self, exchange: str, rows: list[Any]) -> None:
        write_whole(self._exchange_file(exchange), str_to_bytes(dumps(rows)))

    @contextlib.contextmanager
    def _exchange_lock(self, exchange: str) -> Any:
        """Serialises read-modify-write of one exchange table across processes (a lock file beside it)."""
        self.control_folder.mkdir(parents=True, exist_ok=True)
        path = self._exchange_file(exchange).with_suffix(".lock")
        with open(path, "a") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


class Transport(filesystem.Transport):
    Channel = Channel
