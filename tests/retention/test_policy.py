"""Which accounts count as inactive: the latest of creation, last sync and Cognito's last word."""

from __future__ import annotations

import pytest

from gateway.registry import Account
from gateway.retention import DAY, inactive, last_seen

NOW = 1_800_000_000.0


def account(name: str, created: float, synced: float = 0.0, checked: float = 0.0) -> Account:
    return Account(
        sub=f"sub-{name}",
        name=name,
        cognito_username=name,
        email=None,
        status="active",
        created_at=NOW - created * DAY,
        last_seen=NOW - synced * DAY if synced else NOW - created * DAY,
        checked_at=NOW - checked * DAY if checked else 0.0,
    )


@pytest.mark.parametrize(
    "made, days, listed",
    [
        (account("synced-long-ago", created=400, synced=200), 180, True),
        (account("synced-lately", created=400, synced=10), 180, False),
        (account("signed-in-on-the-portal", created=400, synced=200, checked=3), 180, False),
        (account("never-synced-but-new", created=20), 180, False),
        (account("never-synced-old", created=200), 180, True),
        (account("exactly-on-the-line", created=400, synced=180), 180, False),
        (account("just-past-the-line", created=400, synced=180.001), 180, True),
    ],
    ids=lambda v: v.name if isinstance(v, Account) else str(v),
)
def test_an_account_seen_within_the_days_is_never_listed(
    made: Account, days: int, listed: bool
) -> None:
    assert (inactive([made], days, NOW) == [made]) is listed


def test_the_list_is_oldest_first_and_seen_is_the_latest_of_the_three() -> None:
    a = account("a", created=500, synced=300)
    b = account("b", created=500, synced=400)
    c = account("c", created=500, synced=450, checked=350)
    assert last_seen(c) == NOW - 350 * DAY
    assert [x.name for x in inactive([a, b, c], 30, NOW)] == ["b", "c", "a"]


@pytest.mark.parametrize("days", [0, -1])
def test_less_than_a_day_is_refused(days: int) -> None:
    with pytest.raises(ValueError):
        inactive([], days, NOW)
