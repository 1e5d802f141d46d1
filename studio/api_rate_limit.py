"""A per-user API rate limit that counts only what was accepted (what cost something), and a 429 that says
which limit, over what window, and when it frees up.

DRF's `ScopedRateThrottle` records every request it lets through, refused ones too
(rest_framework/throttling.py, `SimpleRateThrottle.allow_request` → `throttle_success`), so 30 invalid run
starts (all 400, nothing started, nothing billed) used up an hour's limit. Here `allow_request` only checks;
the view calls `record_accepted` once it has accepted the request. The window is sliding, as DRF's: a slot
frees when the oldest accepted request in it is `window` old.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rest_framework import exceptions
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import ScopedRateThrottle

WINDOW_NAMES = {1: "second", 60: "minute", 3600: "hour", 86400: "day"}


@dataclass(frozen=True)
class LimitReached:
    scope: str
    limit: int
    window_seconds: int
    resets_at: float  # epoch seconds when the oldest counted request leaves the window
    counts: str

    @property
    def retry_after(self) -> int:
        return max(1, int(self.resets_at - datetime.now(tz=UTC).timestamp()) + 1)

    def as_dict(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "limit": self.limit,
            "window_seconds": self.window_seconds,
            "counts": self.counts,
            "resets_at": datetime.fromtimestamp(self.resets_at, tz=UTC).isoformat(),
            "retry_after_seconds": self.retry_after,
        }

    @property
    def message(self) -> str:
        window = WINDOW_NAMES.get(self.window_seconds, f"{self.window_seconds} seconds")
        resets = datetime.fromtimestamp(self.resets_at, tz=UTC)
        return (
            f"Limit reached: at most {self.limit} {self.counts} per {window} (a sliding window), and you "
            f"have made {self.limit}. Refused requests do not count. The next one is accepted from "
            f"{resets:%H:%M:%S} UTC, in {self.retry_after} seconds."
        )


class RateLimited(exceptions.Throttled):
    """A 429 that carries the limit's figures (rendered by studio.api_errors)."""

    def __init__(self, reached: LimitReached) -> None:
        super().__init__(wait=reached.retry_after, detail=reached.message)
        self.reached = reached


class AcceptedRequestThrottle(ScopedRateThrottle):
    """Refuses once `rate` accepted requests fall in the window; records nothing by itself.

    `counts` names what is counted, for the message ("accepted run starts").
    """

    counts = "accepted requests"

    def get_rate(self) -> str | None:
        # Read at request time, not import time, so settings (and tests) can change the rate.
        rate = api_settings.DEFAULT_THROTTLE_RATES.get(str(self.scope))
        return None if rate is None else str(rate)

    def allow_request(self, request: Request, view: Any) -> bool:
        if not self._configure(request, view):
            return True
        history = self._history()
        if len(history) >= self.num_requests:
            raise RateLimited(
                LimitReached(
                    scope=str(self.scope),
                    limit=int(self.num_requests),
                    window_seconds=int(self.duration),
                    resets_at=min(history) + self.duration,
                    counts=self.counts,
                )
            )
        return True

    def record_accepted(self, request: Request, view: Any) -> None:
        """Count `request`, which `view` has accepted."""
        if self._configure(request, view):
            self.cache.set(self.key, [self.timer(), *self._history()], self.duration)

    def _configure(self, request: Request, view: Any) -> bool:
        """Reads the view's scope and rate and the user's key; False when nothing limits this request."""
        self.scope = getattr(view, self.scope_attr, None)
        self.rate = self.get_rate() if self.scope else None
        if self.rate is None:
            return False
        num_requests, duration = self.parse_rate(self.rate)
        self.num_requests, self.duration = int(num_requests or 0), int(duration or 0)
        self.key = self.get_cache_key(request, view)
        return self.key is not None

    def _history(self) -> list[float]:
        now = self.timer()
        return [at for at in self.cache.get(self.key, []) if at > now - self.duration]


def record_accepted(request: Request, view: Any) -> None:
    """Count an accepted request against every accepted-request throttle of `view`."""
    for throttle in view.get_throttles():
        if isinstance(throttle, AcceptedRequestThrottle):
            throttle.record_accepted(request, view)
