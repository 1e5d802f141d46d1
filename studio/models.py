from __future__ import annotations

from decimal import Decimal

from django.contrib.auth.models import AbstractUser
from django.core.validators import MinValueValidator
from django.db import models


class User(AbstractUser):
    """A person using the studio. Staff run the studio from the admin."""

    monthly_gpu_budget_usd = models.DecimalField(
        "monthly GPU budget (USD)",
        max_digits=10,
        decimal_places=2,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal("0"))],
        help_text="Empty means unlimited.",
    )
