"""Training's template tags for its own pages (run list, run detail). Its parts of the character pages are
training/character_pages.py."""

from __future__ import annotations

from django import template

from training.models import TrainingRun
from training.selectors import RunCharge, training_run_charge

register = template.Library()


@register.filter
def duration(seconds: int | None) -> str:
    """42 -> "42 s", 754 -> "12 min 34 s", 7260 -> "2 h 1 min": an ETA a person reads at a glance."""
    if seconds is None:
        return "—"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


@register.simple_tag
def run_charge(run: TrainingRun) -> RunCharge:
    """What the run counts against its owner's budget (`training_run_charge`), for a cost column."""
    return training_run_charge(run)
