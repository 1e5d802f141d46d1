"""Count failures per key in the cache and refuse once a limit is reached within a window.

    limiter = FailureLimiter(scope="login", limit=10, window_seconds=15 * 60)
    if limiter.is_blocked(key): refuse
    ...on failure: limiter.record_failure(key); on success: limiter.reset(key)

The window is fixed: it starts at the first failure and the count clears when it ends. With
Redis configured every web process shares the count; the local-memory default counts per
process, which still slows a guesser down on a single-process demo.
"""

from __future__ import annotations

import hashlib

from django.core.cache import cache


class FailureLimiter:
    def __init__(self, *, scope: str, limit: int, window_seconds: int) -> None:
        self.scope = scope
        self.limit = limit
        self.window_seconds = window_seconds

    def is_blocked(self, key: str) -> bool:
        return int(cache.get(self._cache_key(key), 0)) >= self.limit

    def record_failure(self, key: str) -> int:
        """Count one more failure; returns the count inside the current window."""
        cache_key = self._cache_key(key)
        # add() only sets a missing key, so the window's expiry is fixed by its first failure.
        cache.add(cache_key, 0, timeout=self.window_seconds)
        try:
            return int(cache.incr(cache_key))
        except ValueError:  # expired between add() and incr(): this failure opens a new window
            cache.set(cache_key, 1, timeout=self.window_seconds)
            return 1

    def reset(self, key: str) -> None:
        cache.delete(self._cache_key(key))

    def _cache_key(self, key: str) -> str:
        # Hashed: usernames and addresses stay out of the cache and any character is safe.
        return f"ratelimit:{self.scope}:{hashlib.sha256(key.encode()).hexdigest()}"
