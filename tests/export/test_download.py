"""Who may start an export now: per-account daily limit, one at a time, a process-wide cap."""

from __future__ import annotations

from gateway.export.download import DAY, Downloads, Refused, Ticket


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


def test_a_second_export_of_one_account_while_the_first_runs_is_refused() -> None:
    downloads = Downloads(per_day=3, concurrent=2, clock=Clock())
    first = downloads.admit("sub-a")
    assert isinstance(first, Ticket)
    assert downloads.admit("sub-a") == Refused("running")
    with first:
        pass
    assert isinstance(downloads.admit("sub-a"), Ticket)


def test_each_account_gets_its_daily_number_and_then_a_wait_until_the_oldest_ages_out() -> None:
    clock = Clock()
    downloads = Downloads(per_day=2, concurrent=5, clock=clock)
    for _ in range(2):
        ticket = downloads.admit("sub-a")
        assert isinstance(ticket, Ticket)
        with ticket:
            clock.now += 60
    refused = downloads.admit("sub-a")
    assert isinstance(refused, Refused) and refused.reason == "limit"
    assert refused.retry_after == DAY - 120
    assert isinstance(downloads.admit("sub-b"), Ticket)  # another account is not affected
    clock.now += DAY - 119
    assert isinstance(downloads.admit("sub-a"), Ticket)


def test_no_more_than_the_concurrent_cap_build_at_once() -> None:
    downloads = Downloads(per_day=3, concurrent=2, clock=Clock())
    a, b = downloads.admit("a"), downloads.admit("b")
    assert isinstance(a, Ticket) and isinstance(b, Ticket)
    assert downloads.admit("c") == Refused("busy", 30)
    with a:
        pass
    assert isinstance(downloads.admit("c"), Ticket)
