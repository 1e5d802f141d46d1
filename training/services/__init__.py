"""The only code that writes training runs, one module per concern; callers import from here.

    queue          the tasks queued after commit, by name (the services never import the tasks)
    transitions    lock, check, transition, event, save — the one way a run changes status
    announcements  `training_run_status_changed` after commit, at least once (the event is the outbox)
    schedule       when the sweep reads a run's status again, deadlines, liveness
    artifacts      the checkpoints, samples and loss a progress callback reports, recorded as reported
    verification   those files read back from storage, thumbnails made, each announced once verified
    job_input      what the GPU job is given: photo links, upload links, parameters, callback, resume
    checkpoints    what a lost worker resumes from, and the storage cap's pruning once a run has ended
    likeness       each sample's likeness to the character, each checkpoint's, the best one chosen
    start          start, retry, auto-start: a pending run with its dataset and parameters frozen
    submission     `/run`: at most once per attempt, the attempt written first, when to try again
    status         RunPod's status of the job applied to the run
    worker         the worker's callbacks: started, progress, finished
    completion     `training_run_complete`: the one way a run completes, whatever told us it ended
    pod_outputs    a pod run's files brought from its pod into storage, recorded as a worker's report
    pod_lifecycle  a pod: created on RunPod or registered, started for a waiting run, stopped once idle
    pod_runs       pod runs: the job made and started on the pod's AI Toolkit UI, polled, ended, removed
    recovery       the LoRA in storage decides when RunPod's result and the worker's report are lost
    cost           the run's cost as a state: pending until RunPod's execution time is read, then settled
    poll           the sweep's batch of due runs and the `/status` read of one
    ending         cancel and fail
    stray_jobs     RunPod jobs no run owns, cancelled until RunPod takes it
    endpoint       the RunPod endpoint itself: unknown to RunPod, scaled to zero; told to staff once
    reports        what RunPod and the worker report about a job, copied onto the run

Network calls (RunPod, storage) happen outside transactions: commit, call, then record the result in a
second short one. See docs/ARCHITECTURE.md for the flow from start to announcement.
"""

from training.services.announcements import (
    ANNOUNCE_MAX_ATTEMPTS,
    ANNOUNCE_RETRY,
    training_events_announce_overdue,
)
from training.services.artifacts import ArtifactReport, artifact_report_parse, artifact_report_record
from training.services.checkpoints import training_run_checkpoints_prune, training_run_resume_spec
from training.services.completion import (
    Completion,
    RunEnd,
    training_run_complete,
    training_run_lora_choose,
)
from training.services.ending import training_run_cancel, training_run_fail
from training.services.endpoint import runpod_endpoint_check, runpod_endpoint_known
from training.services.likeness import (
    best_checkpoint,
    likeness_outstanding,
    likeness_runs_overdue,
    training_run_best_choose,
    training_run_likeness_score,
)
from training.services.pod_lifecycle import pod_busy, pod_create, pod_register, pod_start, pods_check
from training.services.pod_outputs import pod_runs_outputs_overdue
from training.services.pod_runs import pod_choose, pod_run_outputs_delete
from training.services.poll import training_run_poll, training_runs_claim_due
from training.services.recovery import CLAIMED_ELSEWHERE, JOB_LOST, LostReport
from training.services.schedule import (
    COST_POLL,
    DEADLINE_MARGIN,
    QUEUED_POLL,
    RUNPOD_RESULT_RETENTION,
    TRAINING_POLL,
    TRAINING_POLL_WITH_CALLBACKS,
)
from training.services.start import (
    training_params_validate,
    training_run_autostart,
    training_run_retry,
    training_run_start,
)
from training.services.status import RUNPOD_STATUS_MAP, training_run_apply_status, training_run_note_webhook
from training.services.stray_jobs import (
    STRAY_CANCEL_RETRY,
    StrayCancelOutcome,
    runpod_job_cancel,
    stray_job_record,
    stray_jobs_claim_due,
    stray_jobs_erased_folders_empty,
    stray_jobs_of_erased_runs,
)
from training.services.submission import (
    SUBMIT_RETRY,
    submit_retry_in,
    training_job_input,
    training_run_submit,
)
from training.services.transitions import (
    RunId,
    Source,
    Status,
    run_fail,
    run_locked,
    run_transition,
    transition_allowed,
)
from training.services.verification import artifact_runs_overdue, training_run_artifacts_verify
from training.services.worker import (
    CLAIM_RETRY_MARGIN_S,
    CONTINUE,
    WorkerAnswer,
    training_run_worker_finished,
    training_run_worker_progress,
    training_run_worker_started,
)

__all__ = [
    "ANNOUNCE_MAX_ATTEMPTS",
    "ANNOUNCE_RETRY",
    "CLAIMED_ELSEWHERE",
    "CLAIM_RETRY_MARGIN_S",
    "CONTINUE",
    "COST_POLL",
    "DEADLINE_MARGIN",
    "JOB_LOST",
    "QUEUED_POLL",
    "RUNPOD_RESULT_RETENTION",
    "RUNPOD_STATUS_MAP",
    "STRAY_CANCEL_RETRY",
    "SUBMIT_RETRY",
    "TRAINING_POLL",
    "TRAINING_POLL_WITH_CALLBACKS",
    "ArtifactReport",
    "Completion",
    "LostReport",
    "RunEnd",
    "RunId",
    "Source",
    "Status",
    "StrayCancelOutcome",
    "WorkerAnswer",
    "artifact_report_parse",
    "artifact_report_record",
    "artifact_runs_overdue",
    "best_checkpoint",
    "likeness_outstanding",
    "likeness_runs_overdue",
    "pod_busy",
    "pod_choose",
    "pod_create",
    "pod_register",
    "pod_run_outputs_delete",
    "pod_runs_outputs_overdue",
    "pod_start",
    "pods_check",
    "run_fail",
    "run_locked",
    "run_transition",
    "runpod_endpoint_check",
    "runpod_endpoint_known",
    "runpod_job_cancel",
    "stray_job_record",
    "stray_jobs_claim_due",
    "stray_jobs_erased_folders_empty",
    "stray_jobs_of_erased_runs",
    "submit_retry_in",
    "training_events_announce_overdue",
    "training_job_input",
    "training_params_validate",
    "training_run_apply_status",
    "training_run_artifacts_verify",
    "training_run_autostart",
    "training_run_best_choose",
    "training_run_cancel",
    "training_run_checkpoints_prune",
    "training_run_complete",
    "training_run_fail",
    "training_run_likeness_score",
    "training_run_lora_choose",
    "training_run_note_webhook",
    "training_run_poll",
    "training_run_resume_spec",
    "training_run_retry",
    "training_run_start",
    "training_run_submit",
    "training_run_worker_finished",
    "training_run_worker_progress",
    "training_run_worker_started",
    "training_runs_claim_due",
    "transition_allowed",
]
