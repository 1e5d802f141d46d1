"""Real AI Toolkit failures (fixtures/ai_toolkit/, provenance in fixtures.json) come back classified, with
what to do; and images AI Toolkit would silently drop are refused before training."""

from __future__ import annotations

import io
import json
from collections import deque
from pathlib import Path

import pytest
from PIL import Image

from runpod_worker.dataset import refuse_undecodable
from runpod_worker.errors import JobFailed
from runpod_worker.failures import classify_failure, last_failure
from runpod_worker.trainer import TAIL_LINES, ProgressParser, split_lines

FIXTURES = Path(__file__).parent / "fixtures" / "ai_toolkit"
FLUX_DEV = "black-forest-labs/FLUX.1-dev"
LICENCE_PAGE = f"https://huggingface.co/{FLUX_DEV}"


def tail_of(name: str) -> list[str]:
    """The tail the worker keeps of this output: lines split on \\r and \\n, the newest bar redraw only."""
    text = (FIXTURES / f"{name}.txt").read_text(encoding="utf-8")
    lines, rest = split_lines(text)
    parser, tail = ProgressParser("fixture_lora"), deque(maxlen=TAIL_LINES)
    for line in [*lines, rest] if rest.strip() else lines:
        if parser.parse(line) is not None and tail and parser.parse(tail[-1]) is not None:
            tail.pop()
        tail.append(line)
    return list(tail)


def classified(name: str) -> JobFailed:
    exit_code = json.loads((FIXTURES / "fixtures.json").read_text())[name]["exit_code"]
    return classify_failure(exit_code, tail_of(name), model=FLUX_DEV)


def test_every_fixture_has_its_provenance() -> None:
    index = json.loads((FIXTURES / "fixtures.json").read_text())
    names = {path.stem for path in FIXTURES.glob("*.txt")}
    assert names == set(index)
    for name in names:
        assert index[name]["ai_toolkit_commit"] == "27a03a91f23eb1b757d5ec2e80ee3e129cfcc350"
        assert index[name]["command"]


def test_a_gated_model_without_a_token_is_model_access_naming_hf_token_and_the_licence_page() -> None:
    failure = classified("gated_no_token")

    assert failure.code == "model_access"
    assert "HF_TOKEN" in failure.message and LICENCE_PAGE in failure.message
    assert "licence" in failure.message


def test_a_token_whose_account_has_not_accepted_the_licence_is_model_access_with_the_licence_page() -> None:
    failure = classified("gated_not_accepted")

    assert failure.code == "model_access"
    assert "HF_TOKEN" in failure.message and LICENCE_PAGE in failure.message


def test_a_wrong_token_is_model_access_saying_the_token_is_invalid() -> None:
    failure = classified("wrong_token")

    assert failure.code == "model_access"
    assert "HF_TOKEN" in failure.message and "invalid" in failure.message


def test_a_model_the_hub_does_not_have_is_model_access_naming_it() -> None:
    failure = classified("model_not_found")

    assert failure.code == "model_access"
    assert FLUX_DEV in failure.message and "FLUX_DEV_PATH" in failure.message


def test_an_unreachable_hub_is_model_access_saying_to_retry_or_cache_the_model() -> None:
    failure = classified("hub_unreachable")

    assert failure.code == "model_access"
    assert "could not reach the Hugging Face Hub" in failure.message and "Retry" in failure.message


def test_running_out_of_gpu_memory_in_training_is_out_of_memory_with_what_to_change() -> None:
    failure = classified("oom_in_training")

    assert failure.code == "out_of_memory"
    assert "batch size" in failure.message and "80gb" in failure.message


def test_running_out_of_gpu_memory_while_loading_the_model_is_out_of_memory() -> None:
    assert classified("oom_while_loading").code == "out_of_memory"


def test_a_crash_after_a_recovered_oom_is_judged_by_the_crash_not_the_old_oom() -> None:
    tail = tail_of("crash_after_recovered_oom")
    assert any("# OOM during training step, skipping batch 1/3 #" in line for line in tail)

    failure = classify_failure(1, tail, model=FLUX_DEV)

    assert failure.code == "model_access"
    assert not any("OOM" in line for line in last_failure(tail))


def test_a_crash_with_no_known_cause_is_trainer_failed_quoting_run_pys_error_line() -> None:
    failure = classify_failure(
        1, ["Traceback (most recent call last):", "ValueError: bad", "Error running job: bad"]
    )

    assert failure.code == "trainer_failed"
    assert "Error running job: bad" in failure.message


def test_a_trainer_killed_by_a_signal_without_an_error_says_so() -> None:
    failure = classify_failure(-9, ["fixture_lora:  10%|#         | 10/100 [00:30<04:30,  3.00s/it]"])

    assert failure.code == "trainer_failed"
    assert "signal 9" in failure.message and "memory" in failure.message


def test_the_error_keeps_only_the_last_200_lines_of_the_log() -> None:
    failure = classify_failure(1, [f"line {n}" for n in range(300)])

    assert failure.to_worker_error().log_tail == [f"line {n}" for n in range(100, 300)]


def test_ai_toolkit_trains_on_without_an_image_it_cannot_decode() -> None:
    # Why the worker decodes every image itself: the real run went on, and ended well, on the others.
    text = (FIXTURES / "undecodable_one_image.txt").read_text(encoding="utf-8")
    assert "Error processing image: <workspace>/dataset/img9.jpg" in text and "-  Found 3 images" in text
    assert json.loads((FIXTURES / "fixtures.json").read_text())["undecodable_one_image"]["exit_code"] == 0


def _jpeg(size: int = 64) -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise((size, size), 40).convert("RGB").save(buffer, "JPEG")
    return buffer.getvalue()


def test_images_that_do_not_decode_are_refused_as_bad_input_naming_each(tmp_path: Path) -> None:
    (tmp_path / "good.jpg").write_bytes(_jpeg())
    (tmp_path / "cut.jpg").write_bytes(_jpeg()[:200])  # magic bytes and header intact
    (tmp_path / "cut2.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    paths = [tmp_path / "good.jpg", tmp_path / "cut.jpg", tmp_path / "cut2.png"]

    with pytest.raises(JobFailed) as caught:
        refuse_undecodable(paths)

    assert caught.value.code == "bad_input"
    assert "2 of 3 images cannot be decoded" in caught.value.message
    assert "cut.jpg" in caught.value.message and "cut2.png" in caught.value.message
    assert "good.jpg" not in caught.value.message


def test_images_that_decode_pass(tmp_path: Path) -> None:
    (tmp_path / "good.jpg").write_bytes(_jpeg())

    refuse_undecodable([tmp_path / "good.jpg"])
