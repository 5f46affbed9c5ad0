"""The pace rules, as a table of arrivals: (seconds after the start, bytes)."""

from __future__ import annotations

import pytest

from gateway.web.pace import Pacing

PACING = Pacing(idle_timeout=10.0, min_rate=100.0)  # 1000 bytes per 10 s window


def run(arrivals: list[tuple[float, int]]) -> bool:
    pace = PACING.start(0.0)
    return any(pace.feed(size, at) for at, size in arrivals)


@pytest.mark.parametrize(
    ("arrivals", "stalled"),
    [
        ([(0.1, 5000)], False),
        ([(9.9, 0)], False),  # woke up early: nothing to say yet
        ([(10.0, 0)], True),  # headers, then nothing for the idle timeout
        ([(1.0, 100_000), (10.9, 0)], False),
        ([(1.0, 100_000), (11.0, 0)], True),  # a burst, then silence
        # 100 KiB, then a byte a second: the second window has 9 bytes, not 1000.
        ([(1.0, 100_000)] + [(1.0 + i, 1) for i in range(1, 20)], True),
        # Steady 150 bytes a second passes every window.
        ([(i * 1.0, 150) for i in range(1, 60)], False),
        # 99 bytes a second fails at the end of the first window.
        ([(i * 1.0, 99) for i in range(1, 11)], True),
    ],
)
def test_stalled(arrivals, stalled):
    assert run(arrivals) is stalled


def test_deadline_is_the_earlier_of_idle_and_window_end():
    pace = PACING.start(0.0)
    assert pace.deadline() == 10.0
    pace.feed(5000, 4.0)
    assert pace.deadline() == 10.0  # the window ends first
    pace.feed(5000, 10.0)  # a new window from 10 s
    assert pace.deadline() == 20.0
    pace.feed(0, 19.0)
    assert pace.deadline() == 20.0 and not pace.stalled


def test_stalled_stays_stalled():
    pace = PACING.start(0.0)
    assert pace.feed(0, 10.0)
    assert pace.feed(10_000, 10.5)


def test_skipped_time_counts_for_neither_rule():
    pace = PACING.start(0.0)
    pace.feed(5000, 1.0)
    pace.skip(30.0)  # the worker took 30 s to produce the next chunk
    assert not pace.feed(5000, 31.5)
    assert pace.deadline() == 40.0  # the window began at 0, plus the 30 s skipped
