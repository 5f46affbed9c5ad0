"""bench/ramp.py: the largest passing load, found by doubling then bisecting."""

from __future__ import annotations

import pytest

from bench.ramp import largest_passing


@pytest.mark.parametrize(
    ("limit", "start", "most", "best", "failed", "capped"),
    [
        (37, 4, 256, 36, 38, False),  # 4 8 16 32 pass, 64 48 40 fail, 36 passes, 38 fails
        (3, 4, 256, 3, 4, False),  # the first size fails: bisected below it
        (1000, 4, 100, 100, None, True),  # never fails: stops at `most`
        (100, 4, 100, 100, None, True),
        (5, 1, 64, 5, 6, False),  # small sizes: bisected to a gap of one
    ],
)
def test_doubles_then_bisects_to_the_largest_passing_size(limit, start, most, best, failed, capped):
    ramp = largest_passing(lambda n: n <= limit, start=start, most=most, tolerance=0.1)
    assert ramp.best <= limit and (ramp.failed is None or ramp.failed > limit)
    assert ramp.failed is None or ramp.failed - ramp.best <= max(1, 0.1 * ramp.best)
    assert (ramp.best, ramp.failed, ramp.capped) == (best, failed, capped)
    sizes = [size for size, _ in ramp.steps]
    assert len(sizes) == len(set(sizes))  # no size is tried twice


def test_stops_at_the_deadline_with_what_it_has():
    now = [0.0]

    def passes(n: int) -> bool:
        now[0] += 10  # every step takes 10 s
        return n <= 50

    ramp = largest_passing(passes, start=4, most=256, deadline=25, clock=lambda: now[0])
    assert ramp.timed_out and ramp.steps == [(4, True), (8, True), (16, True)]
    assert ramp.best == 16 and ramp.failed is None
