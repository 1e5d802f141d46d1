"""Web pages for training: the start form with its confirm step, the run page with its progress JSON and
the parts its script redraws (sample gallery, loss chart), cancel, retry, the LoRA and checkpoint
downloads, sample images, and the runs list. Reads go through owner-scoped selectors (another
user's run or character answers 404); writes go through `training.services`."""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.files.storage import default_storage
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.gzip import gzip_page
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from characters.models import Character
from characters.selectors import character_get_for, character_identity_check
from runpod_worker.contract import BaseModel
from studio.errors import ApplicationError, NotFound
from studio.models import User
from training import gpu_pools, pricing, services
from training.artifacts import LOW_NOISE, lora_download_name
from training.base_models import BASE_MODELS
from training.budget import Budget, budget_advice, user_budget
from training.dataset import character_dataset_size, dataset_size
from training.forms import TrainingForm
from training.models import Sample, TrainingEvent, TrainingRun
from training.preflight import training_retry_refusal, training_start_refusal
from training.presets import PRESETS
from training.run_watch import (
    captions_summary,
    chart_build,
    checkpoint_download_name,
    gallery_build,
    likeness_build,
    likeness_comparing,
    lora_choice_explained,
    next_sample_step,
    sampling,
    watch_versions,
)
from training.selectors import (
    run_has_lora,
    training_cost_estimate,
    training_run_charge,
    training_run_cost_so_far,
    training_run_endpoint_notice,
    training_run_get_for,
    training_run_list_for,
)
from training.serializers import run_page_document

RUNS_PER_PAGE = 25
USER = TrainingEvent.Source.USER


def _budget(user: User, steps: int, base_model: str = BaseModel.DEFAULT) -> Budget:
    return user_budget(user, steps=steps, base_model=base_model)


# ============================================================================================ start


@login_required
@require_http_methods(["GET", "POST"])
def training_start(request: HttpRequest, character_id: uuid.UUID) -> HttpResponse:
    """GET: the form. POST: the confirm step (estimate and budget), then, with `confirm`, the run."""
    character = character_get_for(request.user, character_id)
    if request.method == "GET":
        initial = {"base_model": character.base_model}
        return _render_form(
            request, character, TrainingForm(initial=initial, pods_allowed=_pods_allowed(request))
        )
    form = TrainingForm(request.POST, pods_allowed=_pods_allowed(request))
    if not form.is_valid() or "edit" in request.POST:
        return _render_form(request, character, form)
    if "confirm" not in request.POST:
        return _render_confirm(request, character, form)
    try:
        run = services.training_run_start(
            character=character,
            requested_by=request.user,  # type: ignore[arg-type]
            params=form.overrides(),
            preset=form.cleaned_data["preset"],
            base_model=form.cleaned_data["base_model"] or None,
            provider=form.cleaned_data.get("provider") or TrainingRun.Provider.SERVERLESS,
            source=USER,
        )
    except ApplicationError as error:
        messages.error(request, error.message)
        return _render_form(request, character, form, status=error.http_status)
    messages.success(request, f"Training of {character.name} has started.")
    return redirect("training:run-detail", run_id=run.pk)


def _pods_allowed(request: HttpRequest) -> bool:
    user: Any = request.user
    return bool(user.may_train_on_pods)


def _render_form(
    request: HttpRequest, character: Character, form: TrainingForm, *, status: int | None = None
) -> HttpResponse:
    user: User = request.user  # type: ignore[assignment]
    image_count = character.images.count()
    preset = _chosen_preset(form)
    model = _chosen_base_model(form, character)
    budget = _budget(user, PRESETS[preset]["steps"], model)
    context = {
        "character": character,
        "form": form,
        "presets": [
            {
                "name": name,
                **values,
                "estimate": training_cost_estimate(steps=values["steps"], base_model=model),
            }
            for name, values in PRESETS.items()
        ],
        "base_models": [_base_model_choice(key) for key in BASE_MODELS],
        "chosen_base_model": model,
        "budget": budget,
        "budget_advice": budget_advice(budget=budget, preset=preset, steps=PRESETS[preset]["steps"]),
        "image_count": image_count,
        "min_images": settings.TRAINING_MIN_IMAGES,
        "active_run": character.training_runs.filter(status__in=TrainingRun.ACTIVE_STATUSES).first(),
        "identity": character_identity_check(character),
    }
    if status is None:
        status = 400 if form.errors else 200
    return render(request, "training/training_form.html", context, status=status)


def _base_model_choice(key: str) -> dict[str, Any]:
    """What the form says of a base model: its cost, the card it needs and how long 1000 steps take on the
    slowest GPU it may get here, or that no GPU pool of the studio fits it."""
    slowest, per_step = pricing.slowest_gpu(key)
    return {
        "info": BASE_MODELS[key],
        "per_1000_steps": pricing.price_per_1000_steps(key),
        "unavailable": gpu_pools.pool_refusal(key),
        "slowest_gpu": slowest,
        "minutes_per_1000_steps": round(per_step * 1000 / 60),
    }


def _chosen_base_model(form: TrainingForm, character: Character) -> str:
    chosen = form.data.get("base_model") if form.is_bound else None
    return chosen if chosen in BASE_MODELS else character.base_model


def _chosen_preset(form: TrainingForm) -> str:
    chosen = form.data.get("preset") if form.is_bound else None
    return chosen if chosen in PRESETS else str(form.fields["preset"].initial)


def _render_confirm(request: HttpRequest, character: Character, form: TrainingForm) -> HttpResponse:
    """The final settings and cost, and "Start training" only when the run would start; else why not."""
    user: User = request.user  # type: ignore[assignment]
    steps, preset = int(form.params["steps"]), form.cleaned_data["preset"]
    model = form.cleaned_data["base_model"] or character.base_model
    budget = _budget(user, steps, model)
    refusal = training_start_refusal(
        character=character, budget=budget, preset=preset, steps=steps, base_model=model
    )
    context = {
        "character": character,
        "form": form,
        "params": form.params,
        "preset": preset,
        "base_model": BASE_MODELS[model],
        "budget": budget,
        "budget_advice": budget_advice(budget=budget, preset=preset, steps=steps),
        "refusal": refusal,
        "dataset": character_dataset_size(character),
        # The refusal, if any, is shown above as the run's: only the warnings are repeated below it.
        "identity": replace(character_identity_check(character), refusal=None),
    }
    return render(request, "training/training_confirm.html", context)


# ============================================================================================ runs


@login_required
@require_GET
def training_run_list(request: HttpRequest) -> HttpResponse:
    runs = training_run_list_for(request.user)  # type: ignore[arg-type]
    page = Paginator(runs, RUNS_PER_PAGE).get_page(request.GET.get("page"))
    return render(request, "training/run_list.html", {"page": page, "runs": page.object_list})


@login_required
@require_GET
def training_run_detail(request: HttpRequest, run_id: uuid.UUID) -> HttpResponse:
    run = _run_for(request, run_id)
    context = {
        "run": run,
        "character": run.character,
        "events": list(run.events.all()),
        "lora_filename": _lora_filename(run),
        "has_lora": run_has_lora(run),
        "dataset": dataset_size(run.manifest),
        "gpu_seconds": run.execution_ms // 1000 if run.execution_ms is not None else None,
        "charge": training_run_charge(run),
        "endpoint_notice": training_run_endpoint_notice(run),
        "retry_refusal": training_retry_refusal(run) if run.is_final and run.status != "completed" else None,
        # A failed run's last lines of trainer output, shown under its error (the page is its owner's).
        "log_tail": _log_tail(run),
        "captions": captions_summary(run),
        **_watch_context(run),
    }
    return render(request, "training/run_detail.html", context)


def _watch_context(run: TrainingRun) -> dict[str, object]:
    """What the gallery and the loss chart draw, on the page and in the parts its script fetches."""
    return {
        "run": run,
        "gallery": gallery_build(run),
        "chart": chart_build(run),
        "sampling": sampling(run),
        # The service refuses while the run trains: offered once it has ended.
        "checkpoints_usable": run.is_final,
        "next_sample_step": next_sample_step(run),
        "versions": watch_versions(run),
        "likeness": likeness_build(run),
        "lora_choice": lora_choice_explained(run),
        # The page's script keeps watching a completed run until its checkpoints are compared.
        "watching": not run.is_final or likeness_comparing(run),
    }


def _log_tail(run: TrainingRun) -> dict[str, object] | None:
    """The trainer's last lines, kept with a failed run (redacted by the worker before they left the GPU)."""
    text = run.log_tail.strip("\n") if run.status == TrainingRun.Status.FAILED else ""
    return {"text": text, "lines": text.count("\n") + 1} if text else None


@login_required
@require_GET
def training_run_gallery_part(request: HttpRequest, run_id: uuid.UUID) -> HttpResponse:
    """The run page's gallery as the page draws it, for its script to put in place when the progress
    JSON's `watch.gallery` changed."""
    return _part(request, run_id, "training/_run_gallery.html")


@login_required
@require_GET
@gzip_page  # numbers and the trigger word only, no secret to leak through compression (BREACH)
def training_run_chart_part(request: HttpRequest, run_id: uuid.UUID) -> HttpResponse:
    """The run page's loss chart (two SVG drawings, about a fifth of their size compressed), for its
    script to put in place when `watch.chart` changed."""
    return _part(request, run_id, "training/_run_chart.html")


def _part(request: HttpRequest, run_id: uuid.UUID, template: str) -> HttpResponse:
    run = _run_for(request, run_id)
    response = render(request, template, _watch_context(run))
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_GET
def training_run_progress(request: HttpRequest, run_id: uuid.UUID) -> JsonResponse:
    """What the run page's script needs to redraw itself: status, progress, timeline, error, LoRA, and the
    versions of the gallery and the chart (it fetches a part again only when its version changed)."""
    run = _run_for(request, run_id)
    response = JsonResponse(run_page_document(run))
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_http_methods(["GET", "POST"])
def training_run_cancel(request: HttpRequest, run_id: uuid.UUID) -> HttpResponse:
    """GET: what cancelling costs and that it cannot be undone. POST: cancel."""
    run = _run_for(request, run_id)
    if request.method == "GET":
        if run.is_final:
            return redirect("training:run-detail", run_id=run.pk)
        context = {"run": run, "character": run.character, "billed": training_run_cost_so_far(run)}
        return render(request, "training/run_confirm_cancel.html", context)
    try:
        services.training_run_cancel(run=run, source=USER)
    except ApplicationError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, "The run was cancelled. GPU time used so far is still billed.")
    return redirect("training:run-detail", run_id=run.pk)


@login_required
@require_POST
def training_run_retry(request: HttpRequest, run_id: uuid.UUID) -> HttpResponse:
    run = _run_for(request, run_id)
    try:
        new_run = services.training_run_retry(run=run, requested_by=request.user, source=USER)  # type: ignore[arg-type]
    except ApplicationError as error:
        messages.error(request, error.message)
        return redirect("training:run-detail", run_id=run.pk)
    messages.success(request, "A new run has started with the same photos and settings.")
    return redirect("training:run-detail", run_id=new_run.pk)


@login_required
@require_GET
def training_run_lora(request: HttpRequest, run_id: uuid.UUID) -> FileResponse:
    """Stream the run's LoRA to its owner, as a download named after the character; `?part=low_noise`: the
    low-noise file of a model with two experts."""
    run = _run_for(request, run_id)
    low_noise = request.GET.get("part") == "low_noise"
    name = run.lora_low_noise_name if low_noise else run.lora_name
    if not run_has_lora(run) or not name:
        raise Http404("This run has no LoRA to download.")
    filename = lora_download_name(run, LOW_NOISE) if low_noise else _lora_filename(run)
    return _lora_response(name, filename)


@login_required
@require_GET
def training_run_checkpoint(request: HttpRequest, run_id: uuid.UUID, step: int) -> FileResponse:
    """Stream one of the run's verified checkpoints (or its final LoRA) to its owner."""
    run = _run_for(request, run_id)
    checkpoint = run.checkpoints.filter(step=step, verified_at__isnull=False, pruned_at__isnull=True).first()
    if checkpoint is None:
        raise Http404("This run kept no checkpoint at that step.")
    return _lora_response(checkpoint.file, checkpoint_download_name(run, checkpoint))


@login_required
@require_POST
def training_run_checkpoint_use(request: HttpRequest, run_id: uuid.UUID, step: int) -> HttpResponse:
    """Make one of the run's checkpoints (or its final LoRA) the character's LoRA ("Use this one")."""
    run = _run_for(request, run_id)
    try:
        services.training_run_lora_choose(run=run, step=step, source=USER)
    except ApplicationError as error:
        messages.error(request, error.message)
    else:
        what = "final LoRA" if run.checkpoints.filter(step=step, final=True).exists() else f"step {step}"
        messages.success(request, f"{run.character.name} now uses the LoRA from this run's {what}.")
    return redirect(reverse("training:run-detail", args=[run.pk]) + f"#step-{step}")


def _lora_response(name: str, filename: str) -> FileResponse:
    if not default_storage.exists(name):
        raise Http404("The LoRA file is missing from storage.")
    response = FileResponse(
        default_storage.open(name, "rb"),
        as_attachment=True,
        filename=filename,
        content_type="application/octet-stream",
    )
    response["Cache-Control"] = "private, no-cache"
    return response


SAMPLE_SIZES = {"256": "thumbnail", "512": "thumbnail_large"}
IMAGE_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}


@login_required
@require_GET
def training_run_sample(
    request: HttpRequest, run_id: uuid.UUID, step: int, prompt_index: int
) -> FileResponse:
    """One verified sample of the run, or its 256 px or 512 px thumbnail (`?size=`), to its owner."""
    run = _run_for(request, run_id)
    sample = run.samples.filter(step=step, prompt_index=prompt_index, verified_at__isnull=False).first()
    if sample is None:
        raise Http404("This run has no such sample.")
    field = SAMPLE_SIZES.get(request.GET.get("size", ""))
    name = getattr(sample, field).name if field and getattr(sample, field).name else sample.image.name
    if not name or not default_storage.exists(name):
        raise Http404("The sample is missing from storage.")
    response = FileResponse(default_storage.open(name, "rb"), content_type=_image_type(name))
    response["Cache-Control"] = _sample_cache_control(request, sample)
    return response


def _image_type(name: str) -> str:
    return IMAGE_TYPES.get(name[name.rfind(".") :].lower(), "application/octet-stream")


def _sample_cache_control(request: HttpRequest, sample: Sample) -> str:
    """A link naming the sample's hash (`?v=`, as the gallery writes them) always names the same bytes, so
    the browser keeps it and a redrawn gallery costs no image request; a resumed run that renders the step
    again gives its sample a new hash and so a new link."""
    if request.GET.get("v") and sample.sha256.startswith(request.GET["v"]):
        return "private, max-age=31536000, immutable"
    return "private, no-cache"


def _run_for(request: HttpRequest, run_id: uuid.UUID) -> TrainingRun:
    try:
        return training_run_get_for(request.user, run_id)  # type: ignore[arg-type]
    except NotFound as error:
        raise Http404(error.message) from error


def _lora_filename(run: TrainingRun) -> str:
    return lora_download_name(run)
