from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

from characters.faces.likeness import copying
from characters.models import Character
from training.base_models import BASE_MODELS


class Pod(models.Model):
    """A persistent RunPod Pod running AI Toolkit's web UI (port 8675), registered by staff: pod-mode runs
    train there through the UI's own API (`training.aitoolkit.AIToolkitClient`), one at a time per GPU.

    The UI's token (its AI_TOOLKIT_AUTH) is kept encrypted (`training.pod_secrets`) and is never shown back,
    logged or sent anywhere but to the pod. The UI's `/api/files/` and `/api/img/` routes answer without it
    (docs/TRAINING.md, "Pod mode"), so each run's outputs are deleted from the pod once kept in storage.
    """

    class State(models.TextChoices):
        RUNNING = "running", "Running"
        STARTING = "starting", "Starting"
        STOPPING = "stopping", "Stopping"
        STOPPED = "stopped", "Stopped"

    name = models.CharField(max_length=100, unique=True)
    runpod_pod_id = models.CharField(
        "RunPod pod id",
        max_length=64,
        blank=True,
        default="",
        help_text="Empty for a UI not on RunPod, which the studio can neither start nor stop.",
    )
    ui_url = models.URLField(
        "UI base URL", max_length=300, help_text="e.g. https://<pod id>-8675.proxy.runpod.net"
    )
    token_encrypted = models.TextField(blank=True, default="", editable=False)
    gpu_ids = models.CharField(
        "GPU ids", max_length=32, default="0", help_text="The UI's queue runs are put on (its gpu_ids)."
    )
    hourly_price_usd = models.DecimalField(
        max_digits=8, decimal_places=4, help_text="What RunPod bills per hour while the pod runs."
    )
    state = models.CharField(max_length=16, choices=State.choices, default=State.RUNNING)
    state_changed_at = models.DateTimeField(null=True, blank=True)
    accepts_runs = models.BooleanField(default=True, help_text="New pod-mode runs may be sent here.")
    idle_stop_minutes = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Stop the pod after this long without a run; empty: TRAINING_POD_IDLE_STOP_MINUTES.",
    )
    last_busy_at = models.DateTimeField(
        null=True, blank=True, help_text="When the pod last had a run on it: its idle time counts from here."
    )
    running_since = models.DateTimeField(
        null=True, blank=True, help_text="Start of the running span not yet added to uptime_seconds."
    )
    uptime_seconds = models.PositiveBigIntegerField(
        default=0, help_text="Running time of the spans that have ended (billed at hourly_price_usd)."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:  # the token stays out of every rendering of the row
        return f"<Pod {self.name} {self.state}>"


class TrainingRun(models.Model):
    """One attempt to train a LoRA for a character on a RunPod GPU: a serverless job, or a job on a pod's
    AI Toolkit UI (`provider`)."""

    class Provider(models.TextChoices):
        SERVERLESS = "serverless", "Serverless (RunPod endpoint)"
        POD = "pod", "Pod (AI Toolkit UI)"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        QUEUED = "queued", "Queued"
        TRAINING = "training", "Training"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    class LoraChoice(models.TextChoices):
        FINAL = "final", "the final LoRA"
        LIKENESS = "likeness", "the checkpoint most like the character"
        OWNER = "owner", "chosen by its owner"

    class CostState(models.TextChoices):
        # The cost is still owed: the run is active, or it completed before RunPod reported its job ended
        # (the worker's "finished" callback), and RunPod's final status, which has the execution time, is
        # still to be read.
        PENDING = "pending", "Pending"
        # Nothing more will be learned: `cost_usd` is RunPod's cost, or stays empty when RunPod never gave
        # the execution time (the budget counts the estimate of a run that reached a GPU).
        SETTLED = "settled", "Settled"

    ACTIVE_STATUSES = (Status.PENDING, Status.QUEUED, Status.TRAINING)
    FINAL_STATUSES = (Status.COMPLETED, Status.FAILED, Status.CANCELLED)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    character = models.ForeignKey(Character, on_delete=models.CASCADE, related_name="training_runs")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="training_runs"
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    base_model = models.CharField(max_length=32, default="flux-dev")
    trigger_word = models.CharField(
        max_length=32,
        help_text="The character's trigger word when the run started: the LoRA answers to this one, even "
        "after the character's is changed.",
    )
    params = models.JSONField(default=dict, help_text="Validated training parameters.")
    manifest = models.JSONField(
        default=list, help_text="The dataset frozen at start: image names, hashes and captions."
    )

    provider = models.CharField(
        max_length=16, choices=Provider.choices, default=Provider.SERVERLESS, db_index=True
    )
    # A pod run's pod, chosen at submission; its job there is `runpod_job_id` (the UI's Job id).
    pod = models.ForeignKey(Pod, on_delete=models.SET_NULL, null=True, blank=True, related_name="runs")
    pod_outputs_deleted_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the pod run's job, dataset and files were deleted from the pod, once kept.",
    )
    pod_outputs_retry_at = models.DateTimeField(
        null=True,
        blank=True,
        editable=False,
        help_text="Before this, the sweep does not queue the deletion again (one queued is still retrying).",
    )

    runpod_job_id = models.CharField(
        max_length=128, blank=True, default="", help_text="The RunPod job id; for a pod run, the UI's job id."
    )
    attempts = models.PositiveIntegerField(default=0, help_text="Submissions tried.")
    last_provider_payload = models.JSONField(default=dict, blank=True)

    progress_step = models.PositiveIntegerField(default=0)
    progress_total = models.PositiveIntegerField(default=0)
    progress_loss = models.FloatField(null=True, blank=True)
    progress_eta_seconds = models.PositiveIntegerField(null=True, blank=True)

    error_code = models.CharField(max_length=32, blank=True, default="")
    error_message = models.TextField(blank=True, default="")

    lora_name = models.CharField("LoRA storage name", max_length=255, blank=True, default="")
    lora_bytes = models.PositiveBigIntegerField(null=True, blank=True)
    lora_sha256 = models.CharField(max_length=64, blank=True, default="")
    # The low-noise expert's file of a model with two (Wan 2.2); the fields above are then the high-noise one.
    lora_low_noise_name = models.CharField(max_length=255, blank=True, default="")
    lora_low_noise_bytes = models.PositiveBigIntegerField(null=True, blank=True)
    lora_low_noise_sha256 = models.CharField(max_length=64, blank=True, default="")

    gpu_type = models.CharField(max_length=64, blank=True, default="")
    delay_ms = models.PositiveBigIntegerField(null=True, blank=True)
    execution_ms = models.PositiveBigIntegerField(null=True, blank=True)
    estimated_cost_usd = models.DecimalField(max_digits=10, decimal_places=4, null=True, blank=True)
    cost_usd = models.DecimalField(max_digits=10, decimal_places=4, null=True, blank=True)
    startup_idle_cost_usd = models.DecimalField(
        max_digits=10,
        decimal_places=4,
        null=True,
        blank=True,
        help_text="What RunPod also bills beyond the job's execution time, estimated: the worker's start-up "
        "and idle timeout at the run's GPU price. Set with cost_usd; the budget counts both.",
    )
    cost_state = models.CharField(max_length=8, choices=CostState.choices, default=CostState.PENDING)
    execution_timeout_s = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="The executionTimeout its RunPod job is sent with (seconds): its steps on the slowest "
        "GPU the endpoint may place it on, plus start-up. Empty for older runs: the longest a run may take.",
    )

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # When RunPod's `/status` of the run's job is read next (an active run with a job, or a completed run
    # whose cost is pending); empty otherwise.
    next_poll_at = models.DateTimeField(null=True, blank=True, db_index=True)
    # When the sweep sends a pending run's `/run` (again): set at start, pushed past each attempt's grace
    # period or retry; empty once the run has a job or has ended.
    submit_due_at = models.DateTimeField(null=True, blank=True)
    # Set just before `/run` is called and cleared when its outcome is known: a set value with no job id
    # means a job may exist that we never heard of, so the run is not blindly submitted again.
    submit_attempted_at = models.DateTimeField(null=True, blank=True)
    worker_seen_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Last time the GPU worker called back for this run (a pod run: its job last moved).",
    )
    worker_delivery_id = models.CharField(
        max_length=64,
        blank=True,
        default="",
        help_text="The handler invocation (delivery) of the job that holds the run; empty for older workers.",
    )
    polls_since_change = models.PositiveIntegerField(
        default=0, help_text="Polls that found nothing new; the poll interval grows with it."
    )
    # The checkpoint whose file the LoRA fields name, once its owner chose one ("use this checkpoint"); null
    # while they name the run's own final LoRA. `lora_chosen_at` orders it among the character's LoRAs.
    lora_step = models.PositiveIntegerField(null=True, blank=True)
    lora_chosen_at = models.DateTimeField(null=True, blank=True)
    lora_choice = models.CharField(
        max_length=8,
        choices=LoraChoice.choices,
        default=LoraChoice.FINAL,
        help_text="Who chose the run's LoRA.",
    )
    # Set once the run's checkpoints were compared by likeness after it completed (whatever the outcome):
    # the studio chooses at most once, and never over its owner's choice.
    likeness_settled_at = models.DateTimeField(null=True, blank=True)
    log_tail = models.TextField(
        blank=True,
        default="",
        help_text="The last lines of the trainer's output of a failed run, redacted by the worker.",
    )

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["character"],
                condition=Q(status__in=["pending", "queued", "training"]),
                name="one_active_run_per_character",
                violation_error_message="This character already has a training run in progress.",
            ),
            models.UniqueConstraint(
                fields=["runpod_job_id"],
                condition=~Q(runpod_job_id=""),
                name="runpod_job_id_unique",
            ),
        ]
        indexes = [
            # The sweep's search for due runs reads runs whose cost is pending only (active ones included).
            models.Index(
                fields=["next_poll_at"], name="run_cost_pending_poll_idx", condition=Q(cost_state="pending")
            ),
            models.Index(fields=["submit_due_at"], name="run_submit_due_idx", condition=Q(status="pending")),
        ]

    def __str__(self) -> str:
        return f"{self.character} · {self.get_status_display()} · {self.id}"

    @property
    def is_final(self) -> bool:
        return self.status in self.FINAL_STATUSES

    @property
    def base_model_label(self) -> str:
        info = BASE_MODELS.get(self.base_model)
        return info.label if info else self.base_model

    @property
    def progress_percent(self) -> int:
        if self.status == self.Status.COMPLETED:
            return 100
        if not self.progress_total:
            return 0
        return min(100, int(100 * self.progress_step / self.progress_total))


class TrainingEvent(models.Model):
    """One status change of a run, written in the same transaction as the change.

    It is also the outbox of `training_run_status_changed`: `announced_at` is set once the signal's
    receivers have run, so a change whose announcement was lost with its process is announced by the sweep.
    """

    class Source(models.TextChoices):
        USER = "user", "User"
        API = "api", "API"
        ADMIN = "admin", "Admin"
        WEBHOOK = "webhook", "RunPod webhook"
        POLL = "poll", "Poll"
        WORKER = "worker", "Worker callback"
        SYSTEM = "system", "System"

    run = models.ForeignKey(TrainingRun, on_delete=models.CASCADE, related_name="events")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    from_status = models.CharField(max_length=16, blank=True, default="")
    to_status = models.CharField(max_length=16, choices=TrainingRun.Status.choices)
    source = models.CharField(max_length=16, choices=Source.choices)
    detail = models.JSONField(default=dict, blank=True)
    announced_at = models.DateTimeField(null=True, blank=True)
    announce_attempts = models.PositiveSmallIntegerField(default=0, help_text="Announcements that failed.")
    announce_due_at = models.DateTimeField(
        null=True, blank=True, help_text="When the sweep announces the change, if it is still unannounced."
    )

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [
            models.Index(
                fields=["announce_due_at"],
                condition=models.Q(announced_at__isnull=True),
                name="training_event_unannounced",
            )
        ]

    def __str__(self) -> str:
        return f"{self.from_status or '∅'} → {self.to_status} ({self.source})"


class StrayJob(models.Model):
    """A RunPod job no run owns, which must be stopped: until RunPod cancels it, it bills GPU time and may
    upload a LoRA over its run's.

    Written in the same transaction that decides the job is stray, so the cancel survives a lost task;
    beat's sweep queues the cancel again while it is pending, and gives it up once RunPod could no longer be
    running the job.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Cancel pending"
        CANCELLED = "cancelled", "Cancelled"
        GONE = "gone", "Gone (RunPod no longer knows it)"
        GIVEN_UP = "given_up", "Given up"

    runpod_job_id = models.CharField(max_length=128, unique=True)
    # Kept when the run is deleted with its character: the job must still be stopped.
    run = models.ForeignKey(
        TrainingRun, on_delete=models.SET_NULL, null=True, blank=True, related_name="stray_jobs"
    )
    reason = models.CharField(max_length=200, help_text="Why no run owns the job.")
    # The storage folder of the erased character whose run the job trained: its signed upload links may
    # still write there until the job ends, so the folder is emptied again then, and this cleared.
    erased_folder = models.CharField(max_length=255, blank=True, default="")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0, help_text="Cancels sent to RunPod.")
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    # When the next cancel may be sent; empty once the job has ended. Claiming an attempt pushes it past
    # the attempt's longest call, so a killed attempt becomes due again.
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # The sweep's search for overdue cancels reads pending rows only.
            models.Index(
                fields=["next_attempt_at"],
                name="stray_job_due_idx",
                condition=Q(status="pending"),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.runpod_job_id} ({self.get_status_display()})"


class DeletedRunSpend(models.Model):
    """What a deleted run had cost: GPU money stays spent when its run, character or account goes, so this
    month's spend and the admin's totals never fall with a delete.

    Written by a `pre_delete` receiver of `TrainingRun`, which every path sends (a run deleted alone, with
    its character, or with its owner's account). Only ever added to. The owner is kept as a bare id (no
    database constraint), so the row outlives a deleted account.
    """

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    owner_username = models.CharField(max_length=150)
    run_id = models.UUIDField(unique=True)
    character_name = models.CharField(max_length=100)
    amount_usd = models.DecimalField(max_digits=10, decimal_places=4)
    exact = models.BooleanField(
        help_text="RunPod's cost; otherwise the estimate of a run that reached a GPU."
    )
    finished_at = models.DateTimeField(help_text="When the run ended (or was deleted, if it never did).")
    deleted_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["owner", "finished_at"], name="deleted_spend_owner_month_idx")]

    def __str__(self) -> str:
        return f"{self.owner_username} · ${self.amount_usd} · run {self.run_id}"


class RunPodEndpointStatus(models.Model):
    """What the studio last found wrong with a RunPod endpoint itself, rather than with one run's job: RunPod
    no longer knows it (a wrong or deleted endpoint: every job of it answers 404), or allows it no worker
    (RunPod scales an endpoint idle for 7 days to max workers 0 and leaves it there). One row per endpoint
    id, so a corrected RUNPOD_ENDPOINT_ID starts clean.

    Written by `training.services.endpoint` (the sweep's look before it declares a job lost, and beat's
    endpoint check); the admin dashboard shows it, and the pages of runs waiting on it say so.
    """

    class Problem(models.TextChoices):
        NONE = "", "None"
        NOT_FOUND = "not_found", "RunPod does not know the endpoint"
        SCALED_TO_ZERO = "scaled_to_zero", "No worker allowed (max workers 0)"
        UNREADABLE = "unreadable", "The endpoint's settings cannot be read"

    endpoint_id = models.CharField(max_length=128, unique=True)
    problem = models.CharField(max_length=16, choices=Problem.choices, blank=True, default="")
    message = models.TextField(blank=True, default="", help_text="What is wrong and what to do.")
    problem_since = models.DateTimeField(null=True, blank=True)
    checked_at = models.DateTimeField(null=True, blank=True)
    # As the last endpoint check read them: RunPod's max workers and its queued jobs (`/health`).
    max_workers = models.IntegerField(null=True, blank=True)
    queued_jobs = models.IntegerField(null=True, blank=True)
    workers_restored_at = models.DateTimeField(
        null=True, blank=True, help_text="When the studio last raised max workers RunPod had set to 0."
    )

    class Meta:
        verbose_name = "RunPod endpoint status"
        verbose_name_plural = "RunPod endpoint statuses"

    def __str__(self) -> str:
        return f"{self.endpoint_id}: {self.get_problem_display() if self.problem else 'no problem'}"


def run_artifact_prefix(run: TrainingRun) -> str:
    """Where a run's samples and checkpoints live: `characters/<character>/runs/<run>/`."""
    return f"characters/{run.character_id}/runs/{run.pk}/"


class Checkpoint(models.Model):
    """A LoRA saved by AI Toolkit at `step` (and the optimizer state to resume from it), verified in storage.

    Recorded as the worker reports it; `verified_at` is set once the stored file's size and sha256 match
    the report (read from storage by a task, never in the callback), and only verified ones are shown or
    resumed from. The run's final LoRA is one too (`final`), so any of a run's LoRAs can be made the
    character's current one. A pruned checkpoint keeps its row, without its files.
    """

    run = models.ForeignKey(TrainingRun, on_delete=models.CASCADE, related_name="checkpoints")
    step = models.PositiveIntegerField()
    final = models.BooleanField(default=False, help_text="The run's final LoRA, not a checkpoint.")
    name = models.CharField(max_length=255, help_text="AI Toolkit's file name.")
    file = models.CharField("storage name", max_length=255)
    bytes = models.PositiveBigIntegerField()
    sha256 = models.CharField(max_length=64)
    optimizer_file = models.CharField(
        "optimizer state storage name", max_length=255, blank=True, default="", help_text="Empty: none."
    )
    optimizer_bytes = models.PositiveBigIntegerField(null=True, blank=True)
    optimizer_sha256 = models.CharField(max_length=64, blank=True, default="")
    verified_at = models.DateTimeField(null=True, blank=True)
    problem = models.CharField(max_length=300, blank=True, default="", help_text="Why it did not verify.")
    pruned_at = models.DateTimeField(null=True, blank=True, help_text="When its files were deleted.")
    # Its samples' likeness (`training.services.likeness`): the median, 0 to 1; null until one is scored.
    likeness = models.FloatField(null=True, blank=True)
    likeness_samples = models.PositiveSmallIntegerField(null=True, blank=True)
    likeness_faces = models.PositiveSmallIntegerField(null=True, blank=True, help_text="Samples with a face.")
    likeness_copies = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Samples nearly copying a training photo."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # Set once `training_run_artifact_created` has been sent (the row is its outbox).
    announced_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "step"]
        constraints = [models.UniqueConstraint(fields=["run", "step"], name="checkpoint_once_per_step")]
        indexes = [
            models.Index(
                fields=["created_at"], condition=Q(announced_at__isnull=True), name="checkpoint_unannounced"
            )
        ]

    def __str__(self) -> str:
        return f"{self.run_id} · step {self.step}{' (final)' if self.final else ''}"

    @property
    def likeness_copying(self) -> bool:
        return copying(faces=self.likeness_faces or 0, copies=self.likeness_copies or 0)

    @property
    def resumable(self) -> bool:
        return not self.final and bool(self.optimizer_file) and self.pruned_at is None


class Sample(models.Model):
    """An image AI Toolkit rendered at `step` from the run's sample prompt `prompt_index`; once its stored
    file matches the worker's report, `verified_at` is set and its thumbnails are made (once)."""

    run = models.ForeignKey(TrainingRun, on_delete=models.CASCADE, related_name="samples")
    step = models.PositiveIntegerField()
    prompt_index = models.PositiveSmallIntegerField()
    prompt = models.TextField(help_text="The prompt as the run had it.")
    image = models.FileField(max_length=255)
    thumbnail = models.FileField(max_length=255, blank=True)
    thumbnail_large = models.FileField(max_length=255, blank=True)
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    bytes = models.PositiveBigIntegerField()
    sha256 = models.CharField(max_length=64)
    verified_at = models.DateTimeField(null=True, blank=True)
    problem = models.CharField(max_length=300, blank=True, default="", help_text="Why it did not verify.")
    # How much its face looks like the character's photos (`characters.faces.likeness`), once scored.
    scored_at = models.DateTimeField(null=True, blank=True)
    face_found = models.BooleanField(null=True, blank=True)
    likeness = models.FloatField(null=True, blank=True, help_text="0 to 1; 0 without a face or for a copy.")
    copy_of = models.CharField(
        max_length=255, blank=True, default="", help_text="The training photo it nearly copies."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    announced_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "-step", "prompt_index"]
        constraints = [
            models.UniqueConstraint(
                fields=["run", "step", "prompt_index"], name="sample_once_per_step_prompt"
            )
        ]
        indexes = [
            models.Index(
                fields=["created_at"], condition=Q(announced_at__isnull=True), name="sample_unannounced"
            )
        ]

    def __str__(self) -> str:
        return f"{self.run_id} · step {self.step} · prompt {self.prompt_index}"


class LossSeries(models.Model):
    """A run's loss and validation loss, one row per run: `[[step, value], ...]` in step order, merged from
    every progress callback (a point per step at most; a resumed delivery's points replace those past its
    start)."""

    run = models.OneToOneField(TrainingRun, on_delete=models.CASCADE, primary_key=True, related_name="loss")
    loss = models.JSONField(default=list)
    val_loss = models.JSONField(default=list)
    # The delivery whose `resumed_from_step` last cut the series: each delivery cuts it once, on its first
    # callback, and its own points are kept after that.
    resumed_delivery_id = models.CharField(max_length=64, blank=True, default="")
    resumed_from_step = models.PositiveIntegerField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "loss series"

    def __str__(self) -> str:
        return f"{self.run_id} · {len(self.loss)} points"
