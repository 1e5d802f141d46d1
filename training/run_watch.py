"""What the run page shows of how a run learns: the sample gallery with the checkpoints beside their
samples, the loss chart, and the versions its script polls to know when to fetch them again.

The gallery has one row per sample prompt and one column per step, newest first. A step's column carries
the checkpoint AI Toolkit saved there (or the run's final LoRA at its last step), so a checkpoint is chosen
by looking at what it draws. Only what was verified in storage is shown: a reported file that does not
match what the worker said it wrote is not the run's.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from characters.faces.likeness import SAME_PERSON_LIKENESS
from runpod_worker.contract import ContractError, TrainingParams, sample_steps
from training.likeness_chart import LikenessPoint, likeness_chart_svg, percent
from training.loss_chart import NARROW, WIDE, loss_chart_svg
from training.models import Checkpoint, LossSeries, Sample, TrainingRun
from training.selectors import (
    character_current_lora,
    training_run_checkpoints,
    training_run_loss,
    training_run_samples,
)


@dataclass(frozen=True)
class Column:
    """One step of the gallery: its checkpoint (if one was saved there) and whether it is the LoRA the
    character uses now."""

    step: int
    checkpoint: Checkpoint | None
    current: bool

    @property
    def downloadable(self) -> bool:
        return self.checkpoint is not None and self.checkpoint.pruned_at is None


@dataclass(frozen=True)
class Row:
    """One sample prompt and, for each column, its sample at that step (None where none was rendered)."""

    prompt_index: int
    prompt: str
    cells: list[tuple[Column, Sample | None]]


@dataclass(frozen=True)
class Gallery:
    columns: list[Column]
    rows: list[Row]
    sample_count: int

    @property
    def has_samples(self) -> bool:
        return self.sample_count > 0


# ============================================================================================ the LoRA


def current_step(run: TrainingRun) -> int | None:
    """The step of this run's LoRA that is the character's current one, if one of them is: the checkpoint
    its owner chose (`lora_step`), else the run's final LoRA, saved at its last step."""
    current = character_current_lora(run.character)
    if current is None or current.pk != run.pk:
        return None
    if current.lora_step is not None:
        return current.lora_step
    final = run.checkpoints.filter(final=True).values_list("step", flat=True).first()
    return final if final is not None else int(run.progress_total or run.params.get("steps") or 0) or None


def checkpoint_download_name(run: TrainingRun, checkpoint: Checkpoint) -> str:
    """`<trigger word>-<run id prefix>_<step:09d>.safetensors`, numbered as AI Toolkit numbers its saves:
    beside the run's LoRA in a folder, and telling which save it is. The final LoRA keeps the run's name."""
    if checkpoint.final:
        return f"{run.trigger_word}-{str(run.pk)[:8]}.safetensors"
    return f"{run.trigger_word}-{str(run.pk)[:8]}_{checkpoint.step:09d}.safetensors"


# ============================================================================================ gallery


def gallery_build(run: TrainingRun) -> Gallery:
    samples, checkpoints = list(training_run_samples(run)), list(training_run_checkpoints(run))
    chosen = current_step(run)
    by_step = {checkpoint.step: checkpoint for checkpoint in checkpoints}
    steps = sorted({sample.step for sample in samples} | set(by_step), reverse=True)
    columns = [Column(step=step, checkpoint=by_step.get(step), current=step == chosen) for step in steps]
    return Gallery(columns=columns, rows=_rows(run, samples, columns), sample_count=len(samples))


def _rows(run: TrainingRun, samples: list[Sample], columns: list[Column]) -> list[Row]:
    """A row for each of the run's prompts, and for any prompt a sample names that the run's parameters no
    longer list (a run started before its prompts were kept)."""
    prompts: dict[int, str] = dict(enumerate(sample_prompts(run)))
    cells: dict[tuple[int, int], Sample] = {}
    for sample in samples:
        prompts.setdefault(sample.prompt_index, sample.prompt)
        cells[(sample.prompt_index, sample.step)] = sample
    if not samples:
        return []
    return [
        Row(
            prompt_index=index,
            prompt=prompt_as_rendered(prompt, run.trigger_word),
            cells=[(column, cells.get((index, column.step))) for column in columns],
        )
        for index, prompt in sorted(prompts.items())
    ]


def sample_prompts(run: TrainingRun) -> list[str]:
    prompts = run.params.get("sample_prompts") or []
    return [str(prompt) for prompt in prompts] if isinstance(prompts, list) else []


def prompt_as_rendered(prompt: str, trigger_word: str) -> str:
    """The prompt as AI Toolkit drew it: `[trigger]` and `[name]` replaced by the run's trigger word
    (`inject_trigger_into_prompt`, toolkit/prompt_utils.py:715-735 at 27a03a91, called for each sample
    prompt with add_if_not_present=False, jobs/process/BaseSDTrainProcess.py:326-329)."""
    for token in ("[trigger]", "[name]"):
        prompt = prompt.replace(token, trigger_word)
    return prompt


def run_sample_steps(run: TrainingRun) -> list[int]:
    """The steps AI Toolkit renders the run's samples at (`runpod_worker.contract.sample_steps`); none for a
    run set to render none (`sample_every` 0, no prompts) or whose parameters predate samples."""
    try:
        return sample_steps(TrainingParams.from_dict(run.params))
    except ContractError:
        return []


def sampling(run: TrainingRun) -> bool:
    """Whether the run was set to render samples at all (older runs and `sample_every` 0 are not)."""
    return bool(run_sample_steps(run))


def next_sample_step(run: TrainingRun) -> int | None:
    """The step at which an active run renders its next samples, for the gallery's empty state."""
    if run.is_final:
        return None
    return next((step for step in run_sample_steps(run) if step >= run.progress_step), None)


def samples_due(run: TrainingRun, shown: list[tuple[int, int, str]]) -> bool:
    """Whether samples are on their way: reported and not yet verified, or the trainer is past a sample step
    (by less than one interval) whose samples are not all shown. The page then polls faster, so a sample
    shows about a second after it is verified rather than two; a resumed run that skipped a step is past
    its window soon and stops hurrying."""
    if run.is_final:
        return False
    if run.samples.filter(verified_at__isnull=True, problem="").exists():
        return True
    steps, prompts = run_sample_steps(run), len(sample_prompts(run))
    every = max(1, int(run.params.get("sample_every") or 0))
    per_step: dict[int, int] = {}
    for step, _, _ in shown:
        per_step[step] = per_step.get(step, 0) + 1
    return any(step <= run.progress_step < step + every and per_step.get(step, 0) < prompts for step in steps)


# ============================================================================================ chart


@dataclass(frozen=True)
class Chart:
    """The loss chart's two drawings (training.loss_chart: WIDE and NARROW), None before the first point."""

    wide: str | None
    narrow: str | None


def chart_build(run: TrainingRun, series: LossSeries | None = None) -> Chart:
    series = series if series is not None else training_run_loss(run)
    if series is None:
        return Chart(wide=None, narrow=None)
    total = int(run.progress_total or run.params.get("steps") or 0) or None
    title = f"Loss by step of the run training {run.trigger_word}"
    drawings = {
        layout.name: loss_chart_svg(
            loss=series.loss, val_loss=series.val_loss, total_steps=total, layout=layout, title=title
        )
        for layout in (WIDE, NARROW)
    }
    return Chart(wide=drawings["wide"], narrow=drawings["narrow"])


# ============================================================================================ likeness


def likeness_build(run: TrainingRun) -> Chart:
    """The likeness chart's two drawings (training.likeness_chart), None before a checkpoint is scored."""
    current = current_step(run)
    points = [
        LikenessPoint(
            step=checkpoint.step,
            score=checkpoint.likeness,
            faces=checkpoint.likeness_faces or 0,
            samples=checkpoint.likeness_samples or 0,
            copying=checkpoint.likeness_copying,
            current=checkpoint.step == current,
        )
        for checkpoint in training_run_checkpoints(run)
        if checkpoint.likeness is not None
    ]
    total = int(run.progress_total or run.params.get("steps") or 0) or None
    title = f"Likeness to {run.character.name} by checkpoint"
    drawings = {
        layout.name: likeness_chart_svg(points, total_steps=total, layout=layout, title=title)
        for layout in (WIDE, NARROW)
    }
    return Chart(wide=drawings["wide"], narrow=drawings["narrow"])


def likeness_comparing(run: TrainingRun) -> bool:
    """The run completed and the studio is still comparing its checkpoints by likeness (its page keeps
    watching until it has chosen)."""
    unsettled = run.status == TrainingRun.Status.COMPLETED and run.likeness_settled_at is None
    # Nothing to compare: a run without samples, or a character not a person.
    return unsettled and run.character.is_person and sampling(run)


def lora_choice_explained(run: TrainingRun) -> str:
    """Which of the run's LoRAs it uses, and why, in a sentence for its page ("" when there is nothing to
    say: no LoRA, or nothing was compared)."""
    if not run.lora_name:
        return ""
    name = run.character.name
    if run.lora_choice == TrainingRun.LoraChoice.OWNER:
        return "You chose this one; the studio leaves your choice as it is."
    if run.status != TrainingRun.Status.COMPLETED:
        return ""
    if run.likeness_settled_at is None:
        return (
            f"Comparing each checkpoint's samples with {name}'s photos; the best may replace the final LoRA."
        )
    checkpoints = {c.step: c for c in training_run_checkpoints(run) if c.likeness is not None}
    final = next((c for c in checkpoints.values() if c.final), None)
    if run.lora_choice == TrainingRun.LoraChoice.LIKENESS and run.lora_step in checkpoints:
        chosen = checkpoints[run.lora_step]
        sentence = (
            f"The studio chose the checkpoint at step {chosen.step}: its samples look most like {name} "
            f"(likeness {percent(chosen.likeness or 0.0)}, a face in {chosen.likeness_faces} of "
            f"{chosen.likeness_samples})"
        )
        if final is not None and final.likeness_copying:
            sentence += ", and the final LoRA's samples copy the training photos rather than draw " + name
        elif final is not None:
            sentence += f", against {percent(final.likeness or 0.0)} for the final LoRA"
        return sentence + ". Choose another below if you prefer it."
    if not checkpoints:
        return ""  # nothing was compared: not a person, no photo with a face, or no samples
    if not any(c.likeness_faces for c in checkpoints.values()):
        return (
            f"No sample showed a face, so the studio could not tell which checkpoint looks most like {name}: "
            "the final LoRA is kept. Look at the samples before you use it."
        )
    if not any(c.likeness for c in checkpoints.values()):
        return (
            f"No checkpoint's samples looked like {name} often enough to compare (most showed no face or "
            "copied a training photo), so the final LoRA is kept. Look at the samples before you use it."
        )
    if final is not None and final.likeness is not None:
        verdict = "above" if final.likeness >= SAME_PERSON_LIKENESS else "below"
        return (
            f"The final LoRA's samples look the most like {name} (likeness {percent(final.likeness)}, "
            f"{verdict} the same-person line)."
        )
    return ""


# ============================================================================================ captions


def captions_summary(run: TrainingRun) -> str:
    """What the worker's captioner did for the photos sent without a caption, from the completion's event, in
    a sentence for the run page ("" when it captioned nothing: every photo had a caption, or it was off)."""
    event = run.events.filter(to_status=TrainingRun.Status.COMPLETED, detail__has_key="captions_made").first()
    if event is None:
        return ""
    made, kept = int(event.detail.get("captions_made") or 0), int(event.detail.get("captions_kept") or 0)
    error = str(event.detail.get("caption_error") or "")
    sentence = (
        f"The worker wrote captions for {made} photo{'s' if made != 1 else ''} sent without one; "
        f"{kept} {'are' if kept != 1 else 'is'} now on the character's photos, marked Auto, to read and edit."
        if made
        else ""
    )
    if error:
        sentence += (
            f"{' ' if sentence else ''}Some photos could not be captioned ({error}), so they trained on the "
            "trigger word alone."
        )
    return sentence


# ============================================================================================ versions


def watch_versions(run: TrainingRun) -> dict[str, Any]:
    """Short tokens that change whenever the gallery or the chart would draw differently: the page's script
    compares them on each poll and fetches only the part that changed; `soon` asks it to poll faster while
    samples are on their way (`samples_due`)."""
    samples = sorted(
        run.samples.filter(verified_at__isnull=False).values_list("step", "prompt_index", "sha256")
    )
    # One read of the checkpoints serves both parts: the page polls this every second or two.
    checkpoints = sorted(
        run.checkpoints.filter(verified_at__isnull=False).values_list(
            "step", "pruned_at", "likeness", "likeness_copies"
        )
    )
    kept = [(step, str(pruned)) for step, pruned, _, _ in checkpoints]
    likeness = [(step, score, copies) for step, _, score, copies in checkpoints if score is not None]
    current = current_step(run)
    gallery = [samples, kept, current, likeness, run.likeness_settled_at is not None]
    series = LossSeries.objects.filter(run=run).values_list("updated_at", flat=True).first()
    chart = [str(series), run.progress_total, run.params.get("steps"), likeness, current]
    return {
        "gallery": _digest(gallery),
        "chart": _digest(chart) if series or likeness else "",
        "soon": samples_due(run, samples),
    }


def _digest(value: object) -> str:
    return hashlib.sha256(repr(value).encode()).hexdigest()[:16]
