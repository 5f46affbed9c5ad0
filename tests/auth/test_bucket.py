"""The token bucket that keeps re-checks under a calls-per-second budget."""

from __future__ import annotations

import pytest

from gateway.auth.bucket import TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("rate", "burst", "steps", "expected"),
    [
        # (seconds to advance before a take) -> taken?
        (2.0, None, [0, 0, 0], [True, True, False]),  # starts full: one second's worth
        (2.0, None, [0, 0, 0, 0.5, 0], [True, True, False, True, False]),  # 0.5 s: one more
        (0.5, None, [0, 0, 1, 1], [True, False, False, True]),  # slow rate: burst of at least 1
        (10.0, 1, [0, 0, 0.11, 0.05, 0.06], [True, False, True, False, True]),  # spread evenly
        (1.0, 3, [0, 0, 0, 0, 100, 0, 0, 0], [True, True, True, False, True, True, True, False]),
    ],
)
def test_take(rate: float, burst: float | None, steps: list[float], expected: list[bool]) -> None:
    clock = Clock()
    bucket = TokenBucket(rate, burst, clock=clock)
    taken = []
    for step in steps:
        clock.now += step
        taken.append(bucket.take())
    assert taken == expected


def test_a_rate_of_zero_is_refused() -> None:
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(0)
