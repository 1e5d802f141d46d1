"""The embedded default's broker under concurrent producers: every message arrives whole and once, an
unreadable file never stops the consumer, and concurrent bindings keep every queue of an exchange.

Against kombu 5.7.0's own file-system transport the first test loses most messages to JSONDecodeError (a
consumer reads a file its producer is still writing); see studio/filesystem_broker.py.
"""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path
from queue import Empty
from typing import Any

from kombu import Connection

from studio.filesystem_broker import UNREADABLE_FOLDER

TRANSPORT = "studio.filesystem_broker:Transport"
PRODUCERS = 4
MESSAGES_EACH = 15
# Large enough that writing one takes a while, so a consumer racing a producer would catch it half-written.
PADDING = 512 * 1024


def options(root: Path) -> dict[str, Any]:
    for folder in ("queue", "processed", "control"):
        (root / folder).mkdir(exist_ok=True)
    return {
        "data_folder_in": str(root / "queue"),
        "data_folder_out": str(root / "queue"),
        "processed_folder": str(root / "processed"),
        "control_folder": str(root / "control"),
        "store_processed": False,
    }


def connection(root: Path) -> Connection:
    return Connection("filesystem://", transport=TRANSPORT, transport_options=options(root))


def produce(root: Path, producer: int) -> None:
    with connection(root) as producing:
        channel = producing.channel()
        for index in range(MESSAGES_EACH):
            channel._put("celery", {"producer": producer, "index": index, "padding": "x" * PADDING})


def bind(root: Path, queue: str) -> None:
    with connection(root) as binding:
        binding.channel()._queue_bind("celery.pidbox", "", "", queue)


def test_messages_sent_by_several_processes_at_once_arrive_whole_and_once(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    producers = [context.Process(target=produce, args=(tmp_path, index)) for index in range(PRODUCERS)]
    received: list[tuple[int, int]] = []
    with connection(tmp_path) as consuming:
        channel = consuming.channel()
        for producer in producers:
            producer.start()
        deadline = time.monotonic() + 60
        while len(received) < PRODUCERS * MESSAGES_EACH and time.monotonic() < deadline:
            try:
                message = channel._get("celery")
            except Empty:
                continue
            assert len(message["padding"]) == PADDING
            received.append((message["producer"], message["index"]))
    for producer in producers:
        producer.join(timeout=30)

    expected = {(producer, index) for producer in range(PRODUCERS) for index in range(MESSAGES_EACH)}
    assert sorted(received) == sorted(expected)
    assert list((tmp_path / "queue").iterdir()) == []


def test_an_unreadable_message_is_set_aside_and_the_next_one_is_delivered(tmp_path: Path) -> None:
    (tmp_path / "queue").mkdir()
    (tmp_path / "queue" / "0_broken.celery.msg").write_bytes(b"")
    with connection(tmp_path) as consuming:
        channel = consuming.channel()
        channel._put("celery", {"ok": True})

        message = channel._get("celery")

    assert message == {"ok": True}
    assert [path.name for path in (tmp_path / "processed" / UNREADABLE_FOLDER).iterdir()] == [
        "0_broken.celery.msg"
    ]


def test_queues_bound_to_one_exchange_by_several_processes_at_once_are_all_kept(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    binders = [context.Process(target=bind, args=(tmp_path, f"worker-{index}")) for index in range(8)]
    for binder in binders:
        binder.start()
    for binder in binders:
        binder.join(timeout=30)

    with connection(tmp_path) as reading:
        table = reading.channel().get_table("celery.pidbox")

    assert sorted(row.queue for row in table) == [f"worker-{index}" for index in range(8)]
