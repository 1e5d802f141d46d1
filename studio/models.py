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
    pod_training_allowed = models.BooleanField(
        "may train on pods",
        default=False,
        help_text="May choose pod mode (a persistent pod's AI Toolkit) for a run; staff always may.",
    )

    @property
    def may_train_on_pods(self) -> bool:
        """Pod mode is offered to, and allowed for, staff and the accounts staff enabled it for."""
        return bool(self.is_staff or self.pod_training_allowed)


class IdempotencyKey(models.Model):
    """A client's `Idempotency-Key` and the resource its first request created.

    The unique constraint is what makes concurrent requests with one key create one resource:
    the second insert waits for the first transaction and then fails, and the request replays.
    """

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="idempotency_keys")
    key = models.CharField(max_length=255)
    scope = models.CharField(max_length=64, help_text="The operation the key belongs to.")
    request_hash = models.CharField(
        max_length=64, help_text="SHA-256 of the request, so a key reused for another request is refused."
    )
    # Empty only inside the transaction that creates the resource; never seen committed so.
    resource_id = models.UUIDField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "scope", "key"], name="idempotency_key_unique_per_user"),
        ]

    def __str__(self) -> str:
        return f"{self.scope}:{self.key}"
