"""The RunPod client is built once per process, so its session keeps its connections between calls."""

from __future__ import annotations

import os
from typing import Any

from training import providers
from training.providers import get_provider


def test_calls_in_one_process_share_one_client_and_its_session() -> None:
    first = get_provider()
    second = get_provider()
    assert second is first
    assert second.session is first.session  # type: ignore[attr-defined]


def test_new_settings_build_a_new_client(settings: Any) -> None:
    before = get_provider()
    settings.RUNPOD_ENDPOINT_ID = "another-endpoint"
    after = get_provider()
    assert after is not before
    assert after.endpoint_url.endswith("/another-endpoint")  # type: ignore[attr-defined]
    assert get_provider() is after


def test_a_forked_child_builds_its_own_client() -> None:
    parent = get_provider()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: answer through the pipe, and leave without running any of pytest's exit
        try:
            inherited_forgotten = providers._client is None
            child = get_provider()
            fresh = child is not parent and child.session is not parent.session  # type: ignore[attr-defined]
            again = get_provider() is child
            os.write(write_end, f"{inherited_forgotten},{fresh},{again}".encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        answer = pipe.read()
    os.waitpid(pid, 0)
    assert answer == "True,True,True"
    assert get_provider() is parent  # the parent keeps its own
