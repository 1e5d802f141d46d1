"""Finding what AI Toolkit writes while it trains, uploading it, and reporting it once it has arrived."""

from __future__ import annotations

import asyncio
import hashlib
import sys
from pathlib import Path

import pytest

from runpod_worker.artifacts import ArtifactCollector, downsample, read_loss
from runpod_worker.contract import LOSS_POINTS_PER_CALLBACK, JobInput
from runpod_worker.errors import JobFailed
from runpod_worker.redact import REDACTED, forget_secrets, redact_line, redact_lines, register_secret
from runpod_worker.trainer import SIMULATOR_DIR
from runpod_worker.upload import UploadResult
from tests.runpod_worker.factories import job_input

sys.path.insert(0, str(SIMULATOR_DIR))
import ui_progress  # the simulator's UILogger, which writes loss_log.db as AI Toolkit does

URL = "https://storage.example/put"


def _spec() -> JobInput:
    params = {"steps": 1000, "rank": 4, "save_every": 250, "sample_every": 250, "sample_prompts": ["a", "b"]}
    output = {
        "checkpoints": [
            {"step": s, "upload_url": f"{URL}/ck{s}", "optimizer_upload_url": f"{URL}/opt{s}"}
            for s in (250, 500, 750)
        ],
        "samples": [{"step": 250, "prompt_index": i, "upload_url": f"{URL}/s250_{i}"} for i in (0, 1)],
    }
    data = job_input(params=params)
    data["output"].update(output)
    return JobInput.from_dict(data)


class FakeStore:
    def __init__(self, fail: set[str] | None = None) -> None:
        self.objects: dict[str, bytes] = {}
        self.fail = fail or set()

    def __call__(self, path: Path, url: str, *, what: str = "") -> UploadResult:
        if url in self.fail:
            raise JobFailed("upload_failed", f"{what} could not be uploaded")
        data = path.read_bytes()
        self.objects[url] = data
        return UploadResult(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())


def _collector(tmp_path: Path, store: FakeStore) -> ArtifactCollector:
    return ArtifactCollector(_spec(), tmp_path / "out" / "alice_v1", tmp_path / "outbox", uploader=store)


def _save(save_root: Path, step: int, data: bytes, optimizer: bytes) -> list[str]:
    """What AI Toolkit's save() does and prints (BaseSDTrainProcess.py:505-716)."""
    save_root.mkdir(parents=True, exist_ok=True)
    checkpoint = save_root / f"alice_v1_{step:09d}.safetensors"
    checkpoint.write_bytes(data)
    (save_root / "optimizer.pt").write_bytes(optimizer)
    return [f"Saving at step {step}", f"Saved checkpoint to {checkpoint}",
            f"Saved optimizer to {save_root / 'optimizer.pt'}"]  # fmt: skip


def test_a_checkpoint_and_its_optimizer_state_are_uploaded_as_they_were_at_that_save(tmp_path: Path) -> None:
    store = FakeStore()
    collector = _collector(tmp_path, store)

    async def run() -> None:
        collector.start()
        for line in _save(collector.save_root, 250, b"ck250", b"opt250"):
            collector.on_line(line)
        # The next save rewrites optimizer.pt in place (torch.save) and AI Toolkit prunes old checkpoints:
        # the bytes of this save were kept.
        (collector.save_root / "optimizer.pt").write_bytes(b"opt500")
        (collector.save_root / "alice_v1_000000250.safetensors").unlink()
        await collector.finish(timeout=10)

    asyncio.run(run())
    assert store.objects == {f"{URL}/ck250": b"ck250", f"{URL}/opt250": b"opt250"}
    [checkpoint] = collector.checkpoints
    assert (checkpoint.step, checkpoint.name) == (250, "alice_v1_000000250.safetensors")
    assert checkpoint.sha256 == hashlib.sha256(b"ck250").hexdigest()
    assert checkpoint.optimizer_sha256 == hashlib.sha256(b"opt250").hexdigest()


def test_a_checkpoint_without_optimizer_state_is_still_uploaded(tmp_path: Path) -> None:
    store = FakeStore()
    collector = _collector(tmp_path, store)
    lines = [*_save(collector.save_root, 500, b"ck500", b"x")[:2], "Could not save optimizer"]

    async def run() -> None:
        collector.start()
        for line in lines:
            collector.on_line(line)
        await collector.finish(timeout=10)

    asyncio.run(run())
    [checkpoint] = collector.checkpoints
    assert (checkpoint.step, checkpoint.optimizer_sha256) == (500, None)


def test_the_final_lora_and_other_names_are_not_checkpoints(tmp_path: Path) -> None:
    store = FakeStore()
    collector = _collector(tmp_path, store)
    collector.save_root.mkdir(parents=True)
    final = collector.save_root / "alice_v1.safetensors"
    final.write_bytes(b"final")

    async def run() -> None:
        collector.start()
        collector.on_line(f"Saved checkpoint to {final}")
        collector.on_line(f"Saved optimizer to {collector.save_root / 'optimizer.pt'}")
        await collector.finish(timeout=10)

    asyncio.run(run())
    assert collector.checkpoints == [] and store.objects == {}


def test_samples_with_a_target_are_uploaded_and_the_rest_skipped(tmp_path: Path) -> None:
    store = FakeStore()
    collector = _collector(tmp_path, store)
    samples = collector.save_root / "samples"
    (samples / ".tmp").mkdir(parents=True)
    for name in ("1796__000000250_0.jpg", "1796__000000250_1.jpg", "1797__000000500_0.jpg", "notes.txt"):
        (samples / name).write_bytes(name.encode())
    (samples / ".tmp" / "1798__000000750_0.jpg").write_bytes(b"half written")

    async def run() -> None:
        collector.start()
        collector.scan_samples()
        collector.scan_samples()  # each file once
        await collector.finish(timeout=10)

    asyncio.run(run())
    assert sorted(store.objects) == [f"{URL}/s250_0", f"{URL}/s250_1"]
    assert sorted((s.step, s.prompt_index, s.filename) for s in collector.samples) == [
        (250, 0, "1796__000000250_0.jpg"),
        (250, 1, "1796__000000250_1.jpg"),
    ]


def test_a_failed_upload_is_counted_and_training_goes_on(tmp_path: Path) -> None:
    store = FakeStore(fail={f"{URL}/ck250"})
    collector = _collector(tmp_path, store)

    async def run() -> None:
        collector.start()
        for line in _save(collector.save_root, 250, b"a", b"b") + _save(collector.save_root, 500, b"c", b"d"):
            collector.on_line(line)
        await collector.finish(timeout=10)

    asyncio.run(run())
    assert collector.failed_uploads == 1
    assert [c.step for c in collector.checkpoints] == [500]


def test_what_was_reported_is_sent_again_until_a_callback_carrying_it_arrives(tmp_path: Path) -> None:
    store = FakeStore()
    collector = _collector(tmp_path, store)

    async def run() -> None:
        collector.start()
        for line in _save(collector.save_root, 250, b"a", b"b"):
            collector.on_line(line)
        await collector.finish(timeout=10)

    asyncio.run(run())
    assert collector.has_news
    first = collector.report()
    assert [c["step"] for c in first.fields["checkpoints"]] == [250]
    # That callback failed: the next carries the checkpoint again; once delivered, it is not sent again.
    second = collector.report()
    assert second.fields["checkpoints"] == first.fields["checkpoints"]
    collector.acknowledge(second)
    assert not collector.has_news
    assert "checkpoints" not in collector.report().fields


def _loss_log(path: Path, steps: range, *, val_every: int = 0) -> None:
    log = ui_progress.LossLog(path)
    for step in steps:
        values = {"learning_rate": 1e-4, "loss/loss": 1.0 / (step + 1)}
        if val_every and step % val_every == 0:
            values["val/loss"] = 2.0 / (step + 1)
        log.commit(step, values)
    log.finish()


def test_the_loss_comes_from_loss_log_db_with_validation_loss(tmp_path: Path) -> None:
    db = tmp_path / "loss_log.db"
    _loss_log(db, range(1, 51), val_every=10)

    series = read_loss(db, after_step=20)

    assert [step for step, _ in series["loss/loss"]] == list(range(21, 51))
    assert series["loss/loss"][0][1] == pytest.approx(1 / 22)
    assert [step for step, _ in series["val/loss"]] == [30, 40, 50]


def test_a_missing_or_empty_loss_log_reads_as_nothing(tmp_path: Path) -> None:
    assert read_loss(tmp_path / "loss_log.db", 0) == {}
    (tmp_path / "empty.db").write_bytes(b"")
    assert read_loss(tmp_path / "empty.db", 0) == {}


def test_the_loss_is_downsampled_to_a_bounded_number_of_points_per_callback() -> None:
    points = [(step, float(step % 7)) for step in range(1, 6001)]

    sampled = downsample(points)

    assert len(sampled) <= LOSS_POINTS_PER_CALLBACK
    assert sampled[-1][0] == 6000  # each point sits at its bucket's last step
    assert sampled[0][1] == pytest.approx(sum(v for _, v in points[:60]) / 60)
    assert downsample(points[:5]) == [[s, v] for s, v in points[:5]]


def test_loss_points_are_reported_from_the_last_acknowledged_step(tmp_path: Path) -> None:
    collector = _collector(tmp_path, FakeStore())
    _loss_log(collector.save_root / "loss_log.db", range(1, 301))

    report = collector.report()
    assert len(report.fields["loss_series"]["loss"]) <= LOSS_POINTS_PER_CALLBACK
    assert report.fields["loss_series"]["val_loss"] == []
    collector.acknowledge(report)
    assert "loss_series" not in collector.report().fields


def test_a_resumed_run_reports_loss_only_after_its_start_step(tmp_path: Path) -> None:
    collector = ArtifactCollector(
        _spec(), tmp_path / "alice_v1", tmp_path / "outbox", start_step=500, uploader=FakeStore()
    )
    _loss_log(collector.save_root / "loss_log.db", range(501, 511))

    assert [p[0] for p in collector.report().fields["loss_series"]["loss"]] == list(range(501, 511))


# ------------------------------------------------------------------------------------------- redaction


def test_signed_urls_tokens_and_registered_secrets_are_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_" + "x" * 34)
    register_secret("callback-secret-token")
    try:
        line = redact_line(
            "PUT https://bucket.s3.example/k.jpg?X-Amz-Signature=abc&X-Amz-Credential=def failed; "
            f"token {'hf_' + 'x' * 34}; callback-secret-token; Authorization: Bearer abcdefghijkl"
        )
    finally:
        forget_secrets(["callback-secret-token"])
    assert "X-Amz-Signature" not in line and "abc" not in line
    assert "hf_" not in line and "callback-secret-token" not in line and "abcdefghijkl" not in line
    assert line.startswith(f"PUT https://bucket.s3.example/k.jpg?{REDACTED} failed")


def test_ordinary_trainer_output_is_left_alone() -> None:
    lines = [
        "alice_v1:  42%|####2     | 420/1000 [01:00<01:23,  7.00it/s, lr: 1.0e-04 loss: 3.529e-01]",
        "Loading tokenizer_2/spiece.model",
        "Saved checkpoint to /tmp/out/alice_v1/alice_v1_000000250.safetensors",
    ]
    assert redact_lines(lines) == lines


def test_a_runaway_line_is_cut() -> None:
    assert len(redact_line("x" * 50_000)) < 1100
