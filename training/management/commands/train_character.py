"""Train a character from a folder of photos, from the command line.

    python manage.py train_character --user anna --name "Anna" --trigger ohwx_anna \\
        --images ./photos/anna --consent self --preset balanced --wait

The character is created, or reused when the user already has one of that name; the photos go
through the same checks as the web upload, which needs the owner's consent to the consent statement
(`--consent self` or `--consent permission` records it, in the current wording, for the owner who
agreed to it outside the studio); the face check then runs here, so its refusal and face crops apply
to the run as they do on the site; then a run starts. With --wait the command shows the run's progress
until it ends and prints where the LoRA is.
"""

from __future__ import annotations

import math
import time
from argparse import ArgumentParser
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import UploadedFile
from django.core.management.base import BaseCommand, CommandError
from django.urls import reverse

from characters import consent
from characters.analysis import character_photos_analyse, dataset_report_refresh
from characters.models import Character
from characters.selectors import dataset_report_worst_flags
from characters.services import character_consent_record, character_create, reference_images_upload
from studio.errors import ApplicationError
from studio.models import User
from training.base_models import BASE_MODELS
from training.models import TrainingEvent, TrainingRun
from training.presets import PRESETS
from training.run_watch import likeness_comparing, lora_choice_explained
from training.services import training_run_start

# Exit codes, so scripts can tell a refusal from a failed run.
EXIT_BAD_INPUT = 2
EXIT_REFUSED = 3
EXIT_FAILED = 4
EXIT_CANCELLED = 5
EXIT_TIMED_OUT = 6

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}
BAR_WIDTH = 30
# How long --wait waits for the checkpoints' comparison once the run has completed (it takes seconds).
LIKENESS_WAIT_SECONDS = 120


class Command(BaseCommand):
    help = (
        "Create or reuse a character, add the photos in a folder, start a training run and, with "
        f"--wait, follow it to the end. Exit codes: 0 done, {EXIT_BAD_INPUT} bad input, "
        f"{EXIT_REFUSED} training refused, {EXIT_FAILED} run failed, {EXIT_CANCELLED} run cancelled, "
        f"{EXIT_TIMED_OUT} gave up waiting."
    )

    _last_line = ""
    _show_progress = True

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--user", required=True, help="Username of the owner.")
        parser.add_argument("--name", required=True, help="The character's name.")
        parser.add_argument(
            "--images", required=True, type=Path, help="A folder of JPEG, PNG or WebP photos."
        )
        parser.add_argument("--trigger", help="Trigger word; required when the character is new.")
        parser.add_argument(
            "--consent",
            choices=sorted(consent.BASES),
            help="Record the owner's consent to the current consent statement for this character "
            f"(version {consent.CURRENT_VERSION}): 'self', they are the person in the photos; 'permission', "
            "that person gave them explicit permission. Uploading photos needs it once per character.",
        )
        parser.add_argument(
            "--not-a-person",
            action="store_true",
            help="A new character is a style or an object, not a person: no face is looked for.",
        )
        parser.add_argument("--preset", choices=sorted(PRESETS), help="Training preset (default: balanced).")
        parser.add_argument("--steps", type=int, help="Training steps, overriding the preset.")
        parser.add_argument("--rank", type=int, help="LoRA rank, overriding the preset (4 to 128).")
        parser.add_argument(
            "--base-model",
            choices=sorted(BASE_MODELS),
            help="Base model to train on (default: the character's, flux-dev for a new character).",
        )
        parser.add_argument(
            "--save-every",
            type=int,
            help="Steps between checkpoints, and so between samples (default: the studio's, 250).",
        )
        parser.add_argument(
            "--provider",
            choices=TrainingRun.Provider.values,
            default=TrainingRun.Provider.SERVERLESS,
            help="Where it trains: serverless (default), or pod (staff, and users staff allowed pods).",
        )
        parser.add_argument(
            "--wait",
            action="store_true",
            help="Follow the run until it ends (its progress is not shown with --verbosity 0).",
        )
        parser.add_argument(
            "--timeout", type=float, default=6 * 3600, help="Seconds to wait with --wait (default 6 h)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        user = self._user(options["user"])
        folder = self._folder(options["images"])
        character = self._character(user, options["name"], options["trigger"], options["not_a_person"])
        if options["consent"]:
            self._consent(character, user, options["consent"])
        self._ingest(character, folder)
        self._face_check(character)
        overrides = {"steps": options["steps"], "rank": options["rank"], "save_every": options["save_every"]}
        run = self._start(
            character,
            user,
            preset=options["preset"],
            overrides=overrides,
            base_model=options["base_model"],
            provider=options["provider"],
        )
        if not options["wait"]:
            self.stdout.write(f"Run {run.id} started. Follow it with --wait or on the run's page.")
            return
        self._show_progress = options["verbosity"] > 0
        run = self._follow(run, timeout=options["timeout"])
        self._report(run)

    # --- set-up ---------------------------------------------------------------------------

    def _user(self, username: str) -> User:
        user = User.objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"There is no user {username!r}. Create it first.", returncode=EXIT_BAD_INPUT)
        return user

    def _folder(self, folder: Path) -> Path:
        if not folder.is_dir():
            raise CommandError(f"{folder} is not a folder of photos.", returncode=EXIT_BAD_INPUT)
        return folder

    def _character(self, user: User, name: str, trigger: str | None, not_a_person: bool) -> Character:
        existing = Character.objects.filter(owner=user, name=name.strip()).first()
        if existing is not None:
            if trigger and trigger != existing.trigger_word:
                self.stderr.write(
                    f"Note: {name} already exists with trigger word {existing.trigger_word!r}; keeping it."
                )
            self.stdout.write(f"Using the existing character {existing.name} ({existing.id}).")
            return existing
        if not trigger:
            raise CommandError(
                f"{name} is a new character: give its trigger word with --trigger.", returncode=EXIT_BAD_INPUT
            )
        try:
            character = character_create(
                owner=user, name=name, trigger_word=trigger, is_person=not not_a_person
            )
        except ApplicationError as error:
            raise CommandError(error.message, returncode=EXIT_BAD_INPUT) from error
        self.stdout.write(f"Created the character {character.name} ({character.id}).")
        return character

    def _consent(self, character: Character, user: User, basis: str) -> None:
        try:
            record = character_consent_record(character=character, given_by=user, basis=basis)
        except ApplicationError as error:
            raise CommandError(error.message, returncode=EXIT_BAD_INPUT) from error
        self.stdout.write(
            f"Recorded {user.get_username()}'s consent to statement {record.wording_version} "
            f"({consent.BASES[basis]})"
        )

    def _ingest(self, character: Character, folder: Path) -> None:
        report = reference_images_upload(character=character, uploads=_uploads(folder))
        already_there = [r for r in report.rejected if r.code == "duplicate"]
        if any(rejected.code == "consent_required" for rejected in report.rejected):
            raise CommandError(
                f"Photos of {character.name} need its owner's consent first, as on the site: read the "
                f"statement at {reverse('characters:consent', args=[character.pk])} with them, then run "
                "this again with --consent self (they are the person shown) or --consent permission.",
                returncode=EXIT_REFUSED,
            )
        for rejected in report.rejected:
            if rejected.code != "duplicate":
                self.stderr.write(f"Refused {rejected.message}")
        summary = f"Added {len(report.added)} photo(s)"
        if already_there:
            summary += f"; {len(already_there)} were already in the character"
        self.stdout.write(f"{summary}. The character has {character.images.count()} photo(s).")

    def _face_check(self, character: Character) -> None:
        """The check the Celery worker makes after an upload, made here and now: the run that starts next
        is refused, or gets its face crops, by what it finds."""
        character_photos_analyse(character=character, budget_seconds=math.inf)
        report = dataset_report_refresh(character=character)
        worst = "; ".join(
            f"{flag.photos} photo(s): {flag.label}" for flag in dataset_report_worst_flags(report)
        )
        self.stdout.write(f"Face check: score {report.score} / 100{f'; {worst}' if worst else ''}.")

    def _start(
        self,
        character: Character,
        user: User,
        *,
        preset: str | None,
        overrides: dict[str, int | None],
        base_model: str | None = None,
        provider: str = TrainingRun.Provider.SERVERLESS,
    ) -> TrainingRun:
        params = {key: value for key, value in overrides.items() if value is not None} or None
        try:
            run = training_run_start(
                character=character,
                requested_by=user,
                params=params,
                preset=preset,
                base_model=base_model,
                provider=provider,
                source=TrainingEvent.Source.USER,
            )
        except ApplicationError as error:
            code = EXIT_BAD_INPUT if error.code == "invalid_params" or error.fields else EXIT_REFUSED
            raise CommandError(error.message, returncode=code) from error
        self.stdout.write(
            f"Started run {run.id}: {run.params.get('steps')} steps on {run.base_model}{_where(run)}."
        )
        page = reverse("training:run-detail", args=[run.pk])
        self.stdout.write(f"Its page on the site, with samples, loss and checkpoints as they come: {page}")
        return run

    # --- following the run ---------------------------------------------------------------

    def _follow(self, run: TrainingRun, *, timeout: float) -> TrainingRun:
        deadline = time.monotonic() + timeout
        while not run.is_final:
            if time.monotonic() > deadline:
                self._end_line()
                raise CommandError(
                    f"Stopped waiting after {timeout:.0f}s; run {run.id} is still {run.status}. "
                    "It goes on: run the command again or open the run's page.",
                    returncode=EXIT_TIMED_OUT,
                )
            self._draw(run)
            time.sleep(1)
            run.refresh_from_db()
        self._draw(run)
        self._end_line()
        # The studio then compares the checkpoints and may choose one: the LoRA to print is the chosen one.
        comparing_until = min(deadline, time.monotonic() + LIKENESS_WAIT_SECONDS)
        if likeness_comparing(run):
            self.stdout.write("Comparing each checkpoint's samples with the photos…")
        while likeness_comparing(run) and time.monotonic() < comparing_until:
            time.sleep(1)
            run.refresh_from_db()
        return run

    def _draw(self, run: TrainingRun) -> None:
        if not self._show_progress:
            return
        line = progress_line(run)
        if self.stdout.isatty():
            self.stdout.write("\r" + line.ljust(100), ending="")
            self.stdout.flush()
        elif line != self._last_line:  # a log file gets each change once, not a line a second
            self.stdout.write(line)
        self._last_line = line

    def _end_line(self) -> None:
        if self._show_progress and self.stdout.isatty():
            self.stdout.write("")

    def _report(self, run: TrainingRun) -> None:
        if run.status == TrainingRun.Status.COMPLETED:
            self.stdout.write(self.style.SUCCESS(f"Run {run.id} completed{_where(run)}."))
            self.stdout.write(f"LoRA: {lora_location(run)}")
            self.stdout.write(f"Size: {run.lora_bytes} bytes")
            self.stdout.write(f"SHA-256: {run.lora_sha256}")
            explained = lora_choice_explained(run)
            if explained:
                self.stdout.write(explained)
            if run.cost_usd is not None:
                self.stdout.write(f"GPU cost: ${run.cost_usd}")
            return
        if run.status == TrainingRun.Status.CANCELLED:
            raise CommandError(f"Run {run.id} was cancelled.", returncode=EXIT_CANCELLED)
        raise CommandError(
            f"Run {run.id} failed: {run.error_message or run.error_code or 'no reason given'}",
            returncode=EXIT_FAILED,
        )


def _uploads(folder: Path) -> Iterator[UploadedFile]:
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            yield UploadedFile(file=path.open("rb"), name=path.name, size=path.stat().st_size)


def progress_line(run: TrainingRun) -> str:
    """`[#####-----]  45%  step 675/1500  loss 0.1234  ETA 3m12s  training`"""
    percent = run.progress_percent
    filled = BAR_WIDTH * percent // 100
    parts = [f"[{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {percent:3d}%"]
    if run.progress_total:
        parts.append(f"step {run.progress_step}/{run.progress_total}")
    if run.progress_loss is not None:
        parts.append(f"loss {run.progress_loss:.4f}")
    if run.progress_eta_seconds is not None and not run.is_final:
        minutes, seconds = divmod(run.progress_eta_seconds, 60)
        parts.append(f"ETA {minutes}m{seconds:02d}s")
    parts.append(run.status)
    return "  ".join(parts)


def _where(run: TrainingRun) -> str:
    """`, on pod <name>` for a pod run (`, on a pod` until one is chosen for it); nothing for a serverless
    run."""
    if run.provider != TrainingRun.Provider.POD:
        return ""
    return f", on pod {run.pod.name}" if run.pod is not None else ", on a pod"


def lora_location(run: TrainingRun) -> str:
    """Where the LoRA is: a path on local storage, or the bucket and key on S3."""
    bucket = getattr(default_storage, "bucket_name", None)
    if bucket:
        return f"s3://{bucket}/{run.lora_name}"
    return str(Path(settings.MEDIA_ROOT) / run.lora_name)
