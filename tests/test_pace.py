"""The pace rules, as a table of arrivals: (seconds after the start, bytes)."""

from __future__ import annotations

import pytest

from gateway.web.pace import MARKS, Pacing

# 1000 bytes per 10 s window; every body must end by 10 s + its size / 1000 bytes a second.
PACING = Pacing(idle_timeout=10.0, min_rate=100.0, min_average_rate=1000.0)
#: The sliding window's resolution: a stall may be noticed this much late.
SLACK = 10.0 / MARKS


def run(arrivals: list[tuple[float, int]], pacing: Pacing = PACING) -> float | None:
    """When the body was found stalled (seconds), or None."""
    pace = pacing.start(0.0)
    for at, size in arrivals:
        if pace.feed(size, at):
            return at
    return None


@pytest.mark.parametrize(
    ("arrivals", "stalled"),
    [
        ([(0.1, 5000)], False),
        ([(9.9, 0)], False),  # woke up early: nothing to say yet
        ([(10.0, 0)], True),  # headers, then nothing for the idle timeout
        ([(1.0, 100_000), (10.9, 0)], False),
        ([(1.0, 100_000), (11.0, 0)], True),  # a burst, then silence
        # Steady 150 bytes a second passes every window (and the deadline: 1000 bytes/s
        # average is not asked of it below, see the next test).
        ([(i * 1.0, 150) for i in range(1, 60)], True),
        ([(i * 1.0, 1500) for i in range(1, 600)], False),
        # 99 bytes a second fails at the end of the first window.
        ([(i * 1.0, 99) for i in range(1, 11)], True),
    ],
)
def test_stalled(arrivals, stalled):
    assert (run(arrivals) is not None) is stalled


def test_the_issue_example_a_burst_then_a_byte_a_second_is_stopped_one_window_after_it():
    # Issue 16, item 3, scaled: 100 KiB, then a byte a second. Consecutive windows let the
    # burst pay for the second window too (stopped at 2 x idle, 120 s at the defaults); the
    # sliding window stops it one idle timeout after the burst.
    arrivals = [(0.5, 100 * 1024)] + [(0.5 + i * 0.25, 1) for i in range(1, 200)]
    at = run(arrivals, Pacing(idle_timeout=10.0, min_rate=100.0, min_average_rate=0))
    assert at is not None and 10.5 <= at <= 10.5 + SLACK


def test_a_trickle_above_the_window_rate_still_ends_at_its_deadline():
    # 150 bytes a second passes every window (1000 bytes per 10 s), but the body must end by
    # 10 s + size / 1000: 10 + 0.15 t < t from t = 11.8 s. Without the deadline it ran on
    # until the size cap (28 h at the defaults).
    arrivals = [(i * 0.1, 15) for i in range(1, 100_000)]
    assert run(arrivals, Pacing(10.0, 100.0, 0)) is None
    at = run(arrivals)
    assert at is not None and 11.7 <= at <= 11.9


def test_the_deadline_grows_with_the_size_at_the_average_rate():
    # 500 bytes a second against 1000 on average: 100 s + 500 t / 1000 is reached at 200 s.
    pacing = Pacing(idle_timeout=100.0, min_rate=0, min_average_rate=1000.0)
    assert run([(float(t), 500) for t in range(1, 1000)], pacing) == 200.0
    assert run([(float(t), 1000) for t in range(1, 1000)], pacing) is None


def test_deadline_is_the_earliest_rule():
    pace = Pacing(10.0, 100.0, 0).start(0.0)
    assert pace.deadline() == 10.0
    pace.feed(5000, 4.0)
    assert pace.deadline() == 14.0  # the window that holds the 5000 bytes
    pace.feed(0, 13.9)
    assert not pace.stalled


def test_stalled_stays_stalled():
    pace = PACING.start(0.0)
    assert pace.feed(0, 10.0)
    assert pace.feed(10_000, 10.5)


def test_skipped_time_counts_for_no_rule():
    pace = PACING.start(0.0)
    pace.feed(5000, 1.0)
    pace.skip(30.0)  # the worker took 30 s to produce the next chunk
    assert not pace.feed(5000, 31.5)
    assert pace.deadline() == pytest.approx(41.5)  # the window after the second 5000 bytes
