from __future__ import annotations

import io
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from characters import consent
from characters.models import Character, PhotoConsent
from tests.characters import photos as face_photos
from tests.characters.images import distinct_jpegs
from tests.training.conftest import FakeProvider, store_lora
from training.dataset import dataset_size
from training.management.commands import train_character
from training.models import Pod, TrainingRun
from training.runpod import RunPodJob
from training.services import training_run_apply_status, training_run_cancel, training_run_submit

pytestmark = pytest.mark.django_db

# A new character of the plain-colour test images: its owner's consent recorded, and no face to look for.
NEW = ("--consent", "self", "--not-a-person")


@pytest.fixture
def photos(tmp_path: Path, settings: Any) -> Path:
    settings.TRAINING_MIN_IMAGES = 3
    folder = tmp_path / "photos"
    folder.mkdir()
    for index, content in enumerate(distinct_jpegs(3)):
        (folder / f"photo-{index}.jpg").write_bytes(content)
    (folder / "notes.txt").write_text("not a photo, and not looked at")
    return folder


def run_command(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("train_character", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def train_anna_and_wait(photos: Path) -> tuple[str, str]:
    return run_command(
        "--user", "alice", "--name", "Anna", "--images", str(photos), "--trigger", "ohwx_anna", *NEW, "--wait"
    )


def drive_the_run(monkeypatch: pytest.MonkeyPatch, provider: FakeProvider, *, ending: str) -> None:
    """Stands in for the passing time: each second the run moves on, as RunPod would move it."""
    steps: list[Callable[[TrainingRun], object]] = [
        lambda run: training_run_submit(run=run, provider=provider),
        lambda run: apply(
            run,
            "IN_PROGRESS",
            output={"stage": "training", "step": 500, "total_steps": 1000, "loss": 0.1, "eta_s": 30},
        ),
        lambda run: finish(run, ending),
    ]

    def one_second_later(seconds: float) -> None:
        run = TrainingRun.objects.order_by("-created_at").first()
        assert run is not None
        if steps:
            steps.pop(0)(run)

    monkeypatch.setattr(train_character.time, "sleep", one_second_later)


def apply(run: TrainingRun, status: str, **job: Any) -> TrainingRun:
    return training_run_apply_status(
        run_id=run.pk,
        job=RunPodJob(id=run.runpod_job_id, status=status, execution_ms=600_000, **job),
        source="poll",
    )


def finish(run: TrainingRun, ending: str) -> object:
    if ending == "completed":
        return apply(run, "COMPLETED", output=store_lora(run, b"the trained lora"))
    if ending == "cancelled":
        return training_run_cancel(run=run, source="user")
    return apply(run, "FAILED", error='{"code": "out_of_memory", "message": "The GPU ran out of memory."}')


def test_it_creates_the_character_trains_it_and_prints_the_lora(
    alice: Any, photos: Path, provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    drive_the_run(monkeypatch, provider, ending="completed")

    out, _ = run_command(
        "--user", "alice", "--name", "Anna", "--images", str(photos), "--trigger", "ohwx_anna", *NEW, "--wait"
    )

    character = Character.objects.get(owner=alice, name="Anna")
    run = character.training_runs.get()
    assert character.images.count() == 3
    assert run.status == TrainingRun.Status.COMPLETED
    assert "completed" in out
    assert run.lora_sha256 in out
    assert run.lora_name in out
    assert "step 500/1000" in out


def test_at_verbosity_0_it_waits_without_drawing_the_progress_and_prints_the_outcome(
    alice: Any, photos: Path, provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    drive_the_run(monkeypatch, provider, ending="completed")

    out, _ = run_command(
        "--user", "alice", "--name", "Anna", "--images", str(photos), "--trigger", "ohwx_anna", *NEW,
        "--wait", "--verbosity", "0",
    )  # fmt: skip

    run = TrainingRun.objects.get()
    assert f"Run {run.pk} completed." in out and run.lora_sha256 in out
    assert "step 500/1000" not in out


def test_a_second_call_reuses_the_character_and_its_photos(
    alice: Any, photos: Path, provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_command("--user", "alice", "--name", "Anna", "--images", str(photos), "--trigger", "ohwx_anna", *NEW)
    TrainingRun.objects.update(status=TrainingRun.Status.COMPLETED)

    out, _ = run_command("--user", "alice", "--name", "Anna", "--images", str(photos))

    assert Character.objects.filter(owner=alice).count() == 1
    assert "Using the existing character" in out
    assert "3 were already in the character" in out
    assert Character.objects.get().images.count() == 3


def test_without_wait_it_starts_the_run_and_returns(alice: Any, photos: Path) -> None:
    out, _ = run_command(
        "--user", "alice", "--name", "Anna", "--images", str(photos), "--trigger", "ohwx_anna", *NEW
    )

    assert TrainingRun.objects.get().status == TrainingRun.Status.PENDING
    assert "started" in out


def test_staff_start_a_run_on_a_pod_with_provider_pod(staff: Any, photos: Path) -> None:
    Pod.objects.create(name="pod-a", ui_url="http://127.0.0.1:9", hourly_price_usd=Decimal("0.69"))

    out, _ = run_command(
        "--user", "staff", "--name", "Anna", "--images", str(photos), "--trigger", "ohwx_anna", *NEW,
        "--provider", "pod",
    )  # fmt: skip

    run = TrainingRun.objects.get()
    assert (run.provider, run.status) == (TrainingRun.Provider.POD, TrainingRun.Status.PENDING)
    assert "on a pod" in out


def test_a_pod_run_for_a_user_staff_did_not_enable_pods_for_is_refused(alice: Any, photos: Path) -> None:
    Pod.objects.create(name="pod-a", ui_url="http://127.0.0.1:9", hourly_price_usd=Decimal("0.69"))

    with pytest.raises(CommandError) as raised:
        run_command(
            "--user", "alice", "--name", "Anna", "--images", str(photos), "--trigger", "ohwx_anna", *NEW,
            "--provider", "pod",
        )  # fmt: skip

    assert "Pod mode is not enabled for your account" in str(raised.value)
    assert not TrainingRun.objects.exists()


def test_save_every_sets_the_checkpoints_and_so_the_samples_and_the_run_page_is_named(
    alice: Any, photos: Path
) -> None:
    out, _ = run_command(
        "--user", "alice", "--name", "Anna", "--images", str(photos), "--trigger", "ohwx_anna", *NEW,
        "--steps", "300", "--save-every", "50",
    )  # fmt: skip

    run = TrainingRun.objects.get()
    assert (run.params["steps"], run.params["save_every"], run.params["sample_every"]) == (300, 50, 50)
    assert f"/runs/{run.pk}/" in out


def test_it_reports_each_refused_photo_with_the_upload_rules(alice: Any, photos: Path) -> None:
    (photos / "tiny.jpg").write_bytes(distinct_jpegs(1, size=(100, 100))[0])

    _, err = run_command(
        "--user", "alice", "--name", "Anna", "--images", str(photos), "--trigger", "ohwx_anna", *NEW
    )

    assert "tiny.jpg" in err
    assert Character.objects.get().images.count() == 3


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--user", "nobody"], train_character.EXIT_BAD_INPUT, "There is no user 'nobody'"),
        (["--images", "/does/not/exist"], train_character.EXIT_BAD_INPUT, "is not a folder of photos"),
        (["--trigger", ""], train_character.EXIT_BAD_INPUT, "give its trigger word with --trigger"),
        (["--trigger", "Not A Token"], train_character.EXIT_BAD_INPUT, "lowercase letters"),
        (["--steps", "5"], train_character.EXIT_BAD_INPUT, "steps"),
    ],
)
def test_bad_input_exits_with_code_2_and_says_why(
    alice: Any, photos: Path, args: list[str], code: int, message: str
) -> None:
    defaults = {"--user": "alice", "--name": "Anna", "--images": str(photos), "--trigger": "ohwx_anna"}
    defaults.update(dict(zip(args[::2], args[1::2], strict=True)))
    argv = [item for pair in defaults.items() for item in pair if pair[1] != ""] + list(NEW)

    with pytest.raises(CommandError) as raised:
        run_command(*argv)

    assert raised.value.returncode == code
    assert message in str(raised.value)


def test_too_few_photos_is_refused_with_code_3(alice: Any, photos: Path, settings: Any) -> None:
    settings.TRAINING_MIN_IMAGES = 10

    with pytest.raises(CommandError) as raised:
        run_command(
            "--user", "alice", "--name", "Anna", "--images", str(photos), "--trigger", "ohwx_anna", *NEW
        )

    assert raised.value.returncode == train_character.EXIT_REFUSED
    assert "10" in str(raised.value)
    assert not TrainingRun.objects.exists()


def test_a_failed_run_exits_with_code_4_and_its_message(
    alice: Any, photos: Path, provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    drive_the_run(monkeypatch, provider, ending="failed")

    with pytest.raises(CommandError) as raised:
        train_anna_and_wait(photos)

    assert raised.value.returncode == train_character.EXIT_FAILED
    assert "The GPU ran out of memory." in str(raised.value)


def test_a_cancelled_run_exits_with_code_5(
    alice: Any, photos: Path, provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    drive_the_run(monkeypatch, provider, ending="cancelled")

    with pytest.raises(CommandError) as raised:
        train_anna_and_wait(photos)

    assert raised.value.returncode == train_character.EXIT_CANCELLED


def test_giving_up_waiting_exits_with_code_6_and_leaves_the_run_going(
    alice: Any, photos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(train_character.time, "sleep", lambda seconds: None)

    with pytest.raises(CommandError) as raised:
        run_command(
            "--user", "alice", "--name", "Anna", "--images", str(photos), "--trigger", "ohwx_anna", *NEW,
            "--wait", "--timeout", "0",
        )  # fmt: skip

    assert raised.value.returncode == train_character.EXIT_TIMED_OUT
    assert TrainingRun.objects.get().status == TrainingRun.Status.PENDING


# ============================================================================================ consent


def test_without_consent_the_photos_are_refused_as_on_the_site_and_nothing_trains(
    alice: Any, photos: Path
) -> None:
    with pytest.raises(CommandError) as raised:
        run_command("--user", "alice", "--name", "Anna", "--images", str(photos), "--trigger", "ohwx_anna")

    assert raised.value.returncode == train_character.EXIT_REFUSED
    assert "--consent self" in str(raised.value) and "consent" in str(raised.value)
    anna = Character.objects.get(name="Anna")
    assert anna.images.count() == 0 and not TrainingRun.objects.exists()
    assert not PhotoConsent.objects.exists()


def test_consent_is_recorded_for_the_owner_in_the_current_wording(alice: Any, photos: Path) -> None:
    out, _ = run_command(
        "--user", "alice", "--name", "Anna", "--images", str(photos), "--trigger", "ohwx_anna", *NEW
    )

    record = PhotoConsent.objects.get(character__name="Anna")
    assert (record.given_by, record.wording_version, record.basis) == (alice, consent.CURRENT_VERSION, "self")
    assert f"consent to statement {consent.CURRENT_VERSION}" in out


def test_the_face_check_runs_before_the_start_and_refuses_a_person_without_faces(
    alice: Any, photos: Path
) -> None:
    with pytest.raises(CommandError) as raised:
        run_command(
            "--user", "alice", "--name", "Anna", "--images", str(photos), "--trigger", "ohwx_anna",
            "--consent", "self",
        )  # fmt: skip

    assert raised.value.returncode == train_character.EXIT_REFUSED
    assert "3 of 3 photos show no face" in str(raised.value)
    assert not TrainingRun.objects.exists()


def test_the_run_takes_the_face_crops_the_check_made(alice: Any, tmp_path: Path, settings: Any) -> None:
    settings.TRAINING_MIN_IMAGES = 3
    folder = tmp_path / "portraits"
    folder.mkdir()
    for name in face_photos.PERSON_A:
        (folder / name).write_bytes(face_photos.jpeg(face_photos.photo(name)))

    out, _ = run_command(
        "--user",
        "alice",
        "--name",
        "Anna",
        "--images",
        str(folder),
        "--trigger",
        "ohwx_anna",
        "--consent",
        "self",
    )

    run = TrainingRun.objects.get()
    assert str(dataset_size(run.manifest)) == "3 photos + 3 face crops"
    assert "Face check: score" in out
