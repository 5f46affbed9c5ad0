"""The pool's bookkeeping as tables: whom to evict, whom to reap, how often to look."""

from __future__ import annotations

import pytest

from gateway.workers.ledger import (
    MAX_REAP_PERIOD,
    Usage,
    counts,
    idle_past,
    least_recently_used_idle,
    reap_period,
)


def u(account: str, last_used: float, in_flight: int = 0, ready: bool = True) -> Usage:
    return Usage(account, last_used=last_used, in_flight=in_flight, ready=ready)


@pytest.mark.parametrize(
    ("records", "victim"),
    [
        ([], None),
        ([u("a", 1, in_flight=1)], None),
        ([u("a", 1, ready=False)], None),  # starting: its waiting leases would fail
        ([u("a", 5), u("b", 1), u("c", 3)], "b"),
        ([u("a", 5), u("b", 1, in_flight=2), u("c", 3)], "c"),  # oldest is busy
        ([u("a", 5), u("b", 1, ready=False), u("c", 3)], "c"),  # oldest is starting
        ([u("a", 1, in_flight=1), u("b", 2, in_flight=1)], None),
    ],
)
def test_eviction_takes_the_least_recently_used_idle_worker(records, victim):
    found = least_recently_used_idle(records)
    assert (found.account if found else None) == victim


@pytest.mark.parametrize(
    ("records", "now", "timeout", "expected"),
    [
        ([], 100, 10, []),
        ([u("a", 80)], 100, 10, ["a"]),
        ([u("a", 90)], 100, 10, []),  # exactly the timeout: not yet
        ([u("a", 95)], 100, 10, []),
        ([u("a", 0, in_flight=1)], 100, 10, []),  # busy for ages: a long upload, keep it
        ([u("a", 0, ready=False)], 100, 10, []),  # a start that hangs is start_timeout's job
        ([u("a", 0), u("b", 99), u("c", 50)], 100, 10, ["a", "c"]),
    ],
)
def test_reaper_takes_idle_workers_unused_past_the_timeout(records, now, timeout, expected):
    assert [r.account for r in idle_past(records, now, timeout)] == expected


@pytest.mark.parametrize(
    ("idle_timeout", "period"),
    [(0.2, 0.1), (10, 5), (20, 10), (60, 10), (300, MAX_REAP_PERIOD), (3600, MAX_REAP_PERIOD)],
)
def test_reap_period_is_half_the_timeout_but_at_most_the_cap(idle_timeout, period):
    assert reap_period(idle_timeout) == pytest.approx(period)


def test_usage_tracks_leases_and_last_use_and_never_goes_negative():
    r = u("a", 0, ready=True)
    r.begin(5)
    r.begin(6)
    assert (r.in_flight, r.last_used, r.idle) == (2, 6, False)
    r.end(7)
    r.end(9)
    assert (r.in_flight, r.last_used, r.idle) == (0, 9, True)
    r.end(10)
    assert r.in_flight == 0


def test_counts_live_busy_and_starting():
    records = [u("a", 0), u("b", 0, in_flight=3), u("c", 0, in_flight=1, ready=False)]
    assert counts(records) == {"live": 3, "busy": 2, "starting": 1}
    assert counts([]) == {"live": 0, "busy": 0, "starting": 0}
