"""Failed-login limiter: too many failures for one username or one client address → 429.

A sliding window of failure times per key, bounded in the number of keys it remembers.
Pure apart from the injected clock. Anki shows 429 as "a network error occurred" and keeps the
user logged in, which is what a temporary block should look like; Cognito's own lockout after
about five failures is a separate, later line of defence.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

from cachetools import TTLCache


class FailureLimiter:
    def __init__(
        self,
        max_failures: int,
        window: float,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max = max_failures
        self._window = window
        self._clock = clock
        self._failures: TTLCache[str, deque[float]] = TTLCache(max_keys, window, timer=clock)

    def _recent(self, key: str) -> deque[float]:
        times = self._failures.get(key)
        if times is None:
            return deque()
        cutoff = self._clock() - self._window
        while times and times[0] <= cutoff:
            times.popleft()
        return times

    def retry_after(self, key: str) -> int | None:
        """Seconds until `key` may try again, or None when it may try now."""
        times = self._recent(key)
        if len(times) < self._max:
            return None
        wait = times[-self._max] + self._window - self._clock()
        return max(1, math.ceil(wait))

    def record_failure(self, key: str) -> float:
        """Count a failure for `key` now; returns its time (for `forgive`)."""
        now = self._clock()
        times = self._recent(key)
        times.append(now)
        # Re-insert to refresh the entry's TTL: it lives as long as its newest failure matters.
        self._failures[key] = times
        while len(times) > self._max:
            times.popleft()
        return now

    def forgive(self, key: str, when: float) -> None:
        """Take back the failure recorded at `when` (an attempt counted in advance that turned
        out not to be the client's failure)."""
        times = self._failures.get(key)
        if times is not None:
            try:
                times.remove(when)
            except ValueError:
                pass

    def reset(self, key: str) -> None:
        self._failures.pop(key, None)
