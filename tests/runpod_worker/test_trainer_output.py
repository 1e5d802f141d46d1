from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from runpod_worker.errors import JobFailed
from runpod_worker.trainer import (
    ProgressParser,
    final_artifact,
    safetensors_metadata,
    split_lines,
    steps_from_metadata,
)

# Real-shaped AI Toolkit output: the training bar redrawn with \r, stdout lines, and other bars.
STREAM = (
    "Running 1 job\n"
    "Loading checkpoint shards:  50%|█████     | 1/2 [00:03<00:03,  3.10s/it]\r"
    "Loading checkpoint shards: 100%|██████████| 2/2 [00:06<00:00,  3.05s/it]\n"
    "alice_v1:   0%|          | 0/1000 [00:00<?, ?it/s]\r"
    "alice_v1:  61%|██████▏   | 614/1000 [22:47<13:31,  2.10s/it, lr: 1.0e-04 loss: 3.866e-01]\r"
    "Generating Images:   0%|          | 0/1 [00:00<?, ?it/s]\n"
    "  3%|3 | 1/30 [01:55<55:46, 115.39s/it]\r"
    "alice_v1:  62%|######2   | 615/1000 [22:49<13:29,  2.10s/it, lr: 1.0e-04 loss: nan]\r"
    "alice_v1: 100%|██████████| 1000/1000 [1:02:10<00:00,  1.50it/s, lr: 1.0e-04 loss: 2.5e-01]\r"
    "partial line without end"
)


def _progress():
    lines, rest = split_lines(STREAM)
    parser = ProgressParser("alice_v1")
    return [p for p in (parser.parse(line) for line in lines) if p is not None], rest


def test_it_splits_carriage_return_redraws_into_lines() -> None:
    lines, rest = split_lines("a\rb\r\nc\nd")
    assert lines == ["a", "b", "c"]
    assert rest == "d"


def test_it_reads_only_the_training_bar() -> None:
    progress, _ = _progress()
    assert [p.step for p in progress] == [0, 614, 615, 1000]
    assert {p.total_steps for p in progress} == {1000}


def test_it_reads_loss_and_remaining_time_from_a_slow_gpu_line() -> None:
    progress, _ = _progress()
    assert progress[1].loss == pytest.approx(0.3866)
    assert progress[1].eta_s == 13 * 60 + 31


def test_a_nan_loss_becomes_null() -> None:
    progress, _ = _progress()
    assert progress[2].loss is None


def test_it_understands_iterations_per_second_and_hours() -> None:
    progress, _ = _progress()
    assert progress[3].loss == pytest.approx(0.25)
    assert progress[3].eta_s == 0


def test_the_starting_bar_has_no_eta() -> None:
    progress, _ = _progress()
    assert progress[0].eta_s is None and progress[0].loss is None


def test_an_unfinished_line_waits_for_more_output() -> None:
    _, rest = _progress()
    assert rest == "partial line without end"


def test_a_bar_of_another_job_is_ignored() -> None:
    assert ProgressParser("alice").parse("alice_v1:  5%|#| 5/100 [00:05<01:35,  1.00it/s]") is None


def _write_safetensors(path: Path, metadata: dict[str, str]) -> None:
    header = json.dumps({"__metadata__": metadata}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header)


def test_it_picks_the_final_file_not_the_newest_checkpoint(tmp_path: Path) -> None:
    folder = tmp_path / "alice_v1"
    folder.mkdir()
    _write_safetensors(folder / "alice_v1.safetensors", {"training_info": json.dumps({"step": 1000})})
    # Sorting names would pick this one: "_" sorts after ".".
    _write_safetensors(folder / "alice_v1_000000750.safetensors", {})
    assert final_artifact(tmp_path, "alice_v1").name == "alice_v1.safetensors"


def test_checkpoints_alone_are_not_a_result(tmp_path: Path) -> None:
    folder = tmp_path / "alice_v1"
    folder.mkdir()
    _write_safetensors(folder / "alice_v1_000000750.safetensors", {})
    with pytest.raises(JobFailed) as caught:
        final_artifact(tmp_path, "alice_v1")
    assert caught.value.code == "trainer_failed"


def test_it_reads_the_step_count_from_the_file_metadata(tmp_path: Path) -> None:
    path = tmp_path / "x.safetensors"
    _write_safetensors(path, {"training_info": json.dumps({"step": 750, "epoch": 0})})
    assert steps_from_metadata(safetensors_metadata(path)) == 750


def test_a_file_that_is_not_safetensors_fails_the_job(tmp_path: Path) -> None:
    path = tmp_path / "x.safetensors"
    path.write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00nope!")
    with pytest.raises(JobFailed):
        safetensors_metadata(path)
