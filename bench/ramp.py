"""The largest load that still passes, found by doubling and then bisecting. Pure.

`largest_passing(passes, start, most, ...)` tries `start`, `2 * start`, ... up to `most` until a
size fails, then bisects between the last size that passed and the first that failed, until
the gap is within `tolerance` (a fraction of the size that passed) or `deadline` (seconds, by
`clock`) is reached. It assumes that a bigger load never passes where a smaller one failed;
on a noisy machine that is not always so, which is why every step is kept in the result.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Ramp:
    """`best`: the largest size that passed (0 if none did); `failed`: the smallest size that
    failed (None if none did); `steps`: (size, passed) in the order tried; `capped`: stopped
    at `most` without a failure; `timed_out`: stopped by the deadline."""

    best: int = 0
    failed: int | None = None
    steps: list[tuple[int, bool]] = field(default_factory=list)
    capped: bool = False
    timed_out: bool = False


def largest_passing(
    passes: Callable[[int], bool],
    *,
    start: int,
    most: int,
    tolerance: float = 0.1,
    deadline: float = float("inf"),
    clock: Callable[[], float] = time.monotonic,
) -> Ramp:
    if not 1 <= start <= most:
        raise ValueError("need 1 <= start <= most")
    ramp = Ramp()

    def attempt(size: int) -> bool:
        ok = passes(size)
        ramp.steps.append((size, ok))
        if ok:
            ramp.best = max(ramp.best, size)
        else:
            ramp.failed = size if ramp.failed is None else min(ramp.failed, size)
        return ok

    size = start
    while True:
        if clock() >= deadline:
            ramp.timed_out = True
            return ramp
        if not attempt(size):
            break
        if size == most:
            ramp.capped = True
            return ramp
        size = min(2 * size, most)
    while ramp.failed is not None and ramp.failed - ramp.best > max(1, tolerance * ramp.best):
        if clock() >= deadline:
            ramp.timed_out = True
            break
        attempt((ramp.best + ramp.failed) // 2)
    return ramp
