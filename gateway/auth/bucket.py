"""A token bucket: at most `rate` calls a second on average, `burst` at once. Pure.

    TokenBucket(rate, burst=None, clock=time.monotonic).take() -> bool

`take()` spends one token when there is one (True) and never waits (False: over budget; the
caller puts the call off). Tokens refill continuously at `rate` a second up to `burst`
(default: one second's worth, at least 1). It starts full. Single-threaded (the event loop's).
Used to keep Cognito re-checks under a calls-per-second budget (revalidation.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be greater than 0")
        self.rate = rate
        self.burst = max(1.0, rate if burst is None else burst)
        self._clock = clock
        self._tokens = self.burst
        self._at = clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True
